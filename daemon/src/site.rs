//! The site actor: runs the loop that feeds discovery messages, tunnel
//! events and timers into the peer state machine ([`peers`]) and executes the
//! actions it decides (dials, channel confirmations and closes, queries,
//! logs, counters); owns this site's own announcement (and the offers of
//! apps restricted by `allowedSites`, planned by [`offers`]), public address
//! detection and the remote-app listeners.
//!
//! It is the only writer of that state, so no lock guards it. It decides
//! nothing about peers itself (that is [`peers`], which is pure), never reads
//! or writes app bytes (that is [`crate::app`]) nor QUIC packets (that is
//! [`crate::tunnel`]). Live-app commands are in `commands`, control-plane
//! snapshots in `snapshot`, config reloads in `reconfigure` (executing what
//! [`reload`] plans).

mod commands;
pub mod fallback;
pub mod handle;
pub mod offers;
pub mod peers;
mod reconfigure;
pub mod reload;
mod snapshot;
pub mod trust;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::app::{ExposedApps, RemoteListener, StreamRegistry};
use crate::config::{
    AppName, Config, LocalSocket, PublicAddress, RemoteApp, SiteName, SocketMode, TrustConfig,
};
use crate::counters::Counters;
use crate::identity::{Fingerprint, PublicKey};
use crate::message::announce::{
    Announce, AnnouncedSocket, AnnouncedTransport, InstanceId, MAX_PUNCH_STUN, Message, Offer,
    PROTOCOL_VERSION, Punch, PunchAck, PunchInfo, Query,
};
use crate::message::mqtt::{Inbound, MessageChannel};
use crate::store::{State, Store};
use crate::telemetry::LevelControl;
use crate::tunnel::relay::RelayState;
use crate::tunnel::stun::Mapping;
use crate::tunnel::{CLOSE_NORMAL, CLOSE_REFUSED, TunnelEvent, Tunnels};
use crate::view::{Event, EventBus};
use crate::warn_limit::WarnLimiter;
use handle::Command;
use offers::{Offers, Trigger};
pub use peers::ANNOUNCE_INTERVAL;
use peers::{Action, ChannelUp, CloseReason, Peers, Report, Tally};
use trust::{Refusal, Trust, Verdict};

/// Punch requests held until their sender's announcement arrives, at most.
const MAX_PENDING_PUNCHES: usize = 16;
/// How long a punch request waits for its sender's announcement.
const PUNCH_HOLD: Duration = Duration::from_secs(2);

/// How often public addresses from `autoHttpDetect` are re-checked.
const DETECT_INTERVAL: Duration = Duration::from_secs(300);
/// Housekeeping tick: expiry and retrying listeners that failed to bind.
const TICK: Duration = Duration::from_secs(5);

/// One `tunnel.localSockets` entry as announced.
struct OwnSocket {
    config: LocalSocket,
    /// Port the endpoint actually bound.
    bound: SocketAddr,
    /// Current public IP (`None` until detection succeeded).
    public_ip: Option<IpAddr>,
    /// The latest detection, if it failed.
    detect_error: Option<crate::view::DetectFailure>,
    /// The NAT mapping STUN saw (`autoStunDetect` and `hole-punching`).
    mapping: Option<Mapping>,
    /// Its TURN relay (`hole-punching` with `tunnel.relay`).
    relay: Option<RelayState>,
}

impl OwnSocket {
    /// The announced address, once the public IP is known: in
    /// `hole-punching` mode the address and port the NAT maps the socket
    /// to; otherwise the public IP with the configured port (port 0 in a
    /// programmatic config, the demo, means "whatever was bound").
    fn public_addr(&self) -> Option<SocketAddr> {
        if self.config.mode == SocketMode::HolePunching {
            return self.mapping?.public;
        }
        let port = match self.config.public_port {
            0 => self.bound.port(),
            p => p,
        };
        Some(SocketAddr::new(self.public_ip?, port))
    }

    /// What dialers need to punch toward this socket (`hole-punching` only).
    fn punch_info(&self) -> Option<PunchInfo> {
        (self.config.mode == SocketMode::HolePunching).then(|| PunchInfo {
            nat: self.mapping.map(|m| m.nat).unwrap_or_default(),
            stun: self
                .config
                .stun_servers
                .iter()
                .take(MAX_PUNCH_STUN)
                .map(ToString::to_string)
                .collect(),
            relay: match self.relay {
                Some(RelayState::Allocated(at)) => Some(at),
                _ => None,
            },
        })
    }
}

