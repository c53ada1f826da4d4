//! Fixtures shared by the daemon's tunnel-level integration tests: one site's
//! tunnel manager over real quinn endpoints on loopback, without discovery.
//! Each test binary compiles this module and uses part of it.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part
#![allow(clippy::unwrap_used)] // test code

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wovenet_daemon::app::{ExposedApps, ExposedServer, StreamRegistry};
use wovenet_daemon::config::{
    CongestionControl, CryptoKey, ExposedApp, LocalSocket, PublicAddress, SiteName, SocketMode,
    Transport,
};
use wovenet_daemon::counters::Counters;
use wovenet_daemon::crypto::Keys;
use wovenet_daemon::message::announce::{InstanceId, LoopbackPeers};
use wovenet_daemon::tunnel::auth::PeerId;
use wovenet_daemon::tunnel::{Setup, TunnelEvent, Tunnels};

/// The passphrase every test site shares.
pub const SHARED_KEY: &str = "the-shared-key";

/// Keys derived from `passphrase`, once per passphrase (Argon2id is slow).
pub fn keys(passphrase: &str) -> Arc<Keys> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Keys>>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Mutex::default).lock().unwrap();
    cache
        .entry(passphrase.to_owned())
        .or_insert_with(|| Arc::new(Keys::derive(&CryptoKey::new(passphrase).unwrap())))
        .clone()
}

/// One site's tunnel manager and what the tests watch of it.
pub struct Side {
    pub tunnels: Tunnels,
    pub id: PeerId,
    pub events: mpsc::Receiver<TunnelEvent>,
    pub counters: Arc<Counters>,
    pub cancel: CancellationToken,
}

impl Side {
    /// Site `name` holding `passphrase`, exposing `apps`.
    pub fn new(name: &str, passphrase: &str, apps: Vec<ExposedApp>) -> Self {
        let (tx, events) = mpsc::channel(256);
        let counters = Arc::new(Counters::default());
        let cancel = CancellationToken::new();
        let id = PeerId {
            site: SiteName::new(name).unwrap(),
            instance: InstanceId::new_random(),
        };
        let server = ExposedServer::new(
            Arc::new(ExposedApps::new(apps)),
            counters.clone(),
            Arc::new(StreamRegistry::new(Arc::default())),
            cancel.clone(),
        );
        let tunnels = Tunnels::new(
            Setup {
                me: id.clone(),
                keys: keys(passphrase),
                congestion: CongestionControl::Cubic,
                server: Arc::new(server),
                counters: counters.clone(),
                events_tx: tx,
                loopback: LoopbackPeers::Allowed,
                relay: None,
            },
            cancel.clone(),
            TaskTracker::new(),
        )
        .unwrap();
        Self {
            tunnels,
            id,
            events,
            counters,
            cancel,
        }
    }

    /// Listens on a loopback port; returns it.
    pub fn listen(&self) -> SocketAddr {
        self.tunnels
            .listen(
                0,
                &LocalSocket {
                    mode: SocketMode::DedicatedAddress,
                    public_address: PublicAddress::Fixed("127.0.0.1".parse().unwrap()),
                    public_port: 0,
                    listen: "127.0.0.1:0".parse().unwrap(),
                    stun_servers: Vec::new(),
                    transport: Transport::Quic,
                },
            )
            .unwrap()
    }
}

/// A TCP echo server (copies until EOF); returns its address.
pub async fn echo_server() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A QUIC server endpoint and a client endpoint on loopback, both with `transport`; the
/// client trusts the server's fresh self-signed certificate for the name `far.test`. For
/// tests that drive streams between two plain quinn endpoints (no key proof).
pub fn endpoint_pair(transport: quinn::TransportConfig) -> (quinn::Endpoint, quinn::Endpoint) {
    use quinn::crypto::rustls::QuicClientConfig;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let cert = rcgen::generate_simple_self_signed(vec!["far.test".to_owned()]).unwrap();
    let cert_der: CertificateDer<'static> = cert.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let transport = Arc::new(transport);
    let mut server_config =
        quinn::ServerConfig::with_single_cert(vec![cert_der.clone()], key).unwrap();
    server_config.transport_config(transport.clone());
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut client_config =
        quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
    client_config.transport_config(transport);
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(client_config);
    (server, client)
}
