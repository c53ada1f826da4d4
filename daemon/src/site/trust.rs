//! Which identity may speak for which site name, as a pure state machine:
//! the pins ("known sites", persisted in the state file), the `trust.mode`
//! rules, and the refused claims shown to the operator.
//!
//! Every discovery message carries the identity that signed it (checked by
//! `message::envelope`). Before the site acts on a message it asks
//! [`Trust::check`] whether that identity may use the site name the message
//! claims; a refused message never reaches the peer bookkeeping, so it cannot
//! replace, probe or disturb the site that holds the name. DataChannels need
//! no check of their own: an inbound channel is confirmed only for a
//! certificate its instance announced in an accepted (so correctly signed)
//! announcement, and dialers pin the certificate of such an announcement.
//!
//! # Rules
//! - This site's own name is only ever accepted from this site's identity.
//! - `open`: any identity is accepted for any name (the original's model).
//! - `trust.sites` entries fix a name to an identity in `pinned` and
//!   `strict` mode; config wins over a learned pin.
//! - `strict`: a name not listed is refused.
//! - `pinned`: a name not yet known is pinned to the first identity that
//!   speaks for it (trust on first use, like SSH's known_hosts) and the pin
//!   is persisted; a different identity later is refused while the pin stands.
//!   [`Trust::forget`] drops a pin, so the next identity is learned.
//!
//! Nothing here does I/O or reads a clock: `now` is a parameter.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::{SiteName, TrustMode, TrustedSite};
use crate::identity::Fingerprint;
use crate::message::announce::InstanceId;
use crate::store::KnownSite;

/// Most pinned site names: beyond, new names are refused (a member minting
/// names and identities cannot grow the state file without bound).
pub const MAX_PINS: usize = 4096;
/// Most refused claims remembered for display (the oldest is dropped).
pub const MAX_REFUSED: usize = 64;
/// A refused claim not heard from again for this long is no longer shown.
pub const REFUSED_TTL: Duration = Duration::from_secs(600);

/// Where an accepted identity stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Matches a pin that existed before this run, or `trust.sites`.
    Pinned,
    /// Pinned on first sight during this run (trust on first use: compare
    /// the fingerprint out of band if it matters).
    New,
    /// `trust.mode: open`: not checked.
    Unpinned,
}

/// Why a claim was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Another identity is pinned (or listed) for this name.
    Conflict {
        /// The identity the name is pinned to.
        pinned: Fingerprint,
    },
    /// `trust.mode: strict` and the name is not in `trust.sites`.
    NotListed,
    /// The pin table is full ([`MAX_PINS`]).
    TooManyPins,
}

/// The outcome of [`Trust::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The identity may speak for the name.
    Accepted(Standing),
    /// It may not; the message or channel is dropped.
    Refused {
        /// Why.
        why: Refusal,
        /// The first refusal of this (name, identity) pair since it was
        /// last shown: worth a log line.
        first: bool,
    },
}

/// A refused claim, as shown to the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedClaim {
    /// The name claimed.
    pub site: SiteName,
    /// The identity that claimed it.
    pub presented: Fingerprint,
    /// The instance that sent the latest refused message.
    pub instance: InstanceId,
    /// Why it was refused.
    pub why: Refusal,
    /// How many messages of it were refused.
    pub count: u64,
    /// When the latest arrived.
    pub last: Instant,
}

/// Why [`Trust::forget`] did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgetError {
    /// No identity is pinned for the name.
    #[error("no identity is pinned for site '{0}'")]
    NotPinned(SiteName),
    /// The config fixes it.
    #[error(
        "site '{0}' is pinned by trust.sites in the config file: edit its identity there and restart"
    )]
    Listed(SiteName),
    /// It is this site's own name.
    #[error("'{0}' is this site's own name")]
    OwnName(SiteName),
    /// Nothing is pinned in this mode.
    #[error("trust.mode is open: no identities are pinned")]
    Open,
}

#[derive(Debug, Clone, Copy)]
struct Pin {
    identity: Fingerprint,
    first_seen_ms: u64,
    /// Pinned during this run (shown as [`Standing::New`]).
    learnt: bool,
}

