//! Registry of forwarded app connections (streams) for the control plane:
//! who is connected to what, bytes each way, and per-app totals.
//!
//! Registration is one short lock at open and one at close, never per chunk:
//! byte counts live in the stream's own atomics ([`PipeStats`]) that the pipe
//! updates as data flows, and a snapshot just reads them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::PipeStats;
use super::throttle::Throttles;
use crate::config::{AppName, Protocol, SiteName};
use crate::types::ChannelId;
use crate::view::{AppStats, Event, EventBus, StreamDirection, StreamInfo};

type TotalsKey = (AppName, SiteName, StreamDirection);

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    open: u64,
    total: u64,
    bytes_sent: u64,
    bytes_received: u64,
    limited: u64,
    not_allowed: u64,
    datagrams_sent: u64,
    datagrams_received: u64,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    app: AppName,
    peer: SiteName,
    direction: StreamDirection,
    client: String,
    channel: ChannelId,
    since: Instant,
    stats: PipeStats,
    protocol: Protocol,
}

impl Entry {
    fn info(&self) -> StreamInfo {
        StreamInfo {
            id: self.id,
            app: self.app.clone(),
            peer: self.peer.clone(),
            direction: self.direction,
            client: self.client.clone(),
            channel: self.channel,
            bytes_sent: self.stats.bytes_to_remote.load(Ordering::Relaxed),
            bytes_received: self.stats.bytes_from_remote.load(Ordering::Relaxed),
            age: self.since.elapsed(),
            protocol: self.protocol,
            datagrams_sent: self.stats.datagrams_to_remote.load(Ordering::Relaxed),
            datagrams_received: self.stats.datagrams_from_remote.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<u64, Arc<Entry>>,
    totals: HashMap<TotalsKey, Totals>,
}

/// Every open stream of one site, plus per-app totals since start, and the
/// bandwidth throttles the streams of limited apps share.
#[derive(Debug)]
pub struct StreamRegistry {
    next_id: AtomicU64,
    inner: Mutex<Inner>,
    bus: Arc<EventBus>,
    throttles: Throttles,
}

impl StreamRegistry {
    /// An empty registry that reports opens and closes on `bus`.
    pub fn new(bus: Arc<EventBus>) -> Self {
        Self {
            next_id: AtomicU64::new(1),
            inner: Mutex::default(),
            bus,
            throttles: Throttles::new(),
        }
    }

    /// The apps' bandwidth throttles.
    pub fn throttles(&self) -> &Throttles {
        &self.throttles
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Critical sections are single map updates; a poisoned lock still
        // holds consistent data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a stream that was just admitted; it stays listed until the
    /// returned ticket drops.
    pub fn open(
        self: &Arc<Self>,
        app: AppName,
        peer: SiteName,
        direction: StreamDirection,
        client: String,
        channel: ChannelId,
    ) -> StreamTicket {
        self.open_as(app, peer, direction, client, channel, Protocol::Tcp)
    }

    /// Registers a UDP flow that was just admitted, like [`open`](Self::open).
    pub fn open_flow(
        self: &Arc<Self>,
        app: AppName,
        peer: SiteName,
        direction: StreamDirection,
        client: String,
        channel: ChannelId,
    ) -> StreamTicket {
        self.open_as(app, peer, direction, client, channel, Protocol::Udp)
    }

    fn open_as(
        self: &Arc<Self>,
        app: AppName,
        peer: SiteName,
        direction: StreamDirection,
        client: String,
        channel: ChannelId,
        protocol: Protocol,
    ) -> StreamTicket {
        let entry = Arc::new(Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            app,
            peer,
            direction,
            client,
            channel,
            since: Instant::now(),
            stats: PipeStats::default(),
            protocol,
        });
        {
            let mut inner = self.lock();
            inner.live.insert(entry.id, entry.clone());
            let t = inner
                .totals
                .entry((entry.app.clone(), entry.peer.clone(), direction))
                .or_default();
            t.open += 1;
            t.total += 1;
        }
        self.bus.emit(Event::StreamOpened {
            stream: entry.info(),
        });
        StreamTicket {
            registry: self.clone(),
            entry,
        }
    }

    /// Counts a stream of `app` with `peer` refused because a limit was
    /// reached. Callers pass only apps that exist here (a configured remote
    /// app, an exposed app), so peer-chosen names cannot grow the totals.
    pub fn limited(&self, app: AppName, peer: SiteName, direction: StreamDirection) {
        self.lock()
            .totals
            .entry((app, peer, direction))
            .or_default()
            .limited += 1;
    }

    /// Counts a stream `peer` opened to the exposed `app` and was refused
    /// because the app's `allowedSites` does not list it. Callers pass only
    /// exposed apps and authenticated peers, so the totals stay bounded.
    pub fn not_allowed(&self, app: AppName, peer: SiteName) {
        self.lock()
            .totals
            .entry((app, peer, StreamDirection::Inbound))
            .or_default()
            .not_allowed += 1;
    }

    /// Open streams, oldest first.
    pub fn snapshot(&self) -> Vec<StreamInfo> {
        let mut v: Vec<_> = self.lock().live.values().map(|e| e.info()).collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Number of open streams.
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Totals per app, peer and direction, including bytes of open streams.
    pub fn app_stats(&self) -> Vec<AppStats> {
        let inner = self.lock();
        let mut totals = inner.totals.clone();
        for e in inner.live.values() {
            if let Some(t) = totals.get_mut(&(e.app.clone(), e.peer.clone(), e.direction)) {
                t.bytes_sent += e.stats.bytes_to_remote.load(Ordering::Relaxed);
                t.bytes_received += e.stats.bytes_from_remote.load(Ordering::Relaxed);
                t.datagrams_sent += e.stats.datagrams_to_remote.load(Ordering::Relaxed);
                t.datagrams_received += e.stats.datagrams_from_remote.load(Ordering::Relaxed);
            }
        }
        let mut v: Vec<_> = totals
            .into_iter()
            .map(|((app, peer, direction), t)| AppStats {
                app,
                peer,
                direction,
                open_streams: t.open,
                total_streams: t.total,
                bytes_sent: t.bytes_sent,
                bytes_received: t.bytes_received,
                limited_streams: t.limited,
                not_allowed_streams: t.not_allowed,
                datagrams_sent: t.datagrams_sent,
                datagrams_received: t.datagrams_received,
            })
            .collect();
        v.sort_by(|a, b| (&a.app, &a.peer).cmp(&(&b.app, &b.peer)));
        v
    }
}

/// Keeps a stream listed; dropping it moves its bytes into the totals and
/// reports the close.
#[derive(Debug)]
pub struct StreamTicket {
    registry: Arc<StreamRegistry>,
    entry: Arc<Entry>,
}

impl StreamTicket {
    /// The byte counters the pipe updates.
    pub fn stats(&self) -> &PipeStats {
        &self.entry.stats
    }
}

impl Drop for StreamTicket {
    fn drop(&mut self) {
        let info = self.entry.info();
        {
            let mut inner = self.registry.lock();
            inner.live.remove(&info.id);
            if let Some(t) =
                inner
                    .totals
                    .get_mut(&(info.app.clone(), info.peer.clone(), info.direction))
            {
                t.open = t.open.saturating_sub(1);
                t.bytes_sent += info.bytes_sent;
                t.bytes_received += info.bytes_received;
                t.datagrams_sent += info.datagrams_sent;
                t.datagrams_received += info.datagrams_received;
            }
        }
        self.registry.bus.emit(Event::StreamClosed { stream: info });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_list_streams_and_fold_bytes_into_totals_on_close() {
        let reg = Arc::new(StreamRegistry::new(Arc::new(EventBus::default())));
        let (_, mut rx) = reg.bus.subscribe();
        let app = AppName::new("web").unwrap();
        let peer = SiteName::new("b").unwrap();
        let t = reg.open(
            app.clone(),
            peer.clone(),
            StreamDirection::Outbound,
            "127.0.0.1:5".into(),
            ChannelId(3),
        );
        t.stats().bytes_to_remote.store(10, Ordering::Relaxed);
        t.stats().bytes_from_remote.store(7, Ordering::Relaxed);
        assert_eq!(reg.snapshot().len(), 1);
        assert_eq!(reg.snapshot()[0].channel, ChannelId(3));
        assert_eq!(reg.app_stats()[0].bytes_sent, 10);
        assert_eq!(reg.app_stats()[0].open_streams, 1);
        drop(t);
        assert!(reg.is_empty());
        let s = &reg.app_stats()[0];
        assert_eq!(
            (
                s.open_streams,
                s.total_streams,
                s.bytes_sent,
                s.bytes_received
            ),
            (0, 1, 10, 7)
        );
        assert!(matches!(
            rx.try_recv().unwrap().event,
            Event::StreamOpened { .. }
        ));
        match rx.try_recv().unwrap().event {
            Event::StreamClosed { stream } => assert_eq!(stream.bytes_received, 7),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_over_a_limit_are_counted_per_app_peer_and_direction() {
        let reg = Arc::new(StreamRegistry::new(Arc::new(EventBus::default())));
        let (app, peer) = (AppName::new("web").unwrap(), SiteName::new("b").unwrap());
        reg.limited(app.clone(), peer.clone(), StreamDirection::Inbound);
        reg.limited(app.clone(), peer.clone(), StreamDirection::Inbound);
        reg.limited(app.clone(), peer.clone(), StreamDirection::Outbound);
        let stats = reg.app_stats();
        let of = |d| {
            stats
                .iter()
                .find(|s| s.direction == d)
                .map(|s| (s.limited_streams, s.total_streams, s.open_streams))
        };
        assert_eq!(of(StreamDirection::Inbound), Some((2, 0, 0)));
        assert_eq!(of(StreamDirection::Outbound), Some((1, 0, 0)));
        assert!(reg.is_empty());
    }

    #[test]
    fn streams_not_allowed_are_counted_per_app_and_peer_inbound() {
        let reg = Arc::new(StreamRegistry::new(Arc::new(EventBus::default())));
        let web = AppName::new("web").unwrap();
        let (b, c) = (SiteName::new("b").unwrap(), SiteName::new("c").unwrap());
        reg.not_allowed(web.clone(), c.clone());
        reg.not_allowed(web.clone(), c.clone());
        reg.not_allowed(web.clone(), b.clone());
        let stats = reg.app_stats();
        let of = |peer: &SiteName| {
            stats
                .iter()
                .find(|s| s.peer == *peer)
                .map(|s| (s.direction, s.not_allowed_streams, s.total_streams))
        };
        assert_eq!(of(&c), Some((StreamDirection::Inbound, 2, 0)));
        assert_eq!(of(&b), Some((StreamDirection::Inbound, 1, 0)));
        assert_eq!(stats.len(), 2);
    }
}
