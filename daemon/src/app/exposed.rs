//! The exposed side: which apps this site lets other sites reach
//! ([`ExposedApps`]), the admission rules ([`admit`], pure), and the server of
//! incoming app streams ([`ExposedServer`], one stream:
//! [`ExposedServer::serve_stream`]).
//!
//! This module must not know how streams arrive (that is the tunnel's job) and
//! must not open streams itself.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};

use ipnet::{IpNet, Ipv6Net};
use quinn::{RecvStream, SendStream};
use tokio::net::{TcpStream, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, info};

use super::pipe::{AnyLocal, PipeOutcome, PipeStats};
use super::preamble::{PreambleError, Request, Response, Status};
use super::{AppError, CONNECT_TIMEOUT, PREAMBLE_TIMEOUT, ReadPreambleError, code, read_preamble};
use super::{
    AppThrottle, StreamRegistry, StreamServer, ThrottleKey, TunnelStream, proxy_header, udp,
};
use crate::config::{AppName, AppSocket, ExposedApp, ExposedTarget, Protocol, SiteName};
use crate::counters::Counters;
use crate::limit::{DEFAULT_STREAMS_PER_PEER, LimitReached, Limiter, Permit};
use crate::view::StreamDirection;
use crate::warn_limit::{REFUSAL_LOG_INTERVAL, SharedWarnLimiter};

/// The live set of exposed apps, keyed by name, and the streams held open
/// against their limits (per peer and per app).
///
/// Changes take effect for new streams only: a removed app takes no new
/// streams while its existing streams run to their end, and a changed limit
/// applies to new streams while the open ones keep their slots.
#[derive(Debug)]
pub struct ExposedApps {
    // Held only for map operations, never across an await.
    apps: RwLock<HashMap<AppName, ExposedApp>>,
    /// `tunnel.maxStreamsPerPeer`.
    per_peer: usize,
    /// Streams open per peer, over all its dataChannels and all apps.
    peers: Limiter<SiteName>,
    /// Streams open per app, from all peers.
    open: Limiter<AppName>,
    /// Refusals over a limit come in bursts: their log lines are throttled.
    refusal_log: SharedWarnLimiter,
}

impl Default for ExposedApps {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl ExposedApps {
    /// A registry holding `apps`; a later duplicate name replaces an earlier
    /// one (config validation already rejects duplicates). Peers get the
    /// default `tunnel.maxStreamsPerPeer` (see [`Self::with_peer_limit`]).
    pub fn new(apps: Vec<ExposedApp>) -> Self {
        Self {
            apps: RwLock::new(apps.into_iter().map(|a| (a.name.clone(), a)).collect()),
            per_peer: DEFAULT_STREAMS_PER_PEER as usize,
            peers: Limiter::new(),
            open: Limiter::new(),
            refusal_log: SharedWarnLimiter::new(REFUSAL_LOG_INTERVAL),
        }
    }

    /// Lets each peer have at most `limit` streams open here at once.
    pub fn with_peer_limit(mut self, limit: u32) -> Self {
        self.per_peer = limit as usize;
        self
    }

    /// Takes one of `peer`'s stream slots, held for the stream's whole life.
    pub fn admit_peer(&self, peer: &SiteName) -> Result<Permit<SiteName>, LimitReached> {
        self.peers.try_acquire(peer.clone(), self.per_peer)
    }

    /// Streams `peer` has open here now (held slots).
    pub fn peer_streams(&self, peer: &SiteName) -> usize {
        self.peers.count(peer)
    }

    /// Streams open to the app called `app` now (held slots).
    pub fn app_streams(&self, app: &AppName) -> usize {
        self.open.count(app)
    }

    /// Takes one of `app`'s stream slots (its `maxConnections`).
    pub fn admit_app(&self, app: &ExposedApp) -> Result<Permit<AppName>, LimitReached> {
        self.open
            .try_acquire(app.name.clone(), app.connection_limit())
    }

    /// Adds an app; fails if one with the same name exists.
    pub fn insert(&self, app: ExposedApp) -> Result<(), AppError> {
        let mut apps = self.apps.write().unwrap_or_else(PoisonError::into_inner);
        if apps.contains_key(&app.name) {
            return Err(AppError::Exists(app.name));
        }
        apps.insert(app.name.clone(), app);
        Ok(())
    }

    /// Puts `app` in place of the app of the same name (or adds it),
    /// returning the definition it replaced. Streams admitted from now on
    /// get the new definition; open streams keep the one they were admitted
    /// with, and their slots count against the new `maxConnections`.
    pub fn replace(&self, app: ExposedApp) -> Option<ExposedApp> {
        self.apps
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(app.name.clone(), app)
    }

    /// Removes an app, returning it if it was there.
    pub fn remove(&self, name: &AppName) -> Option<ExposedApp> {
        self.apps
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
    }

