//! Before the key proof: keyless QUIC clients against a site's tunnel socket. Each one
//! completes the TLS handshake (its verifier accepts any certificate), sends the first byte
//! of a hello on its first stream, never finishes the proof, and tries to push data on
//! further streams. The site must close each within the pre-auth deadline, accept no more
//! than the pre-auth window from it, keep its memory bounded, refuse connections beyond the
//! per-source cap (after a Retry), count all of it, and forward a real peer's data
//! byte-exact meanwhile.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
use tokio::task::JoinSet;
use wovenet_e2e::*;

/// `tunnel::auth::DEADLINE`: QUIC handshake plus key proof.
const DEADLINE: Duration = Duration::from_secs(5);
/// What the close may take to reach the client on a busy machine.
const SLACK: Duration = Duration::from_secs(3);
/// `tunnel::endpoint::PREAUTH_RECEIVE_WINDOW`: what a connection may send before its proof.
const PREAUTH_WINDOW: u64 = 64 << 10;
/// `tunnel::admission::Limits::default().max_per_source`.
const PER_SOURCE: usize = 16;
/// `tunnel::auth::AUTH_FAILED`, the close code of a failed key proof.
const AUTH_FAILED: u32 = 0x5741;
/// What each flooding client tries to push at most (far above the pre-auth window, far
/// below what the old windows granted, so a regression shows without exhausting memory).
const PUSH_LIMIT: u64 = 2 << 20;
/// Extra streams each flooding client tries to open and fill.
const PUSH_STREAMS: usize = 4;
/// Flooding clients at any time, and the source addresses they come from.
const FLOOD: usize = 200;
const FLOOD_SOURCES: usize = 20;
/// Growth of the listener's `VmRSS` allowed while [`FLOOD`] clients are connected (the old
/// code grew by well over 100 MiB with the same clients).
const RSS_GROWTH_MAX_KIB: u64 = 48 << 10;

/// Accepts any server certificate: the attacker does not care who the site is.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A keyless dataChannel client: right ALPN and server name, any server certificate, its
/// own fresh self-signed client certificate (listeners demand one), and an idle timeout
/// and keep-alive such that only the site can end the connection early.
fn keyless_client() -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let own = rcgen::generate_simple_self_signed(vec!["keyless".to_string()]).unwrap();
    let cert = own.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(own.signing_key.serialize_der());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_client_auth_cert(vec![cert], key.into())
        .unwrap();
    tls.alpn_protocols = vec![b"wovenet/1".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(Duration::from_secs(60).try_into().unwrap()))
        .keep_alive_interval(Some(Duration::from_millis(500)));
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(Arc::new(transport));
    cfg
}

/// A client endpoint on `ip` (any loopback address works as a source on Linux).
fn endpoint_on(ip: Ipv4Addr) -> quinn::Endpoint {
    quinn::Endpoint::client(SocketAddr::from((ip, 0)))
        .unwrap_or_else(|e| panic!("cannot bind a client endpoint on {ip}: {e}"))
}

/// How one keyless connection ended.
#[derive(Debug)]
enum Outcome {
    /// No connection: the site refused it (after a Retry, when the source was at its cap).
    Refused,
    /// No connection for another reason.
    Failed(quinn::ConnectionError),
    /// Connected, stalled its proof and was closed.
    Closed(Stalled),
}

/// A stalled connection's life.
#[derive(Debug)]
struct Stalled {
    /// From the first packet to the site's close.
    lifetime: Duration,
    /// From the end of the client's handshake to the site's close. The site's
    /// deadline starts when it takes the connection from quinn's queue, before
    /// the handshake ends, so this is bounded by the deadline; `lifetime` also
    /// holds the time spent in that queue, which a loaded machine stretches.
    established: Duration,
    /// Bytes the site's flow control let the client write, over all streams.
    written: u64,
    /// How it ended.
    reason: quinn::ConnectionError,
}

impl Stalled {
    /// Whether the site closed it for failing the key proof (not an idle timeout or a
    /// reset of the client's own making).
    fn closed_by_site_for_auth(&self) -> bool {
        matches!(&self.reason, quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == quinn::VarInt::from_u32(AUTH_FAILED))
    }
}

fn is_refused(e: &quinn::ConnectionError) -> bool {
    matches!(e, quinn::ConnectionError::ConnectionClosed(c)
        if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED)
}

/// Completes the QUIC handshake to `server` (following a Retry if asked).
async fn handshake(
    ep: &quinn::Endpoint,
    server: SocketAddr,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let connecting = ep
        .connect_with(keyless_client(), server, "wovenet")
        .unwrap_or_else(|e| panic!("cannot start a connection to {server}: {e}"));
    connecting.await
}

