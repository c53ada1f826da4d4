//! An MQTT 3.1.1 broker inside the daemon (`messageChannel.embeddedBroker`).
//!
//! Wraps rumqttd, configured in code, on its own OS threads (rumqttd runs one
//! router thread and one thread per listener, each with its own runtime).
//! [`start`] returns only once the broker answers an MQTT handshake, or fails
//! naming the address. rumqttd has no graceful stop: its threads live until
//! the process exits, so a daemon starts at most one broker per address.
//! rumqttd logs through `tracing` under the `rumqttd` target, at `error` even
//! for ordinary client disconnects; the telemetry filter is expected to quiet
//! that target. This module must not carry any wovenet logic: the broker only
//! ever sees sealed payloads.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use super::MessageError;

/// Largest MQTT packet a client may send (a ~64 KiB payload plus topic).
pub const MAX_PACKET: usize = 72 * 1024;
/// Concurrent client connections.
const MAX_CONNECTIONS: usize = 1024;
/// How long [`start`] waits for the broker to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// A running embedded broker. Dropping it does not stop the broker (see the
/// module docs); keep it for its address.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    _thread: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// The address the broker listens on (with the real port if `:0` was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Starts a broker listening on `listen` and waits until it accepts MQTT clients.
///
/// Port 0 picks a free port (reported by [`EmbeddedBroker::local_addr`]).
/// Blocks the calling thread for up to a few seconds; async callers should use
/// `spawn_blocking`.
pub fn start(listen: SocketAddr) -> Result<EmbeddedBroker, MessageError> {
    // rumqttd binds inside its own thread and only logs a failure, so find
    // out here, with a proper error, whether the address can be bound.
    let addr = TcpListener::bind(listen)
        .and_then(|l| l.local_addr())
        .map_err(|source| MessageError::BrokerBind {
            addr: listen,
            source,
        })?;
    let config = broker_config(addr);
    let thread = thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(mqtt.listen = %addr, error = %e, "embedded mqtt broker stopped");
            }
        })
        .map_err(|e| MessageError::BrokerStart {
            addr: listen,
            reason: format!("cannot spawn thread: {e}"),
        })?;

    let probe_addr = SocketAddr::new(connectable(addr.ip()), addr.port());
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if thread.is_finished() {
            return Err(MessageError::BrokerStart {
                addr: listen,
                reason: "broker thread exited".into(),
            });
        }
        let Err(e) = probe(probe_addr) else {
            break;
        };
        if Instant::now() >= deadline {
            return Err(MessageError::BrokerStart {
                addr: listen,
                reason: format!("not answering after {READY_TIMEOUT:?}: {e}"),
            });
        }
        thread::sleep(Duration::from_millis(20));
    }
    tracing::info!(mqtt.listen = %addr, "embedded mqtt broker listening");
    Ok(EmbeddedBroker {
        addr,
        _thread: thread,
    })
}

fn broker_config(addr: SocketAddr) -> Config {
    let server = ServerSettings {
        name: "wovenet-embedded".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 5_000,
            max_payload_size: MAX_PACKET,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: MAX_CONNECTIONS,
            max_outgoing_packet_count: 200,
            // Per-topic commit log: discovery traffic is tiny, keep memory small.
            max_segment_size: 1024 * 1024,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Config::default()
    }
}

/// Where to dial a listener bound to `ip` (loopback for unspecified addresses).
fn connectable(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// A minimal MQTT 3.1.1 session: CONNECT, expect a successful CONNACK, DISCONNECT.
/// Proves the broker is serving MQTT, not merely that the port is open.
fn probe(addr: SocketAddr) -> std::io::Result<()> {
    const CLIENT_ID: &[u8] = b"wovenet-probe";
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    let mut connect = vec![0x10, 0];
    connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10]);
    connect.extend_from_slice(&[0, CLIENT_ID.len() as u8]);
    connect.extend_from_slice(CLIENT_ID);
    connect[1] = (connect.len() - 2) as u8;
    stream.write_all(&connect)?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    if connack != [0x20, 0x02, 0x00, 0x00] {
        return Err(std::io::Error::other(format!(
            "unexpected CONNACK {connack:02x?}"
        )));
    }
    stream.write_all(&[0xe0, 0x00])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_on_port_zero_reports_a_real_port_and_answers() {
        let broker = start("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(broker.local_addr().port(), 0);
        probe(broker.local_addr()).unwrap();
    }

    #[test]
    fn busy_port_is_an_error_naming_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = start(addr).unwrap_err();
        assert!(matches!(err, MessageError::BrokerBind { .. }), "{err}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        assert_eq!(
            connectable("0.0.0.0".parse().unwrap()),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            connectable("::".parse().unwrap()),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
    }
}