/// The trust state of one site.
#[derive(Debug)]
pub struct Trust {
    mode: TrustMode,
    own_name: SiteName,
    own_identity: Fingerprint,
    listed: HashMap<SiteName, Fingerprint>,
    pins: HashMap<SiteName, Pin>,
    /// The identity last accepted per name and where it stood (what peers
    /// show).
    current: HashMap<SiteName, (Fingerprint, Standing)>,
    refused: HashMap<(SiteName, Fingerprint), RefusedClaim>,
    /// Pins made since [`Trust::take_new_pins`] was last called.
    fresh: Vec<(SiteName, Fingerprint)>,
    dirty: bool,
}

impl Trust {
    /// The trust state at start: `listed` from the config, `known` from the
    /// state file. Returns the state and warnings about unusable or
    /// overridden known entries (the caller logs them).
    pub fn new(
        mode: TrustMode,
        own_name: SiteName,
        own_identity: Fingerprint,
        listed: &[TrustedSite],
        known: &[KnownSite],
    ) -> (Self, Vec<String>) {
        let listed: HashMap<SiteName, Fingerprint> = listed
            .iter()
            .map(|t| (t.site.clone(), t.identity))
            .collect();
        let mut warnings = Vec::new();
        if let Some(l) = listed.get(&own_name)
            && *l != own_identity
        {
            warnings.push(format!(
                "trust.sites lists this site ('{}') with identity {l}, but its identity is {own_identity}: other sites using that list will refuse it",
                own_name.as_str().escape_debug()
            ));
        }
        let mut pins = HashMap::new();
        let mut dirty = false;
        for (i, k) in known.iter().enumerate() {
            let (Ok(site), Ok(identity)) = (
                SiteName::new(&k.site_name),
                k.identity.parse::<Fingerprint>(),
            ) else {
                warnings.push(format!(
                    "state file: knownSites[{i}] ignored: not a valid site name and identity"
                ));
                dirty = true;
                continue;
            };
            if let Some(l) = listed.get(&site)
                && *l != identity
            {
                warnings.push(format!(
                    "state file: the identity pinned for site '{}' ({identity}) differs from trust.sites ({l}); trust.sites wins",
                    site.as_str().escape_debug()
                ));
                dirty = true;
                continue;
            }
            if pins.len() < MAX_PINS {
                pins.insert(
                    site,
                    Pin {
                        identity,
                        first_seen_ms: k.first_seen,
                        learnt: false,
                    },
                );
            }
        }
        let trust = Self {
            mode,
            own_name,
            own_identity,
            listed,
            pins,
            current: HashMap::new(),
            refused: HashMap::new(),
            fresh: Vec::new(),
            dirty,
        };
        (trust, warnings)
    }

    /// The mode.
    pub fn mode(&self) -> TrustMode {
        self.mode
    }

    /// Whether `who` may speak for `site`. Pins `site` to `who` when it is a
    /// new name in `pinned` mode (`wall_ms`: unix milliseconds, stored as
    /// the pin's first sighting).
    pub fn check(
        &mut self,
        site: &SiteName,
        instance: InstanceId,
        who: Fingerprint,
        now: Instant,
        wall_ms: u64,
    ) -> Verdict {
        let verdict = self.judge(site, who, wall_ms);
        match verdict {
            Ok(standing) => {
                self.current.insert(site.clone(), (who, standing));
                Verdict::Accepted(standing)
            }
            Err(why) => {
                let first = self.record_refusal(site, instance, who, why, now);
                Verdict::Refused { why, first }
            }
        }
    }

    fn judge(
        &mut self,
        site: &SiteName,
        who: Fingerprint,
        wall_ms: u64,
    ) -> Result<Standing, Refusal> {
        if *site == self.own_name {
            return if who == self.own_identity {
                Ok(Standing::Pinned)
            } else {
                Err(Refusal::Conflict {
                    pinned: self.own_identity,
                })
            };
        }
        if self.mode == TrustMode::Open {
            return Ok(Standing::Unpinned);
        }
        if let Some(&listed) = self.listed.get(site) {
            return if listed == who {
                Ok(Standing::Pinned)
            } else {
                Err(Refusal::Conflict { pinned: listed })
            };
        }
        if self.mode == TrustMode::Strict {
            return Err(Refusal::NotListed);
        }
        match self.pins.get(site) {
            Some(pin) if pin.identity == who => Ok(if pin.learnt {
                Standing::New
            } else {
                Standing::Pinned
            }),
            Some(pin) => Err(Refusal::Conflict {
                pinned: pin.identity,
            }),
            None if self.pins.len() >= MAX_PINS => Err(Refusal::TooManyPins),
            None => {
                self.pins.insert(
                    site.clone(),
                    Pin {
                        identity: who,
                        first_seen_ms: wall_ms,
                        learnt: true,
                    },
                );
                self.fresh.push((site.clone(), who));
                // A claim refused under the old pin may be the one now pinned.
                self.refused.retain(|(s, _), _| s != site);
                self.dirty = true;
                Ok(Standing::New)
            }
        }
    }

