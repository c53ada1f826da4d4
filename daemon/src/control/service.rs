//! The `wovenet.v1.ControlService` implementation: thin shims over
//! [`SiteHandle`].
//!
//! Each handler converts the request ([`super::convert`]), asks the site
//! actor, and maps errors ([`super::status`]). Handlers hold no site state and
//! no locks. The two watch RPCs spawn one task per watcher (on the daemon's
//! tracker, cancelled with it) that feeds a bounded channel, so a slow client
//! only ever delays itself: the event feed drops it with `RESOURCE_EXHAUSTED`
//! once the site's event buffer has moved past it.

use std::time::{Instant, SystemTime};

use tokio::sync::{broadcast, mpsc};
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};
use tracing::{Instrument, debug, info_span};
use wovenet_proto::v1;
use wovenet_proto::v1::control_service_server::ControlService;

use super::convert::{self, SnapshotParts};
use super::rates::StatsMeter;
use super::status;
use crate::site::handle::SiteHandle;
use crate::view::Sequenced;

/// Messages buffered per event watcher between its task and its connection.
/// The site's event bus buffers more behind it; overflow there ends the watch.
const EVENT_BUFFER: usize = 256;
/// Stats updates buffered per stats watcher; a slow one just gets fewer.
const STATS_BUFFER: usize = 4;

type Feed<T> = ReceiverStream<Result<T, Status>>;

/// The control service of one site.
#[derive(Debug, Clone)]
pub struct Service {
    site: SiteHandle,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Service {
    /// Serves `site`; watch tasks run on `tracker` and stop when `cancel` fires.
    pub fn new(site: SiteHandle, cancel: CancellationToken, tracker: TaskTracker) -> Self {
        Self {
            site,
            cancel,
            tracker,
        }
    }
}

#[tonic::async_trait]
impl ControlService for Service {
    async fn get_site(
        &self,
        _: Request<v1::GetSiteRequest>,
    ) -> Result<Response<v1::GetSiteResponse>, Status> {
        let site = self.site.site().await?;
        Ok(Response::new(v1::GetSiteResponse {
            site: Some(convert::site(&site, SystemTime::now())),
        }))
    }

    async fn list_peers(
        &self,
        _: Request<v1::ListPeersRequest>,
    ) -> Result<Response<v1::ListPeersResponse>, Status> {
        let peers = self.site.peers().await?;
        Ok(Response::new(v1::ListPeersResponse {
            peers: peers.iter().map(Into::into).collect(),
        }))
    }

    async fn list_channels(
        &self,
        _: Request<v1::ListChannelsRequest>,
    ) -> Result<Response<v1::ListChannelsResponse>, Status> {
        let channels = self.site.channels().await?;
        Ok(Response::new(v1::ListChannelsResponse {
            channels: channels.iter().map(Into::into).collect(),
        }))
    }

    async fn list_streams(
        &self,
        _: Request<v1::ListStreamsRequest>,
    ) -> Result<Response<v1::ListStreamsResponse>, Status> {
        let streams = self.site.streams().await?;
        Ok(Response::new(v1::ListStreamsResponse {
            streams: streams.iter().map(Into::into).collect(),
        }))
    }

    async fn list_apps(
        &self,
        _: Request<v1::ListAppsRequest>,
    ) -> Result<Response<v1::ListAppsResponse>, Status> {
        let apps = self.site.apps().await?;
        Ok(Response::new(convert::apps(&apps)))
    }

    async fn add_exposed_app(
        &self,
        request: Request<v1::AddExposedAppRequest>,
    ) -> Result<Response<v1::AddExposedAppResponse>, Status> {
        let spec = request.into_inner().app.unwrap_or_default();
        let app = self.site.add_exposed_app(&spec.into()).await?;
        Ok(Response::new(v1::AddExposedAppResponse {
            app: Some(v1::ExposedApp {
                spec: Some((&app).into()),
                live: true,
            }),
        }))
    }

