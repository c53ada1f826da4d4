//! What a key holder can push through the real message channel (embedded broker, sealed
//! envelopes, the mqtt task) and what reaches the site: announcements of thousands of
//! sockets arrive trimmed to dialable ones, and a burst of future-dated messages does not
//! make the channel refuse the legitimate messages that follow.

// The whole crate is test code; clippy's allow-unwrap-in-tests only covers
// `#[test]` functions, not the helpers below.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wovenet_daemon::config::{BrokerUrl, CryptoKey, MqttConfig, SiteName};
use wovenet_daemon::counters::Counters;
use wovenet_daemon::crypto::Keys;
use wovenet_daemon::identity::SiteKey;
use wovenet_daemon::message::announce::{self, Announce, AnnouncedSocket, PROTOCOL_VERSION, Query};
use wovenet_daemon::message::mqtt::Credentials;
use wovenet_daemon::message::{
    EmbeddedBroker, Inbound, InstanceId, Message, MessageChannel, broker, envelope,
};

const WAIT: Duration = Duration::from_secs(30);

fn keys() -> Arc<Keys> {
    Arc::new(Keys::derive(
        &CryptoKey::new("hostile messages test key").unwrap(),
    ))
}

/// The attacker's own identity: a key holder signs with its own key.
fn attacker_id() -> SiteKey {
    SiteKey::generate().expect("key")
}

async fn start_broker() -> EmbeddedBroker {
    tokio::task::spawn_blocking(|| broker::start("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap()
        .unwrap()
}

/// A host-local broker (loopback peers allowed), as in the demo and the e2e tests.
fn config(port: u16) -> MqttConfig {
    MqttConfig {
        broker: BrokerUrl {
            tls: false,
            host: "127.0.0.1".into(),
            port,
        },
        topic: Some(format!("wovenet-test/{}", InstanceId::new_random())),
        username: None,
        password: None,
        embedded_broker: None,
        ca_file: None,
    }
}

/// The site's side: a real message channel and what it delivers.
struct Victim {
    channel: MessageChannel,
    rx: mpsc::Receiver<Inbound>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Victim {
    async fn ready(cfg: &MqttConfig, keys: Arc<Keys>) -> Self {
        let counters = Arc::new(Counters::default());
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (channel, mut rx) = MessageChannel::spawn(
            cfg,
            SiteName::new("victim").unwrap(),
            InstanceId::new_random(),
            Credentials {
                keys,
                identity: Arc::new(SiteKey::generate().unwrap()),
            },
            Arc::clone(&counters),
            shutdown.clone(),
            &tracker,
        )
        .unwrap();
        let got = tokio::time::timeout(WAIT, rx.recv()).await;
        assert!(matches!(got, Ok(Some(Inbound::Connected))), "{got:?}");
        Self {
            channel,
            rx,
            counters,
            shutdown,
            tracker,
        }
    }

    /// Drains delivered messages until one from `site` arrives.
    async fn message_from(&mut self, site: &str) -> Message {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Inbound::Message(m, _))) if m.site().as_str() == site => return m,
                Ok(Some(_)) => {}
                other => panic!(
                    "no message from {site}: {other:?}; counters {:?}",
                    self.counters
                ),
            }
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(WAIT, self.tracker.wait())
            .await
            .expect("mqtt task ends promptly on shutdown");
    }
}

