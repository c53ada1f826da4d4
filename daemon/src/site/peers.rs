//! Peer bookkeeping as a pure state machine: which instance holds each site
//! name, what it announced, which dataChannels belong to it, which dials
//! should run, and what becomes of other instances claiming the same name.
//!
//! Inputs are discovery messages (announce, depart, query), the tunnel's
//! channel events and the clock: `now` is always a parameter. Outputs are
//! [`Action`]s, collected with [`Peers::take_actions`] and executed by the
//! site actor (dial, confirm or close a channel, send a query, count, log).
//! Nothing here touches a socket, a task, a lock or the wall clock, and it
//! must stay that way: every rule below is unit-tested deterministically in
//! `peers/tests.rs`, including reordered and replayed messages.
//!
//! # Rules
//!
//! **Holder and claimants.** The first instance of a site whose announcement
//! arrives *holds* the site name. Another instance announcing the same name
//! is a *claimant*: it gets no dial, its inbound channels wait, and its
//! announcements change nothing until the holder is found dead.
//!
//! **Liveness (the exact rule).** The holder is *alive* while it has at least
//! one live, confirmed dataChannel with this site (QUIC keep-alives every 2 s
//! and an 8 s idle timeout take a dead process's channels down within
//! seconds). Without one, it is *dead* as soon as any of these holds:
//! - it departed with a valid `Depart` (see epochs below);
//! - nothing arrived from it on the message channel for [`SILENCE`] (it
//!   missed a periodic announcement);
//! - it did not answer a probe: when a claimant announces, the holder is sent
//!   a `Query`; if no announcement or query of the holder arrives within
//!   [`PROBE_TIMEOUT`] of that query, the probe is unanswered.
//!
//! A dead holder is replaced at once by the most recently heard claimant (a
//! restart). A graceful restart is therefore taken over as soon as the new
//! instance announces; a crash as soon as the old channels time out.
//!
//! **Conflict.** A holder that answers a probe (an announcement or query of
//! it processed after the probe was sent) is alive while the claimant is
//! too: two running processes share the name. Every claimant present then is *in conflict*:
//! one [`Report::Conflict`] per (site, claimant) naming both instances, its
//! pending channels closed, each later announcement and channel of it
//! refused and counted. It is listed in [`PeerView::conflicts`] until it
//! expires or takes over a dead holder.
//!
//! **Epochs.** Every announcement and departure carries the sender's
//! broker-connection counter. A `Depart` (or MQTT last will) of the holder is
//! valid only if its epoch is at least the highest epoch of that instance's
//! announcements: a will replayed from an earlier connection is ignored and
//! counted as stale. A departed holder that announces a newer epoch (epoch 0
//! is a sender without epochs) is back, and so is one that announces the
//! same epoch with a higher `seq` than any seen before its departure: a site
//! raises `seq` on every broker (re)connection, so that announcement was sent
//! after the will fired. That is how a will fired for a live connection is
//! undone (brokers that see a client reconnect before they noticed its old
//! connection died publish the will they hold, the new connection's). A replaced holder that had departed
//! is remembered for [`TOMBSTONE_TTL`]; its announcements up to the epoch of
//! its departure are ignored, so a late one cannot claim the name again.
//!
//! **Channel claims.** An inbound channel's key-proven hello claims (site,
//! instance) and TLS proves its certificate. It is confirmed only when that
//! instance holds the site name and announced exactly that certificate.
//! Otherwise it waits (the claimed instance is queried) at most
//! [`CLAIM_DEADLINE`] for such an announcement; a claim of an instance in
//! conflict, of a departed instance, of this site's own name, or with another
//! certificate is refused at once. An outbound channel was dialled to the
//! holder's pinned certificate and is kept only while that instance still
//! holds the name. An instance's certificate never changes: an announcement
//! with another one is refused.
//!
//! **Offers.** Apps restricted by `allowedSites` are not announced; their
//! site sends each allowed site's holder an [`Offer`] instead. An offer is
//! kept per instance (the one with the highest `seq`), counts only while
//! that instance holds the name, and goes when another instance takes over.
//! A peer serves (its remote-app listeners open) the apps it announced plus
//! those its holder offered, while it is connected.
//!
//! **Bounds.** At most [`MAX_PEERS`] sites, [`MAX_CLAIMANTS`] claimants per
//! site, [`MAX_PENDING_CHANNELS`] unconfirmed channels; beyond, new ones are
//! refused and counted, and warnings are rate-limited.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::fallback::Fallback;
use crate::config::{AppName, SiteName, Transport};
use crate::message::announce::{
    Announce, AnnouncedSocket, AnnouncedTransport, Depart, InstanceId, Offer, PunchInfo,
};
use crate::tunnel::auth::PeerId;
use crate::tunnel::tls::Fingerprint;
use crate::tunnel::{ChannelId, Direction};
use crate::view::PeerState;
use crate::warn_limit::WarnLimiter;

/// Every site re-announces this often, so a lost message or a new broker
/// subscriber heals without anyone asking.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(30);
/// A holder without channels silent this long missed a periodic announcement: dead.
pub const SILENCE: Duration = Duration::from_secs(45);
/// How long a holder has to answer the query sent when a claimant appears.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an inbound channel waits for its instance's announcement.
pub const CLAIM_DEADLINE: Duration = Duration::from_secs(10);
/// A peer silent on the message channel this long, with no live channel, is
/// forgotten; so is a claimant.
pub const PEER_EXPIRY: Duration = Duration::from_secs(100);
/// A peer silent this long is shown as gone.
pub const GONE_AFTER: Duration = Duration::from_secs(90);
/// How long a replaced, departed instance's old announcements stay refused
/// (longer than the envelope's freshness window, after which they are stale anyway).
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(300);
/// Most sites kept; announcements of further names are ignored and counted.
pub const MAX_PEERS: usize = 1024;
/// Most instances claiming one held name at a time.
pub const MAX_CLAIMANTS: usize = 4;
/// Most inbound channels waiting for an announcement at a time.
pub const MAX_PENDING_CHANNELS: usize = 256;
/// Most instances refused by the trust check remembered at a time.
pub const MAX_REFUSED_INSTANCES: usize = 64;
/// Most departed instances remembered per site.
const MAX_TOMBSTONES: usize = 8;
/// Most other instances of this site's own name reported.
const MAX_OWN_CONFLICTS: usize = 16;