    async fn remove_exposed_app(
        &self,
        request: Request<v1::RemoveExposedAppRequest>,
    ) -> Result<Response<v1::RemoveExposedAppResponse>, Status> {
        let name = request.into_inner().name;
        let app = self.site.remove_exposed_app(&name).await?;
        Ok(Response::new(v1::RemoveExposedAppResponse {
            app: Some(v1::ExposedApp {
                spec: Some((&app).into()),
                // Whether it came from the config file is no longer known: it is gone.
                live: false,
            }),
        }))
    }

    async fn add_remote_app(
        &self,
        request: Request<v1::AddRemoteAppRequest>,
    ) -> Result<Response<v1::AddRemoteAppResponse>, Status> {
        let spec = request.into_inner().app.unwrap_or_default();
        let app = self.site.add_remote_app(&spec.into()).await?;
        // Report the listener as it is now (it may have opened at once).
        let apps = self.site.apps().await?;
        let info = apps.remote.iter().find(|r| r.app == app);
        Ok(Response::new(v1::AddRemoteAppResponse {
            app: Some(match info {
                Some(info) => info.into(),
                None => v1::RemoteApp {
                    spec: Some((&app).into()),
                    live: true,
                    ..Default::default()
                },
            }),
        }))
    }

    async fn remove_remote_app(
        &self,
        request: Request<v1::RemoveRemoteAppRequest>,
    ) -> Result<Response<v1::RemoveRemoteAppResponse>, Status> {
        let r = request.into_inner();
        let removed = self
            .site
            .remove_remote_app(
                &r.site_name,
                &r.app_name,
                convert::local_filter(&r.local_socket),
            )
            .await?;
        Ok(Response::new(v1::RemoveRemoteAppResponse {
            removed: removed
                .iter()
                .map(|app| v1::RemoteApp {
                    spec: Some(app.into()),
                    ..Default::default()
                })
                .collect(),
        }))
    }

    async fn forget_peer(
        &self,
        request: Request<v1::ForgetPeerRequest>,
    ) -> Result<Response<v1::ForgetPeerResponse>, Status> {
        let r = request.into_inner();
        let identity = self.site.forget_peer(&r.site_name).await?;
        Ok(Response::new(v1::ForgetPeerResponse {
            identity: identity.to_string(),
        }))
    }

    async fn reload(
        &self,
        _: Request<v1::ReloadRequest>,
    ) -> Result<Response<v1::ReloadResponse>, Status> {
        let report = self.site.reload().await?;
        Ok(Response::new(v1::ReloadResponse {
            report: Some((&report).into()),
        }))
    }

    type WatchEventsStream = Feed<v1::WatchEventsResponse>;

