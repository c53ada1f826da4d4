//! Which incoming QUIC connections a listener takes on before their key proof.
//!
//! Anyone who can send UDP to a tunnel socket can start a connection, and
//! until the dialer's key proof checked out the listener holds state for it
//! for nothing. [`Admission`] counts those unauthenticated connections per
//! listener and per source and decides for each new one: admit it (with the
//! deadline for its handshake and proof), ask for a QUIC Retry (the sender must
//! prove it receives at its address before we keep any state), refuse it (a
//! small close packet, only to proven addresses) or ignore it (nothing sent).
//! It is pure bookkeeping on a caller-supplied `now`; [`Gate`] adds the lock
//! and a [`Slot`] that gives the place back when dropped. The accept loop only
//! executes the decisions; this module does no IO.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a connection comes from, as far as the per-source cap goes: an IPv4
/// address (IPv4-mapped IPv6 included, for dual-stack sockets) or the /64 of an
/// IPv6 address, since one host usually holds a whole /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// An IPv4 host.
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6Net(u64),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4),
                None => Self::V6Net((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// The caps of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Unauthenticated connections the listener holds at once.
    pub max_pending: usize,
    /// Unauthenticated connections one [`Source`] may hold at once.
    pub max_per_source: usize,
    /// From this many unauthenticated connections on, a new one must have
    /// proven its address (QUIC Retry) before it is admitted.
    pub retry_from: usize,
    /// Handshake plus key proof must be done this long after admission.
    pub deadline: Duration,
}

impl Default for Limits {
    /// Far above what peers need (a dial completes its proof in a few round
    /// trips, so even a site's whole network reconnecting at once holds a
    /// handful), and small enough that a full listener stays within tens of
    /// MiB: each unauthenticated connection may buffer at most
    /// `endpoint::PREAUTH_RECEIVE_WINDOW` plus quinn's own state.
    fn default() -> Self {
        Self {
            max_pending: 256,
            max_per_source: 16,
            retry_from: 32,
            deadline: super::auth::DEADLINE,
        }
    }
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crowded {
    /// The listener holds [`Limits::max_pending`] unauthenticated connections.
    Listener,
    /// The source holds [`Limits::max_per_source`].
    Source,
}

/// What to do with a new incoming connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Take it on; handshake and key proof must be done by `deadline`.
    Admit {
        /// When the connection is closed unless both proofs passed.
        deadline: Instant,
    },
    /// Answer with a QUIC Retry: stateless, smaller than the client's Initial
    /// (no amplification), and the client comes back with a token proving its
    /// address, or not at all.
    Retry,
    /// Answer with a CONNECTION_REFUSED close: the address is proven, so the
    /// answer goes to whoever asked, and a real peer gives up at once instead
    /// of waiting out its handshake.
    Refuse(Crowded),
    /// Send nothing: the listener is full and the address unproven (it may be
    /// spoofed), so the cheapest answer, and no packet toward a victim, is none.
    Ignore(Crowded),
}

/// Counts of unauthenticated connections of one listener.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    pending: usize,
    per_source: HashMap<Source, usize>,
}

impl Admission {
    /// An empty listener with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            pending: 0,
            per_source: HashMap::new(),
        }
    }

    /// Decides on a connection from `source` whose address is `validated` (it
    /// carries a Retry token) or not, at `now`. An [`Decision::Admit`] counts it
    /// until [`Self::release`].
    pub fn decide(&mut self, source: Source, validated: bool, now: Instant) -> Decision {
        let from_source = self.pending_from(source);
        let crowded = if self.pending >= self.limits.max_pending {
            Some(Crowded::Listener)
        } else if from_source >= self.limits.max_per_source {
            Some(Crowded::Source)
        } else {
            None
        };
        match (crowded, validated) {
            (Some(why), true) => Decision::Refuse(why),
            (Some(why @ Crowded::Listener), false) => Decision::Ignore(why),
            // Prove the address before refusing: a spoofed one gets no refusal.
            (Some(Crowded::Source), false) => Decision::Retry,
            (None, false) if self.pending >= self.limits.retry_from => Decision::Retry,
            (None, _) => {
                self.pending += 1;
                *self.per_source.entry(source).or_insert(0) += 1;
                Decision::Admit {
                    deadline: now + self.limits.deadline,
                }
            }
        }
    }

    /// An admitted connection from `source` authenticated or ended.
    pub fn release(&mut self, source: Source) {
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            self.pending -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    /// Unauthenticated connections held now.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Unauthenticated connections from `source` held now.
    pub fn pending_from(&self, source: Source) -> usize {
        self.per_source.get(&source).copied().unwrap_or(0)
    }
}