    fn record_refusal(
        &mut self,
        site: &SiteName,
        instance: InstanceId,
        who: Fingerprint,
        why: Refusal,
        now: Instant,
    ) -> bool {
        self.expire(now);
        let key = (site.clone(), who);
        if let Some(r) = self.refused.get_mut(&key) {
            r.count = r.count.saturating_add(1);
            r.last = now;
            r.instance = instance;
            r.why = why;
            return false;
        }
        if self.refused.len() >= MAX_REFUSED
            && let Some(oldest) = self
                .refused
                .iter()
                .min_by_key(|(_, r)| r.last)
                .map(|(k, _)| k.clone())
        {
            self.refused.remove(&oldest);
        }
        self.refused.insert(
            key,
            RefusedClaim {
                site: site.clone(),
                presented: who,
                instance,
                why,
                count: 1,
                last: now,
            },
        );
        true
    }

    /// Drops refused claims not heard from for [`REFUSED_TTL`].
    pub fn expire(&mut self, now: Instant) {
        self.refused
            .retain(|_, r| now.saturating_duration_since(r.last) < REFUSED_TTL);
    }

    /// Drops the pin of `site`: the next identity speaking for it is pinned.
    /// Returns the identity that was pinned.
    pub fn forget(&mut self, site: &SiteName) -> Result<Fingerprint, ForgetError> {
        if *site == self.own_name {
            return Err(ForgetError::OwnName(site.clone()));
        }
        if self.listed.contains_key(site) && self.mode != TrustMode::Open {
            return Err(ForgetError::Listed(site.clone()));
        }
        if self.mode != TrustMode::Pinned {
            return match self.mode {
                TrustMode::Open => Err(ForgetError::Open),
                _ => Err(ForgetError::NotPinned(site.clone())),
            };
        }
        let pin = self
            .pins
            .remove(site)
            .ok_or_else(|| ForgetError::NotPinned(site.clone()))?;
        self.current.remove(site);
        self.refused.retain(|(s, _), _| s != site);
        self.dirty = true;
        Ok(pin.identity)
    }

    /// The identity last accepted for `site`, and where it stands.
    pub fn standing(&self, site: &SiteName) -> Option<(Fingerprint, Standing)> {
        self.current.get(site).copied()
    }

    /// Refused claims still shown, oldest name first.
    pub fn refused(&self) -> Vec<RefusedClaim> {
        let mut v: Vec<RefusedClaim> = self.refused.values().cloned().collect();
        v.sort_by(|a, b| a.site.cmp(&b.site).then(a.presented.cmp(&b.presented)));
        v
    }

    /// The pins made since the last call (to tell the operator).
    pub fn take_new_pins(&mut self) -> Vec<(SiteName, Fingerprint)> {
        std::mem::take(&mut self.fresh)
    }

    /// The pins taken by [`Trust::take_changed`] were not written: offer
    /// them again at the next call.
    pub fn unsaved(&mut self) {
        self.dirty = true;
    }

    /// The learned pins to persist, if they changed since the last call.
    pub fn take_changed(&mut self) -> Option<Vec<KnownSite>> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        let mut v: Vec<KnownSite> = self
            .pins
            .iter()
            .map(|(site, pin)| KnownSite {
                site_name: site.as_str().to_owned(),
                identity: pin.identity.to_string(),
                first_seen: pin.first_seen_ms,
            })
            .collect();
        v.sort_by(|a, b| a.site_name.cmp(&b.site_name));
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SiteKey;

    fn name(s: &str) -> SiteName {
        SiteName::new(s).unwrap()
    }

    fn fp() -> Fingerprint {
        SiteKey::generate().unwrap().public().fingerprint()
    }

    struct Rig {
        trust: Trust,
        now: Instant,
        me: Fingerprint,
    }