/// Environment variable of the debug-build test hook
/// [`Peers::serve_unoffered`]: set (to anything) on a site, it opens the
/// listener of every remote app whose site is connected, offered or not.
#[cfg(debug_assertions)]
pub const SERVE_UNOFFERED_ENV: &str = "WOVENET_TEST_SERVE_UNOFFERED";

/// Applies the test hooks asked for in the environment (debug builds only;
/// release builds have none).
fn test_hooks(peers: &mut Peers) {
    #[cfg(debug_assertions)]
    if std::env::var_os(SERVE_UNOFFERED_ENV).is_some() {
        warn!(
            "test hook {SERVE_UNOFFERED_ENV} set: listeners open for apps never offered to this site"
        );
        peers.serve_unoffered();
    }
    #[cfg(not(debug_assertions))]
    let _ = peers;
}

/// Result of one public address detection.
struct Detected {
    index: usize,
    result: Result<IpAddr, String>,
}

/// Everything the actor needs, handed over by [`crate::Daemon`].
pub struct Parts {
    /// This site's name.
    pub name: SiteName,
    /// This process.
    pub instance: InstanceId,
    /// Tunnel manager (already listening).
    pub tunnels: Tunnels,
    /// Bound local sockets, in config order.
    pub sockets: Vec<(LocalSocket, SocketAddr)>,
    /// Sealed discovery channel.
    pub messages: MessageChannel,
    /// Stops the message channel; cancelled after the departure is published.
    pub messages_stop: CancellationToken,
    /// Its inbound side.
    pub inbound_rx: mpsc::Receiver<Inbound>,
    /// Tunnel events.
    pub tunnel_rx: mpsc::Receiver<TunnelEvent>,
    /// Exposed apps (shared with the stream servers).
    pub exposed: Arc<ExposedApps>,
    /// Remote apps from the config.
    pub remote_apps: Vec<RemoteApp>,
    /// Drop/refuse counters.
    pub counters: Arc<Counters>,
    /// Open streams.
    pub streams: Arc<StreamRegistry>,
    /// Event fan-out.
    pub bus: Arc<EventBus>,
    /// Control requests.
    pub cmd_rx: mpsc::Receiver<Command>,
    /// Where live app changes are persisted (`None`: not persisted).
    pub store: Option<Store>,
    /// The persisted changes already applied to the config.
    pub state: State,
    /// Broker address, for display.
    pub broker_url: String,
    /// This site's identity.
    pub identity: Fingerprint,
    /// `trust`.
    pub trust: TrustConfig,
    /// The configuration the site starts with (live changes applied), the
    /// base a reload compares against.
    pub config: Config,
    /// Changes the log level on reload.
    pub log_level: Option<LevelControl>,
}

/// The apps that come from the config file, as opposed to added live
/// (recorded in `state`): how apps are shown, and whether removing one is
/// recorded as a removal of a file app. Computed at start and after a reload.
fn from_file(
    exposed: impl IntoIterator<Item = AppName>,
    remote: &[RemoteApp],
    state: &State,
) -> (HashSet<AppName>, HashSet<RemoteApp>) {
    let exposed = exposed
        .into_iter()
        .filter(|n| {
            !state
                .exposed_added
                .iter()
                .any(|v| v["appName"].as_str() == Some(n.as_str()))
        })
        .collect();
    let remote = remote
        .iter()
        .filter(|r| !state.remote_added.contains(&crate::store::remote_json(r)))
        .cloned()
        .collect();
    (exposed, remote)
}