    /// Names of every app, sorted.
    pub fn names(&self) -> Vec<AppName> {
        let mut names: Vec<AppName> = self
            .apps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Names of the apps every member may reach (no `allowedSites`), sorted:
    /// what the broadcast announcement lists.
    pub fn public_names(&self) -> Vec<AppName> {
        let mut names: Vec<AppName> = self
            .apps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|a| !a.is_restricted())
            .map(|a| a.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Every app restricted by `allowedSites`, sorted by name: what is
    /// offered, site by site, instead of announced.
    pub fn restricted(&self) -> Vec<ExposedApp> {
        let mut apps: Vec<ExposedApp> = self
            .apps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|a| a.is_restricted())
            .cloned()
            .collect();
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        apps
    }

    /// The app called `name`, if exposed.
    pub fn get(&self, name: &AppName) -> Option<ExposedApp> {
        self.apps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }
}

/// Why a stream request is turned away: the status sent back and a reason
/// for the far side's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Status code sent in the reply.
    pub status: Status,
    /// Human-readable reason, sent in the reply and logged.
    pub reason: String,
}

impl Refusal {
    fn new(status: Status, reason: String) -> Self {
        Self { status, reason }
    }
}

/// Decides whether a request for `app` with an optional range `target` is
/// allowed, and where to connect.
///
/// Single apps take no target (a target is [`Status::NotAllowed`]). Range apps
/// need a target whose IP lies in one of the app's address nets (see
/// `net_admits`: families are never mixed) and whose port lies in one of its
/// port ranges; IPv4-mapped IPv6 targets are treated as IPv4.
pub fn admit(
    app: &ExposedApp,
    protocol: Protocol,
    target: Option<SocketAddr>,
) -> Result<AppSocket, Refusal> {
    let name = &app.name;
    if app.protocol() != protocol {
        return Err(Refusal::new(
            Status::NotAllowed,
            format!(
                "app '{name}' carries {}, not {}",
                app.protocol().as_str(),
                protocol.as_str()
            ),
        ));
    }
    match (&app.target, target) {
        (ExposedTarget::Single(socket), None) => Ok(socket.clone()),
        (ExposedTarget::Single(_), Some(t)) => Err(Refusal::new(
            Status::NotAllowed,
            format!("app '{name}' has a single socket and takes no target, got '{t}'"),
        )),
        (ExposedTarget::Range { .. }, None) => Err(Refusal::new(
            Status::NotAllowed,
            format!("app '{name}' is a range app and needs a target address"),
        )),
        (
            ExposedTarget::Range {
                ports, addresses, ..
            },
            Some(t),
        ) => {
            // `[::ffff:a.b.c.d]` reaches the IPv4 host a.b.c.d: judge it as one.
            let ip = t.ip().to_canonical();
            if !addresses.iter().any(|net| net_admits(net, ip)) {
                return Err(Refusal::new(
                    Status::NotAllowed,
                    format!("target '{t}' is outside the address range of app '{name}'"),
                ));
            }
            if !ports.iter().any(|r| r.contains(t.port())) {
                return Err(Refusal::new(
                    Status::NotAllowed,
                    format!("target '{t}' is outside the port range of app '{name}'"),
                ));
            }
            let target = SocketAddr::new(ip, t.port());
            Ok(match protocol {
                Protocol::Tcp => AppSocket::Tcp(target),
                Protocol::Udp => AppSocket::Udp(target),
            })
        }
    }
}

/// The exposed side's [`StreamServer`]: every stream a peer opens is served
/// against the live [`ExposedApps`].
#[derive(Debug, Clone)]
pub struct ExposedServer {
    apps: Arc<ExposedApps>,
    counters: Arc<Counters>,
    streams: Arc<StreamRegistry>,
    /// The site's shutdown (a child of its token): tears down every stream
    /// being served, exactly like the client side's listeners.
    cancel: CancellationToken,
}

impl ExposedServer {
    /// A server of `apps`, counting outcomes in `counters`, registering open
    /// streams in `streams`, and resetting every stream when `cancel` fires.
    pub fn new(
        apps: Arc<ExposedApps>,
        counters: Arc<Counters>,
        streams: Arc<StreamRegistry>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            apps,
            counters,
            streams,
            cancel,
        }
    }

    /// Serves one app stream accepted from `peer` on the dataChannel from
    /// `origin`: reads the preamble, admits it against the apps, connects the
    /// app socket, replies, then pipes until the stream ends or the server is
    /// cancelled. Never panics on bad input; every outcome is counted and
    /// logged inside a `stream` span carrying `peer.site` and `app.name`.
    pub async fn serve_stream(&self, stream: TunnelStream, peer: &SiteName, origin: SocketAddr) {
        let span = stream_span(&stream, peer);
        self.serve_in(stream, peer, origin, span).await;
    }

