//! TLS identities and configs for dataChannels.
//!
//! Each daemon instance makes a fresh self-signed certificate at start and
//! announces its SHA-256 over the sealed message channel. Dialers pin that
//! fingerprint: the server must present exactly that certificate *and* sign
//! the handshake with its key (checked with rustls' own TLS 1.3 signature
//! verification). Dialers present the same certificate as a client
//! certificate (mutual TLS): the listener accepts any certificate but checks
//! the handshake signature, so [`peer_fingerprint`] names a certificate the
//! dialer holds the key of, and the site can match it against the one that
//! instance announced. There is no CA and no verification bypass; who may
//! use a channel at all is decided afterwards by the key proof in
//! [`super::auth`].

use std::fmt;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

use super::TunnelError;

/// ALPN of dataChannels; bumped with incompatible wire changes.
pub const ALPN: &[u8] = b"wovenet/1";
/// Server name used in the handshake (the certificate's only SAN).
pub const SERVER_NAME: &str = "wovenet";

/// SHA-256 of a DER certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Fingerprint of `der`.
    pub fn of(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// Parses the lowercase hex form used in announcements.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// This instance's certificate and key.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    fingerprint: Fingerprint,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh self-signed certificate for this process.
    pub fn generate() -> Result<Self, TunnelError> {
        let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
            .map_err(|e| TunnelError::Tls(format!("cannot generate certificate: {e}")))?;
        let cert = ck.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
        let fingerprint = Fingerprint::of(&cert);
        Ok(Self {
            cert,
            key,
            fingerprint,
        })
    }

    /// What peers pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Server side of every local socket.
    pub fn server_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ServerConfig, TunnelError> {
        let provider = provider();
        let verifier = Arc::new(SelfSignedClient {
            algorithms: provider.signature_verification_algorithms,
        });
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TunnelError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .map_err(|e| TunnelError::Tls(e.to_string()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicServerConfig::try_from(tls).map_err(|e| TunnelError::Tls(e.to_string()))?;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
        cfg.transport_config(transport);
        Ok(cfg)
    }
}

/// Client config that accepts only the server certificate with `pinned` and
/// presents `identity` as the client certificate.
pub fn client_config(
    identity: &Identity,
    pinned: Fingerprint,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, TunnelError> {
    let provider = provider();
    let verifier = Arc::new(PinnedVerifier {
        pinned,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TunnelError::Tls(e.to_string()))?
        .dangerous() // a custom verifier, not a bypass: see PinnedVerifier
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(
            vec![identity.cert.clone()],
            PrivateKeyDer::Pkcs8(identity.key.clone_key()),
        )
        .map_err(|e| TunnelError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| TunnelError::Tls(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport);
    Ok(cfg)
}

/// SHA-256 of the certificate the peer of `conn` presented (the server's on
/// a dialled connection, the client's on an accepted one).
pub fn peer_fingerprint(conn: &quinn::Connection) -> Option<Fingerprint> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    certs.first().map(|c| Fingerprint::of(c))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Both verifiers' answer to a TLS 1.2 signature: only TLS 1.3 is offered
/// (QUIC requires it).
fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

/// Accepts exactly one certificate (by SHA-256) and verifies the handshake
/// signature against it, so a man in the middle without the private key of
/// the announced certificate cannot complete the handshake.
#[derive(Debug)]
struct PinnedVerifier {
    pinned: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Fingerprint::of(end_entity) == self.pinned {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Requires a client certificate and accepts any (every instance's is
/// self-signed and there is no CA), but verifies the TLS 1.3 handshake
/// signature against it: the dialer holds the key of the certificate it
/// presents. Whether that certificate is the one its instance announced is
/// the site's decision.
#[derive(Debug)]
struct SelfSignedClient {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for SelfSignedClient {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport() -> Arc<quinn::TransportConfig> {
        Arc::new(quinn::TransportConfig::default())
    }

    /// Connects a client with `client` to a listener of `server`; returns
    /// what the listener saw (the client's certificate) or the error.
    async fn handshake(
        server: &Identity,
        client: quinn::ClientConfig,
    ) -> Result<Option<Fingerprint>, String> {
        let listener = quinn::Endpoint::server(
            server.server_config(transport()).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let addr = listener.local_addr().unwrap();
        let mut dialer = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        dialer.set_default_client_config(client);
        let accept = async {
            let incoming = listener.accept().await.ok_or("no incoming")?;
            let conn = incoming.await.map_err(|e| e.to_string())?;
            Ok::<_, String>(peer_fingerprint(&conn))
        };
        let connect = async {
            let conn = dialer
                .connect(addr, SERVER_NAME)
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            // Keep it open until the listener is done with its side.
            Ok::<_, String>(conn)
        };
        let both = async { tokio::join!(accept, connect) };
        let (seen, conn) = tokio::time::timeout(std::time::Duration::from_secs(5), both)
            .await
            .map_err(|_| "handshake timed out".to_string())?;
        let conn = conn?;
        assert_eq!(peer_fingerprint(&conn), Some(server.fingerprint()));
        seen
    }

    #[tokio::test]
    async fn the_listener_learns_the_certificate_the_dialer_proved_it_holds() {
        let (server, client) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let cfg = client_config(&client, server.fingerprint(), transport()).unwrap();
        assert_eq!(
            handshake(&server, cfg).await.unwrap(),
            Some(client.fingerprint())
        );
    }

    #[tokio::test]
    async fn a_dialer_without_a_client_certificate_is_refused() {
        let server = Identity::generate().unwrap();
        let provider = provider();
        let verifier = Arc::new(PinnedVerifier {
            pinned: server.fingerprint(),
            algorithms: provider.signature_verification_algorithms,
        });
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let cfg = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
        assert!(handshake(&server, cfg).await.is_err());
    }

    #[tokio::test]
    async fn a_dialer_presenting_a_certificate_whose_key_it_lacks_is_refused() {
        let server = Identity::generate().unwrap();
        let (victim, thief) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        // The thief presents the victim's (public) certificate but can only
        // sign with its own key.
        let stolen = Identity {
            cert: victim.cert.clone(),
            key: thief.key.clone_key(),
            fingerprint: victim.fingerprint(),
        };
        match client_config(&stolen, server.fingerprint(), transport()) {
            Err(_) => {} // rustls noticed the mismatch up front
            Ok(cfg) => assert!(handshake(&server, cfg).await.is_err()),
        }
    }
}
