//! The site actor: owns discovery state (peers and their announcements), the
//! desired dial loops, this site's own announcement and the remote-app
//! listeners, and reacts to messages, tunnel events and timers.
//!
//! It is the only writer of that state, so no lock guards it. It never reads
//! or writes app bytes (that is [`crate::app`]) nor QUIC packets (that is
//! [`crate::tunnel`]); it only decides which dials and listeners should exist.

pub mod handle;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::app::{ExposedApps, RemoteListener, StreamRegistry};
use crate::config::{AppName, ExposedApp, LocalSocket, PublicAddress, RemoteApp, SiteName};
use crate::counters::Counters;
use crate::message::announce::{
    Announce, AnnouncedSocket, Depart, InstanceId, Message, PROTOCOL_VERSION, Query,
};
use crate::message::mqtt::{Inbound, MessageChannel};
use crate::store::{State, Store};
use crate::tunnel::auth::PeerId;
use crate::tunnel::stats::ChannelStats;
use crate::tunnel::tls::Fingerprint;
use crate::tunnel::{ChannelId, Direction, TunnelEvent, Tunnels};
use crate::view::{
    AppsInfo, ChannelInfo, ChannelState, Event, EventBus, ExposedAppInfo, ListenerState, PeerInfo,
    PeerState, RemoteAppInfo, SiteInfo, SocketInfo, StatsSnapshot,
};
use handle::{Command, ControlError};

/// Every site re-announces this often, so a lost message or a new broker
/// subscriber heals without anyone asking.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(30);
/// A peer silent on the message channel this long, with no live channel, is forgotten.
const PEER_EXPIRY: Duration = Duration::from_secs(100);
/// How often public addresses from `autoHttpDetect` are re-checked.
const DETECT_INTERVAL: Duration = Duration::from_secs(300);
/// Housekeeping tick: expiry and retrying listeners that failed to bind.
const TICK: Duration = Duration::from_secs(5);

/// What the site knows about one remote site.
struct Peer {
    /// The instance we talk to; a restart brings a new one.
    instance: InstanceId,
    /// Latest announcement from `instance`, if any arrived yet (an inbound
    /// channel can beat the announcement).
    announce: Option<Announce>,
    /// First and last time each instance of this site was heard from, to tell
    /// a restart (old one silent) from a duplicate site name (both talking).
    sightings: HashMap<InstanceId, (Instant, Instant)>,
    /// Running dial loops by announced socket id.
    dials: HashMap<u32, (SocketAddr, CancellationToken)>,
    /// Live dataChannels (either direction).
    channels: HashSet<ChannelId>,
    /// The instance said goodbye: no more redials.
    departed: bool,
    /// Duplicate-name warning already given for this pair of instances.
    warned_duplicate: HashSet<InstanceId>,
    /// Wall-clock time of the last sighting, for the control plane.
    last_seen_wall: SystemTime,
}

impl Peer {
    fn new(instance: InstanceId, now: Instant) -> Self {
        Self {
            instance,
            announce: None,
            sightings: HashMap::from([(instance, (now, now))]),
            dials: HashMap::new(),
            channels: HashSet::new(),
            departed: false,
            warned_duplicate: HashSet::new(),
            last_seen_wall: SystemTime::now(),
        }
    }

    fn offers(&self, app: &AppName) -> bool {
        self.announce.as_ref().is_some_and(|a| a.apps.contains(app))
    }

    fn last_seen(&self) -> Instant {
        self.sightings
            .get(&self.instance)
            .map_or_else(Instant::now, |s| s.1)
    }

    fn stop_dials(&mut self) {
        for (_, (_, cancel)) in self.dials.drain() {
            cancel.cancel();
        }
    }
}

/// One `tunnel.localSockets` entry as announced.
struct OwnSocket {
    config: LocalSocket,
    /// Port the endpoint actually bound.
    bound: SocketAddr,
    /// Current public IP (`None` until detection succeeded).
    public_ip: Option<IpAddr>,
}

