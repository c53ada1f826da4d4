//! A remote app's UDP listener: one socket, one flow per client address.
//!
//! The receive loop routes each datagram through a [`FlowTable`]: to the
//! client's flow task through a bounded queue, or to a new flow task that
//! opens the flow's stream (through a [`FlowOpener`]) and then runs
//! [`run_flow`]. Datagrams over a limit or a full queue are
//! dropped and counted.
//!
//! This module must not open streams itself (the opener does, with the TCP
//! listener's preamble code) nor decide admission.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info};

use super::flows::{FlowTable, Route};
use super::{FLOW_QUEUE, Flow, LocalEnd, run_flow};
use crate::accept::{self, AcceptBackoff};
use crate::app::{StreamRegistry, TunnelStream};
use crate::config::{AppName, SiteName};
use crate::counters::Counters;
use crate::view::StreamDirection;

/// Opens the stream of a new flow, preamble exchanged; failures are counted
/// and logged by the opener, which then returns `None`.
pub trait FlowOpener: Send + Sync + 'static {
    /// A stream admitted by the far site for a flow from `client`.
    fn open_flow(&self, client: SocketAddr) -> impl Future<Output = Option<TunnelStream>> + Send;
    /// Counts and logs a client refused because `limit` flows are open.
    fn limited(&self, client: SocketAddr, limit: usize);
}

/// What every flow of one listener shares.
pub struct Listener<O> {
    /// Opens flow streams.
    pub opener: Arc<O>,
    /// The remote app's site.
    pub site: SiteName,
    /// The remote app's name there.
    pub app: AppName,
    /// `udpIdleTimeout`.
    pub idle: Duration,
    /// `maxConnections`: flows at once.
    pub limit: usize,
    /// Where flows are listed.
    pub streams: Arc<StreamRegistry>,
    /// Drop counters.
    pub counters: Arc<Counters>,
    /// The site's shutdown: ends every flow.
    pub cancel: CancellationToken,
}

/// One client of the listener as the flow's local end.
struct ClientEnd {
    rx: mpsc::Receiver<Bytes>,
    socket: Arc<UdpSocket>,
    addr: SocketAddr,
}

impl LocalEnd for ClientEnd {
    async fn recv(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    async fn send(&self, datagram: &[u8]) -> std::io::Result<()> {
        self.socket.send_to(datagram, self.addr).await.map(|_| ())
    }
}

/// Whether a receive error is an ICMP report about an earlier send (Linux
/// queues them on the socket), not a failure of the socket itself.
fn is_icmp_report(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::ENETDOWN
                | libc::EMSGSIZE
        )
    )
}

/// Receives on `socket` until `accept_cancel` fires; flows run on `tracker`.
pub async fn serve<O: FlowOpener>(
    socket: UdpSocket,
    shared: Arc<Listener<O>>,
    accept_cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let socket = Arc::new(socket);
    let mut table: FlowTable<SocketAddr, mpsc::Sender<Bytes>> = FlowTable::new(shared.limit);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
    let mut buf = vec![0u8; 65_536];
    let mut backoff = AcceptBackoff::new();
    loop {
        let (n, from) = tokio::select! {
            () = accept_cancel.cancelled() => break,
            Some((addr, generation)) = done_rx.recv() => {
                table.remove(&addr, generation);
                continue;
            }
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => {
                    accept::on_success(&mut backoff, "remote udp app");
                    r
                }
                Err(e) if is_icmp_report(&e) => {
                    // An ICMP error about an earlier send to one client: that
                    // datagram was already counted as sent; nothing to pause for.
                    debug!(error = %e, "udp listener: icmp error from a client");
                    continue;
                }
                Err(e) => {
                    // Out of memory or buffers: pause like an accept loop
                    // instead of spinning on a socket that keeps failing.
                    let pause = accept::on_error(&mut backoff, &shared.counters, "remote udp app", &e);
                    tokio::select! {
                        () = accept_cancel.cancelled() => break,
                        () = tokio::time::sleep(pause) => continue,
                    }
                }
            },
        };
        let datagram = Bytes::copy_from_slice(&buf[..n]);
        match table.route(&from) {
            Route::Existing(tx) => match tx.try_send(datagram) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    Counters::bump(&shared.counters.udp_queue_overflow);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    // The flow just ended; its removal is on the way.
                    Counters::bump(&shared.counters.udp_send_failed);
                }
            },
            Route::Full => {
                Counters::bump(&shared.counters.udp_flows_limited);
                shared.opener.limited(from, shared.limit);
            }
            Route::Open(generation) => {
                let (tx, rx) = mpsc::channel(FLOW_QUEUE);
                // A fresh queue has room for the first datagram.
                let _ = tx.try_send(datagram);
                table.insert(from, generation, tx);
                let end = ClientEnd {
                    rx,
                    socket: socket.clone(),
                    addr: from,
                };
                let span = tracing::info_span!(
                    "flow",
                    peer.site = %shared.site,
                    app.name = %shared.app,
                    client.addr = %from,
                );
                let shared = shared.clone();
                let done = done_tx.clone();
                tracker.spawn(
                    async move {
                        serve_client(end, &shared).await;
                        let _ = done.send((from, generation));
                    }
                    .instrument(span),
                );
            }
        }
    }
    debug!("remote udp app listener closed");
}

async fn serve_client<O: FlowOpener>(end: ClientEnd, shared: &Listener<O>) {
    let addr = end.addr;
    let opened = tokio::select! {
        s = shared.opener.open_flow(addr) => s,
        () = shared.cancel.cancelled() => return,
    };
    let Some(stream) = opened else {
        // Datagrams queued for the refused flow are not delivered.
        Counters::add(&shared.counters.udp_send_failed, end.rx.len() as u64);
        return;
    };
    let TunnelStream {
        send,
        recv,
        guard,
        channel,
        datagrams,
    } = stream;
    let Some(flow) = Flow::new(send, recv, &datagrams, shared.idle) else {
        info!("flow id already registered");
        return;
    };
    let ticket = shared.streams.open_flow(
        shared.app.clone(),
        shared.site.clone(),
        StreamDirection::Outbound,
        addr.to_string(),
        channel,
    );
    let end = run_flow(end, flow, ticket.stats(), shared.cancel.cancelled()).await;
    drop(guard);
    debug!(%end, "flow ended");
}