/// The site actor.
pub struct Site {
    name: SiteName,
    instance: InstanceId,
    tunnels: Tunnels,
    sockets: Vec<OwnSocket>,
    messages: MessageChannel,
    messages_stop: CancellationToken,
    exposed: Arc<ExposedApps>,
    remote_apps: Vec<RemoteApp>,
    listeners: HashMap<RemoteApp, RemoteListener>,
    peers: Peers,
    /// Running dial loops, as [`peers`] asked for them: the token that stops
    /// one, and for a TCP one the token that drains it.
    dials: HashMap<(SiteName, u32), (CancellationToken, Option<CancellationToken>)>,
    /// Punch requests from instances not (yet) known, with when they came.
    pending_punches: Vec<(Instant, Punch)>,
    /// What each peer was offered of the apps restricted by `allowedSites`.
    offers: Offers,
    seq: u64,
    counters: Arc<Counters>,
    streams: Arc<StreamRegistry>,
    bus: Arc<EventBus>,
    store: Option<Store>,
    state: State,
    /// Apps from the config file (others were added live).
    config_exposed: HashSet<AppName>,
    config_remote: HashSet<RemoteApp>,
    /// What a reload compares against: the config the site runs with (the
    /// restart-bound fields as at start, `logger.level` as last applied).
    /// Its app lists are empty: the apps live in `exposed`/`remote_apps`.
    config: Config,
    log_level: Option<LevelControl>,
    listener_errors: HashMap<RemoteApp, String>,
    broker_url: String,
    identity: Fingerprint,
    trust: Trust,
    /// Rate limit of identity refusal warnings (a member can mint identities).
    trust_warn: WarnLimiter,
    started_at: SystemTime,
    http: reqwest::Client,
    detect_tx: mpsc::Sender<Detected>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Site {
    /// Runs the actor until `cancel` fires, then departs and closes everything it owns.
    pub async fn run(parts: Parts, cancel: CancellationToken, tracker: TaskTracker) {
        let Parts {
            name,
            instance,
            tunnels,
            sockets,
            messages,
            messages_stop,
            mut inbound_rx,
            mut tunnel_rx,
            exposed,
            remote_apps,
            counters,
            streams,
            bus,
            mut cmd_rx,
            store,
            state,
            broker_url,
            identity,
            trust,
            mut config,
            log_level,
        } = parts;
        config.exposed_apps.clear();
        config.remote_apps.clear();
        let (trust, trust_warnings) = Trust::new(
            trust.mode,
            name.clone(),
            identity,
            &trust.sites,
            &state.known_sites,
        );
        for w in trust_warnings {
            warn!("{w}");
        }
        let (config_exposed, config_remote) = from_file(exposed.names(), &remote_apps, &state);
        let (detect_tx, mut detect_rx) = mpsc::channel(16);
        let sockets_punchable = sockets
            .iter()
            .any(|(c, _)| c.mode == SocketMode::HolePunching);
        let sockets = sockets
            .into_iter()
            .map(|(config, bound)| OwnSocket {
                public_ip: match &config.public_address {
                    PublicAddress::Fixed(ip) => Some(*ip),
                    // Nothing is announced until detection answers.
                    PublicAddress::AutoHttpDetect { .. } | PublicAddress::AutoStunDetect => None,
                },
                config,
                bound,
                detect_error: None,
                mapping: None,
                relay: None,
            })
            .collect();
        let mut peers = Peers::new(name.clone(), instance);
        peers.set_punchable(sockets_punchable);
        test_hooks(&mut peers);
        let mut site = Self {
            peers,
            name,
            instance,
            tunnels,
            sockets,
            messages,
            messages_stop,
            exposed,
            remote_apps,
            listeners: HashMap::new(),
            dials: HashMap::new(),
            pending_punches: Vec::new(),
            offers: Offers::default(),
            seq: 1,
            counters,
            streams,
            bus,
            store,
            state,
            config_exposed,
            config_remote,
            config,
            log_level,
            listener_errors: HashMap::new(),
            broker_url,
            identity,
            trust,
            trust_warn: WarnLimiter::default(),
            started_at: SystemTime::now(),
            http: reqwest::Client::new(),
            detect_tx,
            cancel: cancel.clone(),
            tracker,
        };
        site.save_pins();
        site.detect_all();
        let mut announce_tick = tokio::time::interval(ANNOUNCE_INTERVAL);
        announce_tick.tick().await; // the first tick fires at once; the broker ConnAck triggers the first announce
        let mut detect_tick = tokio::time::interval(DETECT_INTERVAL);
        detect_tick.tick().await;
        let mut tick = tokio::time::interval(TICK);
        loop {
            // A probe or claim deadline of the peer state machine, if any
            // comes before the next housekeeping tick.
            let deadline = site.peers.poll_timeout();
            let wake = tokio::time::sleep_until(
                deadline.map_or_else(|| tokio::time::Instant::now() + TICK, Into::into),
            );
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(cmd) = cmd_rx.recv() => site.on_command(cmd).await,
                Some(msg) = inbound_rx.recv() => site.on_inbound(msg).await,
                Some(ev) = tunnel_rx.recv() => site.on_tunnel(ev).await,
                Some(d) = detect_rx.recv() => site.on_detected(d).await,
                _ = announce_tick.tick() => site.announce(false).await,
                _ = detect_tick.tick() => site.detect_all(),
                _ = tick.tick() => site.housekeeping().await,
                () = wake, if deadline.is_some() => site.housekeeping().await,
            }
        }
        site.shut_down().await;
    }

