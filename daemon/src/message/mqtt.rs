//! The one task that drives the MQTT connection (rumqttc's `EventLoop`).
//!
//! It connects (plain or TLS), subscribes to the broadcast topic and to this
//! instance's unicast topic after every connect, opens and checks every
//! payload, and hands accepted messages to the site through an mpsc channel.
//! [`MessageChannel`] is the cheap handle the site uses to publish. Bad
//! payloads are dropped, counted and logged (topic only, never the bytes);
//! broker trouble becomes [`BrokerState::Reconnecting`] and a jittered,
//! capped backoff. This module must not interpret messages beyond dropping
//! our own, and must never log payloads or key material.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, LastWill, MqttOptions, Outgoing, QoS,
    Request, Subscribe, SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::MessageError;
use super::announce::{self, Depart, InstanceId, LoopbackPeers, Message};
use super::envelope::{self, Freshness, ReplayWindow};
use crate::config::{MqttConfig, SiteName};
use crate::counters::Counters;
use crate::crypto::Keys;
use crate::identity::{PublicKey, SiteKey};
use crate::warn_limit::WarnLimiter;

/// Largest sealed payload we publish. The embedded broker accepts 64 KiB;
/// refusing bigger messages here keeps rumqttc from tearing the connection
/// down (and reconnecting forever) over one oversized publish.
pub const MAX_PAYLOAD: usize = 60 * 1024;
/// Largest incoming MQTT packet accepted from the broker.
const MAX_INCOMING_PACKET: usize = 256 * 1024;
/// Outgoing packet limit (payload plus topic and header).
const MAX_OUTGOING_PACKET: usize = MAX_PAYLOAD + 4 * 1024;
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Publishes waiting for the event loop; beyond this `broadcast` fails fast
/// instead of blocking the site.
const REQUEST_CAPACITY: usize = 128;
const INBOUND_CAPACITY: usize = 256;
const DEPART_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(15);

/// Connection to the broker, as seen by the site and the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerState {
    /// First connection attempt in progress.
    Connecting,
    /// Connected and subscribed.
    Connected,
    /// The connection failed or was lost; retrying with backoff.
    Reconnecting {
        /// The last error.
        reason: String,
    },
}

/// What the channel delivers to the site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// (Re)connected and subscribed: the site should announce itself again.
    Connected,
    /// An authenticated, fresh message from another instance, with the
    /// identity that signed it (whether that identity may use the site name
    /// the message claims is the site's decision).
    Message(Message, PublicKey),
}

/// Handle to the MQTT message channel; clones share one connection.
#[derive(Clone)]
pub struct MessageChannel {
    inner: Arc<Inner>,
}

struct Inner {
    client: AsyncClient,
    site: SiteName,
    instance: InstanceId,
    keys: Arc<Keys>,
    identity: Arc<SiteKey>,
    broadcast: String,
    state_rx: watch::Receiver<BrokerState>,
    /// Cancelled when the event loop task has ended.
    stopped: CancellationToken,
    /// The current broker-connection epoch (shared with the driver).
    epoch: Arc<AtomicU32>,
}

impl fmt::Debug for MessageChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageChannel")
            .field("broadcast", &self.inner.broadcast)
            .field("instance", &self.inner.instance)
            .finish_non_exhaustive()
    }
}

/// What seals (the network keys) and signs (the site's identity) every
/// message this site sends.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Keys derived from `crypto.key`.
    pub keys: Arc<Keys>,
    /// The site's identity.
    pub identity: Arc<SiteKey>,
}

/// The unicast topic of `instance` under `broadcast`.
pub fn unicast_topic(broadcast: &str, instance: &InstanceId) -> String {
    format!("{broadcast}/i/{instance}")
}

/// MQTT client id: derived from the instance, never from the site name, so
/// the broker learns nothing about the site and restarts never collide.
fn client_id(instance: &InstanceId) -> String {
    // 22 characters: within the 23 that MQTT 3.1.1 brokers must accept.
    format!("wovenet-{}", &instance.to_string()[..14])
}

