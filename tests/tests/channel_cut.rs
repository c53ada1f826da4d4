//! A dataChannel dies under live streams (iptables drops one of b's tunnel ports; needs root
//! and iptables): every stream it carried is reset at its client promptly, every stream on the
//! other channels carries on and completes byte-exact, and new connections work again.
//!
//! Which stream rides which channel is read from the control API (`wovenetctl streams` /
//! `channels` on site a: `channel_id` of each stream, `remote_addr` of each channel), so the
//! assertion is exact: not "some survive, some are lost".
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use wovenet_e2e::*;

/// `tunnel::endpoint::IDLE_TIMEOUT` of the daemon: a channel with no packet from its peer for
/// this long is declared dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(8);
/// Slack on top of the idle timeout for a reset to reach the client (scheduling on a loaded
/// 2-core machine; the reset itself is one RST on loopback).
const RESET_MARGIN: Duration = Duration::from_secs(4);
/// Streams opened before the cut (spread by the daemon over its three channels).
const STREAMS: usize = 18;
/// Bytes per ping; a survivor keeps pinging until well past the cut channel's death.
const PING: usize = 4 * 1024;

/// How one stream ended after the cut.
#[derive(Debug)]
#[allow(dead_code)] // the fields are read through `Debug`, in the failure message and the summary
enum Ending {
    /// Half-closed after its last ping and got a clean EOF; every byte came back unchanged.
    Completed { pings: u64, bytes: u64 },
    /// Reset (ECONNRESET) this long after the cut.
    Reset { after: Duration, pings: u64 },
    /// Anything else: a clean EOF mid-transfer, different bytes, another error.
    Failed(String),
}

/// Pings until `until`, then half-closes and expects a clean EOF. Stops at the first failure:
/// a reset is reported as [`Ending::Reset`] with its time since `cut`.
async fn run_stream(
    mut s: TcpStream,
    seed: u64,
    cut: Instant,
    until: Instant,
    give_up: Duration,
) -> Ending {
    let mut data_gen = DataGen::new(seed);
    let mut pings = 0u64;
    let work = async {
        loop {
            if Instant::now() >= until {
                break;
            }
            let mut out = vec![0u8; PING];
            data_gen.fill(&mut out);
            if let Err(e) = s.write_all(&out).await {
                return ending_of(e, cut, pings, "write");
            }
            let mut back = vec![0u8; PING];
            if let Err(e) = s.read_exact(&mut back).await {
                return ending_of(e, cut, pings, "read");
            }
            if back != out {
                return Ending::Failed(format!("ping {pings}: echo differs"));
            }
            pings += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Err(e) = s.shutdown().await {
            return ending_of(e, cut, pings, "shutdown");
        }
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest).await {
            Ok(_) if rest.is_empty() => Ending::Completed {
                pings,
                bytes: pings * PING as u64,
            },
            Ok(_) => Ending::Failed(format!("{} unexpected bytes after half-close", rest.len())),
            Err(e) => ending_of(e, cut, pings, "read after half-close"),
        }
    };
    tokio::time::timeout(give_up, work)
        .await
        .unwrap_or_else(|_| Ending::Failed(format!("no ending within {give_up:?} ({pings} pings)")))
}

fn ending_of(e: std::io::Error, cut: Instant, pings: u64, what: &str) -> Ending {
    if e.kind() == ErrorKind::ConnectionReset {
        Ending::Reset {
            after: cut.elapsed(),
            pings,
        }
    } else {
        Ending::Failed(format!("{what} after {pings} pings: {e} ({:?})", e.kind()))
    }
}

/// Site a's channels to b that are up: id → remote address.
async fn up_channels(ctl: &Ctl) -> BTreeMap<u64, SocketAddr> {
    let v = ctl.json(&["channels"]).await;
    v["channels"]
        .as_array()
        .unwrap_or_else(|| panic!("no channels array: {v}"))
        .iter()
        .filter(|c| c["peer"] == "b" && c["state"] == "up")
        .map(|c| {
            let id = c["id"].as_u64().unwrap();
            let remote = c["remote_addr"].as_str().unwrap().parse().unwrap();
            (id, remote)
        })
        .collect()
}

/// Site a's open streams: client address → channel id.
async fn stream_channels(ctl: &Ctl) -> BTreeMap<SocketAddr, u64> {
    let v = ctl.json(&["streams"]).await;
    v["streams"]
        .as_array()
        .unwrap_or_else(|| panic!("no streams array: {v}"))
        .iter()
        .filter_map(|s| {
            let client: SocketAddr = s["client_addr"].as_str()?.parse().ok()?;
            Some((client, s["channel_id"].as_u64()?))
        })
        .collect()
}

