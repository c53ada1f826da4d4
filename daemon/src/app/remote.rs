//! The client side: a local tcp or unix listener for one remote app
//! ([`RemoteListener`]). Every accepted connection gets its own stream to the
//! app's site, a preamble exchange, then a [`pipe`](super::pipe::pipe). A udp
//! local socket is bound here too but served by [`super::udp::listener`],
//! which opens each flow's stream with this module's preamble exchange.
//!
//! This module must not know how streams are routed (it only calls a
//! [`StreamOpener`]) and must not decide admission (the exposed side does).

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, warn};

use super::dialect::Dialect;
use super::pipe::AnyLocal;
use super::preamble::{ClientAddr, Request, Response, Status};
use super::{
    AppError, OpenError, PREAMBLE_TIMEOUT, ReadPreambleError, StreamOpener, TunnelStream, code,
    exposed::log_outcome, read_preamble,
};
use super::{AppThrottle, StreamRegistry, ThrottleKey};
use crate::accept::{self, AcceptBackoff};
use crate::config::{AppSocket, RemoteApp};
use crate::counters::Counters;
use crate::limit::{LimitReached, Limiter, Permit};
use crate::view::StreamDirection;
use crate::warn_limit::{REFUSAL_LOG_INTERVAL, SharedWarnLimiter};

/// A bound local socket serving one remote app.
///
/// Dropping (or [`close`](Self::close)-ing) it stops accepting and removes a
/// unix socket file; connections already accepted keep going until they end
/// or the `cancel` token given to [`open`](Self::open) fires.
#[must_use = "dropping the listener stops accepting"]
#[derive(Debug)]
pub struct RemoteListener {
    app: RemoteApp,
    local_addr: AppSocket,
    accept_cancel: CancellationToken,
    /// Cancelled once the serving task has ended and dropped the socket.
    closed: CancellationToken,
    /// The unix socket file we created, identified by (device, inode) so we
    /// never remove a file some later listener bound at the same path.
    unix_file: Option<(PathBuf, u64, u64)>,
}