    /// [`Self::serve_stream`] in `span` (from [`stream_span`]).
    async fn serve_in(
        &self,
        stream: TunnelStream,
        peer: &SiteName,
        origin: SocketAddr,
        span: Span,
    ) {
        let TunnelStream {
            mut send,
            mut recv,
            guard,
            channel,
            datagrams,
        } = stream;
        let admitted = async {
            tokio::select! {
                r = self.admit(&mut send, &mut recv, peer, &datagrams) => r,
                () = self.cancel.cancelled() => Err(Some(code::SHUTDOWN)),
            }
        }
        .instrument(span.clone())
        .await;
        match admitted {
            Ok(Admitted {
                app,
                local: Local::Udp(end, rx, idle),
                permits,
            }) => {
                let flow = udp::Flow {
                    send,
                    recv,
                    rx,
                    idle,
                };
                let throttle = self.throttle(&app);
                let ticket = self.streams.open_flow(
                    app,
                    peer.clone(),
                    StreamDirection::Inbound,
                    origin.to_string(),
                    channel,
                );
                let end = udp::run_flow(
                    end,
                    flow,
                    ticket.stats(),
                    throttle.as_deref(),
                    self.cancel.cancelled(),
                )
                .instrument(span.clone())
                .await;
                drop(guard);
                drop(permits);
                span.in_scope(|| debug!(%end, "flow ended"));
            }
            Ok(Admitted {
                app,
                local: Local::Stream(local),
                permits,
            }) => {
                let throttle = self.throttle(&app);
                let ticket = self.streams.open(
                    app,
                    peer.clone(),
                    StreamDirection::Inbound,
                    origin.to_string(),
                    channel,
                );
                // Not in the span: the pipe logs nothing and is polled for
                // every chunk (see `remote::serve_client`).
                let outcome = local
                    .pipe(
                        send,
                        recv,
                        ticket.stats(),
                        throttle.as_deref(),
                        self.cancel.cancelled(),
                    )
                    .await;
                // The tunnel counts the stream as open until this drops.
                drop(guard);
                drop(permits);
                span.in_scope(|| log_outcome(&outcome, ticket.stats()));
            }
            Err(Some(code)) => abandon(send, recv, code),
            // Already answered and closed.
            Err(None) => {}
        }
    }

    /// The shared throttle of `app`'s streams, per its `bandwidthLimit` now.
    fn throttle(&self, app: &AppName) -> Option<Arc<AppThrottle>> {
        let limit = self.apps.get(app).and_then(|a| a.bandwidth_limit);
        let key = ThrottleKey::Exposed(app.clone());
        self.streams.throttles().get(key, limit)
    }

    /// The preamble exchange: on success the app and its connected socket,
    /// with the `Ok` reply sent. On failure the stream still has to be torn
    /// down with the returned code, or was already answered (`None`).
    async fn admit(
        &self,
        send: &mut SendStream,
        recv: &mut RecvStream,
        peer: &SiteName,
        datagrams: &Arc<udp::Demux>,
    ) -> Result<Admitted, Option<quinn::VarInt>> {
        let counters = &self.counters;
        // Taken before the preamble, so streams that stall it count too; a
        // refusal still waits for the request, so the reply can name the app.
        let peer_slot = self.apps.admit_peer(peer);
        let read = read_preamble::<Request>(recv);
        let request = match tokio::time::timeout(PREAMBLE_TIMEOUT, read).await {
            Ok(Ok(request)) => request,
            Ok(Err(ReadPreambleError::Malformed(e))) => {
                Counters::bump(&counters.bad_preambles);
                info!(error = %e, "malformed stream preamble");
                let status = match e {
                    PreambleError::UnsupportedVersion(_) => Status::UnsupportedVersion,
                    _ => Status::BadRequest,
                };
                reply_and_close(
                    send,
                    recv,
                    &Response::new(status, e.to_string()),
                    code::BAD_PREAMBLE,
                )
                .await;
                return Err(None);
            }
            Ok(Err(e @ ReadPreambleError::Truncated(_))) => {
                Counters::bump(&counters.bad_preambles);
                info!(error = %e, "incomplete stream preamble");
                return Err(Some(code::BAD_PREAMBLE));
            }
            Ok(Err(ReadPreambleError::Read(e))) => {
                // The peer gave up (reset) or the connection died: not bad input.
                debug!(error = %e, "stream failed before its preamble");
                return Err(Some(code::PEER_FAILED));
            }
            Err(_elapsed) => {
                Counters::bump(&counters.bad_preambles);
                info!(timeout = ?PREAMBLE_TIMEOUT, "stream preamble timed out");
                return Err(Some(code::BAD_PREAMBLE));
            }
        };
        Span::current().record("app.name", request.app.as_str());
        if let Some(client) = &request.client {
            Span::current().record("client.addr", tracing::field::display(client.source()));
        }

        let app = self.apps.get(&request.app);
        if let Some(app) = &app
            && !app.allows(peer)
        {
            self.not_allowed(send, recv, peer, app.name.clone()).await;
            return Err(None);
        }
        let peer_slot = match peer_slot {
            Ok(slot) => slot,
            Err(LimitReached { limit }) => {
                let reason = format!(
                    "site '{peer}' already has {limit} streams open here (tunnel.maxStreamsPerPeer)"
                );
                let known = app.map(|a| a.name);
                self.limited(send, recv, peer, known, reason).await;
                return Err(None);
            }
        };
        let Some(app) = app else {
            let reason = format!("no app named '{}' is exposed", request.app);
            refuse(
                send,
                recv,
                counters,
                Refusal::new(Status::NoSuchApp, reason),
            )
            .await;
            return Err(None);
        };
        let socket = match admit(&app, request.protocol, request.target) {
            Ok(socket) => socket,
            Err(refusal) => {
                refuse(send, recv, counters, refusal).await;
                return Err(None);
            }
        };
        let app_slot = match self.apps.admit_app(&app) {
            Ok(slot) => slot,
            Err(LimitReached { limit }) => {
                let reason = format!(
                    "app '{}' already has {limit} streams open (maxConnections)",
                    app.name
                );
                self.limited(send, recv, peer, Some(app.name), reason).await;
                return Err(None);
            }
        };
        let mut local = match connect(&socket, app.udp_idle(), send, datagrams).await {
            Ok(local) => local,
            Err(e) => {
                let reason = format!("cannot connect to '{socket}': {e}");
                let refusal = Refusal::new(Status::AppUnreachable, reason);
                refuse(send, recv, counters, refusal).await;
                return Err(None);
            }
        };
        if let (Some(version), Local::Stream(stream)) = (app.proxy_protocol, &mut local) {
            let header = proxy_header::encode(version, request.client.as_ref());
            let written = tokio::time::timeout(CONNECT_TIMEOUT, stream.write_all(&header)).await;
            if let Err(e) = written.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())) {
                local.abort();
                let reason = format!("cannot send the PROXY header to '{socket}': {e}");
                let refusal = Refusal::new(Status::AppUnreachable, reason);
                refuse(send, recv, counters, refusal).await;
                return Err(None);
            }
        }

        if let Err(e) = send.write_all(&Response::ok().encode()).await {
            debug!(error = %e, "stream closed before the reply");
            local.abort();
            return Err(Some(code::PEER_FAILED));
        }
        Counters::bump(&counters.streams_opened);
        debug!(app.socket = %socket, "stream admitted");
        Ok(Admitted {
            app: request.app,
            local,
            permits: (peer_slot, app_slot),
        })
    }

    /// Refuses with the `not allowed` status a stream from a peer the app's
    /// `allowedSites` does not list: counted site-wide (refused and not
    /// allowed) and per app and peer; logged throttled (a peer may try often).
    async fn not_allowed(
        &self,
        send: &mut SendStream,
        recv: &mut RecvStream,
        peer: &SiteName,
        app: AppName,
    ) {
        Counters::bump(&self.counters.streams_refused);
        Counters::bump(&self.counters.streams_not_allowed);
        let reason = format!("site '{peer}' is not in the allowedSites of app '{app}'");
        self.streams.not_allowed(app, peer.clone());
        if let Some(held_back) = self.apps.refusal_log.allow(std::time::Instant::now()) {
            info!(reason = %reason.escape_debug(), held_back, "stream refused: not allowed");
        }
        let response = Response::new(Status::NotAllowed, reason);
        reply_and_close(send, recv, &response, code::REFUSED).await;
    }

    /// Refuses with the `limit reached` status: counted site-wide (refused
    /// and limited) and, when `app` exists, per app; logged throttled.
    async fn limited(
        &self,
        send: &mut SendStream,
        recv: &mut RecvStream,
        peer: &SiteName,
        app: Option<AppName>,
        reason: String,
    ) {
        Counters::bump(&self.counters.streams_refused);
        Counters::bump(&self.counters.streams_limited);
        if let Some(app) = app {
            self.streams
                .limited(app, peer.clone(), StreamDirection::Inbound);
        }
        if let Some(held_back) = self.apps.refusal_log.allow(std::time::Instant::now()) {
            info!(reason = %reason, held_back, "stream refused: limit reached");
        }
        let response = Response::new(Status::LimitReached, reason);
        reply_and_close(send, recv, &response, code::REFUSED).await;
    }
}

