//! Bandwidth limits of apps (`bandwidthLimit`): one [`AppThrottle`] per
//! limited app, shared by every stream and UDP flow of the app, with one
//! token bucket per direction ([`bucket`], pure). [`Throttles`] keeps them
//! per app, so streams admitted later and a remote-app listener reopened
//! after a disconnection find the same buckets, and a changed limit applies
//! to the streams already running.
//!
//! Why not `governor`: its quota keeps the time per cell in whole
//! nanoseconds, so with one cell per byte every rate above 1 GB/s rounds to
//! 1 ns (500 MiB/s would run at 1 GB/s, 91 % over) and 10 MiB/s runs 0.4 %
//! fast; `until_n_ready` retries `check_n` after each sleep, so a large read
//! can lose its turn to smaller ones of other streams; and it has no way to
//! give back a reservation nor to count the time waited. The GCRA here
//! ([`bucket`]) is the same idea in about 100 lines over byte counts, with
//! integer costs rounded towards stricter, served in order, property-tested.
//!
//! Waiting ([`AppThrottle::wait`]) reserves under a short lock, releases it
//! and sleeps once until the grant time: no lock is held across an await and
//! nothing polls. A waiter dropped midway (its stream reset, the site
//! shutting down) gives its reservation back when it is the latest one.
//!
//! This module must not read or write sockets, nor decide which app a
//! stream belongs to.

pub mod bucket;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::{AppName, AppSocket, BandwidthLimit, ExposedApp, RemoteApp, SiteName};
use crate::view::{StreamDirection, ThrottleStats};
use bucket::{Bucket, Reservation};

/// The time of traffic one piece of a copy is worth ([`AppThrottle::piece`]).
pub const PIECE_TIME: Duration = Duration::from_millis(20);

/// The smallest piece, so a slow app is not copied a few bytes at a time.
pub const MIN_PIECE: u64 = 256;

/// Which way bytes go, seen from this site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// From the local socket into the tunnel.
    Sent = 0,
    /// From the tunnel to the local socket.
    Received = 1,
}

/// The buckets of one limited app: every stream and flow of the app waits
/// on them, so the app's total each way stays within its limit.
#[derive(Debug)]
pub struct AppThrottle {
    /// One bucket per [`Way`]; `None` once the app's limit was removed.
    /// Lock order: [`Throttles`]' map first, then this. Every critical
    /// section is a little arithmetic, never an await.
    buckets: Mutex<Option<[Bucket; 2]>>,
    /// Nanoseconds spent waiting, per [`Way`], summed over streams.
    throttled: [AtomicU64; 2],
}

