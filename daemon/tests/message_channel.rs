//! The sealed MQTT message channel against a real embedded broker: delivery,
//! key separation, hostile payloads, departure, last will, reconnects and TLS.

// The whole crate is test code; clippy's allow-unwrap-in-tests only covers
// `#[test]` functions, not the harness helpers below.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use rumqttc::tokio_rustls::{TlsAcceptor, rustls};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wovenet_daemon::config::{BrokerUrl, CryptoKey, MqttConfig, SiteName};
use wovenet_daemon::counters::Counters;
use wovenet_daemon::crypto::Keys;
use wovenet_daemon::identity::SiteKey;
use wovenet_daemon::message::announce::{Announce, AnnouncedSocket, PROTOCOL_VERSION, Query};
use wovenet_daemon::message::mqtt::Credentials;
use wovenet_daemon::message::{
    BrokerState, EmbeddedBroker, Inbound, InstanceId, Message, MessageChannel, MessageError,
    broker, envelope,
};

const WAIT: Duration = Duration::from_secs(10);

fn keys_a() -> Arc<Keys> {
    static K: OnceLock<Arc<Keys>> = OnceLock::new();
    K.get_or_init(|| Arc::new(Keys::derive(&CryptoKey::new("shared passphrase").unwrap())))
        .clone()
}

fn keys_b() -> Arc<Keys> {
    static K: OnceLock<Arc<Keys>> = OnceLock::new();
    K.get_or_init(|| Arc::new(Keys::derive(&CryptoKey::new("some other secret").unwrap())))
        .clone()
}