/// The app side of an admitted stream.
enum Local {
    /// A tcp or unix connection, piped.
    Stream(AnyLocal),
    /// A UDP socket carrying one flow, its datagrams and its idle timeout.
    Udp(udp::AppEnd, udp::FlowRx, std::time::Duration),
}

impl Local {
    fn abort(self) {
        if let Self::Stream(s) = self {
            s.abort();
        }
    }
}

/// A stream that passed admission: its app, the connected app socket, and
/// the peer's and the app's limit slots, held until the pipe ends.
struct Admitted {
    app: AppName,
    local: Local,
    permits: (Permit<SiteName>, Permit<AppName>),
}

impl StreamServer for ExposedServer {
    fn serve(
        &self,
        stream: TunnelStream,
        peer: SiteName,
        origin: SocketAddr,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let this = self.clone();
        // Made here, in the caller's (the channel's) span, so the stream's
        // lines carry its site, peer and channel; the future itself runs
        // outside any span: it is polled for every chunk its pipe carries.
        let span = stream_span(&stream, &peer);
        Box::pin(async move { this.serve_in(stream, &peer, origin, span).await })
    }
}

/// The span an accepted stream is served in, a child of the current one.
pub fn stream_span(stream: &TunnelStream, peer: &SiteName) -> Span {
    tracing::info_span!(
        "stream",
        peer.site = %peer,
        app.name = tracing::field::Empty,
        client.addr = tracing::field::Empty,
        stream.id = %stream.send.id(),
        channel.id = %stream.channel,
    )
}

/// `::ffff:0:0/96`, where IPv6 writes IPv4 addresses (RFC 4291 section 2.5.5.2).
const IPV4_MAPPED: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96);

