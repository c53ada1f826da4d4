//! The control plane: the `wovenet.v1` gRPC API on a unix socket, and the
//! optional Prometheus endpoint.
//!
//! Two steps, so that a daemon that cannot own its control socket fails
//! before it touches the network: [`Control::bind`] claims the socket (and
//! the metrics address), then [`Control::spawn`] serves them for a running
//! site on the daemon's task tracker, stopping when its cancellation token
//! fires (the socket file goes with the listener). The control plane holds no
//! site state: every request goes to the site actor through [`SiteHandle`].
//!
//! - [`socket`]: path choice, live/stale probe, mode 0660, removal on exit;
//! - [`service`]: the tonic service, one thin handler per RPC;
//! - [`convert`]: engine ⇄ protobuf types; [`status`]: errors → gRPC codes;
//! - [`metrics`]: `GET /metrics`.

pub mod convert;
pub mod metrics;
mod rates;
pub mod service;
pub mod socket;
pub mod status;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use tracing::{Instrument, info, info_span, warn};
use wovenet_proto::v1::control_service_server::ControlServiceServer;

use crate::accept::Paced;
use crate::counters::Counters;
use crate::site::handle::SiteHandle;

pub use metrics::MetricsError;
pub use socket::{ControlSocket, SocketError};

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlStartError {
    /// The control socket could not be claimed.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The metrics address could not be bound.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// A claimed, not yet serving control plane.
#[derive(Debug)]
#[must_use = "the control socket is released when this is dropped; call spawn"]
pub struct Control {
    socket: ControlSocket,
    metrics: Option<(TcpListener, SocketAddr)>,
}

impl Control {
    /// Claims the control socket at `socket` (see [`ControlSocket::bind`]) and,
    /// if given, binds the metrics address.
    pub async fn bind(
        socket: &Path,
        metrics: Option<SocketAddr>,
    ) -> Result<Self, ControlStartError> {
        let socket = ControlSocket::bind(socket).await?;
        let metrics = match metrics {
            Some(addr) => {
                let listener = metrics::bind(addr).await?;
                // Report the real port when the config asked for port 0.
                let local = listener.local_addr().unwrap_or(addr);
                Some((listener, local))
            }
            None => None,
        };
        Ok(Self { socket, metrics })
    }

    /// The control socket path.
    pub fn socket_path(&self) -> &Path {
        self.socket.path()
    }

    /// The bound metrics address, if metrics are served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.1)
    }

    /// Serves `site` until `cancel` fires; every task runs on `tracker`.
    /// The socket file is removed as soon as the server stops accepting.
    /// Failed accepts (out of file descriptors) pause the accept loop and
    /// are counted in `counters`; connections already open keep being served.
    pub fn spawn(
        self,
        site: SiteHandle,
        counters: Arc<Counters>,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) {
        let span = info_span!("control");
        let path = self.socket.path().to_path_buf();
        let service = service::Service::new(site.clone(), cancel.clone(), tracker.clone());
        // tonic retries a failed accept at once, spinning while descriptors
        // are exhausted; the pacing pauses it instead.
        let incoming = Paced::new(self.socket.into_incoming(), "control", counters);
        let stop = cancel.clone();
        tracker.spawn(
            async move {
                info!(path = %path.display(), "control socket listening");
                let served = Server::builder()
                    .add_service(ControlServiceServer::new(service))
                    .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                    .await;
                match served {
                    Ok(()) => info!("control socket closed"),
                    Err(e) => warn!(error = %e, "control server failed"),
                }
            }
            .instrument(span.clone()),
        );
        if let Some((listener, addr)) = self.metrics {
            let tasks = tracker.clone();
            tracker.spawn(
                async move {
                    info!(listen = %addr, "metrics listening");
                    metrics::serve(listener, site, cancel, tasks).await;
                }
                .instrument(span),
            );
        }
    }
}