impl AppThrottle {
    fn new(limit: BandwidthLimit, now: Instant) -> Self {
        Self {
            buckets: Mutex::new(Some([Bucket::new(limit, now), Bucket::new(limit, now)])),
            throttled: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<[Bucket; 2]>> {
        // Nothing in a critical section can panic halfway.
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a new limit; streams waiting keep their grant times.
    fn set_limit(&self, limit: Option<BandwidthLimit>, now: Instant) {
        let mut buckets = self.lock();
        match (buckets.as_mut(), limit) {
            (Some(b), Some(l)) => {
                if b[0].rate() != l.bytes_per_second() {
                    b.iter_mut().for_each(|b| b.set_limit(l));
                }
            }
            (None, Some(l)) => *buckets = Some([Bucket::new(l, now), Bucket::new(l, now)]),
            (_, None) => *buckets = None,
        }
    }

    /// The limit in bytes per second, `None` when it was removed.
    pub fn limit(&self) -> Option<u64> {
        self.lock().as_ref().map(|b| b[0].rate())
    }

    /// How many bytes a copy should move per wait (`usize::MAX` when
    /// unlimited): [`PIECE_TIME`] of the rate, at least [`MIN_PIECE`], at
    /// most the burst. Short turns keep a stream responsive while it waits
    /// (it notices a reset only between turns) and keep the app's traffic
    /// smooth; at high rates a piece is the burst, so waits stay few.
    pub fn piece(&self, way: Way) -> usize {
        self.lock().as_ref().map_or(usize::MAX, |b| {
            let b = &b[way as usize];
            let time = u128::from(b.rate()) * PIECE_TIME.as_nanos() / 1_000_000_000;
            let piece = u64::try_from(time)
                .unwrap_or(u64::MAX)
                .clamp(MIN_PIECE, b.burst().max(MIN_PIECE));
            usize::try_from(piece).unwrap_or(usize::MAX)
        })
    }

    /// Time streams spent waiting to send (or deliver) bytes, summed.
    pub fn throttled(&self, way: Way) -> Duration {
        Duration::from_nanos(self.throttled[way as usize].load(Ordering::Relaxed))
    }

    /// Reserves up to one burst of `bytes`: the reservation and its size,
    /// or `None` when the app is no longer limited.
    fn reserve(&self, way: Way, bytes: u64, now: Instant) -> Option<(Reservation, u64)> {
        let mut buckets = self.lock();
        let bucket = &mut buckets.as_mut()?[way as usize];
        let piece = bytes.min(bucket.burst());
        Some((bucket.reserve(piece, now), piece))
    }

    fn count(&self, way: Way, waited: Duration) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.throttled[way as usize].fetch_add(nanos, Ordering::Relaxed);
    }

    /// Waits until `bytes` may go `way`. Larger than one burst, they are
    /// reserved a burst at a time (each piece after the previous one's
    /// grant). Cancel-safe: dropping the future gives the pending
    /// reservation back when possible ([`Bucket::cancel`]).
    pub async fn wait(&self, way: Way, bytes: usize) {
        let mut left = u64::try_from(bytes).unwrap_or(u64::MAX);
        while left > 0 {
            // tokio's clock, so tests with a paused clock control it.
            let now = tokio::time::Instant::now().into_std();
            let Some((reservation, piece)) = self.reserve(way, left, now) else {
                return;
            };
            left -= piece;
            if reservation.at <= now {
                continue;
            }
            let pending = Pending {
                throttle: self,
                way,
                reservation,
                since: now,
                granted: false,
            };
            tokio::time::sleep_until(reservation.at.into()).await;
            pending.grant();
        }
    }
}

/// A reservation being waited for; dropped before its grant time, it is
/// given back and the time actually waited is counted.
struct Pending<'a> {
    throttle: &'a AppThrottle,
    way: Way,
    reservation: Reservation,
    since: Instant,
    granted: bool,
}

impl Pending<'_> {
    fn grant(mut self) {
        self.granted = true;
        let waited = self.reservation.at.saturating_duration_since(self.since);
        self.throttle.count(self.way, waited);
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.granted {
            return;
        }
        let now = tokio::time::Instant::now().into_std();
        if let Some(b) = self.throttle.lock().as_mut() {
            b[self.way as usize].cancel(&self.reservation, now);
        }
        let waited = now
            .min(self.reservation.at)
            .saturating_duration_since(self.since);
        self.throttle.count(self.way, waited);
    }
}

/// Which app a throttle belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ThrottleKey {
    /// An exposed app of this site.
    Exposed(AppName),
    /// A remote app, by its listener: the same app of the same site may be
    /// served on two local sockets, each with its own limit.
    Remote {
        /// The exposing site.
        site: SiteName,
        /// The app there.
        app: AppName,
        /// Where this site listens for it.
        local: AppSocket,
    },
}

impl ThrottleKey {
    /// The key of a remote app's listener.
    pub fn remote(app: &RemoteApp) -> Self {
        Self::Remote {
            site: app.site.clone(),
            app: app.app.clone(),
            local: app.local_socket.clone(),
        }
    }
}

/// The throttles of a site's apps, by app. Keys come from this site's own
/// config and control API only (never from a peer), so the map stays as
/// small as the set of apps ever configured; a removed app's entry stays,
/// like its traffic totals, so its counters do not go backwards.
#[derive(Debug, Default)]
pub struct Throttles {
    map: Mutex<HashMap<ThrottleKey, Arc<AppThrottle>>>,
}

impl Throttles {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ThrottleKey, Arc<AppThrottle>>> {
        // Single map operations: a poisoned lock still holds consistent data.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The throttle a new stream (or listener) of the app `key` uses with
    /// the app's current `limit`; `None` when unlimited. The limit is also
    /// applied to the app's streams already running.
    pub fn get(&self, key: ThrottleKey, limit: Option<BandwidthLimit>) -> Option<Arc<AppThrottle>> {
        let now = tokio::time::Instant::now().into_std();
        let mut map = self.lock();
        if let Some(t) = map.get(&key) {
            t.set_limit(limit, now);
            return limit.map(|_| t.clone());
        }
        let t = Arc::new(AppThrottle::new(limit?, now));
        map.insert(key, t.clone());
        Some(t)
    }