/// Sends one byte of a hello on the first stream, then pushes up to [`PUSH_LIMIT`] on
/// [`PUSH_STREAMS`] more streams (and never more hello) until the site closes the connection.
async fn stall(conn: quinn::Connection, start: Instant) -> Stalled {
    let handshaken = Instant::now();
    let written = Arc::new(AtomicU64::new(0));
    let mut pushers = JoinSet::new();
    // The hello stream first, so that it is stream 0 (what the site reads the proof from).
    if let Ok((mut send, recv)) = conn.open_bi().await {
        if send.write_all(&[1]).await.is_ok() {
            written.fetch_add(1, Ordering::Relaxed);
        }
        // Keep the stream open while the connection lives.
        let hello = conn.clone();
        pushers.spawn(async move {
            let _keep = (send, recv);
            let _ = hello.closed().await;
        });
    }
    for _ in 0..PUSH_STREAMS {
        let conn = conn.clone();
        let w = written.clone();
        pushers.spawn(async move {
            let Ok((mut send, _recv)) = conn.open_bi().await else {
                return;
            };
            let chunk = vec![0x5a; 16 << 10];
            while w.load(Ordering::Relaxed) < PUSH_LIMIT {
                match send.write(&chunk).await {
                    Ok(n) => {
                        w.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(_) => return,
                }
            }
            let _ = conn.closed().await;
        });
    }
    let reason = conn.closed().await;
    let lifetime = start.elapsed();
    let established = handshaken.elapsed();
    pushers.shutdown().await;
    Stalled {
        lifetime,
        established,
        written: written.load(Ordering::Relaxed),
        reason,
    }
}

/// One keyless connection from `ep` to `server`, from first packet to close.
async fn keyless(ep: quinn::Endpoint, server: SocketAddr) -> Outcome {
    let start = Instant::now();
    match handshake(&ep, server).await {
        Ok(conn) => Outcome::Closed(stall(conn, start).await),
        Err(e) if is_refused(&e) => Outcome::Refused,
        Err(e) => Outcome::Failed(e),
    }
}

/// `VmRSS` of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}

/// The site's counters (`wovenetctl stats`), missing ones as 0.
async fn counters(site: &Site) -> Value {
    let v = Ctl::site(site)
        .json(&["stats", "--interval", "200ms"])
        .await;
    v["counters"].clone()
}

fn counter(counters: &Value, name: &str) -> u64 {
    counters[name].as_u64().unwrap_or(0)
}

/// The UDP address of `site`'s (single) tunnel socket.
fn tunnel_addr(site: &Site) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, site.socket_ports()[0]))
}

