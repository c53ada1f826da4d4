//! Pure bookkeeping of UDP flows: which client address owns which flow
//! ([`FlowTable`], the remote-app listener's view) and when a flow has been
//! idle too long ([`Idle`]). Time is always an input (`now`), so every
//! decision is unit-tested without sleeping.
//!
//! This module must not touch sockets, tasks or the tunnel.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// When a flow with no datagram either way for `timeout` ends.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    timeout: Duration,
    last: Instant,
}

impl Idle {
    /// A flow that was last active at `now`.
    pub fn new(timeout: Duration, now: Instant) -> Self {
        Self { timeout, last: now }
    }

    /// A datagram went either way at `now` (times before the last one are ignored).
    pub fn touch(&mut self, now: Instant) {
        self.last = self.last.max(now);
    }

    /// When the flow expires unless touched before.
    pub fn deadline(&self) -> Instant {
        self.last + self.timeout
    }

    /// Whether the flow has been idle for the whole timeout at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline()
    }
}

/// What to do with a datagram from a client address.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a, V> {
    /// It belongs to this live flow.
    Existing(&'a V),
    /// No flow yet and there is room: open one and [`FlowTable::insert`] it
    /// under this generation.
    Open(u64),
    /// No flow yet and `limit` flows are open: drop (and count) it.
    Full,
}

/// The flows of one listener by client address, at most `limit` at once.
///
/// Each flow gets a generation number, so a flow that ended can remove its
/// own entry without removing a newer flow of the same address.
#[derive(Debug)]
pub struct FlowTable<K, V> {
    flows: HashMap<K, (u64, V)>,
    limit: usize,
    next_gen: u64,
}

impl<K: Eq + Hash + Clone, V> FlowTable<K, V> {
    /// An empty table admitting at most `limit` flows.
    pub fn new(limit: usize) -> Self {
        Self {
            flows: HashMap::new(),
            limit,
            next_gen: 1,
        }
    }

    /// Where a datagram from `key` goes.
    pub fn route(&mut self, key: &K) -> Route<'_, V> {
        if let Some((_, v)) = self.flows.get(key) {
            return Route::Existing(v);
        }
        if self.flows.len() >= self.limit {
            return Route::Full;
        }
        let generation = self.next_gen;
        self.next_gen += 1;
        Route::Open(generation)
    }

    /// Records the flow opened for `key` after [`Route::Open`]; replaces
    /// nothing (a live flow of `key` is kept and `false` returned).
    pub fn insert(&mut self, key: K, generation: u64, value: V) -> bool {
        if self.flows.len() >= self.limit {
            return false;
        }
        match self.flows.entry(key) {
            Entry::Occupied(_) => false,
            Entry::Vacant(e) => {
                e.insert((generation, value));
                true
            }
        }
    }

    /// Removes `key`'s flow if it is still generation `generation`.
    pub fn remove(&mut self, key: &K, generation: u64) -> Option<V> {
        match self.flows.get(key) {
            Some((g, _)) if *g == generation => self.flows.remove(key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Open flows.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is open.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn idle_expires_after_the_timeout_since_the_last_datagram() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut idle = Idle::new(2 * s, t0);
        assert!(!idle.expired(t0 + s));
        idle.touch(t0 + s);
        assert!(!idle.expired(t0 + 2 * s));
        assert_eq!(idle.deadline(), t0 + 3 * s);
        assert!(idle.expired(t0 + 3 * s));
        // A late report of an older datagram does not move the deadline back.
        idle.touch(t0);
        assert_eq!(idle.deadline(), t0 + 3 * s);
    }

    #[test]
    fn table_routes_existing_opens_new_and_refuses_when_full() {
        let mut t: FlowTable<u32, &str> = FlowTable::new(2);
        let Route::Open(g1) = t.route(&1) else {
            panic!()
        };
        assert!(t.insert(1, g1, "one"));
        assert_eq!(t.route(&1), Route::Existing(&"one"));
        let Route::Open(g2) = t.route(&2) else {
            panic!()
        };
        assert_ne!(g1, g2);
        assert!(t.insert(2, g2, "two"));
        assert_eq!(t.route(&3), Route::Full);
        assert!(!t.insert(3, 99, "three"));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn an_ended_flow_removes_only_its_own_generation() {
        let mut t: FlowTable<u32, &str> = FlowTable::new(4);
        let Route::Open(old) = t.route(&1) else {
            panic!()
        };
        t.insert(1, old, "old");
        assert_eq!(t.remove(&1, old), Some("old"));
        let Route::Open(new) = t.route(&1) else {
            panic!()
        };
        t.insert(1, new, "new");
        // The old flow's late cleanup must not remove the new flow.
        assert_eq!(t.remove(&1, old), None);
        assert_eq!(t.route(&1), Route::Existing(&"new"));
        assert!(!t.insert(1, 1234, "dup"));
    }

    proptest! {
        /// Whatever the order of opens and removals, the table never holds
        /// more than its limit and generations are never reused.
        #[test]
        fn never_above_limit(limit in 1usize..8, ops in proptest::collection::vec((0u8..12, any::<bool>()), 0..200)) {
            let mut t: FlowTable<u8, u64> = FlowTable::new(limit);
            let mut gens = std::collections::HashSet::new();
            for (key, open) in ops {
                if open {
                    if let Route::Open(g) = t.route(&key) {
                        prop_assert!(gens.insert(g));
                        t.insert(key, g, g);
                    }
                } else if let Route::Existing(&g) = t.route(&key) {
                    prop_assert_eq!(t.remove(&key, g), Some(g));
                }
                prop_assert!(t.len() <= limit);
            }
        }
    }
}
