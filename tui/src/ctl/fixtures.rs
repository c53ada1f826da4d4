//! Hand-made proto messages for the formatting tests: one of each, with values that make
//! units and alignment visible. Test-only.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use wovenet_proto::v1::{self as pb, event, watch_events_response};

/// 2024-05-01T10:00:00Z.
pub(crate) const T0: i64 = 1_714_557_600;

pub(crate) fn at(seconds: i64, millis: i32) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds,
        nanos: millis * 1_000_000,
    }
}

pub(crate) fn secs(seconds: i64, millis: i32) -> prost_types::Duration {
    prost_types::Duration {
        seconds,
        nanos: millis * 1_000_000,
    }
}

/// T0 + 1 hour: "now" for relative times.
pub(crate) fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0 as u64 + 3_600)
}

pub(crate) fn site() -> pb::SiteInfo {
    pb::SiteInfo {
        name: "alpha".into(),
        instance: "9f2c4e1a".into(),
        version: "0.1.0".into(),
        started_at: Some(at(T0, 0)),
        uptime: Some(secs(3_725, 0)),
        broker_url: "mqtt://127.0.0.1:1883".into(),
        broker_state: pb::BrokerState::Reconnecting as i32,
        broker_reason: "connection refused".into(),
        sockets: vec![
            pb::TunnelSocket {
                listen: "0.0.0.0:40001".into(),
                public: "203.0.113.7:40001".into(),
                auto_detect: false,
                mode: "hole-punching".into(),
                nat_mapping: "endpoint-independent".into(),
                ..Default::default()
            },
            pb::TunnelSocket {
                listen: "[::]:40002".into(),
                public: String::new(),
                auto_detect: true,
                mode: "port-forwarding".into(),
                ..Default::default()
            },
        ],
        identity: ALPHA_ID.into(),
        trust_mode: pb::TrustMode::Pinned.into(),
    }
}

/// This site's identity.
pub(crate) const ALPHA_ID: &str = "a3stb5ycqzkxw2mhe7nvfgrl4pjduo6i";
/// beta's pinned identity.
pub(crate) const BETA_ID: &str = "hfqku7jmljxqcy44vv6js2nuzo7hxo4u";
/// Another identity claiming to be beta.
pub(crate) const IMPOSTOR_ID: &str = "x7rq2mfk4dzl3pwn6yb5tcehv2sjoa7i";
/// delta's identity, not in trust.sites.
pub(crate) const DELTA_ID: &str = "mz4kq7v2nx6wfb3jle5rht2ocu7ypsia";
/// gamma-site's identity, pinned on first sight.
pub(crate) const GAMMA_ID: &str = "g5mna2qkx7wzr4tpfj6vlh3ed2cuyobs";

/// As the daemon lists them: by name, a site's refused identities right after it.
pub(crate) fn peers() -> Vec<pb::Peer> {
    vec![
        pb::Peer {
            name: "beta".into(),
            instance: "0badc0de".into(),
            state: pb::PeerState::Connected as i32,
            apps: vec!["echo".into(), "vnc".into()],
            last_seen: Some(at(T0 + 3_597, 0)),
            channels: 2,
            streams: 1,
            bytes_sent: 1536,
            bytes_received: 5 << 20,
            conflicting_instances: vec![],
            identity: BETA_ID.into(),
            trust: pb::TrustState::Pinned.into(),
            pinned_identity: String::new(),
            refused_messages: 0,
        },
        pb::Peer {
            name: "beta".into(),
            instance: "feedbeef".into(),
            state: pb::PeerState::Refused as i32,
            last_seen: Some(at(T0 + 3_595, 0)),
            identity: IMPOSTOR_ID.into(),
            trust: pb::TrustState::Conflict.into(),
            pinned_identity: BETA_ID.into(),
            refused_messages: 3,
            ..Default::default()
        },
        pb::Peer {
            name: "delta".into(),
            instance: "d317a000".into(),
            state: pb::PeerState::Refused as i32,
            last_seen: Some(at(T0 + 3_540, 0)),
            identity: DELTA_ID.into(),
            trust: pb::TrustState::NotAllowed.into(),
            refused_messages: 1,
            ..Default::default()
        },
        pb::Peer {
            name: "gamma-site".into(),
            instance: String::new(),
            state: pb::PeerState::Gone as i32,
            apps: vec![],
            last_seen: None,
            channels: 0,
            streams: 0,
            bytes_sent: 0,
            bytes_received: 0,
            conflicting_instances: vec![],
            identity: GAMMA_ID.into(),
            trust: pb::TrustState::New.into(),
            pinned_identity: String::new(),
            refused_messages: 0,
        },
    ]
}

