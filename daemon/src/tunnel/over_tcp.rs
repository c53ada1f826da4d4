//! TCP dataChannels: the listener of a `transportProtocol: tcp` socket and
//! the dial loop toward a peer's TCP socket. Each TCP connection becomes a
//! [`tcp::Link`] under a quinn endpoint of its own, and from there the channel
//! is made exactly like a QUIC one: the same handshake with certificate
//! pinning, the same key proof ([`super::connect`], [`super::inbound`]), the
//! same registry, pick and stats ([`super::run_channel`]).
//!
//! The tunnel port faces the internet, so an accepted TCP connection holds a
//! place under the listener's [`admission`] caps (per source and per listener)
//! from its first byte until its key proof, and is closed when the proof is
//! not done by the slot's deadline — whether or not it ever sent a QUIC
//! packet. When the TCP connection ends, its channel is closed at once (no
//! idle timeout), and the other way round.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use super::admission::{self, Verdict};
use super::dial_book::DialBook;
use super::endpoint;
use super::tcp::Link;
use super::tls::{self, Fingerprint};
use super::{
    CLOSE_NORMAL, Chain, ChannelRoute, Ctx, DialError, Direction, Origin, PeerId, TunnelError, Via,
    auth, connect, inbound, run_channel, turned_away,
};
use crate::config::Transport;
use crate::counters::Counters;
use crate::warn_limit::WarnLimiter;

/// How long a TCP connect may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `listen` on TCP (blocking bind, so errors surface at start like a
/// UDP socket's) for [`accept_loop`].
pub(super) fn bind(listen: SocketAddr) -> Result<TcpListener, TunnelError> {
    let bind_err = |e: std::io::Error| TunnelError::BindTcp {
        addr: listen,
        source: e,
    };
    let domain = socket2::Domain::for_address(listen);
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
        .map_err(bind_err)?;
    if listen.is_ipv6() && listen.ip().is_unspecified() {
        let _ = sock.set_only_v6(false);
    }
    sock.set_reuse_address(true).map_err(bind_err)?;
    sock.set_nonblocking(true).map_err(bind_err)?;
    sock.bind(&listen.into()).map_err(bind_err)?;
    sock.listen(1024).map_err(bind_err)?;
    TcpListener::from_std(sock.into()).map_err(bind_err)
}

/// Accepts TCP connections under the admission caps and runs each as an
/// inbound dataChannel, until `cancel`.
pub(super) async fn accept_loop(
    listener: TcpListener,
    server: quinn::ServerConfig,
    ctx: Ctx,
    cancel: CancellationToken,
) {
    let local = listener.local_addr().ok();
    let gate = admission::Gate::new(admission::Limits::default());
    let mut crowded_warn = WarnLimiter::default();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Mostly out of descriptors: pause rather than spin.
                Counters::bump(&ctx.counters.accept_errors);
                debug!(error = %e, "tcp accept failed");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let now = Instant::now();
        // TCP's handshake proved the address: no Retry is ever asked for.
        match gate.decide(remote.ip(), true, now) {
            Verdict::Admit(slot) => {
                let ctx2 = ctx.clone();
                let server = server.clone();
                let cancel = cancel.child_token();
                ctx.tracker.spawn(
                    accepted_conn(ctx2, stream, remote, local, slot, server, cancel)
                        .instrument(info_span!("inbound", remote = %remote, transport = "tcp")),
                );
            }
            // Closing the TCP connection is the whole answer.
            Verdict::Refuse(why) | Verdict::Ignore(why) => {
                turned_away(&ctx, &gate, &mut crowded_warn, remote, why, now);
                drop(stream);
            }
            Verdict::Retry => {
                turned_away(
                    &ctx,
                    &gate,
                    &mut crowded_warn,
                    remote,
                    admission::Crowded::Listener,
                    now,
                );
                drop(stream);
            }
        }
    }
}