impl MessageChannel {
    /// Starts the MQTT task under `tracker`; it runs until `shutdown` is
    /// cancelled or [`MessageChannel::depart`] completes.
    ///
    /// Fails only on local configuration problems (topic, CA file, TLS);
    /// an unreachable broker is retried in the background and reported via
    /// [`MessageChannel::state`]. Must be called inside a Tokio runtime.
    /// The receiver yields [`Inbound::Connected`] after every (re)connect
    /// once both subscriptions are acknowledged, then messages; the task ends
    /// if the receiver is dropped.
    pub fn spawn(
        cfg: &MqttConfig,
        site: SiteName,
        instance: InstanceId,
        creds: Credentials,
        counters: Arc<Counters>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<(Self, mpsc::Receiver<Inbound>), MessageError> {
        let Credentials { keys, identity } = creds;
        let broadcast = cfg.topic.clone().unwrap_or_else(|| keys.derived_topic());
        if broadcast.is_empty() || broadcast.contains(['+', '#']) {
            return Err(MessageError::InvalidTopic(broadcast));
        }
        let own_topic = unicast_topic(&broadcast, &instance);

        let mut opts = MqttOptions::new(client_id(&instance), &cfg.broker.host, cfg.broker.port);
        opts.set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
        if cfg.username.is_some() || cfg.password.is_some() {
            // MQTT 3.1.1 forbids a password without a user name; send an empty one.
            let user = cfg.username.clone().unwrap_or_default();
            let pass = cfg
                .password
                .as_ref()
                .map(|p| p.0.as_str().to_owned())
                .unwrap_or_default();
            opts.set_credentials(user, pass);
        }
        if cfg.broker.tls {
            let tls = tls_config(cfg.ca_file.as_deref())?;
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(tls),
            )));
        }
        let epoch = Arc::new(AtomicU32::new(FIRST_EPOCH));
        opts.set_last_will(last_will(
            &keys,
            &identity,
            &broadcast,
            &site,
            &instance,
            FIRST_EPOCH,
        ));

        let (client, eventloop) = AsyncClient::new(opts, REQUEST_CAPACITY);
        let (state_tx, state_rx) = watch::channel(BrokerState::Connecting);
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_CAPACITY);
        let stopped = CancellationToken::new();

        let driver = Driver {
            eventloop,
            keys: Arc::clone(&keys),
            identity: Arc::clone(&identity),
            site: site.clone(),
            instance,
            broadcast: broadcast.clone(),
            own_topic,
            counters,
            window: ReplayWindow::default(),
            loopback: LoopbackPeers::for_channel(cfg),
            state_tx,
            inbound_tx,
            cancel: shutdown.child_token(),
            attempt: 0,
            epoch: Arc::clone(&epoch),
            undecryptable_warn: WarnLimiter::default(),
            forged_warn: WarnLimiter::default(),
            malformed_warn: WarnLimiter::default(),
            stale_warn: WarnLimiter::default(),
            sockets_warn: WarnLimiter::default(),
        };
        let span = info_span!("mqtt", mqtt.broker = %cfg.broker, mqtt.topic = %broadcast);
        let done = stopped.clone();
        tracker.spawn(
            async move {
                let _stopped = done.drop_guard();
                driver.run().await;
            }
            .instrument(span),
        );

        let channel = Self {
            inner: Arc::new(Inner {
                client,
                site,
                instance,
                keys,
                identity,
                broadcast,
                state_rx,
                stopped,
                epoch,
            }),
        };
        Ok((channel, inbound_rx))
    }

    /// The topic every instance of the network subscribes to.
    pub fn broadcast_topic(&self) -> &str {
        &self.inner.broadcast
    }

    /// This channel's instance id.
    pub fn instance(&self) -> &InstanceId {
        &self.inner.instance
    }

    /// Queues `msg` (QoS 1) for every instance. Never waits for the broker:
    /// while disconnected, up to a small backlog is queued, then
    /// [`MessageError::QueueFull`] is returned (the site re-announces on
    /// [`Inbound::Connected`] anyway).
    pub async fn broadcast(&self, msg: &Message) -> Result<(), MessageError> {
        self.publish(&self.inner.broadcast, msg)
    }

    /// Queues `msg` (QoS 1) for one instance, on its unicast topic.
    pub async fn unicast(&self, to: &InstanceId, msg: &Message) -> Result<(), MessageError> {
        self.publish(&unicast_topic(&self.inner.broadcast, to), msg)
    }

    /// The current broker-connection epoch: 1 for the first connection
    /// attempt, one more for each later attempt. Stamped on every
    /// announcement and departure (see [`Depart::epoch`]).
    pub fn epoch(&self) -> u32 {
        self.inner.epoch.load(Ordering::Relaxed)
    }

    /// Watches the broker connection state.
    pub fn state(&self) -> watch::Receiver<BrokerState> {
        self.inner.state_rx.clone()
    }

    /// Publishes a `Depart` on the broadcast topic and disconnects cleanly (so
    /// the broker discards the last will), waiting at most a couple of
    /// seconds. Call it before cancelling the shutdown token; afterwards the
    /// channel is closed.
    pub async fn depart(&self) {
        let msg = Message::Depart(Depart {
            site: self.inner.site.clone(),
            instance: self.inner.instance,
            epoch: self.epoch(),
        });
        if let Err(e) = self.publish(&self.inner.broadcast, &msg) {
            debug!(error = %e, "cannot queue depart message");
        }
        if self.inner.client.try_disconnect().is_err() {
            debug!("cannot queue mqtt disconnect");
        }
        if tokio::time::timeout(DEPART_TIMEOUT, self.inner.stopped.cancelled())
            .await
            .is_err()
        {
            debug!("mqtt disconnect did not complete in time");
        }
    }

    fn publish(&self, topic: &str, msg: &Message) -> Result<(), MessageError> {
        let body = announce::encode(&stamped(msg, self.epoch()));
        let sealed = envelope::seal(
            &self.inner.keys,
            &self.inner.identity,
            topic,
            &body,
            SystemTime::now(),
        );
        if sealed.len() > MAX_PAYLOAD {
            return Err(MessageError::TooLarge {
                size: sealed.len(),
                max: MAX_PAYLOAD,
            });
        }
        if self.inner.stopped.is_cancelled() {
            return Err(MessageError::Closed);
        }
        self.inner
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, sealed)
            .map_err(|_| {
                if self.inner.stopped.is_cancelled() {
                    MessageError::Closed
                } else {
                    MessageError::QueueFull
                }
            })
    }
}