/// Why a claim (an announcement or an inbound channel) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The certificate differs from the one the instance announced.
    CertMismatch,
    /// Another live instance holds the site name.
    Conflict,
    /// The instance departed.
    Departed,
    /// It claims this site's own name.
    OwnName,
    /// Too many instances already claim the name.
    TooManyClaimants,
    /// Too many channels already wait for announcements.
    TooManyPending,
    /// No matching announcement arrived within [`CLAIM_DEADLINE`].
    Unannounced,
    /// Its messages are signed by an identity this site refuses for that
    /// site name (see `site::trust`).
    Identity,
}

impl Refusal {
    /// What the peer and the logs are told.
    pub fn text(self) -> &'static str {
        match self {
            Self::CertMismatch => "refused: certificate differs from the announced one",
            Self::Conflict => "refused: another live instance holds this site name",
            Self::Departed => "refused: this instance departed",
            Self::OwnName => "refused: that is this site's own name",
            Self::TooManyClaimants => "refused: too many instances claim this site name",
            Self::TooManyPending => "refused: too many unannounced channels",
            Self::Unannounced => "refused: no matching announcement in time",
            Self::Identity => "refused: this site name is pinned to another identity",
        }
    }
}

/// Why the site closes a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Its claim was refused.
    Refused(Refusal),
    /// It leads to an instance that no longer holds the name.
    Superseded,
    /// The operator forgot the site (and its pinned identity).
    Forgotten,
}

impl CloseReason {
    /// What the peer and the logs are told.
    pub fn text(self) -> &'static str {
        match self {
            Self::Refused(r) => r.text(),
            Self::Superseded => "superseded by a newer instance",
            Self::Forgotten => "the site was forgotten by the operator",
        }
    }
}

/// A counter to bump (see `crate::counters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    /// A claim was refused (`claims_refused`).
    ClaimRefused,
    /// A new site name was ignored: too many peers (`peers_over_cap`).
    OverCap,
    /// A replayed or reordered depart or announcement was ignored (`messages_stale`).
    Stale,
}

/// Something to tell the operator (logs and the event bus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A confirmed channel went down.
    ChannelDown {
        /// The peer.
        site: SiteName,
        /// The channel.
        channel: ChannelId,
        /// Why.
        reason: String,
    },
    /// A channel was confirmed (outbound ones at once).
    ChannelUp {
        /// The peer.
        site: SiteName,
        /// The channel.
        channel: ChannelId,
    },
    /// Two live instances share a site name. Once per (site, other).
    Conflict {
        /// The name.
        site: SiteName,
        /// The instance that keeps it.
        holder: InstanceId,
        /// The instance refused.
        other: InstanceId,
    },
    /// The holder's first confirmed channel came up.
    Connected {
        /// The peer.
        site: SiteName,
    },
    /// The holder said goodbye.
    Departed {
        /// The peer.
        site: SiteName,
        /// The instance.
        instance: InstanceId,
    },
    /// The holder's last confirmed channel went down.
    Disconnected {
        /// The peer.
        site: SiteName,
        /// Why the last channel closed.
        reason: String,
    },
    /// A new holder: a new site, or a restart.
    Discovered {
        /// The peer.
        site: SiteName,
        /// Its instance.
        instance: InstanceId,
        /// Apps it exposes.
        apps: Vec<AppName>,
        /// Sockets it announced.
        sockets: usize,
        /// Its protocol version.
        protocol_version: u32,
        /// Whether its certificate fingerprint is unusable (no dialling).
        invalid_cert: bool,
    },
    /// A silent peer was dropped.
    Forgotten {
        /// The peer.
        site: SiteName,
    },
    /// New site names are being ignored (rate-limited).
    OverCap {
        /// The latest name ignored.
        site: SiteName,
        /// Names ignored since the previous report.
        suppressed: u64,
    },
    /// A claim was refused (rate-limited; every refusal is counted).
    Refused {
        /// The site claimed.
        site: SiteName,
        /// The claiming instance.
        instance: InstanceId,
        /// Why.
        why: Refusal,
        /// Refusals not reported since the previous report.
        suppressed: u64,
    },
    /// A dead holder was replaced.
    Restarted {
        /// The peer.
        site: SiteName,
        /// The instance replaced.
        old: InstanceId,
        /// The new holder.
        new: InstanceId,
    },
}

/// What the site actor must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send our announcement to this instance (unicast).
    AnnounceTo(InstanceId),
    /// Close a channel, telling the peer why.
    Close {
        /// The peer site the channel is registered under.
        site: SiteName,
        /// The channel.
        channel: ChannelId,
        /// Why.
        reason: CloseReason,
    },
    /// Let an inbound channel carry streams.
    Confirm {
        /// The peer site.
        site: SiteName,
        /// The channel.
        channel: ChannelId,
    },
    /// Bump a counter.
    Count(Tally),
    /// Start a dial loop to one announced socket of the holder.
    Dial {
        /// The instance expected at the other end.
        peer: PeerId,
        /// `AnnouncedSocket::id`.
        socket: u32,
        /// Where.
        addr: SocketAddr,
        /// Set for a `hole-punching` socket: dial through a rendezvous.
        punch: Option<PunchInfo>,
        /// The certificate it must present.
        pin: Fingerprint,
        /// QUIC over UDP or over TCP (never [`AnnouncedTransport::Unknown`]).
        transport: AnnouncedTransport,
    },
    /// Ask an instance to announce itself to us (unicast `Query`).
    Query(InstanceId),
    /// Tell the operator.
    Report(Report),
    /// Stop the dial loop to a socket of `site`.
    StopDial {
        /// The peer.
        site: SiteName,
        /// `AnnouncedSocket::id`.
        socket: u32,
    },
    /// Stop redialling a TCP socket of `site` that QUIC made unnecessary:
    /// its channel takes no new streams and closes once the ones it carries
    /// have ended, so no stream is cut.
    DrainDial {
        /// The peer.
        site: SiteName,
        /// `AnnouncedSocket::id`.
        socket: u32,
    },
}