    impl Rig {
        fn new(mode: TrustMode, listed: &[(&str, Fingerprint)], known: &[KnownSite]) -> Self {
            let me = fp();
            let listed: Vec<TrustedSite> = listed
                .iter()
                .map(|(s, f)| TrustedSite {
                    site: name(s),
                    identity: *f,
                })
                .collect();
            let (trust, warnings) = Trust::new(mode, name("me"), me, &listed, known);
            assert!(warnings.is_empty(), "{warnings:?}");
            Self {
                trust,
                now: Instant::now(),
                me,
            }
        }

        fn check(&mut self, site: &str, who: Fingerprint) -> Verdict {
            self.now += Duration::from_secs(1);
            self.trust.check(
                &name(site),
                InstanceId::from_bytes([1; 16]),
                who,
                self.now,
                1_000,
            )
        }
    }

    fn conflict(pinned: Fingerprint, first: bool) -> Verdict {
        Verdict::Refused {
            why: Refusal::Conflict { pinned },
            first,
        }
    }

    #[test]
    fn first_identity_is_pinned_and_a_second_is_refused() {
        let mut r = Rig::new(TrustMode::Pinned, &[], &[]);
        let (a, b) = (fp(), fp());
        assert_eq!(r.check("x", a), Verdict::Accepted(Standing::New));
        assert_eq!(r.check("x", a), Verdict::Accepted(Standing::New));
        assert_eq!(r.check("x", b), conflict(a, true));
        assert_eq!(r.check("x", b), conflict(a, false));
        // The legitimate site is unaffected.
        assert_eq!(r.check("x", a), Verdict::Accepted(Standing::New));
        assert_eq!(r.trust.standing(&name("x")), Some((a, Standing::New)));
        let refused = r.trust.refused();
        assert_eq!(refused.len(), 1);
        assert_eq!((refused[0].presented, refused[0].count), (b, 2));
    }

    #[test]
    fn pins_persist_and_come_back_as_pinned() {
        let mut r = Rig::new(TrustMode::Pinned, &[], &[]);
        let a = fp();
        r.check("x", a);
        assert_eq!(r.trust.take_new_pins(), vec![(name("x"), a)]);
        assert!(r.trust.take_new_pins().is_empty());
        let known = r.trust.take_changed().expect("a new pin is a change");
        assert_eq!(r.trust.take_changed(), None);
        assert_eq!(known.len(), 1);
        assert_eq!(known[0].site_name, "x");
        assert_eq!(known[0].identity, a.to_string());
        assert_eq!(known[0].first_seen, 1_000);
        // A failed write offers the same pins again.
        r.trust.unsaved();
        assert_eq!(r.trust.take_changed(), Some(known.clone()));
        // A restart: the pin is old now.
        let mut r = Rig::new(TrustMode::Pinned, &[], &known);
        assert_eq!(r.check("x", a), Verdict::Accepted(Standing::Pinned));
        assert_eq!(r.check("x", fp()), conflict(a, true));
        assert_eq!(r.trust.take_changed(), None);
    }

    #[test]
    fn forget_lets_the_next_identity_be_learned() {
        let mut r = Rig::new(TrustMode::Pinned, &[], &[]);
        let (a, b) = (fp(), fp());
        r.check("x", a);
        r.trust.take_changed();
        assert_eq!(r.check("x", b), conflict(a, true));
        assert_eq!(r.trust.forget(&name("x")), Ok(a));
        assert!(r.trust.refused().is_empty());
        assert_eq!(r.trust.standing(&name("x")), None);
        assert_eq!(r.trust.take_changed(), Some(vec![]));
        assert_eq!(r.check("x", b), Verdict::Accepted(Standing::New));
        assert_eq!(r.check("x", a), conflict(b, true));
        assert_eq!(
            r.trust.forget(&name("y")),
            Err(ForgetError::NotPinned(name("y")))
        );
    }

    #[test]
    fn own_name_only_from_own_identity() {
        for mode in [TrustMode::Pinned, TrustMode::Strict, TrustMode::Open] {
            let mut r = Rig::new(mode, &[], &[]);
            let me = r.me;
            assert_eq!(r.check("me", me), Verdict::Accepted(Standing::Pinned));
            assert_eq!(r.check("me", fp()), conflict(me, true), "{mode:?}");
            assert_eq!(
                r.trust.forget(&name("me")),
                Err(ForgetError::OwnName(name("me")))
            );
        }
    }