/// Epoch of the first connection attempt (0 means "sender without epochs").
const FIRST_EPOCH: u32 = 1;

/// `msg` with the epoch of the connection it is published on. The epoch
/// only grows after the connection it belonged to failed, so a message never
/// carries a higher epoch than the will of the connection that delivers it.
fn stamped(msg: &Message, epoch: u32) -> Message {
    let mut msg = msg.clone();
    match &mut msg {
        Message::Announce(a) => a.epoch = epoch,
        Message::Depart(d) => d.epoch = epoch,
        Message::Query(_) | Message::Punch(_) | Message::PunchAck(_) | Message::Offer(_) => {}
    }
    msg
}

/// A sealed `Depart` of connection `epoch`, registered as the MQTT last
/// will. Sealed anew before every connection attempt so each will has its
/// own message id and its connection's epoch.
fn last_will(
    keys: &Keys,
    identity: &SiteKey,
    broadcast: &str,
    site: &SiteName,
    instance: &InstanceId,
    epoch: u32,
) -> LastWill {
    let body = announce::encode(&Message::Depart(Depart {
        site: site.clone(),
        instance: *instance,
        epoch,
    }));
    let sealed = envelope::seal(keys, identity, broadcast, &body, SystemTime::now());
    LastWill::new(broadcast, sealed, QoS::AtLeastOnce, false)
}