/// A dataChannel as the tunnel reports it when it comes up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelUp {
    /// Who the key proof says is at the other end.
    pub peer: PeerId,
    /// The channel.
    pub channel: ChannelId,
    /// Who dialled.
    pub direction: Direction,
    /// The certificate the peer presented (outbound: the pinned one).
    pub cert: Fingerprint,
    /// QUIC over UDP (direct or relayed) or over TCP.
    pub transport: Transport,
}

/// One instance as announced.
#[derive(Debug, Clone)]
struct Instance {
    id: InstanceId,
    announce: Announce,
    /// `None` when the announced fingerprint does not parse.
    cert: Option<Fingerprint>,
    max_epoch: u32,
    /// Epoch of its accepted `Depart`, and the highest `seq` announced
    /// before it.
    departed: Option<(u32, u64)>,
    last_heard: Instant,
    /// Its latest [`Offer`] to this site: the offer's `seq` and the apps.
    offer: Option<(u64, Vec<AppName>)>,
}

impl Instance {
    fn new(a: Announce, cert: Option<Fingerprint>, now: Instant) -> Self {
        Self {
            id: a.instance,
            max_epoch: a.epoch,
            announce: a,
            cert,
            departed: None,
            last_heard: now,
            offer: None,
        }
    }

    /// The apps it offered this site alone (empty without an offer).
    fn offered(&self) -> &[AppName] {
        self.offer.as_ref().map_or(&[], |(_, apps)| apps)
    }

    /// Records a new announcement of this instance (same certificate).
    fn heard(&mut self, a: Announce, now: Instant) {
        self.last_heard = now;
        self.max_epoch = self.max_epoch.max(a.epoch);
        if let Some((d, seq)) = self.departed
            && (a.epoch > d || a.epoch == 0 || (a.epoch == d && a.seq > seq))
        {
            self.departed = None;
        }
        // Reordered: keep the newer announcement.
        if a.seq >= self.announce.seq {
            self.announce = a;
        }
    }

    /// Whether `d` is a valid departure of this instance.
    fn accepts(&self, d: &Depart) -> bool {
        d.epoch >= self.max_epoch
    }
}

#[derive(Debug, Clone)]
struct Claimant {
    instance: Instance,
    /// Found alive alongside the holder (reported once).
    conflict: bool,
}

#[derive(Debug, Clone, Copy)]
struct Tombstone {
    epoch: u32,
    at: Instant,
}

/// One remote site.
#[derive(Debug, Clone)]
struct Peer {
    holder: Instance,
    claimants: HashMap<InstanceId, Claimant>,
    tombstones: HashMap<InstanceId, Tombstone>,
    /// The holder's confirmed, live channels.
    channels: HashMap<ChannelId, (Direction, Transport)>,
    /// Whether its TCP sockets are dialled: only while QUIC does not work.
    fallback: Fallback,
    /// Running dial loops by announced socket id, with what they dial.
    dials: HashMap<u32, AnnouncedSocket>,
    /// When the holder was queried because a claimant appeared.
    probe: Option<Instant>,
    /// The holder was heard since the probe was sent.
    answered: bool,
}

impl Peer {
    fn dead(&self, now: Instant) -> bool {
        self.channels.is_empty()
            && (self.holder.departed.is_some()
                || now.saturating_duration_since(self.holder.last_heard) >= SILENCE
                || self.probe.is_some_and(|p| {
                    !self.answered && now.saturating_duration_since(p) >= PROBE_TIMEOUT
                }))
    }
}

/// An inbound channel waiting for its instance's announcement.
#[derive(Debug, Clone)]
struct Pending {
    site: SiteName,
    instance: InstanceId,
    cert: Fingerprint,
    transport: Transport,
    deadline: Instant,
}

/// The actions produced so far, and the rate limiters of reports.
#[derive(Debug, Default)]
struct Outbox {
    actions: Vec<Action>,
    refused: WarnLimiter,
    over_cap: WarnLimiter,
}

impl Outbox {
    fn push(&mut self, a: Action) {
        self.actions.push(a);
    }

    fn report(&mut self, r: Report) {
        self.actions.push(Action::Report(r));
    }

    fn count(&mut self, t: Tally) {
        self.actions.push(Action::Count(t));
    }

    /// Counts a refused claim and reports it, rate-limited.
    fn refuse(&mut self, site: &SiteName, instance: InstanceId, why: Refusal, now: Instant) {
        self.count(Tally::ClaimRefused);
        if let Some(suppressed) = self.refused.allow(now) {
            self.report(Report::Refused {
                site: site.clone(),
                instance,
                why,
                suppressed,
            });
        }
    }

    /// Refuses an inbound channel's claim and closes it.
    fn refuse_channel(
        &mut self,
        site: &SiteName,
        instance: InstanceId,
        channel: ChannelId,
        why: Refusal,
        now: Instant,
    ) {
        self.refuse(site, instance, why, now);
        self.push(Action::Close {
            site: site.clone(),
            channel,
            reason: CloseReason::Refused(why),
        });
    }
}

/// What the control plane shows of one peer.
#[derive(Debug, Clone)]
pub struct PeerView<'a> {
    /// Its name.
    pub site: &'a SiteName,
    /// The holder.
    pub instance: InstanceId,
    /// The holder's latest announcement.
    pub announce: &'a Announce,
    /// Last message from the holder.
    pub last_heard: Instant,
    /// The holder's confirmed live channels.
    pub channels: usize,
    /// Dial loops running.
    pub dials: usize,
    /// The holder departed.
    pub departed: bool,
    /// Other live instances refused this name (sorted).
    pub conflicts: Vec<InstanceId>,
    /// Apps the holder offered this site alone (its latest [`Offer`]), on
    /// top of those it announced to everyone.
    pub offered: &'a [AppName],
}