    async fn shut_down(mut self) {
        info!("site shutting down");
        self.save_pins();
        for (_, l) in self.listeners.drain() {
            l.close();
        }
        for (_, (cancel, _)) in self.dials.drain() {
            cancel.cancel();
        }
        self.messages.depart().await;
        self.messages_stop.cancel();
        self.tunnels.close_all(Duration::from_secs(2)).await;
    }

    fn own_announce(&self, reply: bool) -> Announce {
        Announce {
            site: self.name.clone(),
            instance: self.instance,
            protocol_version: PROTOCOL_VERSION,
            seq: self.seq,
            sockets: self
                .sockets
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    Some(AnnouncedSocket {
                        id: i as u32,
                        addr: s.public_addr()?,
                        punch: s.punch_info(),
                        transport: s.config.transport.into(),
                    })
                })
                .collect(),
            // Apps restricted by `allowedSites` are offered, not announced.
            apps: self.exposed.public_names(),
            cert_sha256: self.tunnels.fingerprint().to_string(),
            reply,
            // Stamped by the message channel with its connection epoch.
            epoch: 0,
        }
    }

    async fn announce(&mut self, reply: bool) {
        let msg = Message::Announce(self.own_announce(reply));
        if let Err(e) = self.messages.broadcast(&msg).await {
            debug!(error = %e, "announce not sent");
        }
        self.offer(Trigger::Announced).await;
    }

    async fn announce_to(&mut self, to: &InstanceId) {
        let msg = Message::Announce(self.own_announce(false));
        if let Err(e) = self.messages.unicast(to, &msg).await {
            debug!(error = %e, "unicast announce not sent");
        }
        self.offer(Trigger::AnnouncedTo(*to)).await;
    }

    /// Sends the offers of apps restricted by `allowedSites` that
    /// [`offers`] plans for `trigger`, each unicast to the holder of an
    /// allowed site.
    async fn offer(&mut self, trigger: Trigger) {
        let exposed = &self.exposed;
        let planned = self
            .offers
            .plan(trigger, self.peers.holders(), || exposed.restricted());
        for p in planned {
            let apps: Vec<&str> = p.apps.iter().map(AppName::as_str).collect();
            debug!(peer.site = %p.site, apps = ?apps, "offering restricted apps");
            let msg = Message::Offer(Offer {
                site: self.name.clone(),
                instance: self.instance,
                seq: self.seq,
                apps: p.apps,
            });
            if let Err(e) = self.messages.unicast(&p.to, &msg).await {
                debug!(peer.site = %p.site, error = %e, "offer not sent");
            }
        }
    }

    async fn on_inbound(&mut self, inbound: Inbound) {
        let now = Instant::now();
        match inbound {
            // Every (re)connect may follow a broker restart that lost what
            // others knew of us: announce and ask everyone to answer.
            // A new `seq` too: it tells peers this announcement was sent after
            // any last will the broker fired for us (see `peers`, epochs).
            Inbound::Connected => {
                self.seq += 1;
                self.announce(true).await;
            }
            Inbound::Message(msg, signer) => {
                if self.admit(&msg, &signer, now) {
                    self.on_message(msg, now).await;
                }
            }
        }
        self.apply().await;
    }

    /// Whether the identity that signed `msg` may speak for the site name it
    /// claims (see [`trust`]); a refused message is counted and dropped
    /// before anything else sees it.
    fn admit(&mut self, msg: &Message, signer: &PublicKey, now: Instant) -> bool {
        let site = msg.site();
        let who = signer.fingerprint();
        let wall = crate::message::envelope::unix_ms(SystemTime::now());
        match self.trust.check(site, *msg.instance(), who, now, wall) {
            Verdict::Accepted(_) => {
                // Persisted at the next housekeeping tick: a burst of new
                // names costs one write, not one per message.
                for (site, identity) in self.trust.take_new_pins() {
                    info!(peer.site = %site, %identity, "new site identity pinned");
                }
                true
            }
            Verdict::Refused { why, first } => {
                self.peers.refuse_instance(site, *msg.instance(), now);
                Counters::bump(match why {
                    Refusal::NotListed | Refusal::TooManyPins => &self.counters.sites_not_allowed,
                    Refusal::Conflict { .. } => &self.counters.identities_refused,
                });
                let warn_now = first.then(|| self.trust_warn.allow(now)).flatten();
                if let Some(suppressed) = warn_now {
                    let site_shown = site.as_str().escape_debug().to_string();
                    match why {
                        Refusal::Conflict { pinned } if *site == self.name => error!(
                            identity.presented = %who, identity.own = %pinned, suppressed,
                            "another identity announces this site's own siteName; refused"
                        ),
                        Refusal::Conflict { pinned } => warn!(
                            peer.site = %site, identity.pinned = %pinned, identity.presented = %who, suppressed,
                            "refused: site '{site_shown}' is pinned to identity {pinned}, but identity {who} claims it; \
                             if that site was reinstalled, accept its new identity with `wovenetctl peers forget {site_shown}`"
                        ),
                        Refusal::NotListed => warn!(
                            peer.site = %site, identity.presented = %who, suppressed,
                            "refused: site '{site_shown}' is not in trust.sites (trust.mode is strict)"
                        ),
                        Refusal::TooManyPins => warn!(
                            peer.site = %site, identity.presented = %who, suppressed, max = trust::MAX_PINS,
                            "refused: too many pinned site identities"
                        ),
                    }
                }
                false
            }
        }
    }

    /// Moves the learnt pins into the state if they changed since the last
    /// time; returns whether they did. Every write of the state file
    /// ([`Self::save_pins`], and each live change) takes them along, so a
    /// burst of new names costs one write.
    fn take_pins(&mut self) -> bool {
        let Some(known) = self.trust.take_changed() else {
            return false;
        };
        self.state.known_sites = known;
        true
    }

    /// Writes the state file if the pins changed; a failure is logged: the
    /// pins still hold in memory until the next start.
    fn save_pins(&mut self) {
        if self.take_pins()
            && let Some(store) = &self.store
            && let Err(e) = store.save(&self.state)
        {
            warn!(error = %e, "pinned site identities not persisted; retried at the next write");
            self.trust.unsaved();
        }
    }

    async fn on_message(&mut self, msg: Message, now: Instant) {
        match msg {
            Message::Announce(a) => {
                self.peers.on_announce(a, now);
                if !self.pending_punches.is_empty() {
                    // Apply first, so a new holder is known.
                    self.apply().await;
                    self.retry_pending_punches().await;
                }
            }
            Message::Depart(d) => self.peers.on_depart(&d, now),
            Message::Query(q) => {
                debug!(peer.site = %q.site, "peer asked for a fresh announcement");
                self.detect_all();
                self.peers.on_query(&q.site, q.instance, now);
            }
            Message::Punch(p) => self.on_punch(p).await,
            Message::Offer(o) => self.peers.on_offer(o),
            Message::PunchAck(p) => {
                if !self.tunnels.punch_answered(p.nonce, p.at) {
                    debug!(peer.site = %p.site, "punch answer nobody waits for");
                }
            }
        }
    }

    async fn on_tunnel(&mut self, ev: TunnelEvent) {
        let now = Instant::now();
        match ev {
            TunnelEvent::ChannelUp {
                peer,
                channel,
                direction,
                cert,
                transport,
            } => self.peers.on_channel_up(
                ChannelUp {
                    peer,
                    channel,
                    direction,
                    cert,
                    transport,
                },
                now,
            ),
            TunnelEvent::ChannelDown {
                peer,
                channel,
                reason,
            } => {
                // A NAT that forgot or moved our mapping kills channels
                // first: learn the mapping again now, not at the next refresh.
                self.tunnels.refresh_mappings();
                self.peers
                    .on_channel_down(&peer.site, channel, &reason, now);
            }
            TunnelEvent::Mapped { socket, result } => self.on_mapped(socket, result).await,
            TunnelEvent::Relayed { socket, state } => self.on_relayed(socket, state).await,
            TunnelEvent::PunchRequest {
                peer,
                socket,
                from,
                nonce,
                relay,
            } => {
                let msg = Message::Punch(Punch {
                    site: self.name.clone(),
                    instance: self.instance,
                    socket,
                    from,
                    nonce,
                    relay,
                });
                if let Err(e) = self.messages.unicast(&peer.instance, &msg).await {
                    debug!(peer.site = %peer.site, error = %e, "punch request not sent");
                }
            }
            TunnelEvent::DialFailed {
                peer,
                socket,
                attempts,
            } => {
                debug!(peer.site = %peer.site, socket, attempts, "dial failed");
                self.peers.on_dial_failed(&peer, socket, attempts, now);
            }
        }
        self.apply().await;
    }

    async fn housekeeping(&mut self) {
        self.save_pins();
        self.trust.expire(Instant::now());
        self.peers.on_timeout(Instant::now());
        self.retry_pending_punches().await;
        // Idempotent and cheap: also retries listeners that failed to bind.
        self.apply().await;
    }

    /// Executes what the peer state machine decided, then makes the
    /// remote-app listeners match the peers' state.
    async fn apply(&mut self) {
        for action in self.peers.take_actions() {
            self.execute(action).await;
        }
        self.offer(Trigger::NewHolders).await;
        self.reconcile_listeners();
    }

    async fn execute(&mut self, action: Action) {
        match action {
            Action::AnnounceTo(to) => self.announce_to(&to).await,
            Action::Close {
                site,
                channel,
                reason,
            } => {
                let code = match reason {
                    CloseReason::Refused(_) => CLOSE_REFUSED,
                    CloseReason::Superseded | CloseReason::Forgotten => CLOSE_NORMAL,
                };
                debug!(peer.site = %site, channel.id = %channel, reason = reason.text(), "closing channel");
                self.tunnels
                    .registry()
                    .close(&site, channel, code, reason.text());
            }
            Action::Confirm { site, channel } => {
                self.tunnels.registry().confirm(&site, channel);
            }
            Action::Count(t) => Counters::bump(match t {
                Tally::ClaimRefused => &self.counters.claims_refused,
                Tally::OverCap => &self.counters.peers_over_cap,
                Tally::Stale => &self.counters.messages_stale,
            }),
            Action::Dial {
                peer,
                socket,
                addr,
                punch,
                pin,
                transport,
            } => {
                let cancel = self.cancel.child_token();
                let drain = (transport == AnnouncedTransport::Tcp).then(CancellationToken::new);
                if let Some((old, _)) = self
                    .dials
                    .insert((peer.site.clone(), socket), (cancel.clone(), drain.clone()))
                {
                    old.cancel();
                }
                match (punch, drain) {
                    (None, Some(drain)) => self
                        .tunnels
                        .dial_tcp(peer, socket, addr, pin, cancel, drain),
                    (None, None) => self.tunnels.dial(peer, socket, addr, pin, cancel),
                    // `DialRule` never dials a TCP socket with punch details.
                    (Some(info), _) => self
                        .tunnels
                        .dial_punched(peer, socket, addr, info, pin, cancel),
                }
            }
            Action::Query(to) => {
                let q = Message::Query(Query {
                    site: self.name.clone(),
                    instance: self.instance,
                });
                if let Err(e) = self.messages.unicast(&to, &q).await {
                    debug!(error = %e, "query not sent");
                }
            }
            Action::Report(r) => self.report(r),
            Action::StopDial { site, socket } => {
                if let Some((cancel, _)) = self.dials.remove(&(site, socket)) {
                    cancel.cancel();
                }
            }
            Action::DrainDial { site, socket } => {
                debug!(peer.site = %site, socket, "QUIC works again: the TCP channel drains");
                match self.dials.remove(&(site, socket)) {
                    Some((_, Some(drain))) => drain.cancel(),
                    Some((cancel, None)) => cancel.cancel(),
                    None => {}
                }
            }
        }
    }

    /// Logs a report and publishes it on the event bus where it is an event.
    fn report(&self, r: Report) {
        match r {
            Report::ChannelDown {
                site,
                channel,
                reason,
            } => self.bus.emit(Event::ChannelDown {
                site,
                channel,
                reason,
            }),
            Report::ChannelUp { site, channel } => {
                self.bus.emit(Event::ChannelUp { site, channel });
            }
            Report::Conflict {
                site,
                holder,
                other,
            } if site == self.name => {
                error!(instance.current = %holder, instance.other = %other,
                    "duplicate site name: another running site announces this site's siteName; rename one of them");
            }
            Report::Conflict {
                site,
                holder,
                other,
            } => {
                error!(peer.site = %site, instance.current = %holder, instance.other = %other,
                    "duplicate site name: two running sites announce the same siteName; the first keeps it, the other is refused; rename one of them");
            }
            Report::Connected { site } => {
                info!(peer.site = %site, "peer connected");
                self.bus.emit(Event::PeerConnected { site });
            }
            Report::Departed { site, instance } => {
                info!(peer.site = %site, instance = %instance, "peer departed");
            }
            Report::Disconnected { site, reason } => {
                info!(peer.site = %site, %reason, "peer disconnected");
                self.bus.emit(Event::PeerDisconnected { site, reason });
            }
            Report::Discovered {
                site,
                instance,
                apps,
                sockets,
                protocol_version,
                invalid_cert,
            } => {
                let apps: Vec<&str> = apps.iter().map(AppName::as_str).collect();
                info!(peer.site = %site, instance = %instance, apps = ?apps, sockets, "peer discovered");
                if protocol_version != PROTOCOL_VERSION {
                    debug!(peer.site = %site, version = protocol_version, "peer speaks another protocol version");
                }
                if invalid_cert {
                    warn!(peer.site = %site, "peer announced an invalid certificate fingerprint; not dialling");
                }
                self.bus.emit(Event::PeerDiscovered { site });
            }
            Report::Forgotten { site } => info!(peer.site = %site, "peer forgotten"),
            Report::OverCap { site, suppressed } => warn!(
                peer.site = %site, suppressed, max = peers::MAX_PEERS,
                "too many peers: ignoring announcements of new site names"
            ),
            Report::Refused {
                site,
                instance,
                why,
                suppressed,
            } => warn!(
                peer.site = %site, instance = %instance, reason = why.text(), suppressed,
                "claim refused"
            ),
            Report::Restarted { site, old, new } => {
                info!(peer.site = %site, instance.old = %old, instance.new = %new, "peer restarted");
            }
        }
    }

    /// Opens the listener of every remote app whose site is connected and
    /// offers it; closes the others.
    fn reconcile_listeners(&mut self) {
        let wanted: Vec<RemoteApp> = self
            .remote_apps
            .iter()
            .filter(|r| self.peers.serves(&r.site, &r.app))
            .cloned()
            .collect();
        let stale: Vec<RemoteApp> = self
            .listeners
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect();
        for r in stale {
            if let Some(l) = self.listeners.remove(&r) {
                l.close();
                info!(peer.site = %r.site, app.name = %r.app, local = %r.local_socket, "remote app listener closed");
                self.bus.emit(Event::ListenerClosed { app: r });
            }
        }
        for r in wanted {
            if self.listeners.contains_key(&r) {
                continue;
            }
            match RemoteListener::open(
                r.clone(),
                self.tunnels.registry(),
                self.counters.clone(),
                self.streams.clone(),
                self.cancel.child_token(),
                &self.tracker,
            ) {
                Ok(l) => {
                    info!(peer.site = %r.site, app.name = %r.app, local = %r.local_socket, "remote app listener opened");
                    self.listener_errors.remove(&r);
                    self.bus.emit(Event::ListenerOpened { app: r.clone() });
                    self.listeners.insert(r, l);
                }
                Err(e) => {
                    // Retried on the next housekeeping tick.
                    if self
                        .listener_errors
                        .insert(r.clone(), e.to_string())
                        .is_none()
                    {
                        warn!(peer.site = %r.site, app.name = %r.app, error = %e, "remote app listener failed to open");
                    }
                }
            }
        }
    }

    fn detect_all(&self) {
        for (index, s) in self.sockets.iter().enumerate() {
            // issue 10: STUN detection is the lead's (engine); autoStunDetect
            // sockets are skipped here and stay without an address.
            let PublicAddress::AutoHttpDetect { url } = &s.config.public_address else {
                continue;
            };
            let (url, http, tx) = (url.clone(), self.http.clone(), self.detect_tx.clone());
            let cancel = self.cancel.child_token();
            self.tracker.spawn(async move {
                let result = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = crate::detect::public_ip(&http, &url) => r.map_err(|e| e.to_string()),
                };
                let _ = tx.send(Detected { index, result }).await;
            });
        }
    }

    /// A peer about to dial one of our `hole-punching` sockets: punch toward
    /// it and tell it where to dial. Only the live holder of a site name is
    /// served, only for a punched socket whose mapping is known, and the
    /// sprays are capped ([`crate::tunnel::punch::MAX_SPRAYS`]); anything
    /// else is counted and ignored.
    async fn on_punch(&mut self, p: Punch) {
        let holder = self.peers.holder(&p.site) == Some(p.instance);
        if !holder && self.peers.holder(&p.site).is_none() {
            // The dialer acted on our announcement before its own reached
            // us (another topic, another path through the broker): hold the
            // request a moment and ask for the announcement.
            if self.pending_punches.len() < MAX_PENDING_PUNCHES {
                let to = p.instance;
                self.pending_punches.push((Instant::now(), p));
                let q = Message::Query(Query {
                    site: self.name.clone(),
                    instance: self.instance,
                });
                if let Err(e) = self.messages.unicast(&to, &q).await {
                    debug!(error = %e, "query not sent");
                }
                return;
            }
        }
        self.serve_punch(p, holder).await;
    }

    /// Serves the punch requests held for their sender's announcement once
    /// it holds its name, and refuses those older than [`PUNCH_HOLD`].
    async fn retry_pending_punches(&mut self) {
        let now = Instant::now();
        let pending = std::mem::take(&mut self.pending_punches);
        for (at, p) in pending {
            let holder = self.peers.holder(&p.site) == Some(p.instance);
            if holder || now.saturating_duration_since(at) >= PUNCH_HOLD {
                self.serve_punch(p, holder).await;
            } else {
                self.pending_punches.push((at, p));
            }
        }
    }

    async fn serve_punch(&mut self, p: Punch, holder: bool) {
        let at = self
            .sockets
            .get(p.socket as usize)
            .filter(|s| s.config.mode == SocketMode::HolePunching)
            .and_then(OwnSocket::public_addr);
        if p.relay && holder && at.is_some() {
            // Waiting for the TURN server must not hold up the actor.
            let permit = self.tunnels.permit_relay(p.socket, p.from.ip());
            let (messages, counters) = (self.messages.clone(), self.counters.clone());
            let (site, instance) = (self.name.clone(), self.instance);
            self.tracker.spawn(async move {
                let Some(at) = permit.await else {
                    Counters::bump(&counters.punch_refused);
                    debug!(peer.site = %p.site, socket = p.socket, "no relay permission for a peer");
                    return;
                };
                let ack = Message::PunchAck(PunchAck {
                    site,
                    instance,
                    socket: p.socket,
                    at,
                    nonce: p.nonce,
                });
                if let Err(e) = messages.unicast(&p.instance, &ack).await {
                    debug!(error = %e, "relay answer not sent");
                }
            });
            return;
        }
        let Some(at) = at.filter(|_| holder && self.tunnels.spray(p.socket, p.from)) else {
            Counters::bump(&self.counters.punch_refused);
            debug!(peer.site = %p.site, socket = p.socket, holder, "punch request refused");
            return;
        };
        debug!(peer.site = %p.site, socket = p.socket, to = %p.from, "punching toward a peer");
        let ack = Message::PunchAck(PunchAck {
            site: self.name.clone(),
            instance: self.instance,
            socket: p.socket,
            at,
            nonce: p.nonce,
        });
        if let Err(e) = self.messages.unicast(&p.instance, &ack).await {
            debug!(error = %e, "punch answer not sent");
        }
    }

    /// The TURN relay of socket `index` changed state.
    async fn on_relayed(&mut self, index: u32, state: RelayState) {
        let Some(s) = self.sockets.get_mut(index as usize) else {
            return;
        };
        let before = s.punch_info();
        s.relay = Some(state);
        if s.punch_info() != before {
            self.seq += 1;
            self.announce(false).await;
        }
    }

    /// A STUN round of socket `index` finished.
    async fn on_mapped(&mut self, index: u32, result: Result<Mapping, String>) {
        let Some(s) = self.sockets.get_mut(index as usize) else {
            return;
        };
        match result {
            Ok(m) => {
                s.detect_error = None;
                let before = (s.public_addr(), s.punch_info());
                s.mapping = Some(m);
                s.public_ip = m.public.map(|a| a.ip());
                if (s.public_addr(), s.punch_info()) != before {
                    info!(socket = index, public.address = ?s.public_addr(), nat = m.nat.text(), "public address detected by STUN");
                    self.seq += 1;
                    self.announce(false).await;
                }
            }
            Err(e) => {
                s.detect_error = Some(crate::view::DetectFailure {
                    error: e,
                    at: SystemTime::now(),
                });
            }
        }
    }

    async fn on_detected(&mut self, d: Detected) {
        let Some(s) = self.sockets.get_mut(d.index) else {
            return;
        };
        s.detect_error = None;
        match d.result {
            Ok(ip) if s.public_ip != Some(ip) => {
                info!(socket = d.index, public.address = %ip, "public address detected");
                s.public_ip = Some(ip);
                self.seq += 1;
                self.announce(false).await;
            }
            Ok(_) => {}
            Err(e) => {
                warn!(socket = d.index, error = %e, "public address detection failed");
                s.detect_error = Some(crate::view::DetectFailure {
                    error: e,
                    at: SystemTime::now(),
                });
            }
        }
    }
}