    #[test]
    fn strict_admits_only_listed_sites_with_their_identity() {
        let (a, b) = (fp(), fp());
        let mut r = Rig::new(TrustMode::Strict, &[("x", a)], &[]);
        assert_eq!(r.check("x", a), Verdict::Accepted(Standing::Pinned));
        assert_eq!(r.check("x", b), conflict(a, true));
        assert_eq!(
            r.check("y", b),
            Verdict::Refused {
                why: Refusal::NotListed,
                first: true
            }
        );
        assert_eq!(r.trust.take_changed(), None, "strict never learns pins");
        assert_eq!(
            r.trust.forget(&name("x")),
            Err(ForgetError::Listed(name("x")))
        );
    }

    #[test]
    fn listed_sites_are_fixed_in_pinned_mode_and_win_over_learned_pins() {
        let (a, b) = (fp(), fp());
        let known = [KnownSite {
            site_name: "x".into(),
            identity: b.to_string(),
            first_seen: 5,
        }];
        let listed = [TrustedSite {
            site: name("x"),
            identity: a,
        }];
        let me = fp();
        let (trust, warnings) = Trust::new(TrustMode::Pinned, name("me"), me, &listed, &known);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let mut r = Rig {
            trust,
            now: Instant::now(),
            me,
        };
        assert_eq!(r.check("x", a), Verdict::Accepted(Standing::Pinned));
        assert_eq!(r.check("x", b), conflict(a, true));
        assert_eq!(
            r.trust.forget(&name("x")),
            Err(ForgetError::Listed(name("x")))
        );
        // The stale learned pin is dropped from the state file.
        assert_eq!(r.trust.take_changed(), Some(vec![]));
        // Unlisted names are still learned.
        assert_eq!(r.check("y", b), Verdict::Accepted(Standing::New));
    }

    #[test]
    fn open_mode_accepts_anything_and_pins_nothing() {
        let mut r = Rig::new(TrustMode::Open, &[], &[]);
        let (a, b) = (fp(), fp());
        assert_eq!(r.check("x", a), Verdict::Accepted(Standing::Unpinned));
        assert_eq!(r.check("x", b), Verdict::Accepted(Standing::Unpinned));
        assert_eq!(r.trust.standing(&name("x")), Some((b, Standing::Unpinned)));
        assert_eq!(r.trust.take_changed(), None);
        assert_eq!(r.trust.forget(&name("x")), Err(ForgetError::Open));
    }

    #[test]
    fn pins_and_refusals_are_bounded() {
        let mut r = Rig::new(TrustMode::Pinned, &[], &[]);
        for i in 0..MAX_PINS {
            assert_eq!(
                r.check(&format!("s{i}"), fp()),
                Verdict::Accepted(Standing::New)
            );
        }
        assert_eq!(
            r.check("one-more", fp()),
            Verdict::Refused {
                why: Refusal::TooManyPins,
                first: true
            }
        );
        for _ in 0..(3 * MAX_REFUSED) {
            r.check("s0", fp());
        }
        assert_eq!(r.trust.refused().len(), MAX_REFUSED);
    }

    #[test]
    fn refused_claims_expire_and_are_reported_again() {
        let mut r = Rig::new(TrustMode::Pinned, &[], &[]);
        let (a, b) = (fp(), fp());
        r.check("x", a);
        assert_eq!(r.check("x", b), conflict(a, true));
        r.now += REFUSED_TTL;
        r.trust.expire(r.now);
        assert!(r.trust.refused().is_empty());
        assert_eq!(r.check("x", b), conflict(a, true));
    }

    #[test]
    fn a_wrong_own_entry_in_trust_sites_is_warned_about() {
        let me = fp();
        let listed = [TrustedSite {
            site: name("me"),
            identity: fp(),
        }];
        let (_, warnings) = Trust::new(TrustMode::Strict, name("me"), me, &listed, &[]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains(&me.to_string()));
        let listed = [TrustedSite {
            site: name("me"),
            identity: me,
        }];
        let (_, warnings) = Trust::new(TrustMode::Strict, name("me"), me, &listed, &[]);
        assert!(warnings.is_empty());
    }

    #[test]
    fn unusable_known_entries_are_dropped_with_a_warning() {
        let known = [KnownSite {
            site_name: "a/b".into(),
            identity: "nope".into(),
            first_seen: 0,
        }];
        let (mut t, warnings) = Trust::new(TrustMode::Pinned, name("me"), fp(), &[], &known);
        assert_eq!(warnings.len(), 1);
        assert_eq!(t.take_changed(), Some(vec![]));
    }
}