pub(crate) fn channels() -> Vec<pb::Channel> {
    vec![
        pb::Channel {
            id: 3,
            peer: "beta".into(),
            direction: pb::Direction::Outbound as i32,
            local_addr: "10.0.0.1:40001".into(),
            remote_addr: "10.0.0.2:40001".into(),
            state: pb::ChannelState::Up as i32,
            rtt: Some(prost_types::Duration {
                seconds: 0,
                nanos: 350_000,
            }),
            cwnd: 12_000,
            lost_packets: 2,
            sent_packets: 1_200,
            bytes_sent: 2_048,
            bytes_received: 4_096,
            open_streams: 1,
            age: Some(secs(125, 0)),
            reconnect_attempts: 0,
            last_error: String::new(),
            route: pb::ChannelRoute::Punched.into(),
            transport: pb::ChannelTransport::Quic.into(),
        },
        pb::Channel {
            id: 0,
            peer: "gamma-site".into(),
            direction: pb::Direction::Outbound as i32,
            local_addr: String::new(),
            remote_addr: "10.0.0.3:40001".into(),
            state: pb::ChannelState::Connecting as i32,
            rtt: None,
            cwnd: 0,
            lost_packets: 0,
            sent_packets: 0,
            bytes_sent: 0,
            bytes_received: 0,
            open_streams: 0,
            age: Some(secs(0, 350)),
            reconnect_attempts: 4,
            last_error: "timed out".into(),
            route: pb::ChannelRoute::Direct.into(),
            transport: pb::ChannelTransport::Tcp.into(),
        },
    ]
}

pub(crate) fn stream() -> pb::Stream {
    pb::Stream {
        id: 17,
        app: "echo".into(),
        peer: "beta".into(),
        direction: pb::StreamDirection::Outbound as i32,
        client_addr: "127.0.0.1:53124".into(),
        bytes_sent: 100,
        bytes_received: 2_560,
        age: Some(secs(12, 900)),
        channel_id: 3,
        datagrams_received: 0,
        datagrams_sent: 0,
        kind: String::new(),
    }
}

pub(crate) fn exposed_single() -> pb::ExposedApp {
    pb::ExposedApp {
        spec: Some(pb::ExposedAppSpec {
            name: "echo".into(),
            mode: "single".into(),
            app_socket: "tcp:127.0.0.1:7".into(),
            port_range: vec![],
            address_range: vec![],
            max_connections: None,
            allowed_sites: vec![],
            protocol: String::new(),
            udp_idle_timeout: None,
            bandwidth_limit: String::new(),
            proxy_protocol: String::new(),
        }),
        live: false,
    }
}

pub(crate) fn exposed_range() -> pb::ExposedApp {
    pb::ExposedApp {
        spec: Some(pb::ExposedAppSpec {
            name: "vnc".into(),
            mode: "range".into(),
            app_socket: String::new(),
            port_range: vec!["5900".into(), "5901-5990".into()],
            address_range: vec!["10.0.2.0/24".into()],
            max_connections: Some(50),
            allowed_sites: vec!["beta".into(), "gamma".into()],
            protocol: String::new(),
            udp_idle_timeout: None,
            bandwidth_limit: "10MiB/s".into(),
            proxy_protocol: "v2".into(),
        }),
        live: true,
    }
}