impl PeerView<'_> {
    /// The peer's state as shown to the operator.
    pub fn state(&self, now: Instant) -> PeerState {
        if self.channels > 0 {
            PeerState::Connected
        } else if self.departed || now.saturating_duration_since(self.last_heard) > GONE_AFTER {
            PeerState::Gone
        } else if self.dials > 0 {
            PeerState::Connecting
        } else {
            PeerState::Discovered
        }
    }
}

/// The peer bookkeeping of one site. See the module docs for the rules.
#[derive(Debug)]
pub struct Peers {
    me: SiteName,
    my_instance: InstanceId,
    sites: HashMap<SiteName, Peer>,
    pending: HashMap<ChannelId, Pending>,
    own_conflicts: HashSet<InstanceId>,
    /// Instances whose messages the trust check refused, with their site
    /// and when: channels claiming them are refused at once.
    refused: HashMap<InstanceId, (SiteName, Instant)>,
    rule: DialRule,
    out: Outbox,
    /// Test hook: serve every app of a connected peer, offered or not (see
    /// [`Self::serve_unoffered`]). Always false in release builds.
    serve_unoffered: bool,
}

/// Which announced sockets this site dials.
#[derive(Debug, Clone)]
struct DialRule {
    me: SiteName,
    /// This site has a `hole-punching` socket of its own.
    punchable: bool,
}

impl DialRule {
    /// Whether to dial `socket` of `site`. Every plain socket is dialled.
    /// Between two sites that both have `hole-punching` sockets, only the
    /// one whose name sorts first dials the other's punched sockets (each
    /// rendezvous makes one channel, so exactly one is made, not two racing
    /// through the same NAT mappings); a site without one always dials.
    ///
    /// A TCP socket is dialled like a plain one (it is never punched: one
    /// announced with punch details is not dialled), a socket of a transport
    /// this version does not know never is.
    fn wants(&self, site: &SiteName, socket: &AnnouncedSocket) -> bool {
        match socket.transport {
            AnnouncedTransport::Quic => {
                socket.punch.is_none() || !self.punchable || self.me < *site
            }
            AnnouncedTransport::Tcp => socket.punch.is_none(),
            AnnouncedTransport::Unknown => false,
        }
    }
}

impl Peers {
    /// Bookkeeping for site `me`, running as `my_instance`.
    pub fn new(me: SiteName, my_instance: InstanceId) -> Self {
        let me_for_rule = me.clone();
        Self {
            me,
            my_instance,
            sites: HashMap::new(),
            pending: HashMap::new(),
            own_conflicts: HashSet::new(),
            refused: HashMap::new(),
            rule: DialRule {
                me: me_for_rule,
                punchable: false,
            },
            out: Outbox::default(),
            serve_unoffered: false,
        }
    }

    /// Test hook, debug builds only: [`Self::serves`] answers for every app
    /// of a connected peer, whether it announced or offered it or not. The
    /// end-to-end tests use it to make a site open a stream to an app that
    /// was never offered to it, which a well-behaved site never does, and
    /// check that the exposing site refuses it.
    #[cfg(debug_assertions)]
    pub fn serve_unoffered(&mut self) {
        self.serve_unoffered = true;
    }

    /// Tells the bookkeeping whether this site has a `hole-punching` socket
    /// (only the site whose name sorts first dials between two punchable sites); applies from the next announcement on.
    pub fn set_punchable(&mut self, punchable: bool) {
        self.rule.punchable = punchable;
    }