/// An [`Admission`] shared by a listener's accept loop and its connection tasks.
#[derive(Debug, Clone)]
pub struct Gate(Arc<Mutex<Admission>>);

/// What the accept loop executes.
#[derive(Debug)]
pub enum Verdict {
    /// Take the connection on; the slot is held until dropped.
    Admit(Slot),
    /// See [`Decision::Retry`].
    Retry,
    /// See [`Decision::Refuse`].
    Refuse(Crowded),
    /// See [`Decision::Ignore`].
    Ignore(Crowded),
}

/// An admitted unauthenticated connection's place; dropping it (proof passed,
/// failed or timed out) gives the place back.
#[derive(Debug)]
pub struct Slot {
    gate: Gate,
    source: Source,
    deadline: Instant,
}

impl Slot {
    /// When handshake and proof must be done.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.lock().release(self.source);
    }
}

impl Gate {
    /// A gate with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self(Arc::new(Mutex::new(Admission::new(limits))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Admission> {
        // Every critical section is one call into `Admission`, which does not
        // panic midway: a poisoned lock still holds consistent counts.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides on a connection from `ip`; see [`Admission::decide`].
    pub fn decide(&self, ip: IpAddr, validated: bool, now: Instant) -> Verdict {
        let source = Source::from(ip);
        match self.lock().decide(source, validated, now) {
            Decision::Admit { deadline } => Verdict::Admit(Slot {
                gate: self.clone(),
                source,
                deadline,
            }),
            Decision::Retry => Verdict::Retry,
            Decision::Refuse(why) => Verdict::Refuse(why),
            Decision::Ignore(why) => Verdict::Ignore(why),
        }
    }