    async fn watch_events(
        &self,
        _: Request<v1::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        // Subscribe before taking the snapshot, so no event falls between them
        // (one may show in both; it then carries a seq >= next_seq).
        let (next_seq, events) = self.site.subscribe().await?;
        let parts = SnapshotParts {
            site: self.site.site().await?,
            peers: self.site.peers().await?,
            channels: self.site.channels().await?,
            streams: self.site.streams().await?,
            apps: self.site.apps().await?,
            next_seq,
        };
        let snapshot = convert::snapshot_message(&parts, SystemTime::now());
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let cancel = self.cancel.child_token();
        self.tracker.spawn(
            forward_events(snapshot, events, tx, cancel)
                .instrument(info_span!("control", watch = "events")),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type WatchStatsStream = Feed<v1::WatchStatsResponse>;

    async fn watch_stats(
        &self,
        request: Request<v1::WatchStatsRequest>,
    ) -> Result<Response<Self::WatchStatsStream>, Status> {
        let interval = convert::stats_interval(request.into_inner().interval);
        // Fail the call itself, not the stream, if the site is already gone.
        let first = self.site.stats().await?;
        let (tx, rx) = mpsc::channel(STATS_BUFFER);
        let (site, cancel) = (self.site.clone(), self.cancel.child_token());
        self.tracker.spawn(
            async move {
                let mut meter = StatsMeter::default();
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let mut next = Some(first);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tx.closed() => return,
                        _ = ticks.tick() => {}
                    }
                    let stats = match next.take() {
                        Some(s) => s,
                        None => match site.stats().await {
                            Ok(s) => s,
                            Err(e) => {
                                let _ = tx.send(Err(e.into())).await;
                                return;
                            }
                        },
                    };
                    let rates = meter.update(Instant::now(), &stats);
                    let msg = convert::stats_message(&stats, &rates, SystemTime::now());
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        sent = tx.send(Ok(msg)) => if sent.is_err() { return },
                    }
                }
            }
            .instrument(info_span!("control", watch = "stats")),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Sends the snapshot, then every event, until the client leaves, the daemon
/// stops, or the client falls so far behind that events were lost (then the
/// stream ends with `RESOURCE_EXHAUSTED`: a gap would silently corrupt its view).
async fn forward_events(
    snapshot: v1::WatchEventsResponse,
    mut events: broadcast::Receiver<Sequenced>,
    tx: mpsc::Sender<Result<v1::WatchEventsResponse, Status>>,
    cancel: CancellationToken,
) {
    debug!("event watcher joined");
    let mut next = Ok(snapshot);
    loop {
        let last = next.is_err();
        tokio::select! {
            _ = cancel.cancelled() => break,
            sent = tx.send(next) => if sent.is_err() { break },
        }
        if last {
            debug!("event watcher dropped: it fell behind");
            return;
        }
        next = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tx.closed() => break,
            event = events.recv() => match event {
                Ok(e) => Ok(convert::event_message(&e)),
                Err(broadcast::error::RecvError::Lagged(missed)) => Err(status::lagged(missed)),
                // The site is gone: end the stream cleanly.
                Err(broadcast::error::RecvError::Closed) => break,
            },
        };
    }
    debug!("event watcher left");
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::config::SiteName;
    use crate::view::Event;

    fn discovered(seq: u64) -> Sequenced {
        Sequenced {
            seq,
            at: SystemTime::UNIX_EPOCH,
            event: Event::PeerDiscovered {
                site: SiteName::new("b").expect("name"),
            },
        }
    }

    fn snapshot() -> v1::WatchEventsResponse {
        v1::WatchEventsResponse {
            kind: Some(v1::watch_events_response::Kind::Snapshot(
                v1::Snapshot::default(),
            )),
        }
    }

    fn seq_of(m: &v1::WatchEventsResponse) -> Option<u64> {
        match &m.kind {
            Some(v1::watch_events_response::Kind::Event(e)) => Some(e.seq),
            _ => None,
        }
    }

    #[tokio::test]
    async fn the_snapshot_comes_first_then_events_in_order_until_the_site_goes() {
        let (bus, events) = broadcast::channel(16);
        for seq in [7, 8] {
            bus.send(discovered(seq)).expect("send");
        }
        drop(bus);
        let (tx, mut rx) = mpsc::channel(16);
        forward_events(snapshot(), events, tx, CancellationToken::new()).await;
        let first = rx.recv().await.expect("snapshot").expect("ok");
        assert_eq!(first, snapshot());
        let seqs: Vec<_> = [rx.recv().await, rx.recv().await]
            .into_iter()
            .map(|m| seq_of(&m.expect("event").expect("ok")))
            .collect();
        assert_eq!(seqs, [Some(7), Some(8)]);
        assert!(
            rx.recv().await.is_none(),
            "ends cleanly when the bus closes"
        );
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_dropped_with_resource_exhausted() {
        let (bus, events) = broadcast::channel(2);
        for seq in 1..=5 {
            bus.send(discovered(seq)).expect("send");
        }
        let (tx, mut rx) = mpsc::channel(16);
        forward_events(snapshot(), events, tx, CancellationToken::new()).await;
        assert!(rx.recv().await.expect("snapshot").is_ok());
        let status = rx.recv().await.expect("status").expect_err("dropped");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("fell behind"), "{status:?}");
        assert!(rx.recv().await.is_none());
        drop(bus);
    }

    #[tokio::test]
    async fn a_watch_stops_when_the_daemon_shuts_down() {
        let (_bus, events) = broadcast::channel::<Sequenced>(2);
        let (tx, mut rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(forward_events(snapshot(), events, tx, cancel.clone()));
        assert!(rx.recv().await.expect("snapshot").is_ok());
        cancel.cancel();
        task.await.expect("task");
        assert!(rx.recv().await.is_none());
    }
}
