//! Concurrency limits: how many streams or connections may be open at once
//! per key (a peer, an exposed app, a remote-app listener), held as RAII
//! [`Permit`]s that give their slot back when dropped.
//!
//! Pure bookkeeping: no I/O, no clock, no logging, no policy. Callers pick the
//! limit, decide what a refusal means (a status on the stream, a reset local
//! client) and count it. Memory is bounded by the keys that hold permits: a
//! key whose count falls back to zero is forgotten, so keys chosen by a peer
//! cannot grow the map beyond the permits actually held.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

/// Default of `tunnel.maxStreamsPerPeer`: streams one peer may have open to
/// this site at once, over all its dataChannels.
pub const DEFAULT_STREAMS_PER_PEER: u32 = 16_384;

/// Default of `maxConnections` on an exposed app (streams open to it at once,
/// from all peers) and on a remote app (clients its local listener serves at
/// once).
pub const DEFAULT_CONNECTIONS: u32 = 16_384;

/// The largest limit a config or the control API may set.
pub const MAX_LIMIT: u32 = 1_000_000;

/// A refused acquisition: `limit` permits of that key were already held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("limit of {limit} concurrent connections reached")]
pub struct LimitReached {
    /// The limit that was reached.
    pub limit: usize,
}

type Counts<K> = Arc<Mutex<HashMap<K, usize>>>;

/// Open counts per key; cheap to clone (clones share the counts).
pub struct Limiter<K> {
    counts: Counts<K>,
}

impl<K> Clone for Limiter<K> {
    fn clone(&self) -> Self {
        Self {
            counts: self.counts.clone(),
        }
    }
}

impl<K> Default for Limiter<K> {
    fn default() -> Self {
        Self {
            counts: Arc::default(),
        }
    }
}

impl<K> fmt::Debug for Limiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("keys", &lock(&self.counts).len())
            .finish()
    }
}

/// Locks the counts. Every critical section is one map update that cannot
/// panic halfway, so a poisoned lock still holds consistent counts.
fn lock<K>(counts: &Mutex<HashMap<K, usize>>) -> MutexGuard<'_, HashMap<K, usize>> {
    counts.lock().unwrap_or_else(|p| p.into_inner())
}

impl<K: Eq + Hash + Clone> Limiter<K> {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one slot of `key` if fewer than `limit` are held, atomically
    /// with respect to every other acquire and release of any clone.
    ///
    /// The limit is the caller's at each call, so a lowered limit refuses new
    /// permits while the ones already held run to their end.
    pub fn try_acquire(&self, key: K, limit: usize) -> Result<Permit<K>, LimitReached> {
        let mut counts = lock(&self.counts);
        let n = counts.get(&key).copied().unwrap_or(0);
        if n >= limit {
            return Err(LimitReached { limit });
        }
        counts.insert(key.clone(), n + 1);
        Ok(Permit {
            counts: self.counts.clone(),
            key: Some(key),
        })
    }

    /// Permits of `key` held now.
    pub fn count(&self, key: &K) -> usize {
        lock(&self.counts).get(key).copied().unwrap_or(0)
    }

    /// Keys holding at least one permit.
    pub fn keys(&self) -> usize {
        lock(&self.counts).len()
    }
}

/// One held slot; dropping it gives the slot back.
#[must_use = "the slot is given back as soon as the permit is dropped"]
pub struct Permit<K: Eq + Hash> {
    counts: Counts<K>,
    /// Always `Some` until dropped.
    key: Option<K>,
}

impl<K: Eq + Hash> fmt::Debug for Permit<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