fn describe(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_on_a_cut_channel_is_reset_and_every_other_completes() {
    let broker = Broker::embedded().await;
    let net = Net::new(broker.url());
    let echo = EchoServer::tcp().await;
    let local = Sock::free_tcp();
    // b listens on two sockets and a on one: a dials both of b's, b dials a's, so a sees
    // three channels to b and spreads streams over all of them.
    let b = net
        .site("b")
        .socket(free_udp_port())
        .socket(free_udp_port())
        .expose("echo", echo.sock())
        .spawn()
        .await;
    let a = net.site("a").remote("b", "echo", &local).spawn().await;
    wait_forward(&local, WAIT, &[&a, &b]).await;
    let all = || diag(&[&a, &b]);
    let ctl = Ctl::site(&a);
    let cut_port = b.socket_ports()[0];

    let mut channels: BTreeMap<u64, SocketAddr>;
    assert_eventually_async!(
        {
            channels = up_channels(&ctl).await;
            channels.len() >= 3
        },
        WAIT,
        "expected 3 dataChannels a<->b, saw {channels:?}\n{}",
        all()
    );
    let cut_channel = channels
        .iter()
        .find(|(_, remote)| remote.port() == cut_port)
        .map(|(id, _)| *id)
        .unwrap_or_else(|| {
            panic!(
                "no channel of a to b's port {cut_port}: {channels:?}\n{}",
                all()
            )
        });

    // Open the streams and prove each one works before the cut.
    let addr = local.tcp_addr().unwrap();
    let mut conns = Vec::new();
    for i in 0..STREAMS {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let hello = data::bytes(1000 + i as u64, 64);
        s.write_all(&hello).await.unwrap();
        let mut back = vec![0u8; hello.len()];
        tokio::time::timeout(WAIT, s.read_exact(&mut back))
            .await
            .unwrap_or_else(|_| panic!("stream {i}: no echo before the cut\n{}", all()))
            .unwrap_or_else(|e| panic!("stream {i}: {e}\n{}", all()));
        assert_eq!(back, hello);
        conns.push(s);
    }
    let on = stream_channels(&ctl).await;
    let mut placement = Vec::new();
    for (i, s) in conns.iter().enumerate() {
        let client = s.local_addr().unwrap();
        let channel = *on.get(&client).unwrap_or_else(|| {
            panic!(
                "stream {i} (client {client}) is not listed by `wovenetctl streams`: {on:?}\n{}",
                all()
            )
        });
        placement.push(channel);
    }
    let doomed: BTreeSet<usize> = (0..STREAMS)
        .filter(|&i| placement[i] == cut_channel)
        .collect();
    assert!(
        !doomed.is_empty() && doomed.len() < STREAMS,
        "streams should ride every channel; placement {placement:?}, cut channel {cut_channel}\n{}",
        all()
    );
    eprintln!(
        "{} of {STREAMS} streams ride channel {cut_channel} (b's port {cut_port}); placement {placement:?}",
        doomed.len()
    );

    let cut = Instant::now();
    let _guard = IptablesDrop::udp_port(cut_port);
    // Survivors keep going well past the moment the cut channel is declared dead.
    let until = cut + IDLE_TIMEOUT + RESET_MARGIN + Duration::from_secs(2);
    let mut runs = JoinSet::new();
    for (i, s) in conns.into_iter().enumerate() {
        let give_up = Duration::from_secs(60);
        runs.spawn(async move { (i, run_stream(s, i as u64, cut, until, give_up).await) });
    }
    let mut endings = BTreeMap::new();
    while let Some(r) = runs.join_next().await {
        let (i, ending) = r.unwrap();
        endings.insert(i, ending);
    }

    let mut wrong = Vec::new();
    for (i, ending) in &endings {
        let on_cut = doomed.contains(i);
        match (on_cut, ending) {
            (true, Ending::Reset { after, .. }) if *after <= IDLE_TIMEOUT + RESET_MARGIN => {}
            (false, Ending::Completed { pings, .. }) if *pings > 0 => {}
            _ => wrong.push(format!(
                "stream {i} on channel {} ({}): {ending:?}",
                placement[*i],
                if on_cut {
                    "cut, expected a reset"
                } else {
                    "kept, expected to complete"
                }
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "after cutting channel {cut_channel} (b's port {cut_port}):\n  {}\nall endings: {endings:#?}\n{}",
        wrong.join("\n  "),
        all()
    );
    eprintln!("endings: {endings:?}");

    // The API agrees: the cut channel is gone and no stream is listed on it.
    let listed = ctl.json(&["streams"]).await;
    assert!(
        listed["streams"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["channel_id"].as_u64() != Some(cut_channel)),
        "streams still listed on the cut channel: {}",
        describe(&listed)
    );
    assert!(!up_channels(&ctl).await.contains_key(&cut_channel));

    // New connections work while the port is still dropped (they avoid the dead channel).
    for i in 0..6u64 {
        echo_once(&local, &data::bytes(i, 16 * 1024), Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("new connection {i} after the cut: {e}\n{}", all()));
    }
}