/// Source address `i` of the flood (loopback, outside 127.0.0.0/16 so no harness server
/// shares it).
fn flood_source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 77, (i / 250) as u8, (i % 250 + 1) as u8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyless_flood_is_bounded_closed_in_time_counted_and_peers_keep_forwarding() {
    let broker = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
    let net = Net::new(format!("mqtt://{broker}"));
    let echo = EchoServer::tcp().await;
    let local_a = Sock::free_tcp();
    let local_c = Sock::free_tcp();
    let b = net
        .site("b")
        .embedded_broker(broker)
        .expose("echo", echo.sock())
        .log_level("info")
        .spawn()
        .await;
    let a = net.site("a").remote("b", "echo", &local_a).spawn().await;
    wait_forward(&local_a, WAIT, &[&a, &b]).await;
    let server = tunnel_addr(&b);
    let pid = b.pid().unwrap();
    let before = counters(&b).await;
    let rss_before = rss_kib(pid);

    // FLOOD keyless clients at any time, each slot reconnecting as soon as the site closed
    // its previous connection, until `stop`.
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = JoinSet::new();
    for slot in 0..FLOOD {
        let ep = endpoint_on(flood_source(slot % FLOOD_SOURCES));
        let stop = stop.clone();
        flood.spawn(async move {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                outcomes.push(keyless(ep.clone(), server).await);
            }
            outcomes
        });
    }
    let rss_peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (peak, stop) = (rss_peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Meanwhile the existing peer forwards byte-exact, and a new peer gets its channel up
    // (through the Retry the listener asks for under this load) and forwards too.
    let flood_start = Instant::now();
    let payload = data::bytes(7, 256 << 10);
    let mut echoes = 0;
    while flood_start.elapsed() < DEADLINE + SLACK || echoes < 3 {
        echo_once(&local_a, &payload, WAIT)
            .await
            .unwrap_or_else(|e| {
                panic!("forwarding a→b during the flood: {e}\n{}", diag(&[&a, &b]))
            });
        echoes += 1;
    }
    let c = net.site("c").remote("b", "echo", &local_c).spawn().await;
    wait_forward(&local_c, WAIT, &[&c, &b]).await;
    echo_once(&local_c, &payload, WAIT)
        .await
        .unwrap_or_else(|e| panic!("forwarding c→b during the flood: {e}\n{}", diag(&[&c, &b])));
    let flood_time = flood_start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = Vec::new();
    while let Some(r) = flood.join_next().await {
        outcomes.extend(r.unwrap());
    }
    sampler.await.unwrap();
    let growth = rss_peak.load(Ordering::Relaxed).saturating_sub(rss_before);

    let stalled: Vec<&Stalled> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Closed(s) => Some(s),
            _ => None,
        })
        .collect();
    let refused = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Refused))
        .count();
    let failed: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Failed(e) => Some(e.to_string()),
            _ => None,
        })
        .collect();
    let mut lifetimes: Vec<Duration> = stalled.iter().map(|s| s.lifetime).collect();
    lifetimes.sort();
    let pct = |p: usize| {
        lifetimes
            .get((lifetimes.len() * p / 100).min(lifetimes.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let longest = lifetimes.last().copied().unwrap_or_default();
    let most = stalled.iter().map(|s| s.written).max().unwrap_or_default();
    let longest_established = stalled
        .iter()
        .map(|s| s.established)
        .max()
        .unwrap_or_default();
    eprintln!(
        "preauth flood: {} connections over {flood_time:?} from {FLOOD} slots on {FLOOD_SOURCES} \
         sources ({refused} refused, {} failed); lifetime p50 {:?} p99 {:?} max {longest:?} (after the handshake: max \
         {longest_established:?}); most bytes \
         accepted from one {most}; listener VmRSS {rss_before} KiB before, peak growth {growth} KiB",
        outcomes.len(),
        failed.len(),
        pct(50),
        pct(99),
    );
    assert!(
        stalled.len() >= FLOOD,
        "expected at least {FLOOD} keyless connections to complete the handshake, got {} \
         ({refused} refused, failures: {failed:?})",
        stalled.len()
    );
    // Connections still stalling when `stop` was set ended with the site's close too.
    for s in &stalled {
        assert!(
            s.closed_by_site_for_auth() && s.established <= DEADLINE + SLACK,
            "a keyless connection must be closed by the site within {DEADLINE:?} (+{SLACK:?}): {s:?}"
        );
        assert!(
            s.written <= PREAUTH_WINDOW + 1,
            "the site let a keyless connection write {} bytes (pre-auth window {PREAUTH_WINDOW}): {s:?}",
            s.written
        );
    }
    assert!(
        growth <= RSS_GROWTH_MAX_KIB,
        "listener VmRSS grew by {growth} KiB under {FLOOD} keyless connections (allowed {RSS_GROWTH_MAX_KIB} KiB)"
    );
    let after = counters(&b).await;
    let failures = counter(&after, "auth_failures") - counter(&before, "auth_failures");
    assert!(
        failures >= stalled.len() as u64,
        "auth_failures grew by {failures}, expected at least {} (one per stalled connection): {after}",
        stalled.len()
    );
    assert!(
        counter(&after, "preauth_retried") > counter(&before, "preauth_retried"),
        "with {FLOOD} unauthenticated connections the listener must ask new ones for a Retry: {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_per_source_cap_connections_are_retried_then_refused() {
    let broker = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
    let b = Site::builder("b")
        .topic(random_topic())
        .broker(format!("mqtt://{broker}"))
        .embedded_broker(broker)
        .spawn()
        .await;
    let server = tunnel_addr(&b);
    let before = counters(&b).await;
    let crowded = Ipv4Addr::new(127, 78, 0, 1);
    let ep = endpoint_on(crowded);

    // PER_SOURCE stalled connections from one address: all admitted.
    let start = Instant::now();
    let mut held = Vec::new();
    for i in 0..PER_SOURCE {
        let conn = handshake(&ep, server).await.unwrap_or_else(|e| {
            panic!(
                "connection {i} from {crowded} (under the cap): {e}\n{}",
                b.diag()
            )
        });
        held.push(tokio::spawn(stall(conn, start)));
    }
    // While they stall: more from the same address are turned away, one from elsewhere is not.
    const EXTRA: usize = 4;
    for i in 0..EXTRA {
        match keyless(ep.clone(), server).await {
            Outcome::Refused => {}
            other => panic!(
                "connection {i} beyond the cap of {PER_SOURCE} from {crowded}: expected a refusal, got {other:?}\n{}",
                b.diag()
            ),
        }
    }
    let elsewhere = endpoint_on(Ipv4Addr::new(127, 78, 0, 2));
    let other = handshake(&elsewhere, server).await.unwrap_or_else(|e| {
        panic!(
            "a connection from another address must be admitted: {e}\n{}",
            b.diag()
        )
    });
    assert!(
        start.elapsed() < DEADLINE,
        "the cap must have been held throughout (took {:?}); the machine is too slow for this test",
        start.elapsed()
    );
    other.close(0u32.into(), b"done");
    for h in held {
        let s = h.await.unwrap();
        assert!(s.closed_by_site_for_auth(), "{s:?}");
    }
    // Once they are gone the address may connect again.
    assert!(
        handshake(&ep, server).await.is_ok(),
        "after its connections were closed, {crowded} must be admitted again\n{}",
        b.diag()
    );

    let after = counters(&b).await;
    let d = |name| counter(&after, name) - counter(&before, name);
    assert_eq!(d("preauth_refused"), EXTRA as u64, "{after}");
    assert!(d("preauth_retried") >= EXTRA as u64, "{after}");
    assert!(d("auth_failures") >= PER_SOURCE as u64, "{after}");
}
