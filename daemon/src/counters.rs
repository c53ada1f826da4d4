//! Site-wide counters of things dropped or refused (bad network input, auth
//! failures, refused streams). Plain atomics so any task can bump them without
//! a lock; the control plane reads snapshots. Must not log or decide anything.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by every task of one site (one `Arc` per site, not a global,
/// because `wovenetd demo` runs two sites in one process).
#[derive(Debug, Default)]
pub struct Counters {
    /// MQTT payloads that failed to decrypt or authenticate.
    pub messages_undecryptable: AtomicU64,
    /// MQTT payloads that decrypted but were replayed or outside the freshness window.
    pub messages_stale: AtomicU64,
    /// MQTT payloads that decrypted but did not parse as a known message.
    pub messages_malformed: AtomicU64,
    /// MQTT payloads accepted.
    pub messages_received: AtomicU64,
    /// QUIC connections that failed the key proof or did not pass it by the
    /// deadline (either direction).
    pub auth_failures: AtomicU64,
    /// Streams whose preamble was malformed or too slow.
    pub bad_preambles: AtomicU64,
    /// Streams refused (no such app, not allowed, unreachable).
    pub streams_refused: AtomicU64,
    /// Streams carried (both directions, any outcome after admission).
    pub streams_opened: AtomicU64,
    /// Peer streams refused with the `limit reached` status because the peer
    /// (`tunnel.maxStreamsPerPeer`) or the app (`maxConnections`) had as many
    /// streams open as allowed; also counted in `streams_refused`.
    pub streams_limited: AtomicU64,
    /// Peer streams refused with the `not allowed` status because the app's
    /// `allowedSites` does not list the peer; also counted in
    /// `streams_refused`.
    pub streams_not_allowed: AtomicU64,
    /// Local clients of remote apps reset at once because a limit was
    /// reached: the listener's own `maxConnections`, or the far site's (it
    /// answered `limit reached`).
    pub connections_limited: AtomicU64,
    /// Failed accepts on remote-app listeners or the control socket (mostly
    /// out of file descriptors); each pauses that accept loop 100 ms to 1 s.
    pub accept_errors: AtomicU64,
    /// Claims to a site name refused: announcements of an instance while
    /// another live instance holds the name (or with a changed certificate),
    /// and inbound dataChannels whose claimed site, instance and certificate
    /// match no live announcement.
    pub claims_refused: AtomicU64,
    /// Announcements of new site names ignored because the site already
    /// keeps the most peers it will.
    pub peers_over_cap: AtomicU64,
    /// Sockets dropped from accepted announcements: addresses that can never
    /// be a peer, duplicates, and those beyond the per-announcement cap.
    pub announced_sockets_dropped: AtomicU64,
    /// Incoming QUIC connections refused or ignored before the key proof: the
    /// listener or their source held too many unauthenticated connections.
    pub preauth_refused: AtomicU64,
    /// Incoming QUIC connections asked to prove their address (QUIC Retry)
    /// because the listener held many unauthenticated connections.
    pub preauth_retried: AtomicU64,
    /// Punch requests not served: from an instance that does not hold its
    /// site name, for a socket that is not `hole-punching` or whose public
    /// mapping is unknown, or beyond the cap on punch sprays.
    pub punch_refused: AtomicU64,
    /// MQTT payloads sealed with the network key whose identity signature
    /// did not verify: a member forging or altering another site's message.
    pub messages_forged: AtomicU64,
    /// Messages and dataChannels refused because their identity is not the
    /// one pinned (or listed in `trust.sites`) for the site name they claim.
    pub identities_refused: AtomicU64,
    /// Messages refused in `trust.mode: strict` from a site name that
    /// `trust.sites` does not list.
    pub sites_not_allowed: AtomicU64,
    /// UDP datagrams from a dataChannel for no open flow (late, after the
    /// flow ended) or with a truncated flow id.
    pub udp_unknown_flow: AtomicU64,
    /// UDP datagrams dropped because a flow's queue was full (the far side
    /// or the local app sent faster than the other end took them).
    pub udp_queue_overflow: AtomicU64,
    /// UDP datagrams that could not be delivered: the app socket refused
    /// them, or the flow ended while they were in flight.
    pub udp_send_failed: AtomicU64,
    /// UDP datagrams from new client addresses dropped because the remote
    /// app already had `maxConnections` flows (also in `connections_limited`
    /// once per refused flow attempt).
    pub udp_flows_limited: AtomicU64,
    /// Frames read from TCP dataChannels that cannot be a QUIC packet our
    /// endpoint takes (empty, or larger than it accepts): dropped.
    pub tcp_frames_dropped: AtomicU64,
    /// Stream requests carrying a client address that a far site refused as
    /// an unsupported preamble version (a build that predates client
    /// addresses), then sent again without it. At most one per remote app
    /// per recheck period (`app::dialect`).
    pub preamble_downgrades: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