impl RemoteListener {
    /// Binds `app.local_socket` now and spawns the accept loop on `tracker`.
    ///
    /// At most `app.max_connections` clients are served at once; one more is
    /// reset as soon as it is accepted. Client connections are served on
    /// `tracker` too and are torn down when `cancel` fires. Must be called
    /// inside a tokio runtime.
    pub fn open<O: StreamOpener>(
        app: RemoteApp,
        opener: Arc<O>,
        counters: Arc<Counters>,
        streams: Arc<StreamRegistry>,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Self, AppError> {
        let socket = app.local_socket.clone();
        let bind_err = |source: io::Error| AppError::Bind {
            socket: socket.clone(),
            source,
        };
        let throttle = streams
            .throttles()
            .get(ThrottleKey::remote(&app), app.bandwidth_limit);
        let client = Arc::new(Client {
            limit: app.connection_limit(),
            throttle,
            app: app.clone(),
            opener,
            counters,
            streams,
            cancel,
            open: Limiter::new(),
            refusal_log: SharedWarnLimiter::new(REFUSAL_LOG_INTERVAL),
            dialect: std::sync::Mutex::default(),
        });
        let accept_cancel = client.cancel.child_token();
        // What serves the socket: the accept loop, or the datagram loop of
        // a udp socket (boxed: one per listener, not per client).
        let (serve, local_addr, unix_file): (Pin<Box<dyn Future<Output = ()> + Send>>, _, _) =
            match &app.local_socket {
                AppSocket::Udp(addr) => {
                    let socket = super::udp::bind_udp(*addr).map_err(bind_err)?;
                    let local = socket.local_addr().map_err(bind_err)?;
                    let shared = Arc::new(super::udp::listener::Listener {
                        opener: client.clone(),
                        site: app.site.clone(),
                        app: app.app.clone(),
                        idle: app.udp_idle(),
                        limit: client.limit,
                        throttle: client.throttle.clone(),
                        streams: client.streams.clone(),
                        counters: client.counters.clone(),
                        cancel: client.cancel.clone(),
                    });
                    let serve = super::udp::listener::serve(
                        socket,
                        shared,
                        accept_cancel.clone(),
                        tracker.clone(),
                    );
                    (Box::pin(serve), AppSocket::Udp(local), None)
                }
                AppSocket::Tcp(addr) => {
                    // std binds synchronously (and sets SO_REUSEADDR on unix).
                    let std = std::net::TcpListener::bind(addr).map_err(bind_err)?;
                    std.set_nonblocking(true).map_err(bind_err)?;
                    let listener = TcpListener::from_std(std).map_err(bind_err)?;
                    let local = listener.local_addr().map_err(bind_err)?;
                    let serve = accept_loop(
                        Listener::Tcp(listener),
                        client,
                        accept_cancel.clone(),
                        tracker.clone(),
                    );
                    (Box::pin(serve), AppSocket::Tcp(local), None)
                }
                AppSocket::Unix(path) => {
                    prepare_unix_path(path).map_err(|e| match e {
                        PrepareError::Io(source) => bind_err(source),
                        PrepareError::App(e) => e,
                    })?;
                    let listener = UnixListener::bind(path).map_err(bind_err)?;
                    let meta = fs::symlink_metadata(path).map_err(bind_err)?;
                    let serve = accept_loop(
                        Listener::Unix(listener),
                        client,
                        accept_cancel.clone(),
                        tracker.clone(),
                    );
                    (
                        Box::pin(serve),
                        AppSocket::Unix(path.clone()),
                        Some((path.clone(), meta.dev(), meta.ino())),
                    )
                }
            };
        let span = tracing::info_span!(
            "listener",
            peer.site = %app.site,
            app.name = %app.app,
            local.socket = %local_addr,
        );
        let closed = CancellationToken::new();
        let done = closed.clone().drop_guard();
        tracker.spawn(
            async move {
                serve.await;
                drop(done);
            }
            .instrument(span),
        );
        debug!(app.name = %app.app, peer.site = %app.site, local.socket = %local_addr, "remote app listening");
        Ok(Self {
            app,
            local_addr,
            accept_cancel,
            closed,
            unix_file,
        })
    }

    /// The bound address (a tcp port 0 is resolved to the real port).
    pub fn local_addr(&self) -> &AppSocket {
        &self.local_addr
    }

    /// The app this listener serves.
    pub fn app(&self) -> &RemoteApp {
        &self.app
    }

    /// Stops accepting and removes the unix socket file (same as drop).
    pub fn close(self) {
        drop(self);
    }

    /// Like [`close`](Self::close), then resolves once the socket itself is
    /// closed, so that its address can be bound again at once (a listener
    /// reopened with another definition).
    pub fn shut(self) -> impl Future<Output = ()> + use<> {
        let closed = self.closed.clone();
        drop(self);
        async move { closed.cancelled().await }
    }
}

impl Drop for RemoteListener {
    fn drop(&mut self) {
        self.accept_cancel.cancel();
        if let Some((path, dev, ino)) = &self.unix_file
            && let Ok(meta) = fs::symlink_metadata(path)
            && meta.dev() == *dev
            && meta.ino() == *ino
            && let Err(e) = fs::remove_file(path)
        {
            warn!(path = %path.display(), error = %e, "cannot remove unix socket file");
        }
    }
}

enum PrepareError {
    Io(io::Error),
    App(AppError),
}

/// Makes `path` bindable: creates parent dirs and removes a stale socket
/// file, but refuses a live socket or a file that is not a socket.
fn prepare_unix_path(path: &Path) -> Result<(), PrepareError> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        fs::create_dir_all(parent).map_err(PrepareError::Io)?;
    }
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PrepareError::Io(e)),
    };
    let path_buf = path.to_path_buf();
    if !meta.file_type().is_socket() {
        return Err(PrepareError::App(AppError::NotASocket { path: path_buf }));
    }
    if unix_socket_is_live(path) {
        return Err(PrepareError::App(AppError::InUse { path: path_buf }));
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PrepareError::Io(e)),
    }
}