    /// Unauthenticated connections held now.
    pub fn pending(&self) -> usize {
        self.lock().pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

    const LIMITS: Limits = Limits {
        max_pending: 6,
        max_per_source: 3,
        retry_from: 4,
        deadline: Duration::from_secs(5),
    };

    fn v4(last: u8) -> Source {
        Source::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn admitted(d: Decision) -> bool {
        matches!(d, Decision::Admit { .. })
    }

    #[test]
    fn admits_with_the_deadline_until_a_source_is_at_its_cap() {
        let mut a = Admission::new(LIMITS);
        let t = Instant::now();
        assert_eq!(
            a.decide(v4(1), false, t),
            Decision::Admit {
                deadline: t + LIMITS.deadline
            }
        );
        assert!(admitted(a.decide(v4(1), false, t)));
        assert!(admitted(a.decide(v4(1), false, t)));
        // At the cap: an unproven address is asked to prove itself, a proven one refused.
        assert_eq!(a.decide(v4(1), false, t), Decision::Retry);
        assert_eq!(a.decide(v4(1), true, t), Decision::Refuse(Crowded::Source));
        // Another source still gets in.
        assert!(admitted(a.decide(v4(2), false, t)));
        assert_eq!((a.pending(), a.pending_from(v4(1))), (4, 3));
        // Released, the source may come back.
        a.release(v4(1));
        assert!(admitted(a.decide(v4(1), true, t)));
    }

    #[test]
    fn under_load_only_proven_addresses_get_in_and_a_full_listener_turns_everyone_away() {
        let mut a = Admission::new(LIMITS);
        let t = Instant::now();
        for i in 0..4 {
            assert!(admitted(a.decide(v4(i), false, t)));
        }
        // From `retry_from` on, a Retry first.
        assert_eq!(a.decide(v4(10), false, t), Decision::Retry);
        assert!(admitted(a.decide(v4(10), true, t)));
        assert!(admitted(a.decide(v4(11), true, t)));
        assert_eq!(a.pending(), LIMITS.max_pending);
        // Full: nothing for unproven addresses (maybe spoofed), a refusal for proven ones.
        assert_eq!(
            a.decide(v4(12), false, t),
            Decision::Ignore(Crowded::Listener)
        );
        assert_eq!(
            a.decide(v4(12), true, t),
            Decision::Refuse(Crowded::Listener)
        );
        a.release(v4(0));
        assert!(admitted(a.decide(v4(12), true, t)));
    }

    #[test]
    fn releasing_an_unknown_source_changes_nothing() {
        let mut a = Admission::new(LIMITS);
        assert!(admitted(a.decide(v4(1), false, Instant::now())));
        a.release(v4(2));
        assert_eq!((a.pending(), a.pending_from(v4(1))), (1, 1));
    }

    #[test]
    fn sources_are_ipv4_hosts_and_ipv6_slash_64s() {
        let mapped: IpAddr = "::ffff:192.0.2.1".parse::<Ipv6Addr>().unwrap().into();
        assert_eq!(Source::from(mapped), v4(1));
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::from(a), Source::from(b));
        assert_ne!(Source::from(a), Source::from(c));
    }

    #[test]
    fn slots_give_their_place_back_when_dropped() {
        let gate = Gate::new(LIMITS);
        let ip: IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
        let t = Instant::now();
        let slots: Vec<Slot> = (0..3)
            .map(|_| match gate.decide(ip, true, t) {
                Verdict::Admit(s) => s,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(slots[0].deadline(), t + LIMITS.deadline);
        assert!(matches!(
            gate.decide(ip, true, t),
            Verdict::Refuse(Crowded::Source)
        ));
        drop(slots);
        assert_eq!(gate.pending(), 0);
        assert!(matches!(gate.decide(ip, false, t), Verdict::Admit(_)));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Arrive { source: u8, validated: bool },
        Leave { nth: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..5, any::<bool>())
                .prop_map(|(source, validated)| Op::Arrive { source, validated }),
            any::<usize>().prop_map(|nth| Op::Leave { nth }),
        ]
    }

    proptest! {
        /// Whatever arrives and leaves, in any order: the counts match the
        /// connections held, never exceed the caps, an unproven address is
        /// admitted only below `retry_from`, a refusal goes only to a proven
        /// one, and nothing is kept for sources that hold nothing.
        #[test]
        fn counts_stay_exact_and_within_the_caps(ops in proptest::collection::vec(op(), 0..200)) {
            let mut a = Admission::new(LIMITS);
            let mut held: Vec<Source> = Vec::new();
            let t = Instant::now();
            for op in ops {
                match op {
                    Op::Arrive { source, validated } => {
                        let s = v4(source);
                        let before = a.pending();
                        match a.decide(s, validated, t) {
                            Decision::Admit { deadline } => {
                                prop_assert_eq!(deadline, t + LIMITS.deadline);
                                prop_assert!(validated || before < LIMITS.retry_from);
                                held.push(s);
                            }
                            Decision::Refuse(_) => prop_assert!(validated),
                            Decision::Retry | Decision::Ignore(_) => prop_assert!(!validated),
                        }
                    }
                    Op::Leave { nth } => {
                        if !held.is_empty() {
                            let s = held.swap_remove(nth % held.len());
                            a.release(s);
                        }
                    }
                }
                prop_assert_eq!(a.pending(), held.len());
                prop_assert!(a.pending() <= LIMITS.max_pending);
                for source in 0..5 {
                    let s = v4(source);
                    let n = held.iter().filter(|h| **h == s).count();
                    prop_assert_eq!(a.pending_from(s), n);
                    prop_assert!(n <= LIMITS.max_per_source);
                }
                prop_assert!(a.per_source.values().all(|n| *n > 0));
            }
        }
    }
}