/// Whether `net` admits the canonical target address `ip`.
///
/// Like the original, IPv4 targets match IPv4 nets and IPv6 targets IPv6 nets:
/// an IPv6 net such as `::/0` or `::/64` covers the mapped forms of every IPv4
/// address, and must not open the IPv4 side (loopback included) to an operator
/// who only meant IPv6. The one way to name IPv4 targets with an IPv6 net is a
/// net inside `::ffff:0:0/96` (e.g. `::ffff:10.0.0.0/104`): it admits the IPv4
/// addresses whose mapped forms it contains.
fn net_admits(net: &IpNet, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpNet::V4(net), IpAddr::V4(ip)) => net.contains(&ip),
        (IpNet::V6(net), IpAddr::V6(ip)) => net.contains(&ip),
        (IpNet::V6(net), IpAddr::V4(ip)) => {
            IPV4_MAPPED.contains(net) && net.contains(&ip.to_ipv6_mapped())
        }
        (IpNet::V4(_), IpAddr::V6(_)) => false,
    }
}

/// Logs the end of a piped stream: expected endings at debug level.
pub(super) fn log_outcome(outcome: &PipeOutcome, stats: &PipeStats) {
    use std::sync::atomic::Ordering::Relaxed;
    let sent = stats.bytes_to_remote.load(Relaxed);
    let received = stats.bytes_from_remote.load(Relaxed);
    debug!(
        outcome = %outcome,
        bytes.sent = sent,
        bytes.received = received,
        "stream ended"
    );
}

/// Connects the app socket. A UDP flow is registered on the dataChannel's
/// `datagrams` here, before the `ok` reply, so the peer's first datagrams
/// (sent as soon as it reads `ok`) find it.
async fn connect(
    socket: &AppSocket,
    idle: std::time::Duration,
    send: &SendStream,
    datagrams: &Arc<udp::Demux>,
) -> io::Result<Local> {
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
    Ok(Local::Stream(match socket {
        AppSocket::Udp(addr) => {
            let end = udp::AppEnd::connect(*addr).await?;
            let rx = datagrams
                .register(udp::flow_id(send))
                .ok_or_else(|| io::Error::other("flow id already registered"))?;
            return Ok(Local::Udp(end, rx, idle));
        }
        AppSocket::Tcp(addr) => {
            let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                .await
                .map_err(|_| timed_out())??;
            // Interactive protocols (ssh, databases) suffer from Nagle; a
            // failure only costs latency.
            let _ = s.set_nodelay(true);
            AnyLocal::Tcp(s)
        }
        AppSocket::Unix(path) => {
            let s = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path))
                .await
                .map_err(|_| timed_out())??;
            AnyLocal::Unix(s)
        }
    }))
}

async fn refuse(
    send: &mut SendStream,
    recv: &mut RecvStream,
    counters: &Counters,
    refusal: Refusal,
) {
    Counters::bump(&counters.streams_refused);
    info!(status = %refusal.status, reason = %refusal.reason, "stream refused");
    let response = Response::new(refusal.status, refusal.reason);
    reply_and_close(send, recv, &response, code::REFUSED).await;
}

/// Sends a final status, finishes our side and stops reading theirs.
async fn reply_and_close(
    send: &mut SendStream,
    recv: &mut RecvStream,
    response: &Response,
    stop_code: quinn::VarInt,
) {
    let _ = recv.stop(stop_code);
    let bytes = response.encode();
    match tokio::time::timeout(PREAMBLE_TIMEOUT, send.write_all(&bytes)).await {
        Ok(Ok(())) => {
            let _ = send.finish();
        }
        Ok(Err(e)) => debug!(error = %e, "cannot send the refusal"),
        Err(_) => {
            let _ = send.reset(stop_code);
        }
    }
}