/// One admitted TCP connection: its own endpoint, one QUIC connection on it
/// by the slot's deadline, then [`inbound`] as for UDP.
async fn accepted_conn(
    ctx: Ctx,
    stream: TcpStream,
    remote: SocketAddr,
    local: Option<SocketAddr>,
    slot: admission::Slot,
    server: quinn::ServerConfig,
    cancel: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let link_local = stream.local_addr().ok().or(local);
    let Some(link_local) = link_local else {
        return;
    };
    let link = Link::spawn(
        stream,
        (remote, link_local),
        usize::from(endpoint::TCP_MTU),
        cancel.clone(),
        ctx.counters.clone(),
        &ctx.tracker,
    );
    let ep = match endpoint::over_tcp(link, Some(server)) {
        Ok(ep) => ep,
        Err(e) => {
            debug!(error = %e, "cannot start an endpoint for a tcp connection");
            cancel.cancel();
            return;
        }
    };
    let deadline = tokio::time::Instant::from_std(slot.deadline());
    let incoming = tokio::select! {
        _ = cancel.cancelled() => None,
        i = tokio::time::timeout_at(deadline, ep.accept()) => i.ok().flatten(),
    };
    // One QUIC connection per TCP connection: refuse any other.
    ep.set_server_config(None);
    match incoming {
        Some(incoming) => {
            inbound(
                ctx,
                incoming,
                slot,
                cancel.clone(),
                Via {
                    local,
                    path: ChannelRoute::Direct,
                    aux: None,
                    transport: Transport::Tcp,
                },
            )
            .await;
        }
        None => {
            // Nothing (or no QUIC) by the deadline: a connection that holds a
            // place without proving anything is dropped like a slow proof.
            super::auth_failed(&ctx, &super::AuthError::Timeout(auth::DEADLINE));
        }
    }
    ep.close(CLOSE_NORMAL.into(), b"channel over");
    cancel.cancel();
}

/// The dial loop toward a peer's TCP socket: connect, prove, carry streams
/// until the channel or its TCP connection dies, back off, redial — until
/// `cancel` (which cuts the channel) or `drain` (which lets its streams end
/// first, then closes it).
pub(super) async fn dial_loop(
    ctx: Ctx,
    transport: Arc<quinn::TransportConfig>,
    peer: PeerId,
    socket: u32,
    addr: SocketAddr,
    pinned: Fingerprint,
    (cancel, drain): (CancellationToken, CancellationToken),
) {
    let mut book = DialBook::open(
        &ctx,
        &peer,
        (socket, addr),
        ChannelRoute::Direct,
        Transport::Tcp,
    );
    let client = match tls::client_config(&ctx.identity, pinned, transport) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot build client config");
            return;
        }
    };
    let stop = async {
        tokio::select! {
            () = cancel.cancelled() => {}
            () = drain.cancelled() => {}
        }
    };
    tokio::pin!(stop);
    loop {
        let link_cancel = cancel.child_token();
        let result = tokio::select! {
            () = &mut stop => break,
            r = dial_once(&ctx, &client, addr, &peer, &link_cancel) => r,
        };
        match result {
            Ok((conn, ep, local)) => {
                let origin = Origin {
                    direction: Direction::Outbound,
                    attempts: book.attempts(),
                    dial_id: Some(book.id()),
                    local: Some(local),
                    cert: pinned,
                    path: ChannelRoute::Direct,
                    transport: Transport::Tcp,
                };
                // The link's token: cancelled by us or by the TCP stream's end.
                let run = run_channel(&ctx, conn.clone(), peer.clone(), origin, &link_cancel);
                tokio::pin!(run);
                let reason = tokio::select! {
                    reason = &mut run => reason,
                    () = drain.cancelled() => {
                        super::drain(&ctx, &peer.site, &conn, "QUIC over UDP works again");
                        run.await
                    }
                };
                ep.close(CLOSE_NORMAL.into(), b"channel over");
                link_cancel.cancel();
                book.channel_ended(&conn, &reason);
                if cancel.is_cancelled() || drain.is_cancelled() {
                    break;
                }
                debug!(%reason, "outbound tcp channel ended, redialling");
            }
            Err(e) => {
                link_cancel.cancel();
                let e = Chain(&e).to_string();
                book.failed(e).await;
            }
        }
        if !book.pause(&mut stop).await {
            break;
        }
    }
}

/// One attempt: the TCP connection, its endpoint, the QUIC handshake and the
/// key proof. The link stops with `link_cancel`.
async fn dial_once(
    ctx: &Ctx,
    client: &quinn::ClientConfig,
    addr: SocketAddr,
    peer: &PeerId,
    link_cancel: &CancellationToken,
) -> Result<(quinn::Connection, quinn::Endpoint, SocketAddr), DialError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| DialError::TcpTimeout(CONNECT_TIMEOUT))?
        .map_err(DialError::Tcp)?;
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().map_err(DialError::Tcp)?;
    let link = Link::spawn(
        stream,
        (addr, local),
        usize::from(endpoint::TCP_MTU),
        link_cancel.clone(),
        ctx.counters.clone(),
        &ctx.tracker,
    );
    let ep = endpoint::over_tcp(link, None).map_err(DialError::Tcp)?;
    match connect(&ep, client, addr, ctx, peer).await {
        Ok(conn) => Ok((conn, ep, local)),
        Err(e) => {
            ep.close(CLOSE_NORMAL.into(), b"dial failed");
            Err(e)
        }
    }
}