/// Whether something accepts connections on the unix socket at `path`.
///
/// Non-blocking, so a listener with a full backlog (which answers
/// `EAGAIN`) counts as live instead of blocking this thread.
fn unix_socket_is_live(path: &Path) -> bool {
    use socket2::{Domain, SockAddr, Socket, Type};
    let Ok(sock) = Socket::new(Domain::UNIX, Type::STREAM, None) else {
        return false;
    };
    if sock.set_nonblocking(true).is_err() {
        return false;
    }
    let Ok(addr) = SockAddr::unix(path) else {
        return false;
    };
    match sock.connect(&addr) {
        Ok(()) => true,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// An accepted client: its connection, its address for logs and views, and
/// (TCP only) the address pair the far site may pass on to its app.
struct Accepted {
    local: AnyLocal,
    addr: String,
    client: Option<ClientAddr>,
}

impl Listener {
    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Self::Tcp(l) => {
                let (s, addr) = l.accept().await?;
                // Interactive protocols suffer from Nagle; failure only costs latency.
                let _ = s.set_nodelay(true);
                // The address the client reached (not the listener's, which may
                // be a wildcard); without it the far side sends "unknown".
                let client = s
                    .local_addr()
                    .ok()
                    .map(|local| ClientAddr::new(addr, local));
                Ok(Accepted {
                    local: AnyLocal::Tcp(s),
                    addr: addr.to_string(),
                    client,
                })
            }
            Self::Unix(l) => {
                let (s, _) = l.accept().await?;
                // Unix clients are usually unnamed; the socket path is in the span.
                Ok(Accepted {
                    local: AnyLocal::Unix(s),
                    addr: "unix".to_owned(),
                    client: None,
                })
            }
        }
    }
}

/// What every client connection of one listener shares.
struct Client<O> {
    app: RemoteApp,
    opener: Arc<O>,
    counters: Arc<Counters>,
    /// Where open streams are listed.
    streams: Arc<StreamRegistry>,
    /// The listener owner's token: fires on shutdown, not on close.
    cancel: CancellationToken,
    /// Clients served now, at most `limit`.
    open: Limiter<()>,
    /// `maxConnections`.
    limit: usize,
    /// `bandwidthLimit`: shared by every client.
    throttle: Option<Arc<AppThrottle>>,
    /// Refusals over a limit come in bursts: their log lines are throttled.
    refusal_log: SharedWarnLimiter,
    /// Whether the far site understands requests carrying the client
    /// address; held only to read or update it, never across an await.
    dialect: std::sync::Mutex<Dialect>,
}