impl<K: Eq + Hash> Drop for Permit<K> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut counts = lock(&self.counts);
        if let Some(n) = counts.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn permits_are_refused_at_the_limit_and_given_back_on_drop() {
        let l = Limiter::new();
        let a = l.try_acquire("app", 2).expect("first");
        let b = l.try_acquire("app", 2).expect("second");
        assert_eq!(
            l.try_acquire("app", 2).unwrap_err(),
            LimitReached { limit: 2 }
        );
        assert_eq!(l.count(&"app"), 2);
        // Other keys are counted on their own.
        let other = l.try_acquire("db", 1).expect("other key");
        drop(a);
        let c = l.try_acquire("app", 2).expect("a slot came back");
        drop((b, c, other));
        assert_eq!((l.count(&"app"), l.keys()), (0, 0));
    }

    #[test]
    fn a_zero_limit_refuses_everything() {
        let l = Limiter::new();
        assert!(l.try_acquire((), 0).is_err());
        assert_eq!(l.keys(), 0);
    }

    #[test]
    fn a_lowered_limit_refuses_new_permits_and_keeps_the_held_ones() {
        let l = Limiter::new();
        let held: Vec<_> = (0..3).map(|_| l.try_acquire(1u8, 3).expect("ok")).collect();
        assert!(l.try_acquire(1u8, 2).is_err());
        assert_eq!(l.count(&1), 3);
        drop(held);
        assert!(l.try_acquire(1u8, 2).is_ok());
    }

    #[test]
    fn concurrent_acquirers_never_hold_more_than_the_limit() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let l = Limiter::new();
        let (inside, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (l, inside, peak) = (l.clone(), inside.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        if let Ok(p) = l.try_acquire("k", 3) {
                            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            inside.fetch_sub(1, Ordering::SeqCst);
                            drop(p);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(l.keys(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire { key: u8, limit: usize },
        Release(usize),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(
            prop_oneof![
                (0u8..4, 0usize..5).prop_map(|(key, limit)| Op::Acquire { key, limit }),
                any::<usize>().prop_map(Op::Release),
            ],
            0..200,
        )
    }

    proptest! {
        /// Against a plain model: an acquire succeeds exactly when fewer than
        /// `limit` permits of its key are held, counts always match, and once
        /// every permit is dropped nothing is left.
        #[test]
        fn counts_follow_the_model_and_return_to_zero(ops in ops()) {
            let l = Limiter::new();
            let mut held: Vec<(u8, Permit<u8>)> = Vec::new();
            let mut model: HashMap<u8, usize> = HashMap::new();
            for op in ops {
                match op {
                    Op::Acquire { key, limit } => {
                        let before = model.get(&key).copied().unwrap_or(0);
                        match l.try_acquire(key, limit) {
                            Ok(p) => {
                                prop_assert!(before < limit);
                                *model.entry(key).or_default() += 1;
                                held.push((key, p));
                            }
                            Err(e) => {
                                prop_assert!(before >= limit);
                                prop_assert_eq!(e.limit, limit);
                            }
                        }
                    }
                    Op::Release(i) if !held.is_empty() => {
                        let (key, p) = held.swap_remove(i % held.len());
                        drop(p);
                        *model.entry(key).or_default() -= 1;
                    }
                    Op::Release(_) => {}
                }
                for key in 0..4 {
                    prop_assert_eq!(l.count(&key), model.get(&key).copied().unwrap_or(0));
                }
                prop_assert_eq!(l.keys(), model.values().filter(|n| **n > 0).count());
            }
            drop(held);
            prop_assert_eq!(l.keys(), 0);
        }

        /// With one limit per key, no sequence of acquires and releases ever
        /// holds more permits of a key than its limit.
        #[test]
        fn counts_never_exceed_a_fixed_limit(
            limits in proptest::collection::vec(0usize..4, 4),
            ops in ops(),
        ) {
            let l = Limiter::new();
            let mut held: Vec<Permit<u8>> = Vec::new();
            for op in ops {
                match op {
                    Op::Acquire { key, .. } => {
                        if let Ok(p) = l.try_acquire(key, limits[usize::from(key)]) {
                            held.push(p);
                        }
                    }
                    Op::Release(i) if !held.is_empty() => {
                        let n = held.len();
                        drop(held.swap_remove(i % n));
                    }
                    Op::Release(_) => {}
                }
                for key in 0..4u8 {
                    prop_assert!(l.count(&key) <= limits[usize::from(key)]);
                }
            }
            held.clear();
            prop_assert_eq!(l.keys(), 0);
        }
    }
}