async fn start_broker() -> EmbeddedBroker {
    tokio::task::spawn_blocking(|| broker::start("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap()
        .unwrap()
}

fn config(host: &str, port: u16, topic: Option<&str>) -> MqttConfig {
    MqttConfig {
        broker: BrokerUrl {
            tls: false,
            host: host.into(),
            port,
        },
        topic: topic.map(Into::into),
        username: None,
        password: None,
        embedded_broker: None,
        ca_file: None,
    }
}

/// One running message channel with everything a test inspects.
struct Node {
    channel: MessageChannel,
    rx: mpsc::Receiver<Inbound>,
    counters: Arc<Counters>,
    site: SiteName,
    instance: InstanceId,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Node {
    fn spawn(cfg: &MqttConfig, keys: Arc<Keys>, site: &str) -> Self {
        let site = SiteName::new(site).unwrap();
        let instance = InstanceId::new_random();
        let counters = Arc::new(Counters::default());
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (channel, rx) = MessageChannel::spawn(
            cfg,
            site.clone(),
            instance,
            Credentials {
                keys,
                identity: Arc::new(SiteKey::generate().unwrap()),
            },
            Arc::clone(&counters),
            shutdown.clone(),
            &tracker,
        )
        .unwrap();
        Self {
            channel,
            rx,
            counters,
            site,
            instance,
            shutdown,
            tracker,
        }
    }

    /// Spawns and waits until connected and subscribed.
    async fn ready(cfg: &MqttConfig, keys: Arc<Keys>, site: &str) -> Self {
        let mut node = Self::spawn(cfg, keys, site);
        node.expect_connected().await;
        node
    }

    async fn expect_connected(&mut self) {
        let got = tokio::time::timeout(WAIT, self.rx.recv()).await;
        assert!(
            matches!(got, Ok(Some(Inbound::Connected))),
            "expected Connected, got {got:?}"
        );
        assert_eq!(*self.channel.state().borrow(), BrokerState::Connected);
    }

    /// The next message (skipping reconnect notices).
    async fn next_message(&mut self) -> Message {
        loop {
            match tokio::time::timeout(WAIT, self.rx.recv()).await {
                Ok(Some(Inbound::Message(m, _))) => return m,
                Ok(Some(Inbound::Connected)) => {}
                other => panic!("no message: {other:?}"),
            }
        }
    }

    /// Asserts nothing arrives for a short while.
    async fn expect_silence(&mut self) {
        if let Ok(got) = tokio::time::timeout(Duration::from_millis(300), self.rx.recv()).await {
            panic!("expected silence, got {got:?}");
        }
    }

    fn announce(&self, seq: u64, reply: bool) -> Message {
        Message::Announce(Announce {
            site: self.site.clone(),
            instance: self.instance,
            protocol_version: PROTOCOL_VERSION,
            seq,
            sockets: vec![AnnouncedSocket {
                id: 0,
                addr: "198.51.100.1:29090".parse().unwrap(),
                punch: None,
                transport: wovenet_daemon::message::announce::AnnouncedTransport::Quic,
            }],
            apps: vec![],
            cert_sha256: "ab".repeat(32),
            reply,
            // What the channel stamps on publishing.
            epoch: self.channel.epoch(),
        })
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(WAIT, self.tracker.wait())
            .await
            .expect("mqtt task ends promptly on shutdown");
    }
}

async fn eventually(counter: &AtomicU64, at_least: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while counter.load(Ordering::Relaxed) < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "counter stuck at {}, wanted {at_least}",
            counter.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain rumqttc client, polled in the background; yields received publishes.
async fn raw_client(
    port: u16,
    subscribe: &str,
) -> (AsyncClient, mpsc::Receiver<(String, Vec<u8>)>) {
    let mut opts = MqttOptions::new(format!("raw-{}", rand_suffix()), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let (tx, rx) = mpsc::channel(16);
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    client.subscribe(subscribe, QoS::AtLeastOnce).await.unwrap();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            match event {
                Event::Incoming(Incoming::SubAck(_)) => {
                    if let Some(s) = subscribed_tx.take() {
                        let _ = s.send(());
                    }
                }
                Event::Incoming(Incoming::Publish(p)) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec())).await;
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(WAIT, subscribed_rx)
        .await
        .unwrap()
        .unwrap();
    (client, rx)
}

fn rand_suffix() -> String {
    InstanceId::new_random().to_string()[..8].to_string()
}

#[tokio::test]
async fn channels_with_the_same_key_exchange_broadcast_and_unicast() {
    let broker = start_broker().await;
    let cfg = config("127.0.0.1", broker.local_addr().port(), None);
    let mut a = Node::ready(&cfg, keys_a(), "site-a").await;
    let mut b = Node::ready(&cfg, keys_a(), "site-b").await;
    assert_eq!(a.channel.broadcast_topic(), keys_a().derived_topic());

    a.channel.broadcast(&a.announce(1, true)).await.unwrap();
    assert_eq!(b.next_message().await, a.announce(1, true));
    // The sender never hears itself.
    a.expect_silence().await;

    b.channel
        .unicast(&a.instance, &b.announce(4, false))
        .await
        .unwrap();
    assert_eq!(a.next_message().await, b.announce(4, false));

    let query = Message::Query(Query {
        site: b.site.clone(),
        instance: b.instance,
    });
    b.channel.unicast(&a.instance, &query).await.unwrap();
    assert_eq!(a.next_message().await, query);
    // A unicast reaches only its addressee.
    b.expect_silence().await;

    assert_eq!(a.counters.messages_received.load(Ordering::Relaxed), 2);
    assert_eq!(b.counters.messages_received.load(Ordering::Relaxed), 1);
    assert_eq!(a.counters.messages_undecryptable.load(Ordering::Relaxed), 0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn channel_with_another_key_is_dropped_and_counted_both_ways() {
    let broker = start_broker().await;
    let cfg = config(
        "127.0.0.1",
        broker.local_addr().port(),
        Some("wovenet/shared"),
    );
    let mut a = Node::ready(&cfg, keys_a(), "site-a").await;
    let mut b = Node::ready(&cfg, keys_a(), "site-b").await;
    let mut c = Node::ready(&cfg, keys_b(), "site-c").await;

    c.channel.broadcast(&c.announce(1, true)).await.unwrap();
    eventually(&a.counters.messages_undecryptable, 1).await;
    eventually(&b.counters.messages_undecryptable, 1).await;
    a.expect_silence().await;

    a.channel.broadcast(&a.announce(1, false)).await.unwrap();
    assert_eq!(b.next_message().await, a.announce(1, false));
    eventually(&c.counters.messages_undecryptable, 1).await;
    c.expect_silence().await;
    assert_eq!(c.counters.messages_received.load(Ordering::Relaxed), 0);
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test]
async fn garbage_and_replayed_payloads_are_dropped_and_counted() {
    let broker = start_broker().await;
    let port = broker.local_addr().port();
    let cfg = config("127.0.0.1", port, None);
    let a = Node::ready(&cfg, keys_a(), "site-a").await;
    let mut b = Node::ready(&cfg, keys_a(), "site-b").await;
    let topic = a.channel.broadcast_topic().to_owned();
    let (raw, mut captured) = raw_client(port, &topic).await;

    // Garbage of every shape: empty, short, wrong version, random ciphertext.
    let mut forged = vec![envelope::VERSION];
    forged.extend_from_slice(&[0x5a; 100]);
    for payload in [vec![], vec![1, 2, 3], vec![9; 80], forged] {
        raw.publish(&topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    eventually(&b.counters.messages_undecryptable, 4).await;
    eventually(&a.counters.messages_undecryptable, 4).await;
    // Our own garbage comes back to the raw client; skip it.
    for _ in 0..4 {
        tokio::time::timeout(WAIT, captured.recv())
            .await
            .unwrap()
            .unwrap();
    }

    // A correctly sealed body that is not a message counts as malformed.
    let sealed = envelope::seal(
        &keys_a(),
        &SiteKey::generate().unwrap(),
        &topic,
        b"{\"type\":\"teleport\"}",
        SystemTime::now(),
    );
    raw.publish(&topic, QoS::AtLeastOnce, false, sealed)
        .await
        .unwrap();
    eventually(&b.counters.messages_malformed, 1).await;
    tokio::time::timeout(WAIT, captured.recv())
        .await
        .unwrap()
        .unwrap();

    // Capture a genuine announce and replay it.
    a.channel.broadcast(&a.announce(1, false)).await.unwrap();
    assert_eq!(b.next_message().await, a.announce(1, false));
    let (_, payload) = tokio::time::timeout(WAIT, captured.recv())
        .await
        .unwrap()
        .unwrap();
    raw.publish(&topic, QoS::AtLeastOnce, false, payload.clone())
        .await
        .unwrap();
    eventually(&b.counters.messages_stale, 1).await;
    // Moved to b's unicast topic, the same bytes no longer authenticate.
    let unicast = format!("{topic}/i/{}", b.instance);
    raw.publish(&unicast, QoS::AtLeastOnce, false, payload)
        .await
        .unwrap();
    eventually(&b.counters.messages_undecryptable, 5).await;
    b.expect_silence().await;

    // The channel still works afterwards.
    a.channel.broadcast(&a.announce(2, false)).await.unwrap();
    assert_eq!(b.next_message().await, a.announce(2, false));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn depart_reaches_peers_and_closes_the_channel() {
    let broker = start_broker().await;
    let cfg = config("127.0.0.1", broker.local_addr().port(), None);
    let a = Node::ready(&cfg, keys_a(), "site-a").await;
    let mut b = Node::ready(&cfg, keys_a(), "site-b").await;

    tokio::time::timeout(WAIT, a.channel.depart())
        .await
        .unwrap();
    let Message::Depart(d) = b.next_message().await else {
        panic!("expected depart");
    };
    assert_eq!((d.site, d.instance), (a.site.clone(), a.instance));
    assert!(matches!(
        a.channel.broadcast(&a.announce(2, false)).await,
        Err(MessageError::Closed)
    ));
    // A clean disconnect does not also fire the last will.
    b.expect_silence().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn vanished_connection_fires_the_sealed_last_will() {
    let broker = start_broker().await;
    let cfg = config("127.0.0.1", broker.local_addr().port(), None);
    let a = Node::ready(&cfg, keys_a(), "site-a").await;
    let mut b = Node::ready(&cfg, keys_a(), "site-b").await;
    let (site, instance) = (a.site.clone(), a.instance);

    // Shutdown without `depart` drops the TCP connection without DISCONNECT.
    a.stop().await;
    let Message::Depart(d) = b.next_message().await else {
        panic!("expected the will");
    };
    assert_eq!((d.site, d.instance), (site, instance));
    b.stop().await;
}

/// A TCP proxy in front of the broker whose connections can be cut.
struct Proxy {
    port: u16,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_rx) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut_rx = cut_rx.clone();
                cut_rx.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Self { port, cut }
    }

    fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test]
async fn lost_broker_connection_reconnects_and_asks_for_reannounce() {
    let broker = start_broker().await;
    let proxy = Proxy::start(broker.local_addr()).await;
    let mut a = Node::ready(&config("127.0.0.1", proxy.port, None), keys_a(), "site-a").await;
    let mut b = Node::ready(
        &config("127.0.0.1", broker.local_addr().port(), None),
        keys_a(),
        "site-b",
    )
    .await;
    let mut state = a.channel.state();

    proxy.cut_all();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, BrokerState::Reconnecting { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    // Reconnected and resubscribed: the site is told to announce again.
    a.expect_connected().await;
    // The cut connection's will reaches b (the broker saw no DISCONNECT),
    // carrying the epoch of that connection; what a announces on the new
    // connection carries a higher one, so receivers can tell the will is
    // older than the announcement (and ignore a replay of it).
    let Message::Depart(will) = b.next_message().await else {
        panic!("expected the will of the cut connection");
    };
    assert_eq!(will.epoch, 1);
    a.channel.broadcast(&a.announce(2, false)).await.unwrap();
    let Message::Announce(after) = b.next_message().await else {
        panic!("expected the announcement");
    };
    assert!(after.epoch > will.epoch, "{} > {}", after.epoch, will.epoch);
    assert_eq!(Message::Announce(after), a.announce(2, false));
    b.channel
        .unicast(&a.instance, &b.announce(1, false))
        .await
        .unwrap();
    assert_eq!(a.next_message().await, b.announce(1, false));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn unreachable_broker_is_reported_and_shutdown_stays_prompt() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let a = Node::spawn(&config("127.0.0.1", port, None), keys_a(), "site-a");
    let mut state = a.channel.state();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, BrokerState::Reconnecting { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    a.stop().await;
}

/// A TLS terminator for `localhost` in front of the plain broker.
async fn tls_front(upstream: SocketAddr, dir: &std::path::Path) -> (u16, std::path::PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, certified.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    (port, ca_path)
}

#[tokio::test]
async fn mqtts_broker_is_trusted_through_the_extra_ca_file() {
    let broker = start_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let (tls_port, ca_path) = tls_front(broker.local_addr(), dir.path()).await;
    let mut cfg = config("localhost", tls_port, None);
    cfg.broker.tls = true;
    cfg.ca_file = Some(ca_path);
    let mut a = Node::ready(&cfg, keys_a(), "site-a").await;
    let mut b = Node::ready(
        &config("127.0.0.1", broker.local_addr().port(), None),
        keys_a(),
        "site-b",
    )
    .await;
    a.channel.broadcast(&a.announce(1, false)).await.unwrap();
    assert_eq!(b.next_message().await, a.announce(1, false));
    b.channel.broadcast(&b.announce(1, false)).await.unwrap();
    assert_eq!(a.next_message().await, b.announce(1, false));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn mqtts_broker_with_untrusted_or_misnamed_certificate_is_refused() {
    let broker = start_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let (tls_port, ca_path) = tls_front(broker.local_addr(), dir.path()).await;

    // Without the CA the self-signed certificate is not trusted.
    let mut untrusted = config("localhost", tls_port, None);
    untrusted.broker.tls = true;
    // With the CA but dialled by a name the certificate does not carry.
    let mut misnamed = config("127.0.0.1", tls_port, None);
    misnamed.broker.tls = true;
    misnamed.ca_file = Some(ca_path);

    for cfg in [untrusted, misnamed] {
        let a = Node::spawn(&cfg, keys_a(), "site-a");
        let mut state = a.channel.state();
        let reason = tokio::time::timeout(
            WAIT,
            state.wait_for(|s| matches!(s, BrokerState::Reconnecting { .. })),
        )
        .await
        .unwrap()
        .unwrap()
        .clone();
        let BrokerState::Reconnecting { reason } = reason else {
            unreachable!()
        };
        assert!(reason.to_lowercase().contains("certificate"), "{reason}");
        a.stop().await;
    }
}