    /// The actions decided since the last call, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out.actions)
    }

    /// An announcement arrived (broadcast or unicast).
    pub fn on_announce(&mut self, a: Announce, now: Instant) {
        if a.site == self.me {
            self.own_name_seen(a.instance);
            return;
        }
        let site = a.site.clone();
        let cert = Fingerprint::from_hex(&a.cert_sha256);
        let Some(peer) = self.sites.get_mut(&site) else {
            self.discover(a, cert, now);
            return;
        };
        if let Some(t) = peer.tombstones.get(&a.instance) {
            if a.epoch <= t.epoch {
                self.out.count(Tally::Stale);
                return;
            }
            peer.tombstones.remove(&a.instance);
        }
        if a.instance == peer.holder.id {
            if peer.holder.cert != cert {
                self.out
                    .refuse(&site, a.instance, Refusal::CertMismatch, now);
                return;
            }
            let reply = a.reply && a.seq >= peer.holder.announce.seq;
            peer.holder.heard(a, now);
            peer.answered = peer.probe.is_some();
            reconcile_dials(&site, peer, &self.rule, &mut self.out, now);
            if reply {
                self.out.push(Action::AnnounceTo(peer.holder.id));
            }
            confirm_pending(&site, peer, &mut self.pending, &mut self.out, now);
        } else {
            let id = a.instance;
            let full = peer.claimants.len() >= MAX_CLAIMANTS;
            match peer.claimants.get_mut(&id) {
                Some(c) if c.instance.cert != cert => {
                    self.out.refuse(&site, id, Refusal::CertMismatch, now);
                    return;
                }
                Some(c) => {
                    c.instance.heard(a, now);
                    if c.conflict {
                        self.out.refuse(&site, id, Refusal::Conflict, now);
                    }
                }
                None if full => {
                    self.out.refuse(&site, id, Refusal::TooManyClaimants, now);
                    return;
                }
                None => {
                    peer.claimants.insert(
                        id,
                        Claimant {
                            instance: Instance::new(a, cert, now),
                            conflict: false,
                        },
                    );
                }
            }
            if peer.probe.is_none() && !peer.dead(now) {
                peer.probe = Some(now);
                peer.answered = false;
                self.out.push(Action::Query(peer.holder.id));
            }
        }
        self.settle(&site, now);
    }

    /// An [`Offer`] arrived: the apps `o.instance` lets this site alone
    /// reach. Kept per instance, the newest `seq` winning, so it counts
    /// while that instance holds its name and goes with it when another
    /// takes over. An offer from a site not known yet (it overtook its
    /// sender's announcement) asks for that announcement, which the sender
    /// follows with its offer; one from an unknown instance of a known site
    /// or an older one is ignored and counted as stale.
    pub fn on_offer(&mut self, o: Offer) {
        if o.site == self.me {
            self.own_name_seen(o.instance);
            return;
        }
        let Some(peer) = self.sites.get_mut(&o.site) else {
            if self.sites.len() < MAX_PEERS {
                self.out.push(Action::Query(o.instance));
            }
            return;
        };
        let instance = if peer.holder.id == o.instance {
            Some(&mut peer.holder)
        } else {
            peer.claimants.get_mut(&o.instance).map(|c| &mut c.instance)
        };
        match instance {
            Some(i) if i.offer.as_ref().is_none_or(|(seq, _)| o.seq >= *seq) => {
                i.offer = Some((o.seq, o.apps));
            }
            _ => self.out.count(Tally::Stale),
        }
    }

    /// A departure (or last will) arrived.
    pub fn on_depart(&mut self, d: &Depart, now: Instant) {
        let Some(peer) = self.sites.get_mut(&d.site) else {
            return;
        };
        if d.instance == peer.holder.id {
            if !peer.holder.accepts(d) {
                self.out.count(Tally::Stale);
                return;
            }
            if peer.holder.departed.is_some() {
                return;
            }
            peer.holder.departed = Some((d.epoch, peer.holder.announce.seq));
            self.out.report(Report::Departed {
                site: d.site.clone(),
                instance: d.instance,
            });
            // Live channels are left alone, and so are their dial loops: a
            // site that really leaves closes its channels itself, while a
            // last will fired by a broker hiccup must not cut a working
            // tunnel. Redialling stops once the channels are gone.
            reconcile_dials(&d.site, peer, &self.rule, &mut self.out, now);
        } else if let Some(c) = peer.claimants.get(&d.instance) {
            if !c.instance.accepts(d) {
                self.out.count(Tally::Stale);
                return;
            }
            peer.claimants.remove(&d.instance);
            bury(peer, d.instance, d.epoch, now);
        } else {
            return;
        }
        let site = d.site.clone();
        self.settle(&site, now);
    }

    /// A `Query` arrived from `instance` of `site`: it is alive and wants our
    /// announcement.
    pub fn on_query(&mut self, site: &SiteName, instance: InstanceId, now: Instant) {
        if *site == self.me {
            self.own_name_seen(instance);
            return;
        }
        if let Some(peer) = self.sites.get_mut(site) {
            if peer.tombstones.contains_key(&instance) {
                return;
            }
            if peer.holder.id == instance {
                peer.holder.last_heard = now;
                peer.answered = peer.probe.is_some();
            } else if let Some(c) = peer.claimants.get_mut(&instance) {
                c.instance.last_heard = now;
                if c.conflict {
                    return; // no help for a refused duplicate to dial us
                }
            }
            self.settle(site, now);
        }
        self.out.push(Action::AnnounceTo(instance));
    }

    /// A dataChannel passed the key proof.
    pub fn on_channel_up(&mut self, up: ChannelUp, now: Instant) {
        let ChannelUp {
            peer: PeerId { site, instance },
            channel,
            direction,
            cert,
            transport,
        } = up;
        if site == self.me {
            self.out
                .refuse_channel(&site, instance, channel, Refusal::OwnName, now);
            return;
        }
        if self
            .refused
            .get(&instance)
            .is_some_and(|(s, at)| *s == site && now.saturating_duration_since(*at) < TOMBSTONE_TTL)
        {
            self.out
                .refuse_channel(&site, instance, channel, Refusal::Identity, now);
            return;
        }
        let peer = self.sites.get_mut(&site);
        if direction == Direction::Outbound {
            match peer {
                Some(p) if p.holder.id == instance && p.holder.cert == Some(cert) => {
                    add_channel(
                        &site,
                        p,
                        channel,
                        (direction, transport),
                        &mut self.out,
                        now,
                    );
                    self.settle(&site, now);
                }
                _ => self.out.push(Action::Close {
                    site,
                    channel,
                    reason: CloseReason::Superseded,
                }),
            }
            return;
        }
        let mut known = false;
        if let Some(p) = peer {
            if p.holder.id == instance {
                if p.holder.cert == Some(cert) {
                    self.out.push(Action::Confirm {
                        site: site.clone(),
                        channel,
                    });
                    add_channel(
                        &site,
                        p,
                        channel,
                        (direction, transport),
                        &mut self.out,
                        now,
                    );
                    self.settle(&site, now);
                } else {
                    self.out
                        .refuse_channel(&site, instance, channel, Refusal::CertMismatch, now);
                }
                return;
            }
            if p.tombstones.contains_key(&instance) {
                self.out
                    .refuse_channel(&site, instance, channel, Refusal::Departed, now);
                return;
            }
            if let Some(c) = p.claimants.get(&instance) {
                let why = if c.conflict {
                    Some(Refusal::Conflict)
                } else if c.instance.cert != Some(cert) {
                    Some(Refusal::CertMismatch)
                } else {
                    None
                };
                if let Some(why) = why {
                    self.out.refuse_channel(&site, instance, channel, why, now);
                    return;
                }
                known = true;
            }
        }
        if self.pending.len() >= MAX_PENDING_CHANNELS {
            self.out
                .refuse_channel(&site, instance, channel, Refusal::TooManyPending, now);
            return;
        }
        self.pending.insert(
            channel,
            Pending {
                site,
                instance,
                cert,
                transport,
                deadline: now + CLAIM_DEADLINE,
            },
        );
        if !known {
            // Inbound channel before its announcement: ask for it.
            self.out.push(Action::Query(instance));
        }
    }

    /// A dataChannel is gone.
    pub fn on_channel_down(
        &mut self,
        site: &SiteName,
        channel: ChannelId,
        reason: &str,
        now: Instant,
    ) {
        if self.pending.remove(&channel).is_some() {
            return;
        }
        let Some(peer) = self.sites.get_mut(site) else {
            return;
        };
        let Some((_, transport)) = peer.channels.remove(&channel) else {
            return;
        };
        if transport == Transport::Quic && !has_quic(peer) {
            peer.fallback.quic_down(now);
        }
        self.out.report(Report::ChannelDown {
            site: site.clone(),
            channel,
            reason: reason.to_string(),
        });
        if peer.channels.is_empty() {
            self.out.report(Report::Disconnected {
                site: site.clone(),
                reason: reason.to_string(),
            });
        }
        reconcile_dials(site, peer, &self.rule, &mut self.out, now);
        self.settle(site, now);
    }

    /// Dialling one socket of `peer` failed again; the address may be stale
    /// (dynamic public IP), so ask for a fresh announcement now and then. A
    /// failed QUIC dial counts toward dialling the peer's TCP sockets.
    pub fn on_dial_failed(&mut self, peer: &PeerId, socket: u32, attempts: u32, now: Instant) {
        if attempts == 2 || attempts.is_multiple_of(10) {
            self.out.push(Action::Query(peer.instance));
        }
        let Some(p) = self.sites.get_mut(&peer.site) else {
            return;
        };
        if p.holder.id == peer.instance
            && p.dials
                .get(&socket)
                .is_some_and(|s| s.transport == AnnouncedTransport::Quic)
        {
            p.fallback.quic_failed(now);
            reconcile_dials(&peer.site, p, &self.rule, &mut self.out, now);
        }
    }

    /// Deadlines and expiry; call at [`Self::poll_timeout`] and periodically.
    pub fn on_timeout(&mut self, now: Instant) {
        for (id, p) in take_pending(&mut self.pending, |p| now >= p.deadline) {
            self.out
                .refuse_channel(&p.site, p.instance, id, Refusal::Unannounced, now);
        }
        let sites: Vec<SiteName> = self.sites.keys().cloned().collect();
        for site in sites {
            if let Some(peer) = self.sites.get_mut(&site) {
                peer.claimants.retain(|_, c| {
                    now.saturating_duration_since(c.instance.last_heard) < PEER_EXPIRY
                });
                peer.tombstones
                    .retain(|_, t| now.saturating_duration_since(t.at) < TOMBSTONE_TTL);
            }
            self.settle(&site, now);
            let Some(peer) = self.sites.get_mut(&site) else {
                continue;
            };
            if peer.fallback.next_change().is_some_and(|t| t <= now) {
                reconcile_dials(&site, peer, &self.rule, &mut self.out, now);
            }
            let silent = now.saturating_duration_since(peer.holder.last_heard) >= PEER_EXPIRY;
            if peer.channels.is_empty() && silent && peer.claimants.is_empty() {
                for socket in peer.dials.keys() {
                    self.out.push(Action::StopDial {
                        site: site.clone(),
                        socket: *socket,
                    });
                }
                self.sites.remove(&site);
                self.out.report(Report::Forgotten { site });
            }
        }
    }

    /// The trust check refused a message of `instance` claiming `site`: its
    /// channels waiting for an announcement are refused now (the
    /// announcement will never be accepted), and so are its later ones, for
    /// [`TOMBSTONE_TTL`] after its latest refused message. At most
    /// [`MAX_REFUSED_INSTANCES`] are remembered (the oldest is dropped).
    pub fn refuse_instance(&mut self, site: &SiteName, instance: InstanceId, now: Instant) {
        self.refused
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < TOMBSTONE_TTL);
        if !self.refused.contains_key(&instance)
            && self.refused.len() >= MAX_REFUSED_INSTANCES
            && let Some(oldest) = self
                .refused
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(id, _)| *id)
        {
            self.refused.remove(&oldest);
        }
        self.refused.insert(instance, (site.clone(), now));
        let waiting = take_pending(&mut self.pending, |p| {
            p.instance == instance && p.site == *site
        });
        for (id, _) in waiting {
            self.out
                .refuse_channel(site, instance, id, Refusal::Identity, now);
        }
    }

    /// Drops everything known of `site`: its instances, dial loops and
    /// channels (confirmed or waiting). It is learnt again from its next
    /// announcement (after its identity was forgotten: possibly another one).
    pub fn forget(&mut self, site: &SiteName) {
        // Whoever it refused may be the identity pinned next.
        self.refused.retain(|_, (s, _)| s != site);
        for (id, _) in take_pending(&mut self.pending, |p| p.site == *site) {
            self.out.push(Action::Close {
                site: site.clone(),
                channel: id,
                reason: CloseReason::Forgotten,
            });
        }
        let Some(peer) = self.sites.remove(site) else {
            return;
        };
        for socket in peer.dials.keys() {
            self.out.push(Action::StopDial {
                site: site.clone(),
                socket: *socket,
            });
        }
        let mut channels: Vec<ChannelId> = peer.channels.keys().copied().collect();
        channels.sort();
        for channel in channels {
            self.out.push(Action::Close {
                site: site.clone(),
                channel,
                reason: CloseReason::Forgotten,
            });
        }
        self.out.report(Report::Forgotten { site: site.clone() });
    }

    /// The next instant [`Self::on_timeout`] has something to do before the
    /// periodic tick (a probe or a claim deadline).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let probes = self
            .sites
            .values()
            .filter(|p| p.channels.is_empty() && !p.claimants.is_empty() && !p.answered)
            .filter_map(|p| p.probe.map(|t| t + PROBE_TIMEOUT));
        let claims = self.pending.values().map(|p| p.deadline);
        // Only peers that announce a TCP socket have a fallback to decide.
        let fallbacks = self
            .sites
            .values()
            .filter(|p| {
                p.holder
                    .announce
                    .sockets
                    .iter()
                    .any(|s| s.transport == AnnouncedTransport::Tcp)
            })
            .filter_map(|p| p.fallback.next_change());
        probes.chain(claims).chain(fallbacks).min()
    }

    /// Every peer, in no particular order.
    pub fn views(&self) -> impl Iterator<Item = PeerView<'_>> {
        self.sites.iter().map(|(site, p)| {
            let mut conflicts: Vec<InstanceId> = p
                .claimants
                .values()
                .filter(|c| c.conflict)
                .map(|c| c.instance.id)
                .collect();
            conflicts.sort();
            PeerView {
                site,
                instance: p.holder.id,
                announce: &p.holder.announce,
                last_heard: p.holder.last_heard,
                channels: p.channels.len(),
                dials: p.dials.len(),
                departed: p.holder.departed.is_some(),
                conflicts,
                offered: p.holder.offered(),
            }
        })
    }

    /// Whether `site` is connected (the holder has a confirmed channel) and
    /// announced `app` to everyone or offered it to this site.
    pub fn serves(&self, site: &SiteName, app: &AppName) -> bool {
        self.sites.get(site).is_some_and(|p| {
            !p.channels.is_empty()
                && (self.serve_unoffered
                    || p.holder.announce.apps.contains(app)
                    || p.holder.offered().contains(app))
        })
    }

    /// Every site with the instance holding its name, in no particular order.
    pub fn holders(&self) -> impl Iterator<Item = (&SiteName, InstanceId)> {
        self.sites.iter().map(|(site, p)| (site, p.holder.id))
    }

    /// The instance holding `site`'s name.
    pub fn holder(&self, site: &SiteName) -> Option<InstanceId> {
        self.sites.get(site).map(|p| p.holder.id)
    }

    /// Number of peers kept.
    pub fn len(&self) -> usize {
        self.sites.len()
    }

    /// Whether no peer is known.
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    /// Another instance uses this site's own name.
    fn own_name_seen(&mut self, other: InstanceId) {
        if other == self.my_instance
            || self.own_conflicts.len() >= MAX_OWN_CONFLICTS
            || !self.own_conflicts.insert(other)
        {
            return;
        }
        self.out.report(Report::Conflict {
            site: self.me.clone(),
            holder: self.my_instance,
            other,
        });
    }

    /// First announcement of a site: its instance holds the name.
    fn discover(&mut self, a: Announce, cert: Option<Fingerprint>, now: Instant) {
        let site = a.site.clone();
        if self.sites.len() >= MAX_PEERS {
            self.out.count(Tally::OverCap);
            if let Some(suppressed) = self.out.over_cap.allow(now) {
                self.out.report(Report::OverCap { site, suppressed });
            }
            return;
        }
        let reply = a.reply;
        let peer = Peer {
            holder: Instance::new(a, cert, now),
            claimants: HashMap::new(),
            tombstones: HashMap::new(),
            channels: HashMap::new(),
            dials: HashMap::new(),
            fallback: Fallback::new(now),
            probe: None,
            answered: false,
        };
        let peer = self.sites.entry(site.clone()).or_insert(peer);
        report_discovered(&site, peer, &mut self.out);
        reconcile_dials(&site, peer, &self.rule, &mut self.out, now);
        if reply {
            self.out.push(Action::AnnounceTo(peer.holder.id));
        }
        confirm_pending(&site, peer, &mut self.pending, &mut self.out, now);
    }

    /// Applies the probe and liveness rules to `site`: declares conflicts,
    /// replaces a dead holder.
    fn settle(&mut self, site: &SiteName, now: Instant) {
        let Some(peer) = self.sites.get_mut(site) else {
            return;
        };
        if peer.probe.is_some() && peer.answered {
            // The holder answered: every claimant runs alongside it.
            peer.probe = None;
            peer.answered = false;
            let holder = peer.holder.id;
            for c in peer.claimants.values_mut().filter(|c| !c.conflict) {
                c.conflict = true;
                self.out.report(Report::Conflict {
                    site: site.clone(),
                    holder,
                    other: c.instance.id,
                });
                self.out.count(Tally::ClaimRefused);
                let refused = take_pending(&mut self.pending, |q| {
                    q.site == *site && q.instance == c.instance.id
                });
                for (id, _) in refused {
                    self.out
                        .refuse_channel(site, c.instance.id, id, Refusal::Conflict, now);
                }
            }
        }
        if peer.claimants.is_empty() {
            peer.probe = None;
            return;
        }
        if !peer.dead(now) {
            return;
        }
        let Some(next) = peer
            .claimants
            .values()
            .max_by_key(|c| (c.instance.last_heard, c.instance.id))
            .map(|c| c.instance.id)
        else {
            return;
        };
        let Some(c) = peer.claimants.remove(&next) else {
            return;
        };
        let old = std::mem::replace(&mut peer.holder, c.instance);
        if let Some((epoch, _)) = old.departed {
            bury(peer, old.id, epoch, now);
        }
        peer.probe = None;
        self.out.report(Report::Restarted {
            site: site.clone(),
            old: old.id,
            new: next,
        });
        for socket in peer.dials.keys() {
            self.out.push(Action::StopDial {
                site: site.clone(),
                socket: *socket,
            });
        }
        peer.dials.clear();
        // Channels of the old instance still waiting for a decision go.
        let stale = take_pending(&mut self.pending, |q| {
            q.site == *site && q.instance == old.id
        });
        for (id, _) in stale {
            self.out.push(Action::Close {
                site: site.clone(),
                channel: id,
                reason: CloseReason::Superseded,
            });
        }
        report_discovered(site, peer, &mut self.out);
        reconcile_dials(site, peer, &self.rule, &mut self.out, now);
        self.out.push(Action::AnnounceTo(next));
        confirm_pending(site, peer, &mut self.pending, &mut self.out, now);
    }
}