/// A key holder publishing hand-sealed payloads (any send time it likes).
async fn attacker(port: u16) -> AsyncClient {
    let mut opts = MqttOptions::new(
        format!("mallory-{}", &InstanceId::new_random().to_string()[..8]),
        "127.0.0.1",
        port,
    );
    opts.set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(256 * 1024, 256 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    client
}

fn query(site: &str) -> Message {
    Message::Query(Query {
        site: SiteName::new(site).unwrap(),
        instance: InstanceId::new_random(),
    })
}

/// Regression: every socket of an announcement became a UDP socket and a dial loop, however
/// many there were and whatever they pointed at. Through the real channel, 1000 sockets
/// (some of them unusable) arrive as the first 16 usable ones, and the rest are counted.
#[tokio::test]
async fn an_announcement_of_a_thousand_sockets_reaches_the_site_with_sixteen() {
    let broker = start_broker().await;
    let cfg = config(broker.local_addr().port());
    let keys = keys();
    let mut victim = Victim::ready(&cfg, Arc::clone(&keys)).await;
    let mallory = attacker(broker.local_addr().port()).await;

    let mut sockets: Vec<AnnouncedSocket> = [
        "224.0.0.251:5353",
        "255.255.255.255:4000",
        "0.0.0.0:4000",
        "127.0.0.1:0",
    ]
    .iter()
    .zip(0..)
    .map(|(a, id)| AnnouncedSocket {
        id,
        addr: a.parse().unwrap(),
        punch: None,
        transport: announce::AnnouncedTransport::Quic,
    })
    .collect();
    sockets.extend((0..1000u16).map(|i| AnnouncedSocket {
        id: 10 + u32::from(i),
        addr: SocketAddr::from(([127, 0, 0, 1], 20_000 + i)),
        punch: None,
        transport: announce::AnnouncedTransport::Quic,
    }));
    let announcement = Message::Announce(Announce {
        site: SiteName::new("mallory").unwrap(),
        instance: InstanceId::new_random(),
        protocol_version: PROTOCOL_VERSION,
        seq: 1,
        sockets,
        apps: vec![],
        cert_sha256: "ab".repeat(32),
        reply: false,
        epoch: 0,
    });
    let topic = victim.channel.broadcast_topic().to_owned();
    let sealed = envelope::seal(
        &keys,
        &attacker_id(),
        &topic,
        &announce::encode(&announcement),
        SystemTime::now(),
    );
    mallory
        .publish(&topic, QoS::AtLeastOnce, false, sealed)
        .await
        .unwrap();

    let Message::Announce(got) = victim.message_from("mallory").await else {
        panic!("not an announcement");
    };
    let kept: Vec<(u32, SocketAddr)> = got.sockets.iter().map(|s| (s.id, s.addr)).collect();
    let want: Vec<(u32, SocketAddr)> = (0..16u16)
        .map(|i| {
            (
                10 + u32::from(i),
                SocketAddr::from(([127, 0, 0, 1], 20_000 + i)),
            )
        })
        .collect();
    assert_eq!(kept, want);
    assert_eq!(
        victim
            .counters
            .announced_sockets_dropped
            .load(Ordering::Relaxed),
        1004 - 16
    );
    victim.stop().await;
}

/// Regression: a burst of messages dated up to 120 s ahead filled the replay window and
/// raised its floor above the present, so the channel refused every legitimate message
/// for minutes (on every site at once: the burst is a broadcast).
#[tokio::test]
async fn a_burst_of_future_dated_messages_does_not_block_the_next_legitimate_one() {
    const BURST: usize = 5_000;
    let broker = start_broker().await;
    let cfg = config(broker.local_addr().port());
    let keys = keys();
    let mut victim = Victim::ready(&cfg, Arc::clone(&keys)).await;
    let mallory = attacker(broker.local_addr().port()).await;
    let topic = victim.channel.broadcast_topic().to_owned();

    // Dated 9.5 s ahead: inside the tolerated skew, so each one is judged on the window.
    let ahead = SystemTime::now() + Duration::from_millis(9_500);
    let burst = tokio::spawn({
        let (keys, topic, mallory) = (Arc::clone(&keys), topic.clone(), mallory.clone());
        async move {
            for _ in 0..BURST {
                let body = announce::encode(&query("mallory"));
                let sealed = envelope::seal(&keys, &attacker_id(), &topic, &body, ahead);
                mallory
                    .publish(&topic, QoS::AtLeastOnce, false, sealed)
                    .await
                    .unwrap();
            }
        }
    });
    // Keep draining while the burst goes in, so the channel is never held up by us.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !burst.is_finished() {
        let _ = tokio::time::timeout(Duration::from_millis(50), victim.rx.recv()).await;
        assert!(tokio::time::Instant::now() < deadline, "burst too slow");
    }
    burst.await.unwrap();
    // Wait until the victim has judged the whole burst.
    let judged = |c: &Counters| {
        c.messages_received.load(Ordering::Relaxed) + c.messages_stale.load(Ordering::Relaxed)
    };
    while judged(&victim.counters) < BURST as u64 {
        let _ = tokio::time::timeout(Duration::from_millis(50), victim.rx.recv()).await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "burst not judged: {:?}",
            victim.counters
        );
    }

    let body = announce::encode(&query("legit"));
    let sealed = envelope::seal(&keys, &attacker_id(), &topic, &body, SystemTime::now());
    mallory
        .publish(&topic, QoS::AtLeastOnce, false, sealed)
        .await
        .unwrap();
    victim.message_from("legit").await;
    victim.stop().await;
}