pub(crate) fn remote_spec() -> pb::RemoteAppSpec {
    pb::RemoteAppSpec {
        site_name: "beta".into(),
        app_name: "echo".into(),
        local_socket: "tcp:127.0.0.1:6000".into(),
        app_socket: String::new(),
        max_connections: None,
        udp_idle_timeout: None,
        bandwidth_limit: String::new(),
    }
}

pub(crate) fn remote_open() -> pb::RemoteApp {
    pb::RemoteApp {
        spec: Some(remote_spec()),
        listener_state: pb::ListenerState::Open as i32,
        listen_addr: "127.0.0.1:6000".into(),
        listener_error: String::new(),
        live: false,
    }
}

pub(crate) fn remote_failed() -> pb::RemoteApp {
    pb::RemoteApp {
        spec: Some(pb::RemoteAppSpec {
            site_name: "beta".into(),
            app_name: "vnc".into(),
            local_socket: "unix:/run/vnc.sock".into(),
            app_socket: "tcp:10.0.2.9:5900".into(),
            max_connections: Some(4),
            udp_idle_timeout: None,
            bandwidth_limit: "100Mbit/s".into(),
        }),
        listener_state: pb::ListenerState::Failed as i32,
        listen_addr: String::new(),
        listener_error: "permission denied".into(),
        live: true,
    }
}

pub(crate) fn apps() -> pb::ListAppsResponse {
    pb::ListAppsResponse {
        exposed: vec![exposed_single(), exposed_range()],
        remote: vec![remote_open(), remote_failed()],
    }
}

pub(crate) fn event(seq: u64, kind: event::Kind) -> pb::Event {
    pb::Event {
        seq,
        at: Some(at(T0, 123)),
        kind: Some(kind),
    }
}

pub(crate) fn snapshot() -> pb::WatchEventsResponse {
    pb::WatchEventsResponse {
        kind: Some(watch_events_response::Kind::Snapshot(pb::Snapshot {
            site: Some(site()),
            peers: peers(),
            channels: channels(),
            streams: vec![stream()],
            exposed: vec![exposed_single()],
            remote: vec![remote_open()],
            next_seq: 42,
        })),
    }
}

pub(crate) fn stats() -> pb::WatchStatsResponse {
    pb::WatchStatsResponse {
        at: Some(at(T0, 0)),
        apps: vec![pb::AppStats {
            app: "echo".into(),
            peer: "beta".into(),
            direction: pb::StreamDirection::Inbound as i32,
            open_streams: 1,
            total_streams: 9,
            bytes_sent: 2_048,
            bytes_received: 1_024,
            send_rate: 1_536.0,
            receive_rate: 0.0,
            limited_streams: 3,
            not_allowed_streams: 2,
            datagrams_received: 0,
            datagrams_sent: 0,
        }],
        peers: vec![pb::PeerStats {
            peer: "beta".into(),
            bytes_sent: 10 << 20,
            bytes_received: 20 << 20,
            send_rate: 1_048_576.0,
            receive_rate: 512.0,
            conflicting_instances: vec![],
        }],
        channels: vec![pb::ChannelStats {
            id: 3,
            peer: "beta".into(),
            rtt: Some(secs(0, 12)),
            cwnd: 12_000,
            lost_packets: 0,
            sent_packets: 10,
            bytes_sent: 1_000,
            bytes_received: 2_000,
            send_rate: 10.0,
            receive_rate: 20.0,
            open_streams: 1,
        }],
        counters: HashMap::from([
            ("bad_preambles".to_owned(), 3),
            ("auth_failures".to_owned(), 1),
            ("messages_undecryptable".to_owned(), 0),
        ]),
        streams: vec![],
    }
}