/// Tears a stream down without a reply.
fn abandon(mut send: SendStream, mut recv: RecvStream, code: quinn::VarInt) {
    let _ = send.reset(code);
    let _ = recv.stop(code);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::config::PortRange;

    fn name(s: &str) -> AppName {
        AppName::new(s).unwrap()
    }

    fn single(n: &str, socket: &str) -> ExposedApp {
        ExposedApp {
            name: name(n),
            target: ExposedTarget::Single(socket.parse().unwrap()),
            max_connections: None,
            allowed_sites: Vec::new(),
            udp_idle_timeout: None,
            bandwidth_limit: None,
            proxy_protocol: None,
        }
    }

    fn range(nets: &[&str], ports: &[(u16, u16)]) -> ExposedApp {
        ExposedApp {
            name: name("lan"),
            target: ExposedTarget::Range {
                ports: ports
                    .iter()
                    .map(|&(start, end)| PortRange { start, end })
                    .collect(),
                addresses: nets.iter().map(|n| n.parse::<IpNet>().unwrap()).collect(),
                protocol: Protocol::Tcp,
            },
            max_connections: None,
            allowed_sites: Vec::new(),
            udp_idle_timeout: None,
            bandwidth_limit: None,
            proxy_protocol: None,
        }
    }

    fn t(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    fn refused(r: Result<AppSocket, Refusal>) -> Refusal {
        r.expect_err("should be refused")
    }

    #[test]
    fn streams_are_limited_per_peer_over_all_apps_and_per_app_over_all_peers() {
        let mut small = single("small", "tcp:127.0.0.1:1");
        small.max_connections = Some(1);
        let big = single("big", "tcp:127.0.0.1:2");
        let apps = ExposedApps::new(vec![small.clone(), big.clone()]).with_peer_limit(2);
        let (a, b) = (SiteName::new("a").unwrap(), SiteName::new("b").unwrap());

        let a1 = apps.admit_peer(&a).expect("a's first");
        let _a2 = apps.admit_peer(&a).expect("a's second");
        assert_eq!(apps.admit_peer(&a).unwrap_err().limit, 2);
        // Another peer has its own budget.
        let _b1 = apps.admit_peer(&b).expect("b's first");
        assert_eq!(apps.peer_streams(&a), 2);

        let s1 = apps.admit_app(&small).expect("small's only slot");
        assert_eq!(apps.admit_app(&small).unwrap_err().limit, 1);
        let _g = apps.admit_app(&big).expect("big has the default");
        assert_eq!(apps.app_streams(&small.name), 1);

        drop((a1, s1));
        assert!(apps.admit_peer(&a).is_ok());
        assert!(apps.admit_app(&small).is_ok());
    }

    #[test]
    fn single_app_without_target_connects_its_socket() {
        let app = single("ssh", "tcp:127.0.0.1:22");
        assert_eq!(
            admit(&app, Protocol::Tcp, None),
            Ok("tcp:127.0.0.1:22".parse().unwrap())
        );
        let app = single("db", "unix:/run/db.sock");
        assert_eq!(
            admit(&app, Protocol::Tcp, None),
            Ok("unix:/run/db.sock".parse().unwrap())
        );
    }

    #[test]
    fn single_app_with_a_target_is_not_allowed() {
        let app = single("ssh", "tcp:127.0.0.1:22");
        let r = refused(admit(&app, Protocol::Tcp, t("10.0.0.1:22")));
        assert_eq!(r.status, Status::NotAllowed);
        assert!(r.reason.contains("10.0.0.1:22"), "{}", r.reason);
    }

    #[test]
    fn range_app_without_target_is_not_allowed() {
        let app = range(&["10.0.0.0/8"], &[(1, 65535)]);
        assert_eq!(
            refused(admit(&app, Protocol::Tcp, None)).status,
            Status::NotAllowed
        );
    }

    #[test]
    fn range_app_admits_a_target_inside_both_ranges() {
        let app = range(&["192.168.1.0/24"], &[(8000, 8080)]);
        assert_eq!(
            admit(&app, Protocol::Tcp, t("192.168.1.77:8000")),
            Ok(AppSocket::Tcp("192.168.1.77:8000".parse().unwrap()))
        );
    }

    #[test]
    fn cidr_edges_are_inclusive_and_the_next_address_is_refused() {
        let app = range(&["192.168.1.0/24"], &[(80, 80)]);
        assert!(admit(&app, Protocol::Tcp, t("192.168.1.0:80")).is_ok());
        assert!(admit(&app, Protocol::Tcp, t("192.168.1.255:80")).is_ok());
        let r = refused(admit(&app, Protocol::Tcp, t("192.168.2.0:80")));
        assert_eq!(r.status, Status::NotAllowed);
        assert!(r.reason.contains("192.168.2.0:80"), "{}", r.reason);
        assert!(r.reason.contains("address range"), "{}", r.reason);
        assert!(admit(&app, Protocol::Tcp, t("192.168.0.255:80")).is_err());
    }

    #[test]
    fn single_address_nets_match_only_that_address() {
        let app = range(&["10.0.0.5/32", "2001:db8::5/128"], &[(22, 22)]);
        assert!(admit(&app, Protocol::Tcp, t("10.0.0.5:22")).is_ok());
        assert!(admit(&app, Protocol::Tcp, t("10.0.0.6:22")).is_err());
        assert!(admit(&app, Protocol::Tcp, t("[2001:db8::5]:22")).is_ok());
        assert!(admit(&app, Protocol::Tcp, t("[2001:db8::6]:22")).is_err());
    }

    #[test]
    fn port_range_edges_are_inclusive() {
        let app = range(&["10.0.0.0/8"], &[(1000, 2000), (3000, 3000)]);
        for ok in [1000, 1500, 2000, 3000] {
            assert!(
                admit(&app, Protocol::Tcp, t(&format!("10.1.1.1:{ok}"))).is_ok(),
                "{ok}"
            );
        }
        for bad in [999, 2001, 2999, 3001, 0, 65535] {
            let r = refused(admit(&app, Protocol::Tcp, t(&format!("10.1.1.1:{bad}"))));
            assert_eq!(r.status, Status::NotAllowed);
            assert!(r.reason.contains("port range"), "{}", r.reason);
        }
    }

    #[test]
    fn ipv6_targets_match_ipv6_nets_only() {
        let app = range(&["fd00::/64"], &[(443, 443)]);
        assert!(admit(&app, Protocol::Tcp, t("[fd00::1234]:443")).is_ok());
        assert!(admit(&app, Protocol::Tcp, t("[fd00:0:0:1::1]:443")).is_err());
        assert!(admit(&app, Protocol::Tcp, t("10.0.0.1:443")).is_err());
    }

    #[test]
    fn ipv4_mapped_target_is_normalised_to_ipv4() {
        let app = range(&["10.0.0.0/8"], &[(80, 80)]);
        assert_eq!(
            admit(&app, Protocol::Tcp, t("[::ffff:10.2.3.4]:80")),
            Ok(AppSocket::Tcp("10.2.3.4:80".parse().unwrap()))
        );
        assert!(admit(&app, Protocol::Tcp, t("[::ffff:11.2.3.4]:80")).is_err());
    }

    #[test]
    fn ipv4_target_matches_a_net_written_as_ipv4_mapped() {
        let app = range(&["::ffff:10.0.0.0/104"], &[(80, 80)]);
        assert_eq!(
            admit(&app, Protocol::Tcp, t("10.9.9.9:80")),
            Ok(AppSocket::Tcp("10.9.9.9:80".parse().unwrap()))
        );
        assert!(admit(&app, Protocol::Tcp, t("11.0.0.1:80")).is_err());
    }

    #[test]
    fn any_address_nets_allow_everything_of_their_family() {
        let app = range(&["0.0.0.0/0"], &[(1, 65535)]);
        assert!(admit(&app, Protocol::Tcp, t("203.0.113.9:1")).is_ok());
        assert!(admit(&app, Protocol::Tcp, t("[2001:db8::1]:1")).is_err());
    }

    /// Regression: `::/0` admitted `127.0.0.1` (and every other IPv4 target)
    /// through its mapped form `::ffff:127.0.0.1`, so an app meant for IPv6
    /// hosts opened this site's IPv4 loopback services to every peer.
    #[test]
    fn ipv6_nets_do_not_admit_ipv4_targets() {
        for (net, v6) in [
            ("::/0", "[2001:db8::1]:22"),
            ("::/64", "[::1]:22"),
            ("::/80", "[::1]:22"),
            ("::ffff:0:0/95", "[::fffe:0:1]:22"),
        ] {
            let app = range(&[net], &[(1, 65535)]);
            for target in ["127.0.0.1:22", "[::ffff:127.0.0.1]:22", "10.0.0.1:80"] {
                let r = refused(admit(&app, Protocol::Tcp, t(target)));
                assert_eq!(r.status, Status::NotAllowed, "{net} {target}");
                assert!(r.reason.contains("address range"), "{}", r.reason);
            }
            assert!(admit(&app, Protocol::Tcp, t(v6)).is_ok(), "{net} {v6}");
        }
    }

    #[test]
    fn the_ipv4_mapped_net_opts_in_ipv4_targets() {
        let app = range(&["::ffff:0:0/96"], &[(22, 22)]);
        for target in ["127.0.0.1:22", "[::ffff:127.0.0.1]:22"] {
            assert_eq!(
                admit(&app, Protocol::Tcp, t(target)),
                Ok(AppSocket::Tcp("127.0.0.1:22".parse().unwrap())),
                "{target}"
            );
        }
        assert!(admit(&app, Protocol::Tcp, t("[2001:db8::1]:22")).is_err());
    }

    #[test]
    fn ipv4_nets_do_not_admit_ipv6_targets() {
        let app = range(&["0.0.0.0/0"], &[(1, 65535)]);
        for target in ["[::1]:22", "[::7f00:1]:22", "[64:ff9b::7f00:1]:22"] {
            assert!(admit(&app, Protocol::Tcp, t(target)).is_err(), "{target}");
        }
    }

    #[test]
    fn registry_refuses_duplicate_names_and_forgets_removed_apps() {
        let apps = ExposedApps::new(vec![single("b", "tcp:127.0.0.1:2")]);
        apps.insert(single("a", "tcp:127.0.0.1:1")).unwrap();
        assert!(matches!(
            apps.insert(single("a", "tcp:127.0.0.1:9")),
            Err(AppError::Exists(n)) if n == name("a")
        ));
        assert_eq!(apps.names(), vec![name("a"), name("b")]);
        assert_eq!(apps.get(&name("a")), Some(single("a", "tcp:127.0.0.1:1")));
        assert_eq!(
            apps.remove(&name("a")),
            Some(single("a", "tcp:127.0.0.1:1"))
        );
        assert_eq!(apps.get(&name("a")), None);
        assert_eq!(apps.remove(&name("a")), None);
        assert_eq!(apps.names(), vec![name("b")]);
    }

    #[test]
    fn restricted_apps_are_left_out_of_the_public_names() {
        let mut x = single("x", "tcp:127.0.0.1:1");
        x.allowed_sites = vec![SiteName::new("b").unwrap()];
        let apps = ExposedApps::new(vec![
            single("b", "tcp:127.0.0.1:2"),
            x.clone(),
            single("a", "tcp:127.0.0.1:3"),
        ]);
        assert_eq!(apps.names(), vec![name("a"), name("b"), name("x")]);
        assert_eq!(apps.public_names(), vec![name("a"), name("b")]);
        assert_eq!(apps.restricted(), vec![x]);
    }

    fn any_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u32>(), 0u8..=32)
                .prop_map(|(a, p)| IpNet::V4(ipnet::Ipv4Net::new(a.into(), p).unwrap().trunc())),
            (any::<u128>(), 0u8..=128)
                .prop_map(|(a, p)| IpNet::V6(Ipv6Net::new(a.into(), p).unwrap().trunc())),
            // Nets inside ::ffff:0:0/96, which do opt in IPv4 targets.
            (any::<u32>(), 96u8..=128).prop_map(|(a, p)| IpNet::V6(
                Ipv6Net::new(std::net::Ipv4Addr::from(a).to_ipv6_mapped(), p)
                    .unwrap()
                    .trunc()
            )),
        ]
    }

    fn range_of(nets: Vec<IpNet>) -> ExposedApp {
        ExposedApp {
            name: name("lan"),
            target: ExposedTarget::Range {
                ports: vec![PortRange {
                    start: 1,
                    end: 65535,
                }],
                addresses: nets,
                protocol: Protocol::Tcp,
            },
            max_connections: None,
            allowed_sites: Vec::new(),
            udp_idle_timeout: None,
            bandwidth_limit: None,
            proxy_protocol: None,
        }
    }

    #[test]
    fn udp_apps_admit_udp_flows_only_and_tcp_apps_tcp_only() {
        let dns = single("dns", "udp:127.0.0.1:53");
        assert_eq!(
            admit(&dns, Protocol::Udp, None),
            Ok(AppSocket::Udp("127.0.0.1:53".parse().unwrap()))
        );
        let r = refused(admit(&dns, Protocol::Tcp, None));
        assert_eq!(r.status, Status::NotAllowed);
        assert!(r.reason.contains("carries udp, not tcp"), "{}", r.reason);
        let web = single("web", "tcp:127.0.0.1:80");
        assert_eq!(
            refused(admit(&web, Protocol::Udp, None)).status,
            Status::NotAllowed
        );
        // A udp range app hands out udp targets, inside its ranges only.
        let mut lan = range(&["10.0.0.0/8"], &[(53, 53)]);
        lan.target = match lan.target {
            ExposedTarget::Range {
                ports, addresses, ..
            } => ExposedTarget::Range {
                ports,
                addresses,
                protocol: Protocol::Udp,
            },
            other => other,
        };
        assert_eq!(
            admit(&lan, Protocol::Udp, t("10.1.2.3:53")),
            Ok(AppSocket::Udp("10.1.2.3:53".parse().unwrap()))
        );
        assert!(admit(&lan, Protocol::Udp, t("10.1.2.3:54")).is_err());
        assert!(admit(&lan, Protocol::Tcp, t("10.1.2.3:53")).is_err());
    }

    proptest! {
        /// No IPv6 net outside `::ffff:0:0/96` admits an IPv4 target, whether
        /// the target is written plain or IPv4-mapped.
        #[test]
        fn ipv6_nets_outside_the_mapped_range_never_admit_ipv4(
            bits in any::<u128>(),
            prefix in 0u8..=128,
            v4 in any::<u32>(),
            port in 1u16..,
        ) {
            let net = Ipv6Net::new(bits.into(), prefix).unwrap().trunc();
            prop_assume!(!IPV4_MAPPED.contains(&net));
            let app = range_of(vec![IpNet::V6(net)]);
            let v4 = std::net::Ipv4Addr::from(v4);
            prop_assert!(admit(&app, Protocol::Tcp, Some(SocketAddr::new(v4.into(), port))).is_err());
            let mapped = SocketAddr::new(v4.to_ipv6_mapped().into(), port);
            prop_assert!(admit(&app, Protocol::Tcp, Some(mapped)).is_err());
        }

        /// A plain IPv4 target and its mapped form get the same answer, and an
        /// admitted one always connects to the plain IPv4 address.
        #[test]
        fn plain_and_mapped_ipv4_targets_are_judged_alike(
            nets in proptest::collection::vec(any_net(), 1..4),
            v4 in any::<u32>(),
            port in 1u16..,
        ) {
            let app = range_of(nets);
            let v4 = std::net::Ipv4Addr::from(v4);
            let plain = admit(&app, Protocol::Tcp, Some(SocketAddr::new(v4.into(), port)));
            let mapped = admit(&app, Protocol::Tcp, Some(SocketAddr::new(v4.to_ipv6_mapped().into(), port)));
            prop_assert_eq!(plain.is_ok(), mapped.is_ok());
            prop_assert_eq!(plain.as_ref().err().map(|r| r.status), mapped.as_ref().err().map(|r| r.status));
            if let Ok(socket) = plain {
                prop_assert_eq!(mapped, Ok(socket.clone()));
                prop_assert_eq!(socket, AppSocket::Tcp(SocketAddr::new(v4.into(), port)));
            }
        }

        /// An admitted target lies in a net of its own family (or, for IPv4,
        /// in a net inside `::ffff:0:0/96` that contains its mapped form).
        #[test]
        fn admitted_targets_lie_in_a_net_of_their_family(
            nets in proptest::collection::vec(any_net(), 1..4),
            target in prop_oneof![
                any::<u32>().prop_map(|a| IpAddr::V4(a.into())),
                any::<u128>().prop_map(|a| IpAddr::V6(a.into())),
            ],
            port in 1u16..,
        ) {
            let app = range_of(nets.clone());
            if let Ok(AppSocket::Tcp(addr)) = admit(&app, Protocol::Tcp, Some(SocketAddr::new(target, port))) {
                let ok = nets.iter().any(|n| match (n, addr.ip()) {
                    (IpNet::V4(n), IpAddr::V4(a)) => n.contains(&a),
                    (IpNet::V6(n), IpAddr::V6(a)) => n.contains(&a),
                    (IpNet::V6(n), IpAddr::V4(a)) => {
                        n.prefix_len() >= 96
                            && IPV4_MAPPED.contains(&n.network())
                            && n.contains(&a.to_ipv6_mapped())
                    }
                    (IpNet::V4(_), IpAddr::V6(_)) => false,
                });
                prop_assert!(ok, "{} admitted by {:?}", addr, nets);
            }
        }
    }
}