/// Public web PKI roots plus the optional extra CA; host names are verified
/// as usual. Uses ring explicitly so it never depends on a process-wide
/// default crypto provider.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, MessageError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let ca_err = |reason: String| MessageError::CaFile {
            path: path.to_owned(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_err(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ca_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_err("no PEM certificate found".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MessageError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Delay before reconnect attempt `attempt` (0-based): exponential from
/// [`BACKOFF_MIN`], capped at [`BACKOFF_MAX`], with `jitter` in `[0, 1)`
/// spreading it over the upper half so that sites restarted together do not
/// reconnect in lockstep. Always within `[BACKOFF_MIN, BACKOFF_MAX]`.
fn backoff_delay(attempt: u32, jitter: f64) -> Duration {
    let exp = BACKOFF_MIN.saturating_mul(2u32.saturating_pow(attempt.min(16)));
    let capped = exp.min(BACKOFF_MAX);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    capped
        .mul_f64(0.5 + 0.5 * jitter)
        .clamp(BACKOFF_MIN, BACKOFF_MAX)
}

/// Whether the driver keeps running.
enum Flow {
    Continue,
    Stop,
}

/// State of the event loop task.
struct Driver {
    eventloop: EventLoop,
    keys: Arc<Keys>,
    identity: Arc<SiteKey>,
    site: SiteName,
    instance: InstanceId,
    broadcast: String,
    own_topic: String,
    counters: Arc<Counters>,
    window: ReplayWindow,
    /// Whether announced loopback addresses are kept.
    loopback: LoopbackPeers,
    state_tx: watch::Sender<BrokerState>,
    inbound_tx: mpsc::Sender<Inbound>,
    cancel: CancellationToken,
    /// Consecutive failed attempts, for the backoff.
    attempt: u32,
    /// Broker-connection epoch, one per connection attempt.
    epoch: Arc<AtomicU32>,
    undecryptable_warn: WarnLimiter,
    forged_warn: WarnLimiter,
    malformed_warn: WarnLimiter,
    stale_warn: WarnLimiter,
    sockets_warn: WarnLimiter,
}

impl Driver {
    async fn run(mut self) {
        loop {
            let polled = tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                polled = self.eventloop.poll() => polled,
            };
            let flow = match polled {
                Ok(event) => self.on_event(event).await,
                Err(e) => self.on_error(&e).await,
            };
            if let Flow::Stop = flow {
                break;
            }
        }
        debug!("mqtt task stopped");
    }

    async fn on_event(&mut self, event: Event) -> Flow {
        match event {
            Event::Incoming(Incoming::ConnAck(_)) => {
                debug!("mqtt connected, subscribing");
                self.attempt = 0;
                // Straight into the event loop's priority queue rather than
                // through the client: the request channel may be full of
                // publishes, and only this task drains it.
                self.eventloop
                    .pending
                    .push_front(Request::Subscribe(Subscribe::new_many([
                        SubscribeFilter::new(self.broadcast.clone(), QoS::AtLeastOnce),
                        SubscribeFilter::new(self.own_topic.clone(), QoS::AtLeastOnce),
                    ])));
                Flow::Continue
            }
            Event::Incoming(Incoming::SubAck(ack)) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    self.fail("broker refused the subscription".into()).await
                } else {
                    self.set_connected();
                    self.deliver(Inbound::Connected).await
                }
            }
            Event::Incoming(Incoming::Publish(publish)) => {
                match self.accept(&publish.topic, &publish.payload) {
                    Some((msg, signer)) => self.deliver(Inbound::Message(msg, signer)).await,
                    None => Flow::Continue,
                }
            }
            // Only `depart` sends a disconnect: the channel is done.
            Event::Outgoing(Outgoing::Disconnect) => {
                info!("disconnected from mqtt broker");
                Flow::Stop
            }
            Event::Incoming(_) | Event::Outgoing(_) => Flow::Continue,
        }
    }

    async fn on_error(&mut self, e: &ConnectionError) -> Flow {
        self.fail(e.to_string()).await
    }

    /// Records a failed or lost connection and waits out the backoff.
    async fn fail(&mut self, reason: String) -> Flow {
        let was = self.state_tx.borrow().clone();
        match &was {
            BrokerState::Connected => {
                warn!(error = %reason, "lost connection to mqtt broker, reconnecting")
            }
            BrokerState::Connecting => {
                warn!(error = %reason, "cannot connect to mqtt broker, retrying")
            }
            BrokerState::Reconnecting { .. } => debug!(error = %reason, "mqtt reconnect failed"),
        }
        self.state_tx.send_if_modified(|s| {
            let next = BrokerState::Reconnecting { reason };
            if *s == next {
                false
            } else {
                *s = next;
                true
            }
        });
        // Drop the connection (a refused subscription leaves it open) and
        // make sure the next connection carries a freshly sealed will of
        // the next epoch: this connection's will may still fire, and must
        // then be older than anything announced from now on.
        self.eventloop.clean();
        let next = |e: u32| Some(e.saturating_add(1));
        let epoch = self
            .epoch
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, next)
            .map_or(u32::MAX, |e| e.saturating_add(1));
        self.eventloop.mqtt_options.set_last_will(last_will(
            &self.keys,
            &self.identity,
            &self.broadcast,
            &self.site,
            &self.instance,
            epoch,
        ));
        let delay = backoff_delay(self.attempt, rand::random());
        self.attempt = self.attempt.saturating_add(1);
        tokio::select! {
            () = self.cancel.cancelled() => Flow::Stop,
            () = tokio::time::sleep(delay) => Flow::Continue,
        }
    }

    fn set_connected(&mut self) {
        let was_reconnecting = matches!(*self.state_tx.borrow(), BrokerState::Reconnecting { .. });
        if was_reconnecting {
            info!("reconnected to mqtt broker");
        } else {
            info!("connected to mqtt broker");
        }
        self.state_tx.send_replace(BrokerState::Connected);
    }

    async fn deliver(&mut self, inbound: Inbound) -> Flow {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Flow::Stop,
            sent = self.inbound_tx.send(inbound) => match sent {
                Ok(()) => Flow::Continue,
                Err(_) => {
                    debug!("message receiver dropped, stopping mqtt task");
                    Flow::Stop
                }
            },
        }
    }

    /// Counts (and logs, rate-limited) the sockets dropped from an announcement.
    fn dropped_sockets(&mut self, topic: &str, d: &announce::Decoded) {
        let Some((socket, why)) = &d.first_dropped else {
            return;
        };
        Counters::add(
            &self.counters.announced_sockets_dropped,
            u64::try_from(d.dropped_sockets).unwrap_or(u64::MAX),
        );
        let site = d.message.site();
        match self.sockets_warn.allow(Instant::now()) {
            Some(suppressed) => warn!(
                mqtt.topic = %topic, peer.site = %site, dropped = d.dropped_sockets,
                socket.id = socket.id, socket.addr = %socket.addr, reason = %why, suppressed,
                "dropped announced sockets that cannot be dialled"
            ),
            None => debug!(
                mqtt.topic = %topic, peer.site = %site, dropped = d.dropped_sockets,
                socket.id = socket.id, socket.addr = %socket.addr, reason = %why,
                "dropped announced sockets that cannot be dialled"
            ),
        }
    }

    /// Opens, decodes and freshness-checks one payload; `None` when dropped.
    fn accept(&mut self, topic: &str, payload: &[u8]) -> Option<(Message, PublicKey)> {
        if topic != self.broadcast && topic != self.own_topic {
            debug!(mqtt.topic = %topic, "ignoring message on unexpected topic");
            return None;
        }
        let opened = match envelope::open(&self.keys, topic, payload) {
            Ok(o) => o,
            Err(e @ envelope::EnvelopeError::BadSignature) => {
                Counters::bump(&self.counters.messages_forged);
                match self.forged_warn.allow(Instant::now()) {
                    Some(suppressed) => warn!(
                        mqtt.topic = %topic, error = %e, suppressed,
                        "dropped mqtt message with a forged or altered signature (a holder of crypto.key is misbehaving)"
                    ),
                    None => debug!(mqtt.topic = %topic, error = %e, "dropped forged mqtt message"),
                }
                return None;
            }
            Err(e) => {
                Counters::bump(&self.counters.messages_undecryptable);
                match self.undecryptable_warn.allow(Instant::now()) {
                    Some(suppressed) => warn!(
                        mqtt.topic = %topic, error = %e, suppressed,
                        "dropped undecryptable mqtt message (another network or a different key on this topic?)"
                    ),
                    None => {
                        debug!(mqtt.topic = %topic, error = %e, "dropped undecryptable mqtt message")
                    }
                }
                return None;
            }
        };
        let decoded = match announce::decode_checked(&opened.body, self.loopback) {
            Ok(d) => d,
            Err(e) => {
                Counters::bump(&self.counters.messages_malformed);
                match self.malformed_warn.allow(Instant::now()) {
                    Some(suppressed) => warn!(
                        mqtt.topic = %topic, error = %e, suppressed,
                        "dropped malformed mqtt message (newer wovenet version?)"
                    ),
                    None => {
                        debug!(mqtt.topic = %topic, error = %e, "dropped malformed mqtt message")
                    }
                }
                return None;
            }
        };
        let msg = &decoded.message;
        if *msg.instance() == self.instance {
            return None;
        }
        let freshness = match msg {
            // Brokers publish the will long after it was sealed.
            Message::Depart(_) => Freshness::Exempt,
            Message::Announce(_)
            | Message::Query(_)
            | Message::Punch(_)
            | Message::PunchAck(_)
            | Message::Offer(_) => Freshness::Required,
        };
        if let Err(e) =
            self.window
                .check(SystemTime::now(), opened.sent_at_ms, opened.id, freshness)
        {
            Counters::bump(&self.counters.messages_stale);
            let replay = matches!(e, envelope::Rejected::Replayed);
            match self.stale_warn.allow(Instant::now()) {
                // Replays are expected noise (QoS 1 redelivery); clock skew is not.
                Some(suppressed) if !replay => warn!(
                    mqtt.topic = %topic, peer.site = %msg.site(), error = %e, suppressed,
                    "dropped mqtt message outside the freshness window (check clocks)"
                ),
                _ => {
                    debug!(mqtt.topic = %topic, peer.site = %msg.site(), error = %e, "dropped mqtt message")
                }
            }
            return None;
        }
        Counters::bump(&self.counters.messages_received);
        debug!(mqtt.topic = %topic, peer.site = %msg.site(), message.kind = msg.kind(), "received mqtt message");
        self.dropped_sockets(topic, &decoded);
        Some((decoded.message, opened.signer))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn client_id_is_short_and_does_not_name_the_site() {
        let id = client_id(&InstanceId::from_bytes([0xcd; 16]));
        assert!(id.len() <= 23, "{id}");
        assert_eq!(id, "wovenet-cdcdcdcdcdcdcd");
    }

    #[test]
    fn unicast_topic_nests_under_broadcast() {
        let i = InstanceId::from_bytes([1; 16]);
        assert_eq!(
            unicast_topic("wovenet/abc", &i),
            format!("wovenet/abc/i/{}", "01".repeat(16))
        );
    }

    #[test]
    fn announcements_and_departures_carry_the_connection_epoch() {
        let site = SiteName::new("a").unwrap();
        let instance = InstanceId::from_bytes([5; 16]);
        let depart = Message::Depart(Depart {
            site: site.clone(),
            instance,
            epoch: 0,
        });
        let Message::Depart(d) = stamped(&depart, 7) else {
            panic!("kind changed");
        };
        assert_eq!(d.epoch, 7);
        let query = Message::Query(announce::Query { site, instance });
        assert_eq!(stamped(&query, 7), query);
    }

    #[test]
    fn the_last_will_is_a_sealed_depart_of_its_connection_epoch() {
        let keys = Keys::derive(&crate::config::CryptoKey::new("will-key-123").unwrap());
        let site = SiteName::new("a").unwrap();
        let instance = InstanceId::from_bytes([5; 16]);
        let id = SiteKey::generate().unwrap();
        let will = last_will(&keys, &id, "t", &site, &instance, 4);
        let opened = envelope::open(&keys, "t", &will.message).unwrap();
        assert_eq!(opened.signer, id.public());
        let Message::Depart(d) = announce::decode(&opened.body).unwrap() else {
            panic!("the will is not a depart");
        };
        assert_eq!((d.site, d.instance, d.epoch), (site, instance, 4));
    }

    #[test]
    fn backoff_grows_then_caps() {
        assert_eq!(backoff_delay(0, 0.999_999), BACKOFF_MIN);
        assert!(backoff_delay(3, 0.999) > backoff_delay(1, 0.999));
        assert_eq!(backoff_delay(40, 1.0), BACKOFF_MAX);
        assert_eq!(backoff_delay(u32::MAX, f64::NAN), BACKOFF_MAX / 2);
    }

    #[test]
    fn missing_ca_file_is_reported_with_its_path() {
        let err = tls_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn ca_file_without_certificates_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a pem").unwrap();
        let err = tls_config(Some(&path)).unwrap_err();
        assert!(matches!(err, MessageError::CaFile { .. }), "{err}");
    }

    #[test]
    fn tls_config_builds_without_a_process_default_provider() {
        assert!(tls_config(None).is_ok());
    }

    proptest! {
        #[test]
        fn backoff_stays_within_bounds(attempt in any::<u32>(), jitter in any::<f64>()) {
            let d = backoff_delay(attempt, jitter);
            prop_assert!(BACKOFF_MIN <= d && d <= BACKOFF_MAX, "{:?}", d);
        }
    }
}