impl OwnSocket {
    /// The announced address, once the public IP is known. Port 0 in a
    /// programmatic config (the demo) means "whatever was bound".
    fn public_addr(&self) -> Option<SocketAddr> {
        let port = match self.config.public_port {
            0 => self.bound.port(),
            p => p,
        };
        Some(SocketAddr::new(self.public_ip?, port))
    }
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
    peers: HashMap<SiteName, Peer>,
    seq: u64,
    counters: Arc<Counters>,
    streams: Arc<StreamRegistry>,
    bus: Arc<EventBus>,
    store: Option<Store>,
    state: State,
    /// Apps from the config file (others were added live).
    config_exposed: HashSet<AppName>,
    config_remote: HashSet<RemoteApp>,
    listener_errors: HashMap<RemoteApp, String>,
    broker_url: String,
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
        } = parts;
        let config_exposed = exposed
            .names()
            .into_iter()
            .filter(|n| {
                !state
                    .exposed_added
                    .iter()
                    .any(|v| v["appName"].as_str() == Some(n.as_str()))
            })
            .collect();
        let config_remote = remote_apps
            .iter()
            .filter(|r| !state.remote_added.contains(&crate::store::remote_json(r)))
            .cloned()
            .collect();
        let (detect_tx, mut detect_rx) = mpsc::channel(16);
        let sockets = sockets
            .into_iter()
            .map(|(config, bound)| OwnSocket {
                public_ip: match &config.public_address {
                    PublicAddress::Fixed(ip) => Some(*ip),
                    PublicAddress::AutoHttpDetect { .. } => None,
                },
                config,
                bound,
            })
            .collect();
        let mut site = Self {
            name,
            instance,
            tunnels,
            sockets,
            messages,
            messages_stop,
            exposed,
            remote_apps,
            listeners: HashMap::new(),
            peers: HashMap::new(),
            seq: 1,
            counters,
            streams,
            bus,
            store,
            state,
            config_exposed,
            config_remote,
            listener_errors: HashMap::new(),
            broker_url,
            started_at: SystemTime::now(),
            http: reqwest::Client::new(),
            detect_tx,
            cancel: cancel.clone(),
            tracker,
        };
        site.detect_all();
        let mut announce_tick = tokio::time::interval(ANNOUNCE_INTERVAL);
        announce_tick.tick().await; // the first tick fires at once; the broker ConnAck triggers the first announce
        let mut detect_tick = tokio::time::interval(DETECT_INTERVAL);
        detect_tick.tick().await;
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(cmd) = cmd_rx.recv() => site.on_command(cmd).await,
                Some(msg) = inbound_rx.recv() => site.on_inbound(msg).await,
                Some(ev) = tunnel_rx.recv() => site.on_tunnel(ev).await,
                Some(d) = detect_rx.recv() => site.on_detected(d).await,
                _ = announce_tick.tick() => site.announce(false).await,
                _ = detect_tick.tick() => site.detect_all(),
                _ = tick.tick() => site.housekeeping(),
            }
        }
        site.shut_down().await;
    }

    async fn shut_down(mut self) {
        info!("site shutting down");
        for (_, l) in self.listeners.drain() {
            l.close();
        }
        for p in self.peers.values_mut() {
            p.stop_dials();
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
                    })
                })
                .collect(),
            apps: self.exposed.names(),
            cert_sha256: self.tunnels.fingerprint().to_string(),
            reply,
        }
    }

    async fn announce(&self, reply: bool) {
        let msg = Message::Announce(self.own_announce(reply));
        if let Err(e) = self.messages.broadcast(&msg).await {
            debug!(error = %e, "announce not sent");
        }
    }

    async fn announce_to(&self, to: &InstanceId) {
        let msg = Message::Announce(self.own_announce(false));
        if let Err(e) = self.messages.unicast(to, &msg).await {
            debug!(error = %e, "unicast announce not sent");
        }
    }

    async fn on_inbound(&mut self, inbound: Inbound) {
        match inbound {
            // Every (re)connect may follow a broker restart that lost what
            // others knew of us: announce and ask everyone to answer.
            Inbound::Connected => self.announce(true).await,
            Inbound::Message(Message::Announce(a)) => self.on_announce(a).await,
            Inbound::Message(Message::Depart(d)) => self.on_depart(d),
            Inbound::Message(Message::Query(q)) => self.on_query(q).await,
        }
    }

    /// Records a sighting of `instance` of `site` and decides whether it is the
    /// one to talk to. Returns false when it is a duplicate of a live instance.
    fn sight(&mut self, site: &SiteName, instance: InstanceId) -> bool {
        let now = Instant::now();
        let peer = self
            .peers
            .entry(site.clone())
            .or_insert_with(|| Peer::new(instance, now));
        let entry = peer.sightings.entry(instance).or_insert((now, now));
        entry.1 = now;
        peer.last_seen_wall = SystemTime::now();
        let first_seen = entry.0;
        if peer.instance == instance {
            return true;
        }
        let current = peer.instance;
        let current_last = peer.sightings.get(&current).map_or(first_seen, |s| s.1);
        if current_last > first_seen && !peer.departed {
            // The current instance spoke after this one appeared: two live
            // processes share the site name.
            if peer.warned_duplicate.insert(instance) {
                error!(peer.site = %site, instance.current = %current, instance.other = %instance,
                    "duplicate site name: two running sites announce the same siteName; rename one of them");
            }
            return false;
        }
        info!(peer.site = %site, instance.old = %current, instance.new = %instance, "peer restarted");
        peer.stop_dials();
        peer.instance = instance;
        peer.announce = None;
        peer.departed = false;
        peer.sightings.retain(|k, _| *k == instance);
        self.tunnels
            .registry()
            .close_other_instances(site, &instance);
        true
    }

    async fn on_announce(&mut self, a: Announce) {
        if a.site == self.name {
            if a.instance != self.instance {
                error!(instance.other = %a.instance,
                    "duplicate site name: another running site announces this site's siteName; rename one of them");
            }
            return;
        }
        if !self.sight(&a.site.clone(), a.instance) {
            return;
        }
        let reply = a.reply;
        let from = a.instance;
        let Some(peer) = self.peers.get_mut(&a.site) else {
            return;
        };
        if peer.announce.as_ref().is_some_and(|old| old.seq > a.seq) {
            return; // reordered: keep the newer one
        }
        if peer.announce.is_none() {
            let apps: Vec<&str> = a.apps.iter().map(AppName::as_str).collect();
            info!(peer.site = %a.site, apps = ?apps, sockets = a.sockets.len(), "peer discovered");
            self.bus.emit(Event::PeerDiscovered {
                site: a.site.clone(),
            });
        }
        if a.protocol_version != PROTOCOL_VERSION {
            debug!(peer.site = %a.site, version = a.protocol_version, "peer speaks another protocol version");
        }
        peer.departed = false;
        let site = a.site.clone();
        peer.announce = Some(a);
        self.reconcile_dials(&site);
        self.reconcile_listeners();
        if reply {
            self.announce_to(&from).await;
        }
    }

    fn on_depart(&mut self, d: Depart) {
        let Some(peer) = self.peers.get_mut(&d.site) else {
            return;
        };
        if peer.instance != d.instance {
            return;
        }
        info!(peer.site = %d.site, "peer departed");
        peer.departed = true;
        // Live channels are left alone, and so are their dial loops: a site
        // that really leaves closes its channels itself, while a last will
        // fired by a broker hiccup must not cut a working tunnel. Redialling
        // stops once the channels are gone (see `housekeeping`).
        if peer.channels.is_empty() {
            peer.stop_dials();
        }
    }

    async fn on_query(&mut self, q: Query) {
        debug!(peer.site = %q.site, "peer asked for a fresh announcement");
        self.detect_all();
        self.announce_to(&q.instance).await;
    }

    /// Makes the running dial loops match the peer's announced sockets.
    fn reconcile_dials(&mut self, site: &SiteName) {
        let Some(peer) = self.peers.get_mut(site) else {
            return;
        };
        let Some(a) = &peer.announce else {
            return;
        };
        let Some(pin) = Fingerprint::from_hex(&a.cert_sha256) else {
            warn!(peer.site = %site, "peer announced an invalid certificate fingerprint; not dialling");
            return;
        };
        let wanted: HashMap<u32, SocketAddr> = a.sockets.iter().map(|s| (s.id, s.addr)).collect();
        peer.dials.retain(|id, (addr, cancel)| {
            let keep = wanted.get(id) == Some(addr);
            if !keep {
                cancel.cancel();
            }
            keep
        });
        let id = PeerId {
            site: site.clone(),
            instance: peer.instance,
        };
        for (sid, addr) in wanted {
            if peer.dials.contains_key(&sid) {
                continue;
            }
            let cancel = self.cancel.child_token();
            self.tunnels
                .dial(id.clone(), sid, addr, pin, cancel.clone());
            peer.dials.insert(sid, (addr, cancel));
        }
    }

    async fn on_tunnel(&mut self, ev: TunnelEvent) {
        match ev {
            TunnelEvent::ChannelUp { peer, channel } => {
                if !self.sight(&peer.site, peer.instance) {
                    self.tunnels
                        .registry()
                        .close_other_instances(&peer.site, &self.peers[&peer.site].instance);
                    return;
                }
                let Some(p) = self.peers.get_mut(&peer.site) else {
                    return;
                };
                p.channels.insert(channel);
                self.bus.emit(Event::ChannelUp {
                    site: peer.site.clone(),
                    channel,
                });
                if p.channels.len() == 1 {
                    info!(peer.site = %peer.site, "peer connected");
                    self.bus.emit(Event::PeerConnected {
                        site: peer.site.clone(),
                    });
                }
                if p.announce.is_none() {
                    // Inbound channel before its announcement: ask for it.
                    let to = peer.instance;
                    let q = Message::Query(Query {
                        site: self.name.clone(),
                        instance: self.instance,
                    });
                    let _ = self.messages.unicast(&to, &q).await;
                }
                self.reconcile_listeners();
            }
            TunnelEvent::ChannelDown {
                peer,
                channel,
                reason,
            } => {
                self.bus.emit(Event::ChannelDown {
                    site: peer.site.clone(),
                    channel,
                    reason: reason.clone(),
                });
                if let Some(p) = self.peers.get_mut(&peer.site)
                    && p.channels.remove(&channel)
                    && p.channels.is_empty()
                {
                    info!(peer.site = %peer.site, %reason, "peer disconnected");
                    self.bus.emit(Event::PeerDisconnected {
                        site: peer.site.clone(),
                        reason,
                    });
                }
                self.reconcile_listeners();
            }
            TunnelEvent::DialFailed {
                peer,
                socket,
                attempts,
            } => {
                // The address may be stale (dynamic public IP): ask the peer
                // for a fresh announcement now and then.
                if attempts == 2 || attempts % 10 == 0 {
                    debug!(peer.site = %peer.site, socket, attempts, "asking peer for fresh addresses");
                    let q = Message::Query(Query {
                        site: self.name.clone(),
                        instance: self.instance,
                    });
                    let _ = self.messages.unicast(&peer.instance, &q).await;
                }
            }
        }
    }

    /// Opens the listener of every remote app whose site is connected and
    /// offers it; closes the others.
    fn reconcile_listeners(&mut self) {
        let wanted: Vec<RemoteApp> = self
            .remote_apps
            .iter()
            .filter(|r| self.wants_listener(r))
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

    fn housekeeping(&mut self) {
        let now = Instant::now();
        self.peers.retain(|site, p| {
            if p.departed && p.channels.is_empty() {
                p.stop_dials();
            }
            let keep = !p.channels.is_empty() || now.duration_since(p.last_seen()) < PEER_EXPIRY;
            if !keep {
                info!(peer.site = %site, "peer forgotten");
                p.stop_dials();
            }
            keep
        });
        // Idempotent and cheap: also retries listeners that failed to bind.
        self.reconcile_listeners();
    }

    /// A remote app's listener is open while its site is connected and offers it.
    fn wants_listener(&self, r: &RemoteApp) -> bool {
        self.peers
            .get(&r.site)
            .is_some_and(|p| !p.channels.is_empty() && p.offers(&r.app))
    }

    fn detect_all(&self) {
        for (index, s) in self.sockets.iter().enumerate() {
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

    async fn on_detected(&mut self, d: Detected) {
        let Some(s) = self.sockets.get_mut(d.index) else {
            return;
        };
        match d.result {
            Ok(ip) if s.public_ip != Some(ip) => {
                info!(socket = d.index, public.address = %ip, "public address detected");
                s.public_ip = Some(ip);
                self.seq += 1;
                self.announce(false).await;
            }
            Ok(_) => {}
            Err(e) => warn!(socket = d.index, error = %e, "public address detection failed"),
        }
    }
}

/// Control requests: snapshots and live app changes.
impl Site {
    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Site(r) => {
                let _ = r.send(self.site_info());
            }
            Command::Peers(r) => {
                let _ = r.send(self.peer_infos());
            }
            Command::Channels(r) => {
                let _ = r.send(self.channel_infos());
            }
            Command::Streams(r) => {
                let _ = r.send(self.streams.snapshot());
            }
            Command::Apps(r) => {
                let _ = r.send(self.apps_info());
            }
            Command::Stats(r) => {
                let _ = r.send(self.stats());
            }
            Command::Subscribe(r) => {
                let _ = r.send(self.bus.subscribe());
            }
            Command::AddExposedApp(app, r) => {
                let result = self.add_exposed(app).await;
                let _ = r.send(result);
            }
            Command::RemoveExposedApp(name, r) => {
                let result = self.remove_exposed(&name).await;
                let _ = r.send(result);
            }
            Command::AddRemoteApp(app, r) => {
                let _ = r.send(self.add_remote(app));
            }
            Command::RemoveRemoteApp {
                site,
                app,
                local,
                reply,
            } => {
                let _ = reply.send(self.remove_remote(&site, &app, local.as_deref()));
            }
        }
    }

    fn persist(&self) -> Result<(), ControlError> {
        match &self.store {
            Some(store) => store.save(&self.state).map_err(|e| {
                warn!(error = %e, "live change not persisted");
                ControlError::Persist(format!("applied, but not persisted: {e}"))
            }),
            None => Ok(()),
        }
    }

    async fn add_exposed(&mut self, app: ExposedApp) -> Result<(), ControlError> {
        let name = app.name.clone();
        self.exposed.insert(app.clone()).map_err(|_| {
            ControlError::AlreadyExists(format!(
                "localExposedApps: an app named '{name}' is already exposed"
            ))
        })?;
        info!(app.name = %name, "exposed app added");
        self.state.add_exposed(&app);
        self.bus.emit(Event::ExposedAppAdded { app: name });
        // Peers learn at once, not at the next periodic announcement.
        self.seq += 1;
        self.announce(false).await;
        self.persist()
    }

    async fn remove_exposed(&mut self, name: &str) -> Result<ExposedApp, ControlError> {
        let not_found = || ControlError::NotFound(format!("no exposed app named '{name}'"));
        let key = AppName::new(name).map_err(|_| not_found())?;
        let app = self.exposed.remove(&key).ok_or_else(not_found)?;
        info!(app.name = %key, "exposed app removed");
        self.state
            .remove_exposed(&app, self.config_exposed.contains(&key));
        self.bus.emit(Event::ExposedAppRemoved { app: key });
        self.seq += 1;
        self.announce(false).await;
        self.persist()?;
        Ok(app)
    }

    fn add_remote(&mut self, app: RemoteApp) -> Result<(), ControlError> {
        if app.site == self.name {
            return Err(ControlError::Invalid(vec![crate::config::FieldError::new(
                "siteName",
                format!("'{}' is this site's own name", app.site),
            )]));
        }
        if let Some(other) = self
            .remote_apps
            .iter()
            .find(|r| r.local_socket == app.local_socket)
        {
            return Err(ControlError::AlreadyExists(format!(
                "remoteApps: localSocket '{}' is already used by app '{}' of site '{}'",
                app.local_socket, other.app, other.site
            )));
        }
        info!(peer.site = %app.site, app.name = %app.app, local = %app.local_socket, "remote app added");
        self.state.add_remote(&app);
        self.remote_apps.push(app.clone());
        self.bus.emit(Event::RemoteAppAdded { app });
        self.reconcile_listeners();
        self.persist()
    }

    fn remove_remote(
        &mut self,
        site: &str,
        app: &str,
        local: Option<&str>,
    ) -> Result<Vec<RemoteApp>, ControlError> {
        let matches = |r: &RemoteApp| {
            r.site.as_str() == site
                && r.app.as_str() == app
                && local.is_none_or(|l| r.local_socket.to_string() == l)
        };
        let (gone, keep): (Vec<_>, Vec<_>) = self.remote_apps.drain(..).partition(|r| matches(r));
        self.remote_apps = keep;
        if gone.is_empty() {
            let on = local.map(|l| format!(" on '{l}'")).unwrap_or_default();
            return Err(ControlError::NotFound(format!(
                "no remote app '{app}' of site '{site}'{on}"
            )));
        }
        for r in &gone {
            info!(peer.site = %r.site, app.name = %r.app, local = %r.local_socket, "remote app removed");
            self.state.remove_remote(r, self.config_remote.contains(r));
            self.listener_errors.remove(r);
            self.bus.emit(Event::RemoteAppRemoved { app: r.clone() });
        }
        self.reconcile_listeners();
        self.persist()?;
        Ok(gone)
    }

    fn site_info(&self) -> SiteInfo {
        SiteInfo {
            name: self.name.clone(),
            instance: self.instance,
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: self.started_at,
            broker_url: self.broker_url.clone(),
            broker: self.messages.state().borrow().clone(),
            sockets: self
                .sockets
                .iter()
                .map(|s| SocketInfo {
                    listen: s.bound,
                    public: s.public_addr(),
                    auto_detect: matches!(
                        s.config.public_address,
                        PublicAddress::AutoHttpDetect { .. }
                    ),
                })
                .collect(),
        }
    }

    fn peer_infos(&self) -> Vec<PeerInfo> {
        let registry = self.tunnels.registry();
        let mut v: Vec<PeerInfo> = self
            .peers
            .iter()
            .map(|(site, p)| {
                let chans = registry.channels(site);
                let (mut sent, mut received, mut streams) = (0, 0, 0);
                for c in &chans {
                    let st = ChannelStats::of(c);
                    sent += st.bytes_sent;
                    received += st.bytes_received;
                    streams += c.open_streams.load(std::sync::atomic::Ordering::Relaxed);
                }
                let state = if !p.channels.is_empty() {
                    PeerState::Connected
                } else if p.departed || p.last_seen().elapsed() > 3 * ANNOUNCE_INTERVAL {
                    PeerState::Gone
                } else if !p.dials.is_empty() {
                    PeerState::Connecting
                } else {
                    PeerState::Discovered
                };
                PeerInfo {
                    site: site.clone(),
                    instance: p.instance,
                    state,
                    apps: p
                        .announce
                        .as_ref()
                        .map(|a| a.apps.clone())
                        .unwrap_or_default(),
                    last_seen: p.last_seen_wall,
                    channels: p.channels.len(),
                    streams,
                    bytes_sent: sent,
                    bytes_received: received,
                }
            })
            .collect();
        v.sort_by(|a, b| a.site.cmp(&b.site));
        v
    }

    fn channel_infos(&self) -> Vec<ChannelInfo> {
        let registry = self.tunnels.registry();
        let dials = registry.dials();
        let mut v: Vec<ChannelInfo> = registry
            .all()
            .iter()
            .map(|c| {
                let dial = dials.iter().find(|d| d.channel == Some(c.id));
                ChannelInfo {
                    id: Some(c.id),
                    peer: c.peer.site.clone(),
                    direction: c.direction,
                    local: c.local,
                    remote: c.conn.remote_address(),
                    state: ChannelState::Up,
                    path: ChannelStats::of(c),
                    open_streams: c.open_streams.load(std::sync::atomic::Ordering::Relaxed),
                    age: c.since.elapsed(),
                    reconnect_attempts: c.attempts,
                    last_error: dial.and_then(|d| d.last_error.clone()),
                }
            })
            .collect();
        v.extend(
            dials
                .iter()
                .filter(|d| d.channel.is_none())
                .map(|d| ChannelInfo {
                    id: None,
                    peer: d.peer.clone(),
                    direction: Direction::Outbound,
                    local: None,
                    remote: d.remote,
                    state: ChannelState::Connecting,
                    path: ChannelStats::default(),
                    open_streams: 0,
                    age: d.since.elapsed(),
                    reconnect_attempts: d.attempts,
                    last_error: d.last_error.clone(),
                }),
        );
        v.sort_by(|a, b| (&a.peer, a.id).cmp(&(&b.peer, b.id)));
        v
    }

    fn apps_info(&self) -> AppsInfo {
        let mut exposed: Vec<ExposedAppInfo> = self
            .exposed
            .names()
            .into_iter()
            .filter_map(|n| self.exposed.get(&n))
            .map(|app| ExposedAppInfo {
                live: !self.config_exposed.contains(&app.name),
                app,
            })
            .collect();
        exposed.sort_by(|a, b| a.app.name.cmp(&b.app.name));
        let remote = self
            .remote_apps
            .iter()
            .map(|r| RemoteAppInfo {
                listener: if let Some(l) = self.listeners.get(r) {
                    ListenerState::Open(l.local_addr().clone())
                } else if let Some(e) = self.listener_errors.get(r) {
                    ListenerState::Failed(e.clone())
                } else {
                    ListenerState::Waiting
                },
                live: !self.config_remote.contains(r),
                app: r.clone(),
            })
            .collect();
        AppsInfo { exposed, remote }
    }

    fn stats(&self) -> StatsSnapshot {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.counters;
        StatsSnapshot {
            streams: {
                let mut v = self.streams.snapshot();
                v.truncate(crate::view::STATS_STREAMS_MAX);
                v
            },
            apps: self.streams.app_stats(),
            peers: self.peer_infos(),
            channels: self.channel_infos(),
            counters: vec![
                ("messages_received", c.messages_received.load(Relaxed)),
                (
                    "messages_undecryptable",
                    c.messages_undecryptable.load(Relaxed),
                ),
                ("messages_stale", c.messages_stale.load(Relaxed)),
                ("messages_malformed", c.messages_malformed.load(Relaxed)),
                ("auth_failures", c.auth_failures.load(Relaxed)),
                ("bad_preambles", c.bad_preambles.load(Relaxed)),
                ("streams_refused", c.streams_refused.load(Relaxed)),
                ("streams_opened", c.streams_opened.load(Relaxed)),
                ("preauth_refused", c.preauth_refused.load(Relaxed)),
                ("preauth_retried", c.preauth_retried.load(Relaxed)),
            ],
        }
    }
}