/// Removes and returns the channels waiting for an announcement that
/// `matches` selects.
fn take_pending(
    pending: &mut HashMap<ChannelId, Pending>,
    matches: impl Fn(&Pending) -> bool,
) -> Vec<(ChannelId, Pending)> {
    pending.extract_if(|_, p| matches(p)).collect()
}

fn report_discovered(site: &SiteName, peer: &Peer, out: &mut Outbox) {
    let a = &peer.holder.announce;
    out.report(Report::Discovered {
        site: site.clone(),
        instance: peer.holder.id,
        apps: a.apps.clone(),
        sockets: a.sockets.len(),
        protocol_version: a.protocol_version,
        invalid_cert: peer.holder.cert.is_none(),
    });
}

/// Remembers a departed instance so its old announcements cannot claim the name again.
fn bury(peer: &mut Peer, id: InstanceId, epoch: u32, now: Instant) {
    if peer.tombstones.len() >= MAX_TOMBSTONES
        && let Some(oldest) = peer
            .tombstones
            .iter()
            .min_by_key(|(_, t)| t.at)
            .map(|(id, _)| *id)
    {
        peer.tombstones.remove(&oldest);
    }
    peer.tombstones.insert(id, Tombstone { epoch, at: now });
}

fn add_channel(
    site: &SiteName,
    peer: &mut Peer,
    channel: ChannelId,
    how: (Direction, Transport),
    out: &mut Outbox,
    now: Instant,
) {
    peer.channels.insert(channel, how);
    if how.1 == Transport::Quic {
        peer.fallback.quic_up(now);
    }
    out.report(Report::ChannelUp {
        site: site.clone(),
        channel,
    });
    if peer.channels.len() == 1 {
        out.report(Report::Connected { site: site.clone() });
    }
}