async fn accept_loop<O: StreamOpener>(
    listener: Listener,
    client: Arc<Client<O>>,
    accept_cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let mut backoff = AcceptBackoff::new();
    loop {
        let accepted = tokio::select! {
            () = accept_cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok(Accepted {
                local,
                addr: client_addr,
                client: client_pair,
            }) => {
                accept::on_success(&mut backoff, "remote app");
                let slot = match client.open.try_acquire((), client.limit) {
                    Ok(slot) => slot,
                    Err(LimitReached { limit }) => {
                        // Reset at once: the client sees a refusal, not a hang.
                        local.abort();
                        client.limited(&client_addr, &format!("maxConnections ({limit}) reached"));
                        continue;
                    }
                };
                let span = tracing::info_span!(
                    "stream",
                    peer.site = %client.app.site,
                    app.name = %client.app.app,
                    client.addr = %client_addr,
                    channel.id = tracing::field::Empty,
                );
                tracker.spawn(serve_client(
                    local,
                    client_addr,
                    client_pair,
                    client.clone(),
                    slot,
                    span,
                ));
            }
            Err(e) => {
                let pause = accept::on_error(&mut backoff, &client.counters, "remote app", &e);
                tokio::select! {
                    () = accept_cancel.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    debug!("remote app listener closed");
}

impl<O> Client<O> {
    /// Counts and logs why a client (or flow) could not be connected.
    fn handshake_failed(&self, addr: &str, e: &HandshakeError) {
        match e {
            HandshakeError::Reply(ReadPreambleError::Malformed(_)) => {
                Counters::bump(&self.counters.bad_preambles);
                warn!(error = %e, "cannot connect client to remote app");
            }
            HandshakeError::Refused {
                status: Status::LimitReached,
                reason,
            } => self.limited(
                addr,
                &format!(
                    "refused by site '{}': {}",
                    self.app.site,
                    reason.escape_debug()
                ),
            ),
            _ => info!(error = %e, "cannot connect client to remote app"),
        }
    }

    /// Counts and logs (throttled) a client turned away over a limit: this
    /// listener's or the far site's.
    fn limited(&self, client_addr: &str, why: &str) {
        Counters::bump(&self.counters.connections_limited);
        self.streams.limited(
            self.app.app.clone(),
            self.app.site.clone(),
            StreamDirection::Outbound,
        );
        if let Some(held_back) = self.refusal_log.allow(std::time::Instant::now()) {
            info!(client.addr = %client_addr, reason = why, held_back, "client refused: limit reached");
        }
    }
}

impl<O: StreamOpener> super::udp::listener::FlowOpener for Client<O> {
    async fn open_flow(&self, client: std::net::SocketAddr) -> Option<TunnelStream> {
        // UDP flows carry no client address: UDP apps take no PROXY header.
        match handshake(self, None).await {
            Ok(stream) => {
                Counters::bump(&self.counters.streams_opened);
                Some(stream)
            }
            Err(e) => {
                self.handshake_failed(&client.to_string(), &e);
                None
            }
        }
    }

    fn limited(&self, client: std::net::SocketAddr, limit: usize) {
        Self::limited(
            self,
            &client.to_string(),
            &format!("maxConnections ({limit}) reached"),
        );
    }
}

/// Why a client could not be connected to the app.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("{0}")]
    Open(#[from] OpenError),
    #[error("cannot send the preamble: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("bad reply: {0}")]
    Reply(#[from] ReadPreambleError),
    /// `reason` is the far site's free text: escaped, so it cannot forge a log line.
    #[error("refused by peer ({status}): {}", .reason.escape_debug())]
    Refused { status: Status, reason: String },
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

/// Serves one accepted client while it holds `_slot` of the listener's limit.
async fn serve_client<O: StreamOpener>(
    local: AnyLocal,
    addr: String,
    pair: Option<ClientAddr>,
    client: Arc<Client<O>>,
    _slot: Permit<()>,
    span: tracing::Span,
) {
    // Every step runs in `span` but the pipe: it logs nothing and is polled
    // for every chunk, and entering and leaving a span through the
    // subscriber's layers on each poll cost ~2 µs of CPU per round trip.
    let handshake = async {
        tokio::select! {
            r = handshake(&client, pair) => Some(r),
            () = client.cancel.cancelled() => None,
        }
    }
    .instrument(span.clone())
    .await;
    let stream = match handshake {
        Some(Ok(stream)) => stream,
        Some(Err(e)) => {
            span.in_scope(|| client.handshake_failed(&addr, &e));
            // Reset rather than close so the client notices at once.
            local.abort();
            return;
        }
        None => {
            local.abort();
            return;
        }
    };
    Counters::bump(&client.counters.streams_opened);
    span.in_scope(|| debug!("stream opened"));
    let TunnelStream {
        send,
        recv,
        guard,
        channel,
        datagrams: _,
    } = stream;
    span.record("channel.id", channel.0);
    let ticket = client.streams.open(
        client.app.app.clone(),
        client.app.site.clone(),
        StreamDirection::Outbound,
        addr,
        channel,
    );
    let outcome = local
        .pipe(
            send,
            recv,
            ticket.stats(),
            client.throttle.as_deref(),
            client.cancel.cancelled(),
        )
        .await;
    // The tunnel counts the stream as open until this drops.
    drop(guard);
    span.in_scope(|| log_outcome(&outcome, ticket.stats()));
}

/// Opens a stream, sends the request and waits for an `Ok` reply.
///
/// With a client address, and unless the far site is known not to understand
/// it, the request is the extended one; an `unsupported version` reply to it
/// (a site that predates client addresses) is answered by asking once more,
/// on a new stream, in the older form (see [`super::preamble`]).
async fn handshake<O: StreamOpener>(
    client: &Client<O>,
    pair: Option<ClientAddr>,
) -> Result<TunnelStream, HandshakeError> {
    let mut request = Request {
        app: client.app.app.clone(),
        target: client.app.app_socket,
        protocol: client.app.protocol(),
        client: pair.filter(|_| client.dialect().extended(std::time::Instant::now())),
    };
    let extended = request.client.is_some();
    let first = attempt(client, &request).await;
    if !extended {
        return first;
    }
    match first {
        Err(HandshakeError::Refused {
            status: Status::UnsupportedVersion,
            ..
        }) => {
            client.dialect().refused(std::time::Instant::now());
            Counters::bump(&client.counters.preamble_downgrades);
            // The span names the site; at most once per app per recheck period.
            info!("far site does not take client addresses (an older build): asking without");
            request.client = None;
            attempt(client, &request).await
        }
        Ok(stream) => {
            client.dialect().understood();
            Ok(stream)
        }
        Err(e @ HandshakeError::Refused { .. }) => {
            client.dialect().understood();
            Err(e)
        }
        Err(e) => Err(e),
    }
}

impl<O> Client<O> {
    /// The far site's request form (the lock is never held across an await).
    fn dialect(&self) -> std::sync::MutexGuard<'_, Dialect> {
        self.dialect
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One stream: opens it, sends `request` and waits for an `Ok` reply.
async fn attempt<O: StreamOpener>(
    client: &Client<O>,
    request: &Request,
) -> Result<TunnelStream, HandshakeError> {
    let open = client.opener.open_stream(&client.app.site);
    let mut stream = tokio::time::timeout(PREAMBLE_TIMEOUT, open)
        .await
        .map_err(|_| HandshakeError::TimedOut(PREAMBLE_TIMEOUT))??;
    let exchange = async {
        stream.send.write_all(&request.encode()).await?;
        let reply = read_preamble::<Response>(&mut stream.recv).await?;
        if reply.status == Status::Ok {
            Ok(())
        } else {
            Err(HandshakeError::Refused {
                status: reply.status,
                reason: reply.message,
            })
        }
    };
    let result = tokio::time::timeout(PREAMBLE_TIMEOUT, exchange)
        .await
        .unwrap_or(Err(HandshakeError::TimedOut(PREAMBLE_TIMEOUT)));
    match result {
        Ok(()) => Ok(stream),
        Err(e) => {
            // Dropping a SendStream would finish it cleanly; say it failed.
            let code = match e {
                HandshakeError::Refused { .. } => code::REFUSED,
                _ => code::BAD_PREAMBLE,
            };
            let _ = stream.send.reset(code);
            let _ = stream.recv.stop(code);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppName, SiteName};
    use tokio::io::AsyncReadExt;

    /// Regression: the far site's refusal text went into the log line as is,
    /// so a line feed in it could forge a log line.
    #[test]
    fn a_refusal_reason_cannot_add_a_log_line() {
        let e = HandshakeError::Refused {
            status: Status::NotAllowed,
            reason: "no\n2025-01-01T00:00:00Z  INFO forged line\u{1b}[2J\u{202e}".into(),
        };
        let text = e.to_string();
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(!text.contains('\u{202e}'), "{text:?}");
        assert!(text.contains("no\\n2025"), "{text:?}");
    }

    /// An opener with no connected sites.
    struct Nowhere;

    impl StreamOpener for Nowhere {
        async fn open_stream(&self, site: &SiteName) -> Result<TunnelStream, OpenError> {
            Err(OpenError::NotConnected(site.clone()))
        }
    }

    fn remote(local: AppSocket) -> RemoteApp {
        RemoteApp {
            site: SiteName::new("far").unwrap(),
            app: AppName::new("web").unwrap(),
            local_socket: local,
            app_socket: None,
            max_connections: None,
            udp_idle_timeout: None,
            bandwidth_limit: None,
        }
    }

    fn open(local: AppSocket, tracker: &TaskTracker) -> Result<RemoteListener, AppError> {
        RemoteListener::open(
            remote(local),
            Arc::new(Nowhere),
            Arc::new(Counters::default()),
            Arc::new(StreamRegistry::new(Arc::default())),
            CancellationToken::new(),
            tracker,
        )
    }

    #[tokio::test]
    async fn tcp_port_zero_reports_the_real_port() {
        let tracker = TaskTracker::new();
        let l = open(AppSocket::Tcp("127.0.0.1:0".parse().unwrap()), &tracker).unwrap();
        let AppSocket::Tcp(addr) = l.local_addr() else {
            panic!("not tcp")
        };
        assert_ne!(addr.port(), 0);
    }

    #[tokio::test]
    async fn tcp_port_in_use_names_the_socket() {
        let tracker = TaskTracker::new();
        let first = open(AppSocket::Tcp("127.0.0.1:0".parse().unwrap()), &tracker).unwrap();
        let err = open(first.local_addr().clone(), &tracker).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&first.local_addr().to_string()), "{msg}");
        assert!(msg.to_lowercase().contains("in use"), "{msg}");
    }

    #[tokio::test]
    async fn client_of_an_unconnected_site_is_closed_at_once() {
        let tracker = TaskTracker::new();
        let l = open(AppSocket::Tcp("127.0.0.1:0".parse().unwrap()), &tracker).unwrap();
        let AppSocket::Tcp(addr) = l.local_addr().clone() else {
            panic!("not tcp")
        };
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("client closed promptly");
        assert!(r.is_err() || r.unwrap() == 0);
    }

    #[tokio::test]
    async fn unix_socket_creates_parent_dirs_and_is_removed_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/web.sock");
        let tracker = TaskTracker::new();
        let l = open(AppSocket::Unix(path.clone()), &tracker).unwrap();
        assert!(path.exists());
        l.close();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn stale_unix_socket_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.sock");
        // A socket file nobody listens on any more.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let tracker = TaskTracker::new();
        let l = open(AppSocket::Unix(path.clone()), &tracker).unwrap();
        tokio::net::UnixStream::connect(&path).await.unwrap();
        drop(l);
    }

    #[tokio::test]
    async fn live_unix_socket_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.sock");
        let _other = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let tracker = TaskTracker::new();
        let err = open(AppSocket::Unix(path.clone()), &tracker).unwrap_err();
        assert!(matches!(err, AppError::InUse { .. }), "{err}");
        assert!(
            err.to_string().contains("another process is listening"),
            "{err}"
        );
        assert!(path.exists());
    }

    #[tokio::test]
    async fn regular_file_at_the_socket_path_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.sock");
        fs::write(&path, b"precious").unwrap();
        let tracker = TaskTracker::new();
        let err = open(AppSocket::Unix(path.clone()), &tracker).unwrap_err();
        assert!(matches!(err, AppError::NotASocket { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"precious");
    }

    #[tokio::test]
    async fn closing_an_old_listener_keeps_a_newer_socket_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.sock");
        let tracker = TaskTracker::new();
        let old = open(AppSocket::Unix(path.clone()), &tracker).unwrap();
        // Simulate the file being replaced by another listener.
        fs::remove_file(&path).unwrap();
        let new = open(AppSocket::Unix(path.clone()), &tracker).unwrap();
        old.close();
        assert!(path.exists());
        new.close();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn closed_listener_stops_accepting_and_its_task_ends() {
        let tracker = TaskTracker::new();
        let l = open(AppSocket::Tcp("127.0.0.1:0".parse().unwrap()), &tracker).unwrap();
        let AppSocket::Tcp(addr) = l.local_addr().clone() else {
            panic!("not tcp")
        };
        l.close();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("accept loop ended");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