    /// Applies `app`'s `bandwidthLimit` now to its streams already open,
    /// not only to those opened next: for an exposed app added or changed
    /// while streams of that name run.
    pub fn apply_exposed(&self, app: &ExposedApp) {
        let _ = self.get(ThrottleKey::Exposed(app.name.clone()), app.bandwidth_limit);
    }

    /// Per app: the limit as configured now (`configured`: every app that
    /// has one) and the time its traffic waited since start. Apps limited
    /// now come first, in the order given; apps no longer limited follow.
    pub fn stats(
        &self,
        configured: impl IntoIterator<Item = (ThrottleKey, BandwidthLimit)>,
    ) -> Vec<ThrottleStats> {
        let map = self.lock();
        let waited = |key: &ThrottleKey| {
            map.get(key).map_or((Duration::ZERO, Duration::ZERO), |t| {
                (t.throttled(Way::Sent), t.throttled(Way::Received))
            })
        };
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for (key, limit) in configured {
            let (sent, received) = waited(&key);
            out.push(stats_of(
                &key,
                Some(limit.bytes_per_second()),
                sent,
                received,
            ));
            seen.push(key);
        }
        let mut rest: Vec<_> = map.keys().filter(|k| !seen.contains(k)).collect();
        rest.sort_by_key(|k| format!("{k:?}"));
        for key in rest {
            let (sent, received) = waited(key);
            out.push(stats_of(key, None, sent, received));
        }
        out
    }
}

fn stats_of(
    key: &ThrottleKey,
    limit: Option<u64>,
    throttled_sent: Duration,
    throttled_received: Duration,
) -> ThrottleStats {
    let (app, peer, direction) = match key {
        ThrottleKey::Exposed(app) => (app.clone(), None, StreamDirection::Inbound),
        ThrottleKey::Remote { site, app, .. } => {
            (app.clone(), Some(site.clone()), StreamDirection::Outbound)
        }
    };
    ThrottleStats {
        app,
        peer,
        direction,
        limit,
        throttled_sent,
        throttled_received,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(s: &str) -> Option<BandwidthLimit> {
        Some(s.parse().expect("valid"))
    }

    /// tokio's timer wakes on whole milliseconds: a grant at 62.5 ms wakes
    /// its waiter at 63 ms.
    #[track_caller]
    fn assert_waited(elapsed: Duration, grant: Duration) {
        assert!(
            elapsed >= grant && elapsed < grant + Duration::from_millis(1),
            "woke after {elapsed:?}, granted at {grant:?}"
        );
    }

    fn key(app: &str) -> ThrottleKey {
        ThrottleKey::Exposed(AppName::new(app).expect("valid"))
    }

    #[test]
    fn unlimited_apps_get_no_throttle_and_limited_ones_share_one() {
        let t = Throttles::new();
        assert!(t.get(key("web"), None).is_none());
        let a = t.get(key("web"), limit("1MiB/s")).expect("limited");
        let b = t.get(key("web"), limit("1MiB/s")).expect("limited");
        assert!(Arc::ptr_eq(&a, &b));
        let other = t.get(key("db"), limit("1MiB/s")).expect("limited");
        assert!(!Arc::ptr_eq(&a, &other));
    }

    #[test]
    fn a_changed_or_removed_limit_reaches_running_streams() {
        let t = Throttles::new();
        let running = t.get(key("web"), limit("1MiB/s")).expect("limited");
        t.get(key("web"), limit("2MiB/s"));
        assert_eq!(running.limit(), Some(2 << 20));
        assert!(t.get(key("web"), None).is_none());
        assert_eq!(running.limit(), None);
        // And back.
        assert!(t.get(key("web"), limit("1MiB/s")).is_some());
        assert_eq!(running.limit(), Some(1 << 20));
    }

    #[test]
    fn pieces_are_20_ms_of_the_rate_within_256_bytes_and_the_burst() {
        let t = Throttles::new();
        let piece = |l: &str| {
            let th = t.get(key(l), limit(l)).expect("limited");
            (th.piece(Way::Sent), th.piece(Way::Received))
        };
        assert_eq!(piece("1kB/s"), (256, 256));
        assert_eq!(piece("1MB/s"), (20_000, 20_000));
        assert_eq!(piece("4MiB/s"), (64 * 1024, 64 * 1024));
        // Above 6.4 MB/s the burst is 10 ms of the rate.
        assert_eq!(piece("1GB/s"), (10_000_000, 10_000_000));
        let unlimited = t.get(key("x"), limit("1MB/s")).expect("limited");
        t.get(key("x"), None);
        assert_eq!(unlimited.piece(Way::Sent), usize::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_sleeps_until_the_grant_and_counts_the_time() {
        let t = Throttles::new();
        let th = t.get(key("web"), limit("1MiB/s")).expect("limited");
        let start = tokio::time::Instant::now();
        // The burst goes at once; the next 64 KiB waits 62.5 ms.
        th.wait(Way::Sent, 64 * 1024).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        th.wait(Way::Sent, 64 * 1024).await;
        assert_waited(start.elapsed(), Duration::from_micros(62_500));
        assert_eq!(th.throttled(Way::Sent), Duration::from_micros(62_500));
        // The other direction has its own bucket.
        th.wait(Way::Received, 64 * 1024).await;
        assert_waited(start.elapsed(), Duration::from_micros(62_500));
        assert_eq!(th.throttled(Way::Received), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn more_than_a_burst_is_waited_for_in_pieces() {
        let t = Throttles::new();
        let th = t.get(key("web"), limit("1MiB/s")).expect("limited");
        let start = tokio::time::Instant::now();
        // 256 KiB: 64 KiB of burst, then 192 KiB at 1 MiB/s.
        th.wait(Way::Sent, 256 * 1024).await;
        assert_waited(start.elapsed(), Duration::from_micros(187_500));
    }

    #[tokio::test(start_paused = true)]
    async fn streams_sharing_a_throttle_together_stay_within_the_limit() {
        let t = Arc::new(Throttles::new());
        let th = t.get(key("web"), limit("1MiB/s")).expect("limited");
        let start = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let th = th.clone();
            tasks.spawn(async move {
                for _ in 0..16 {
                    th.wait(Way::Sent, 16 * 1024).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        // 1 MiB in all, 64 KiB of it free: 960 KiB at 1 MiB/s.
        assert_waited(start.elapsed(), Duration::from_micros(937_500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_dropped_midway_gives_its_turn_back() {
        let t = Throttles::new();
        let th = t.get(key("web"), limit("1MiB/s")).expect("limited");
        th.wait(Way::Sent, 64 * 1024).await;
        let start = tokio::time::Instant::now();
        // Cancelled after 10 ms of its 62.5 ms wait.
        let cancelled =
            tokio::time::timeout(Duration::from_millis(10), th.wait(Way::Sent, 64 * 1024)).await;
        assert!(cancelled.is_err());
        assert_eq!(th.throttled(Way::Sent), Duration::from_millis(10));
        // The next waiter is not held up by the abandoned reservation: its
        // 64 KiB are granted 62.5 ms after the burst, as if alone.
        th.wait(Way::Sent, 64 * 1024).await;
        assert_waited(start.elapsed(), Duration::from_micros(62_500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_is_released_when_the_limit_is_removed_for_later_bytes() {
        let t = Throttles::new();
        let th = t.get(key("web"), limit("1MiB/s")).expect("limited");
        t.get(key("web"), None);
        let start = tokio::time::Instant::now();
        th.wait(Way::Sent, 1 << 20).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[test]
    fn stats_list_configured_limits_first_then_apps_no_longer_limited() {
        let t = Throttles::new();
        let web = t.get(key("web"), limit("1MiB/s")).expect("limited");
        web.count(Way::Sent, Duration::from_secs(2));
        t.get(key("old"), limit("1MiB/s"));
        let remote = RemoteApp {
            site: SiteName::new("b").expect("valid"),
            app: AppName::new("db").expect("valid"),
            local_socket: AppSocket::Tcp(([127, 0, 0, 1], 5432).into()),
            app_socket: None,
            max_connections: None,
            udp_idle_timeout: None,
            bandwidth_limit: limit("100Mbit/s"),
        };
        let configured = [
            (key("web"), limit("2MiB/s").expect("some")),
            (
                ThrottleKey::remote(&remote),
                limit("100Mbit/s").expect("some"),
            ),
        ];
        let s = t.stats(configured);
        let rows: Vec<_> = s
            .iter()
            .map(|s| {
                (
                    s.app.as_str(),
                    s.peer.as_ref().map(SiteName::as_str),
                    s.direction,
                    s.limit,
                    s.throttled_sent,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "web",
                    None,
                    StreamDirection::Inbound,
                    Some(2 << 20),
                    Duration::from_secs(2)
                ),
                (
                    "db",
                    Some("b"),
                    StreamDirection::Outbound,
                    Some(12_500_000),
                    Duration::ZERO
                ),
                ("old", None, StreamDirection::Inbound, None, Duration::ZERO),
            ]
        );
    }
}