/// Whether one of the peer's live channels is QUIC over UDP.
fn has_quic(peer: &Peer) -> bool {
    peer.channels.values().any(|(_, t)| *t == Transport::Quic)
}

/// Makes the dial loops match the holder's announced sockets: none once it
/// departed and its channels are gone, none without a usable certificate,
/// TCP ones only while the [`Fallback`] wants them (or when no QUIC socket
/// is dialled at all). A TCP dial let go because QUIC works is drained, not
/// stopped, so the streams it carries finish.
fn reconcile_dials(
    site: &SiteName,
    peer: &mut Peer,
    rule: &DialRule,
    out: &mut Outbox,
    now: Instant,
) {
    let h = &peer.holder;
    let dialled: Vec<&AnnouncedSocket> = match h.cert {
        Some(_) if h.departed.is_none() || !peer.channels.is_empty() => h
            .announce
            .sockets
            .iter()
            .filter(|s| rule.wants(site, s))
            .collect(),
        _ => Vec::new(),
    };
    let quic_dialled = dialled
        .iter()
        .any(|s| s.transport == AnnouncedTransport::Quic);
    // Asked even when TCP is dialled regardless: asking moves the fallback's
    // clock on, and a `next_change` left in the past would keep the site loop
    // awake (`Peers::poll_timeout`).
    let fallback_wants_tcp = peer.fallback.wants_tcp(now);
    let tcp_wanted = !quic_dialled || fallback_wants_tcp;
    let mut wanted: HashMap<u32, AnnouncedSocket> = HashMap::new();
    let mut let_go: Vec<u32> = Vec::new();
    for s in dialled {
        if s.transport == AnnouncedTransport::Tcp && !tcp_wanted {
            if peer.dials.get(&s.id) == Some(s) {
                let_go.push(s.id);
            }
        } else {
            wanted.insert(s.id, s.clone());
        }
    }
    let mut stop: Vec<u32> = peer
        .dials
        .iter()
        .filter(|(id, addr)| wanted.get(id) != Some(addr) && !let_go.contains(id))
        .map(|(id, _)| *id)
        .collect();
    stop.sort_unstable();
    for socket in stop {
        peer.dials.remove(&socket);
        out.push(Action::StopDial {
            site: site.clone(),
            socket,
        });
    }
    let_go.sort_unstable();
    for socket in let_go {
        peer.dials.remove(&socket);
        out.push(Action::DrainDial {
            site: site.clone(),
            socket,
        });
    }
    let Some(pin) = h.cert else {
        return;
    };
    let mut start: Vec<(u32, AnnouncedSocket)> = wanted
        .into_iter()
        .filter(|(id, _)| !peer.dials.contains_key(id))
        .collect();
    start.sort_unstable_by_key(|(id, _)| *id);
    for (socket, s) in start {
        peer.dials.insert(socket, s.clone());
        out.push(Action::Dial {
            peer: PeerId {
                site: site.clone(),
                instance: h.id,
            },
            socket,
            addr: s.addr,
            punch: s.punch,
            pin,
            transport: s.transport,
        });
    }
}

/// Confirms the waiting channels of the holder that present its announced
/// certificate, and refuses those that do not.
fn confirm_pending(
    site: &SiteName,
    peer: &mut Peer,
    pending: &mut HashMap<ChannelId, Pending>,
    out: &mut Outbox,
    now: Instant,
) {
    let mut mine: Vec<ChannelId> = pending
        .iter()
        .filter(|(_, p)| p.site == *site && p.instance == peer.holder.id)
        .map(|(id, _)| *id)
        .collect();
    mine.sort_unstable();
    for id in mine {
        let Some(p) = pending.remove(&id) else {
            continue;
        };
        if peer.holder.cert == Some(p.cert) {
            out.push(Action::Confirm {
                site: site.clone(),
                channel: id,
            });
            add_channel(site, peer, id, (Direction::Inbound, p.transport), out, now);
        } else {
            out.refuse_channel(site, p.instance, id, Refusal::CertMismatch, now);
        }
    }
}

#[cfg(test)]
mod tests;
