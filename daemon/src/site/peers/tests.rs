//! Deterministic tests of the peer state machine: a tiny simulated network
//! (in the spirit of quinn's `Pair`) delivers the messages and channel events
//! several sites' [`Peers`] produce, on a clock the test advances.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::message::announce::{AnnouncedSocket, PROTOCOL_VERSION};

fn name(s: &str) -> SiteName {
    SiteName::new(s).unwrap()
}

/// A message or tunnel event on its way to one node.
#[derive(Debug, Clone)]
enum Input {
    Announce(Announce),
    Depart(Depart),
    Query(SiteName, InstanceId),
    Offer(Offer),
    Up(ChannelUp),
    Down(SiteName, ChannelId, String),
}

/// One simulated site process.
struct Node {
    site: SiteName,
    instance: InstanceId,
    cert: Fingerprint,
    peers: Peers,
    seq: u64,
    epoch: u32,
    sockets: bool,
    alive: bool,
    /// Every action it produced, in order.
    log: Vec<Action>,
    /// Dial loops running: (site, socket) → (expected peer, pin).
    dials: HashMap<(SiteName, u32), (PeerId, Fingerprint)>,
    confirmed: HashSet<ChannelId>,
}

/// Both ends of a simulated dataChannel.
#[derive(Debug, Clone, Copy)]
struct Link {
    ends: [(usize, ChannelId); 2],
    open: bool,
}

struct Sim {
    now: Instant,
    nodes: Vec<Node>,
    queue: VecDeque<(usize, Input)>,
    links: Vec<Link>,
    next_channel: u64,
    /// Messages delivered so far (to replay them).
    delivered: Vec<(usize, Input)>,
}

impl Sim {
    fn new() -> Self {
        Self {
            now: Instant::now(),
            nodes: Vec::new(),
            queue: VecDeque::new(),
            links: Vec::new(),
            next_channel: 1,
            delivered: Vec::new(),
        }
    }

    /// Starts a process of `site`; `tag` makes its instance and certificate.
    fn add(&mut self, site: &str, tag: u8) -> usize {
        self.add_with(site, tag, true)
    }

    fn add_with(&mut self, site: &str, tag: u8, sockets: bool) -> usize {
        let instance = InstanceId::from_bytes([tag; 16]);
        self.nodes.push(Node {
            site: name(site),
            instance,
            cert: Fingerprint([tag; 32]),
            peers: Peers::new(name(site), instance),
            seq: 1,
            epoch: 1,
            sockets,
            alive: true,
            log: Vec::new(),
            dials: HashMap::new(),
            confirmed: HashSet::new(),
        });
        self.nodes.len() - 1
    }

    fn announce_of(&self, i: usize, reply: bool) -> Announce {
        let n = &self.nodes[i];
        Announce {
            site: n.site.clone(),
            instance: n.instance,
            protocol_version: PROTOCOL_VERSION,
            seq: n.seq,
            epoch: n.epoch,
            sockets: if n.sockets {
                vec![AnnouncedSocket {
                    id: 0,
                    addr: SocketAddr::from(([192, 0, 2, n.instance.as_bytes()[0]], 29090)),
                    punch: None,
                    transport: AnnouncedTransport::Quic,
                }]
            } else {
                Vec::new()
            },
            apps: vec![AppName::new("app").unwrap()],
            cert_sha256: n.cert.to_string(),
            reply,
        }
    }

    fn depart_of(&self, i: usize) -> Depart {
        Depart {
            site: self.nodes[i].site.clone(),
            instance: self.nodes[i].instance,
            epoch: self.nodes[i].epoch,
        }
    }

    fn others(&self, i: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|j| *j != i && self.nodes[*j].alive)
            .collect()
    }

    /// Broadcasts `i`'s announcement (as on every broker connect: asking for replies).
    fn announce(&mut self, i: usize) {
        let a = self.announce_of(i, true);
        for j in self.others(i) {
            self.queue.push_back((j, Input::Announce(a.clone())));
        }
        self.run();
    }

    /// `i` shuts down cleanly: departs, then closes its channels.
    fn stop(&mut self, i: usize) {
        let d = self.depart_of(i);
        for j in self.others(i) {
            self.queue.push_back((j, Input::Depart(d.clone())));
        }
        self.nodes[i].alive = false;
        self.cut(i, "closed by peer: site shutting down");
        self.run();
    }

    /// `i` dies: nothing is sent, its channels stay up until [`Self::idle_out`].
    fn crash(&mut self, i: usize) {
        self.nodes[i].alive = false;
    }

    /// The idle timeout of every channel of `i`.
    fn idle_out(&mut self, i: usize) {
        self.cut(i, "idle timeout: no packets from the peer");
        self.run();
    }

    /// `i` loses its broker connection and reconnects: a new epoch and announcement.
    fn reconnect(&mut self, i: usize) {
        self.nodes[i].epoch += 1;
        self.announce(i);
    }

    fn cut(&mut self, i: usize, reason: &str) {
        for l in 0..self.links.len() {
            let link = self.links[l];
            if link.open && link.ends.iter().any(|(n, _)| *n == i) {
                self.links[l].open = false;
                for (n, ch) in link.ends {
                    if n != i {
                        let site = self.nodes[i].site.clone();
                        self.queue
                            .push_back((n, Input::Down(site, ch, reason.to_string())));
                    }
                }
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        for i in 0..self.nodes.len() {
            if self.nodes[i].alive {
                let now = self.now;
                self.nodes[i].peers.on_timeout(now);
                self.execute(i);
            }
        }
        self.run();
    }

    /// Delivers one input directly (for reordering and replay tests).
    fn deliver(&mut self, to: usize, input: Input) {
        self.queue.push_back((to, input));
        self.run();
    }

    fn run(&mut self) {
        let mut steps = 0;
        while let Some((to, input)) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 10_000, "the simulation does not settle");
            if !self.nodes[to].alive {
                continue;
            }
            self.delivered.push((to, input.clone()));
            let now = self.now;
            let p = &mut self.nodes[to].peers;
            match input {
                Input::Announce(a) => p.on_announce(a, now),
                Input::Depart(d) => p.on_depart(&d, now),
                Input::Query(site, inst) => p.on_query(&site, inst, now),
                Input::Offer(o) => p.on_offer(o),
                Input::Up(up) => p.on_channel_up(up, now),
                Input::Down(site, ch, reason) => p.on_channel_down(&site, ch, &reason, now),
            }
            self.execute(to);
        }
    }

    fn find(&self, instance: InstanceId) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.alive && n.instance == instance)
    }

    fn execute(&mut self, i: usize) {
        let actions = self.nodes[i].peers.take_actions();
        for a in actions {
            self.nodes[i].log.push(a.clone());
            match a {
                Action::AnnounceTo(to) => {
                    if let Some(j) = self.find(to) {
                        let a = self.announce_of(i, false);
                        self.queue.push_back((j, Input::Announce(a)));
                    }
                }
                Action::Query(to) => {
                    if let Some(j) = self.find(to) {
                        let (site, inst) = (self.nodes[i].site.clone(), self.nodes[i].instance);
                        self.queue.push_back((j, Input::Query(site, inst)));
                    }
                }
                Action::Dial {
                    peer,
                    socket,
                    addr: _,
                    punch: _,
                    pin,
                    transport: _,
                } => {
                    self.nodes[i]
                        .dials
                        .insert((peer.site.clone(), socket), (peer.clone(), pin));
                    self.connect(i, &peer, pin);
                }
                Action::StopDial { site, socket } | Action::DrainDial { site, socket } => {
                    self.nodes[i].dials.remove(&(site, socket));
                }
                Action::Confirm { channel, .. } => {
                    self.nodes[i].confirmed.insert(channel);
                }
                Action::Close {
                    channel, reason, ..
                } => {
                    if let Some(l) = self
                        .links
                        .iter()
                        .position(|l| l.open && l.ends.contains(&(i, channel)))
                    {
                        self.links[l].open = false;
                        let ends = self.links[l].ends;
                        for (n, ch) in ends {
                            let peer_site = self.nodes
                                [if n == ends[0].0 { ends[1].0 } else { ends[0].0 }]
                            .site
                            .clone();
                            let why = if n == i {
                                "closed locally".to_string()
                            } else {
                                format!("closed by peer: {}", reason.text())
                            };
                            self.queue.push_back((n, Input::Down(peer_site, ch, why)));
                        }
                    }
                }
                Action::Count(_) | Action::Report(_) => {}
            }
        }
    }

    /// A dial of `i` reaching `peer` (if that process runs and has the pinned certificate).
    fn connect(&mut self, i: usize, peer: &PeerId, pin: Fingerprint) {
        let Some(j) = self.find(peer.instance) else {
            return;
        };
        if self.nodes[j].cert != pin || self.nodes[j].site != peer.site {
            return;
        }
        self.dial_raw(i, j, self.nodes[i].cert);
    }

    /// A channel from `i` to `j` in which `i` presents `cert`; returns (i's id, j's id).
    fn dial_raw(&mut self, i: usize, j: usize, cert: Fingerprint) -> (ChannelId, ChannelId) {
        let (ci, cj) = (
            ChannelId(self.next_channel),
            ChannelId(self.next_channel + 1),
        );
        self.next_channel += 2;
        self.links.push(Link {
            ends: [(i, ci), (j, cj)],
            open: true,
        });
        let id = |n: &Node| PeerId {
            site: n.site.clone(),
            instance: n.instance,
        };
        self.nodes[i].confirmed.insert(ci);
        self.queue.push_back((
            i,
            Input::Up(ChannelUp {
                peer: id(&self.nodes[j]),
                channel: ci,
                direction: Direction::Outbound,
                cert: self.nodes[j].cert,
                transport: Transport::Quic,
            }),
        ));
        self.queue.push_back((
            j,
            Input::Up(ChannelUp {
                peer: id(&self.nodes[i]),
                channel: cj,
                direction: Direction::Inbound,
                cert,
                transport: Transport::Quic,
            }),
        ));
        (ci, cj)
    }

    fn holder(&self, at: usize, site: &str) -> Option<InstanceId> {
        self.nodes[at].peers.holder(&name(site))
    }

    /// Open links between two nodes.
    fn links_between(&self, x: usize, y: usize) -> usize {
        self.links
            .iter()
            .filter(|l| {
                l.open && l.ends.iter().any(|(n, _)| *n == x) && l.ends.iter().any(|(n, _)| *n == y)
            })
            .count()
    }

    fn reports(&self, i: usize) -> Vec<Report> {
        self.nodes[i]
            .log
            .iter()
            .filter_map(|a| match a {
                Action::Report(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    fn conflicts(&self, i: usize) -> Vec<(SiteName, InstanceId, InstanceId)> {
        self.reports(i)
            .into_iter()
            .filter_map(|r| match r {
                Report::Conflict {
                    site,
                    holder,
                    other,
                } => Some((site, holder, other)),
                _ => None,
            })
            .collect()
    }

    fn restarts(&self, i: usize) -> usize {
        self.reports(i)
            .iter()
            .filter(|r| matches!(r, Report::Restarted { .. }))
            .count()
    }

    fn count(&self, i: usize, t: Tally) -> usize {
        self.nodes[i]
            .log
            .iter()
            .filter(|a| **a == Action::Count(t))
            .count()
    }

    fn closes(&self, i: usize) -> Vec<(ChannelId, CloseReason)> {
        self.nodes[i]
            .log
            .iter()
            .filter_map(|a| match a {
                Action::Close {
                    channel, reason, ..
                } => Some((*channel, *reason)),
                _ => None,
            })
            .collect()
    }

    fn view(&self, at: usize, site: &str) -> (InstanceId, usize, Vec<InstanceId>) {
        let v = self.nodes[at]
            .peers
            .views()
            .find(|v| v.site.as_str() == site)
            .unwrap();
        (v.instance, v.channels, v.conflicts)
    }

    fn id(&self, i: usize) -> InstanceId {
        self.nodes[i].instance
    }

    /// `from`'s offer of `apps` with `seq`, delivered to `to`.
    fn offer(&mut self, from: usize, to: usize, seq: u64, apps: &[&str]) {
        let o = Offer {
            site: self.nodes[from].site.clone(),
            instance: self.nodes[from].instance,
            seq,
            apps: apps.iter().map(|a| AppName::new(*a).unwrap()).collect(),
        };
        self.deliver(to, Input::Offer(o));
    }

    /// Whether `at` serves `app` of `site` (would open its listeners).
    fn serves(&self, at: usize, site: &str, app: &str) -> bool {
        self.nodes[at]
            .peers
            .serves(&name(site), &AppName::new(app).unwrap())
    }

    /// The apps `at` was offered by the holder of `site`.
    fn offered(&self, at: usize, site: &str) -> Vec<String> {
        let v = self.nodes[at]
            .peers
            .views()
            .find(|v| v.site.as_str() == site)
            .unwrap();
        v.offered.iter().map(ToString::to_string).collect()
    }
}

/// A and B connected (A dialled B, B dialled A).
fn pair() -> (Sim, usize, usize) {
    let mut s = Sim::new();
    let a = s.add("a", 0xa1);
    let b = s.add("b", 0xb1);
    s.announce(a);
    s.announce(b);
    assert_eq!(s.links_between(a, b), 2, "both dialled");
    (s, a, b)
}

/// Regression for issue 9: a newly seen instance got `first_seen = now`, so
/// the duplicate test never held and a second process with the same site
/// name superseded the first one (closing its channels) at every announce.
#[test]
fn a_second_live_instance_does_not_displace_the_first() {
    let (mut s, a, b) = pair();
    let b2 = s.add("b", 0xb2);
    s.announce(b2);
    assert_eq!(s.holder(a, "b"), Some(s.id(b)));
    assert_eq!(s.links_between(a, b), 2, "B's channels untouched");
    assert_eq!(s.links_between(a, b2), 0, "A neither dials nor keeps B2");
    assert_eq!(s.restarts(a), 0);
    assert_eq!(s.conflicts(a), vec![(name("b"), s.id(b), s.id(b2))]);
    assert!(s.count(a, Tally::ClaimRefused) >= 1);
    assert_eq!(s.view(a, "b").2, vec![s.id(b2)], "shown as a conflict");
    // Both keep announcing for minutes: nothing changes, no second error.
    for _ in 0..6 {
        s.advance(ANNOUNCE_INTERVAL);
        s.announce(b);
        s.announce(b2);
        s.announce(a);
    }
    assert_eq!(s.holder(a, "b"), Some(s.id(b)));
    assert_eq!(s.links_between(a, b), 2);
    assert_eq!(s.links_between(a, b2), 0);
    assert_eq!(s.restarts(a), 0);
    assert_eq!(s.conflicts(a).len(), 1, "one error per (site, other)");
    assert!(
        s.closes(a)
            .iter()
            .all(|(_, r)| *r == CloseReason::Refused(Refusal::Conflict)),
        "only B2's channels were closed: {:?}",
        s.closes(a)
    );
}

#[test]
fn every_site_refuses_the_duplicate_and_both_duplicates_say_so_once() {
    let mut s = Sim::new();
    let a = s.add("a", 0xa1);
    let c = s.add("c", 0xc1);
    let b = s.add("b", 0xb1);
    for i in [a, c, b] {
        s.announce(i);
    }
    let b2 = s.add("b", 0xb2);
    s.announce(b2);
    for _ in 0..3 {
        s.advance(ANNOUNCE_INTERVAL);
        for i in [a, b, b2, c] {
            s.announce(i);
        }
    }
    for x in [a, c] {
        assert_eq!(s.holder(x, "b"), Some(s.id(b)));
        assert_eq!(s.links_between(x, b), 2);
        assert_eq!(s.links_between(x, b2), 0);
        assert_eq!(s.conflicts(x), vec![(name("b"), s.id(b), s.id(b2))]);
    }
    assert_eq!(s.conflicts(b), vec![(name("b"), s.id(b), s.id(b2))]);
    assert_eq!(s.conflicts(b2), vec![(name("b"), s.id(b2), s.id(b))]);
}

#[test]
fn a_graceful_restart_is_taken_over_at_once() {
    let (mut s, a, b) = pair();
    s.stop(b);
    assert_eq!(s.links_between(a, b), 0);
    let b2 = s.add("b", 0xb2);
    s.announce(b2);
    assert_eq!(s.holder(a, "b"), Some(s.id(b2)), "no time passed");
    assert_eq!(s.links_between(a, b2), 2);
    assert!(s.conflicts(a).is_empty());
    assert!(s.reports(a).contains(&Report::Restarted {
        site: name("b"),
        old: s.id(b),
        new: s.id(b2)
    }));
    assert_eq!(s.count(a, Tally::ClaimRefused), 0);
}

#[test]
fn a_restart_announcing_before_the_old_channels_close_is_taken_over_when_they_do() {
    let (mut s, a, b) = pair();
    // The depart arrives, the new process announces, then the close reaches A.
    let d = s.depart_of(b);
    s.deliver(a, Input::Depart(d));
    s.nodes[b].alive = false;
    let b2 = s.add("b", 0xb2);
    s.announce(b2);
    assert_eq!(s.holder(a, "b"), Some(s.id(b)), "channels still up");
    s.cut(b, "closed by peer: site shutting down");
    s.run();
    assert_eq!(s.holder(a, "b"), Some(s.id(b2)));
    assert_eq!(s.links_between(a, b2), 2);
    assert!(s.conflicts(a).is_empty());
}

#[test]
fn a_crashed_instance_is_replaced_as_soon_as_its_channels_time_out() {
    let (mut s, a, b) = pair();
    s.crash(b);
    let b2 = s.add("b", 0xb2);
    s.announce(b2);
    s.advance(PROBE_TIMEOUT);
    assert_eq!(
        s.holder(a, "b"),
        Some(s.id(b)),
        "its channels are not dead yet"
    );
    s.advance(Duration::from_secs(5));
    s.idle_out(b);
    assert_eq!(s.holder(a, "b"), Some(s.id(b2)));
    assert_eq!(s.links_between(a, b2), 2);
    assert!(s.conflicts(a).is_empty(), "a restart is not a conflict");
}

#[test]
fn a_crashed_instance_without_channels_is_replaced_after_an_unanswered_probe() {
    let mut s = Sim::new();
    let a = s.add_with("a", 0xa1, false);
    let b = s.add_with("b", 0xb1, false);
    s.announce(a);
    s.announce(b);
    s.crash(b);
    let b2 = s.add_with("b", 0xb2, false);
    s.announce(b2);
    assert_eq!(s.nodes[a].peers.poll_timeout(), Some(s.now + PROBE_TIMEOUT));
    s.advance(PROBE_TIMEOUT - Duration::from_millis(1));
    assert_eq!(s.holder(a, "b"), Some(s.id(b)));
    s.advance(Duration::from_millis(1));
    assert_eq!(s.holder(a, "b"), Some(s.id(b2)));
    assert!(s.conflicts(a).is_empty());
}

#[test]
fn a_holder_without_channels_that_answers_the_probe_keeps_its_name() {
    let mut s = Sim::new();
    let a = s.add_with("a", 0xa1, false);
    let b = s.add_with("b", 0xb1, false);
    s.announce(a);
    s.announce(b);
    let b2 = s.add_with("b", 0xb2, false);
    s.announce(b2);
    s.advance(PROBE_TIMEOUT * 10);
    assert_eq!(s.holder(a, "b"), Some(s.id(b)));
    assert_eq!(s.conflicts(a).len(), 1);
}

#[test]
fn a_silent_holder_is_replaced_by_a_live_claimant() {
    let mut s = Sim::new();
    let a = s.add_with("a", 0xa1, false);
    let b = s.add_with("b", 0xb1, false);
    s.announce(a);
    s.announce(b);
    let b2 = s.add_with("b", 0xb2, false);
    s.announce(b2);
    assert_eq!(s.conflicts(a).len(), 1);
    // B falls silent (its broker link is gone) while B2 keeps announcing.
    s.crash(b);
    for _ in 0..2 {
        s.advance(ANNOUNCE_INTERVAL);
        s.announce(b2);
    }
    assert_eq!(s.holder(a, "b"), Some(s.id(b2)));
    assert!(s.view(a, "b").2.is_empty());
}

#[test]
fn a_replayed_will_from_an_earlier_connection_is_ignored() {
    let (mut s, a, b) = pair();
    let old_will = s.depart_of(b); // epoch 1
    s.reconnect(b); // epoch 2, announced
    s.deliver(a, Input::Depart(old_will.clone()));
    assert_eq!(s.count(a, Tally::Stale), 1);
    assert!(
        !s.reports(a)
            .iter()
            .any(|r| matches!(r, Report::Departed { .. }))
    );
    // Replayed again, much later, after the channels died: still nothing.
    s.idle_out(b);
    s.advance(Duration::from_secs(20));
    s.deliver(a, Input::Depart(old_will));
    assert_eq!(s.count(a, Tally::Stale), 2);
    assert!(!s.nodes[a].peers.views().next().unwrap().departed);
}

#[test]
fn a_will_overtaken_by_the_reconnect_announcement_is_ignored_and_one_that_arrives_first_is_undone()
{
    let (mut s, a, b) = pair();
    let will = s.depart_of(b);
    // Will first, then the new connection's announcement: back.
    s.deliver(a, Input::Depart(will.clone()));
    assert!(s.nodes[a].peers.views().next().unwrap().departed);
    s.reconnect(b);
    assert!(!s.nodes[a].peers.views().next().unwrap().departed);
    // An announcement of the old connection after a will of the same
    // connection is older than the will: it does not undo it.
    let mut s2 = pair().0;
    let (a2, b2) = (0, 1);
    let old = s2.announce_of(b2, false);
    let will2 = s2.depart_of(b2);
    s2.deliver(a2, Input::Depart(will2));
    s2.deliver(a2, Input::Announce(old));
    assert!(s2.nodes[a2].peers.views().next().unwrap().departed);
}

#[test]
fn a_late_announcement_of_a_departed_instance_cannot_claim_the_name_back() {
    let (mut s, a, b) = pair();
    let late = s.announce_of(b, false);
    s.stop(b);
    let b2 = s.add("b", 0xb2);
    s.announce(b2);
    assert_eq!(s.holder(a, "b"), Some(s.id(b2)));
    s.deliver(a, Input::Announce(late));
    assert_eq!(s.count(a, Tally::Stale), 1);
    assert!(s.conflicts(a).is_empty());
    assert!(s.view(a, "b").2.is_empty());
    // A channel claiming the departed instance is refused outright.
    let up = ChannelUp {
        peer: PeerId {
            site: name("b"),
            instance: s.id(b),
        },
        channel: ChannelId(999),
        direction: Direction::Inbound,
        cert: s.nodes[b].cert,
        transport: Transport::Quic,
    };
    s.deliver(a, Input::Up(up));
    assert!(
        s.closes(a)
            .contains(&(ChannelId(999), CloseReason::Refused(Refusal::Departed)))
    );
}

#[test]
fn an_older_announcement_arriving_late_does_not_replace_a_newer_one() {
    let (mut s, a, b) = pair();
    let old = s.announce_of(b, false);
    s.nodes[b].seq += 1;
    let mut newer = s.announce_of(b, false);
    newer.apps.push(AppName::new("ssh").unwrap());
    s.deliver(a, Input::Announce(newer));
    s.deliver(a, Input::Announce(old));
    let v = s.nodes[a].peers.views().next().unwrap();
    assert_eq!(v.announce.apps.len(), 2, "kept the newer one");
    assert!(
        s.nodes[a]
            .peers
            .serves(&name("b"), &AppName::new("ssh").unwrap())
    );
}

#[test]
fn an_inbound_channel_waits_for_the_matching_announcement() {
    let mut s = Sim::new();
    let a = s.add("a", 0xa1);
    let b = s.add_with("b", 0xb1, false);
    // B dials A before A heard B's announcement (and B does not answer yet).
    let ch = ChannelId(999);
    let up = ChannelUp {
        peer: PeerId {
            site: name("b"),
            instance: s.id(b),
        },
        channel: ch,
        direction: Direction::Inbound,
        cert: s.nodes[b].cert,
        transport: Transport::Quic,
    };
    s.crash(b);
    s.deliver(a, Input::Up(up));
    assert!(!s.nodes[a].confirmed.contains(&ch));
    assert!(
        s.nodes[a].log.contains(&Action::Query(s.id(b))),
        "asked B to announce"
    );
    assert_eq!(s.view_count(a), 0, "a channel alone does not make a peer");
    let ann = s.announce_of(b, false);
    s.deliver(a, Input::Announce(ann));
    assert!(s.nodes[a].confirmed.contains(&ch));
    assert_eq!(s.view(a, "b").1, 1);
    assert!(
        s.reports(a)
            .contains(&Report::Connected { site: name("b") })
    );
}

#[test]
fn an_inbound_channel_with_another_certificate_is_refused_and_counted() {
    let (mut s, a, b) = pair();
    // A key holder claims B's live instance but cannot present B's certificate.
    let (_, ch) = s.dial_raw(b, a, Fingerprint([0xee; 32]));
    s.run();
    assert!(
        s.closes(a)
            .contains(&(ch, CloseReason::Refused(Refusal::CertMismatch)))
    );
    assert!(!s.nodes[a].confirmed.contains(&ch));
    assert_eq!(s.count(a, Tally::ClaimRefused), 1);
    assert_eq!(s.links_between(a, b), 2, "the real channels stay");
}

#[test]
fn an_announcement_changing_a_live_instances_certificate_is_refused() {
    let (mut s, a, b) = pair();
    let mut forged = s.announce_of(b, false);
    forged.cert_sha256 = Fingerprint([0xee; 32]).to_string();
    forged.sockets[0].addr = "198.51.100.1:1".parse().unwrap();
    s.nodes[a].log.clear();
    s.deliver(a, Input::Announce(forged));
    assert_eq!(s.count(a, Tally::ClaimRefused), 1);
    assert!(
        !s.nodes[a]
            .log
            .iter()
            .any(|x| matches!(x, Action::Dial { .. } | Action::StopDial { .. }))
    );
}

#[test]
fn an_unannounced_inbound_channel_is_closed_after_the_deadline() {
    let mut s = Sim::new();
    let a = s.add("a", 0xa1);
    let x = s.add_with("x", 0x99, false);
    let (_, ch) = s.dial_raw(x, a, s.nodes[x].cert);
    s.crash(x); // never announces
    s.run();
    assert_eq!(
        s.nodes[a].peers.poll_timeout(),
        Some(s.now + CLAIM_DEADLINE)
    );
    s.advance(CLAIM_DEADLINE - Duration::from_millis(1));
    assert!(s.closes(a).is_empty());
    s.advance(Duration::from_millis(1));
    assert_eq!(
        s.closes(a),
        vec![(ch, CloseReason::Refused(Refusal::Unannounced))]
    );
    assert_eq!(s.count(a, Tally::ClaimRefused), 1);
}

#[test]
fn a_duplicates_inbound_channel_is_refused_once_the_holder_answers() {
    let (mut s, a, b) = pair();
    let b2 = s.add("b", 0xb2);
    // B2 heard A's periodic announcement and dials A before A heard of B2:
    // the channel waits, A asks B2 to announce, B2's claim is probed, B
    // answers, and the waiting channel is refused.
    let ann = s.announce_of(a, false);
    s.deliver(b2, Input::Announce(ann));
    let refused: Vec<ChannelId> = s
        .closes(a)
        .iter()
        .filter(|(_, r)| *r == CloseReason::Refused(Refusal::Conflict))
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(refused.len(), 1, "{:?}", s.closes(a));
    assert!(!s.nodes[a].confirmed.contains(&refused[0]));
    assert_eq!(s.links_between(a, b2), 0);
    // Later channels of it are refused at once.
    let (_, ch2) = s.dial_raw(b2, a, s.nodes[b2].cert);
    s.run();
    assert!(
        s.closes(a)
            .contains(&(ch2, CloseReason::Refused(Refusal::Conflict)))
    );
    assert!(!s.nodes[a].confirmed.contains(&ch2));
    assert_eq!(s.links_between(a, b), 2);
    assert_eq!(s.holder(a, "b"), Some(s.id(b)));
}

#[test]
fn a_channel_claiming_this_sites_own_name_is_refused() {
    let mut s = Sim::new();
    let a = s.add("a", 0xa1);
    let a2 = s.add("a", 0xa2);
    let (_, ch) = s.dial_raw(a2, a, s.nodes[a2].cert);
    s.run();
    assert!(
        s.closes(a)
            .contains(&(ch, CloseReason::Refused(Refusal::OwnName)))
    );
}

#[test]
fn an_outbound_channel_to_a_replaced_instance_is_closed() {
    let mut s = Sim::new();
    let a = s.add("a", 0xa1);
    let b = s.add("b", 0xb1);
    s.announce(b);
    // A's dial to B comes up only after B was replaced.
    let up = ChannelUp {
        peer: PeerId {
            site: name("b"),
            instance: InstanceId::from_bytes([0x77; 16]),
        },
        channel: ChannelId(999),
        direction: Direction::Outbound,
        cert: Fingerprint([0x77; 32]),
        transport: Transport::Quic,
    };
    s.deliver(a, Input::Up(up));
    assert!(
        s.closes(a)
            .contains(&(ChannelId(999), CloseReason::Superseded))
    );
}

#[test]
fn the_number_of_peers_is_capped_and_the_excess_is_counted_with_one_report_a_minute() {
    let mut s = Sim::new();
    let a = s.add_with("a", 0xa1, false);
    for i in 0..MAX_PEERS + 3 {
        let mut ann = s.announce_of(a, false);
        ann.site = name(&format!("s{i}"));
        ann.instance = InstanceId::from_bytes((i as u128).to_le_bytes());
        s.nodes[a].peers.on_announce(ann, s.now);
    }
    s.execute(a);
    assert_eq!(s.nodes[a].peers.len(), MAX_PEERS);
    assert_eq!(s.count(a, Tally::OverCap), 3);
    let over: Vec<_> = s
        .reports(a)
        .into_iter()
        .filter(|r| matches!(r, Report::OverCap { .. }))
        .collect();
    assert_eq!(over.len(), 1, "rate-limited");
}

#[test]
fn the_number_of_claimants_is_capped() {
    let (mut s, a, b) = pair();
    let _ = b;
    for tag in 0..MAX_CLAIMANTS as u8 + 2 {
        let n = s.add("b", 0x10 + tag);
        s.announce(n);
    }
    assert_eq!(s.view(a, "b").2.len(), MAX_CLAIMANTS);
    assert!(s.count(a, Tally::ClaimRefused) >= MAX_CLAIMANTS + 2);
}

#[test]
fn a_silent_peer_without_channels_is_forgotten_and_its_dials_stop() {
    let mut s = Sim::new();
    let a = s.add("a", 0xa1);
    let b = s.add("b", 0xb1);
    s.announce(b);
    s.crash(b);
    s.idle_out(b);
    assert!(s.nodes[a].dials.len() == 1, "still dialling");
    s.advance(PEER_EXPIRY - Duration::from_secs(1));
    assert_eq!(s.view_count(a), 1);
    s.advance(Duration::from_secs(1));
    assert_eq!(s.view_count(a), 0);
    assert!(s.nodes[a].dials.is_empty());
    assert!(
        s.reports(a)
            .contains(&Report::Forgotten { site: name("b") })
    );
}

#[test]
fn a_departed_peer_keeps_its_live_channels_and_stops_dialling_once_they_are_gone() {
    let (mut s, a, b) = pair();
    let will = s.depart_of(b);
    s.deliver(a, Input::Depart(will)); // a broker hiccup, say
    assert_eq!(s.links_between(a, b), 2);
    assert_eq!(s.nodes[a].dials.len(), 1);
    s.crash(b);
    s.idle_out(b);
    assert!(s.nodes[a].dials.is_empty());
}

impl Sim {
    fn view_count(&self, at: usize) -> usize {
        self.nodes[at].peers.views().count()
    }
}

/// What may happen between A, a live B holding the name, and a duplicate B2.
#[derive(Debug, Clone)]
enum Step {
    AnnounceB,
    AnnounceB2,
    ReconnectB,
    B2Dials,
    B2Stops,
    Replay(usize),
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::AnnounceB),
        Just(Step::AnnounceB2),
        Just(Step::ReconnectB),
        Just(Step::B2Dials),
        Just(Step::B2Stops),
        any::<usize>().prop_map(Step::Replay),
        (0u64..40_000).prop_map(Step::Advance),
    ]
}

proptest! {
    /// Whatever B2 does and whatever the broker replays or reorders, a live B
    /// keeps its name and its channels at A.
    #[test]
    fn a_live_holder_keeps_its_name_and_channels(steps in proptest::collection::vec(step(), 1..40)) {
        let (mut s, a, b) = pair();
        let mut b2: Option<usize> = None;
        let mut tag = 0xc0u8;
        let mut wills = vec![s.depart_of(b)];
        for st in steps {
            match st {
                Step::AnnounceB => s.announce(b),
                Step::AnnounceB2 => {
                    let n = *b2.get_or_insert_with(|| { tag += 1; s.add("b", tag) });
                    s.announce(n);
                }
                Step::ReconnectB => {
                    s.reconnect(b);
                    wills.push(s.depart_of(b));
                }
                Step::B2Dials => if let Some(n) = b2 {
                    s.dial_raw(n, a, s.nodes[n].cert);
                    s.run();
                },
                Step::B2Stops => if let Some(n) = b2.take() {
                    s.stop(n);
                },
                Step::Replay(k) => {
                    // Anything A received before, or one of B's earlier wills.
                    let earlier: Vec<Input> = s.delivered.iter()
                        .filter(|(to, i)| *to == a && matches!(i, Input::Announce(_) | Input::Depart(_) | Input::Query(..)))
                        .map(|(_, i)| i.clone())
                        .chain(wills[..wills.len() - 1].iter().cloned().map(Input::Depart))
                        .collect();
                    if !earlier.is_empty() {
                        let i = earlier[k % earlier.len()].clone();
                        s.deliver(a, i);
                    }
                }
                Step::Advance(ms) => s.advance(Duration::from_millis(ms)),
            }
            prop_assert_eq!(s.holder(a, "b"), Some(s.id(b)));
            prop_assert_eq!(s.links_between(a, b), 2);
            prop_assert_eq!(s.restarts(a), 0);
        }
    }
}

/// An announcement of `site` with one plain and one `hole-punching` socket.
fn announce_with_punch(site: &str, tag: u8) -> Announce {
    Announce {
        site: name(site),
        instance: InstanceId::from_bytes([tag; 16]),
        protocol_version: PROTOCOL_VERSION,
        seq: 1,
        epoch: 1,
        sockets: vec![
            AnnouncedSocket {
                id: 0,
                addr: SocketAddr::from(([192, 0, 2, tag], 29090)),
                punch: None,
                transport: AnnouncedTransport::Quic,
            },
            AnnouncedSocket {
                id: 1,
                addr: SocketAddr::from(([198, 18, 0, tag], 40000)),
                punch: Some(PunchInfo {
                    nat: crate::tunnel::stun::NatMapping::EndpointIndependent,
                    stun: vec!["198.18.0.2:3478".into()],
                    relay: None,
                }),
                transport: AnnouncedTransport::Quic,
            },
        ],
        apps: vec![],
        cert_sha256: Fingerprint([tag; 32]).to_string(),
        reply: false,
    }
}

/// The sockets `me` starts dialling when `peer` announces, and whether each
/// goes through a rendezvous.
fn dialled(me: &str, punchable: bool, peer: Announce) -> Vec<(u32, bool)> {
    let mut p = Peers::new(name(me), InstanceId::from_bytes([0xee; 16]));
    p.set_punchable(punchable);
    p.on_announce(peer, Instant::now());
    p.take_actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Dial { socket, punch, .. } => Some((socket, punch.is_some())),
            _ => None,
        })
        .collect()
}

#[test]
fn tcp_sockets_are_dialled_as_tcp_and_unknown_transports_never() {
    let mut a = announce_with_punch("b", 2);
    a.sockets[0].transport = AnnouncedTransport::Tcp;
    // A TCP socket announced with punch details is nonsense: not dialled.
    a.sockets[1].transport = AnnouncedTransport::Tcp;
    let mut unknown = a.sockets[0].clone();
    unknown.id = 2;
    unknown.addr = SocketAddr::from(([192, 0, 2, 9], 29091));
    unknown.transport = AnnouncedTransport::Unknown;
    a.sockets.push(unknown);
    let mut p = Peers::new(name("a"), InstanceId::from_bytes([0xee; 16]));
    p.on_announce(a, Instant::now());
    let dials: Vec<(u32, AnnouncedTransport)> = p
        .take_actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Dial {
                socket, transport, ..
            } => Some((socket, transport)),
            _ => None,
        })
        .collect();
    assert_eq!(dials, [(0, AnnouncedTransport::Tcp)]);
}

#[test]
fn only_one_of_two_punchable_sites_dials_the_others_punched_socket() {
    // Both have hole-punching sockets: the name sorting first dials.
    assert_eq!(
        dialled("a", true, announce_with_punch("b", 2)),
        [(0, false), (1, true)]
    );
    assert_eq!(
        dialled("c", true, announce_with_punch("b", 2)),
        [(0, false)]
    );
    // A site without one (dial-only, or only public sockets) always dials.
    assert_eq!(
        dialled("c", false, announce_with_punch("b", 2)),
        [(0, false), (1, true)]
    );
}

#[test]
fn a_holder_whose_will_fired_is_dialled_again_once_it_announces_on_its_new_connection() {
    let me = InstanceId::from_bytes([0xee; 16]);
    let mut p = Peers::new(name("a"), me);
    let now = Instant::now();
    let mut b = announce_with_punch("b", 2);
    b.sockets.truncate(1);
    p.on_announce(b.clone(), now);
    let dial = p.take_actions().into_iter().find_map(|a| match a {
        Action::Dial { peer, .. } => Some(peer),
        _ => None,
    });
    let peer = dial.expect("dialled");
    p.on_channel_up(
        ChannelUp {
            peer: peer.clone(),
            channel: ChannelId(1),
            direction: Direction::Outbound,
            cert: Fingerprint([2; 32]),
            transport: Transport::Quic,
        },
        now,
    );
    // The broker lost b's connection: its will (epoch 1) arrives while the channel lives.
    p.on_depart(
        &Depart {
            site: name("b"),
            instance: peer.instance,
            epoch: 1,
        },
        now,
    );
    p.on_channel_down(&name("b"), ChannelId(1), "idle timeout", now);
    p.take_actions();
    // b reconnected (epoch 2) and announces again.
    b.epoch = 2;
    b.seq = 2;
    p.on_announce(b, now + Duration::from_secs(1));
    let actions = p.take_actions();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Dial { socket: 0, .. })),
        "{actions:?}"
    );
}

#[test]
fn a_will_fired_for_a_live_connection_is_undone_by_the_reconnect_announcement() {
    let mut p = Peers::new(name("a"), InstanceId::from_bytes([0xee; 16]));
    let now = Instant::now();
    let mut b = announce_with_punch("b", 2);
    b.sockets.truncate(1);
    b.epoch = 2;
    b.seq = 5;
    p.on_announce(b.clone(), now);
    let holder = b.instance;
    let state = |p: &Peers| p.views().find(|v| v.site == &name("b")).map(|v| v.departed);
    // The broker fires the will of connection 2 although it lives (takeover race).
    p.on_depart(
        &Depart {
            site: name("b"),
            instance: holder,
            epoch: 2,
        },
        now,
    );
    assert_eq!(state(&p), Some(true));
    // Periodic announcements of the same epoch and seq: could predate the will.
    p.on_announce(b.clone(), now);
    assert_eq!(state(&p), Some(true));
    // The announcement b sends on (re)connecting has a higher seq: alive.
    b.seq = 6;
    p.take_actions();
    p.on_announce(b, now);
    assert_eq!(state(&p), Some(false));
    assert!(
        p.take_actions()
            .iter()
            .any(|a| matches!(a, Action::Dial { .. }))
    );
}

/// `forget` (the operator forgot the site's identity) drops the site, its
/// dials and channels at once; the next announcement of the name, from the
/// old instance or a reinstalled one, is learnt as a new site.
#[test]
fn a_forgotten_site_loses_its_channels_and_is_learnt_again_from_its_next_announcement() {
    let (mut s, a, b) = pair();
    s.nodes[a].peers.forget(&name("b"));
    s.execute(a);
    s.run();
    assert_eq!(s.holder(a, "b"), None);
    assert_eq!(s.links_between(a, b), 0, "every channel closed");
    assert!(s.nodes[a].dials.keys().all(|(site, _)| *site != name("b")));
    assert!(
        s.closes(a)
            .iter()
            .any(|(_, r)| *r == CloseReason::Forgotten)
    );
    // B (or a reinstalled B) announces: it is a new site again.
    s.crash(b);
    let b2 = s.add("b", 0xb2);
    s.announce(b2);
    assert_eq!(s.holder(a, "b"), Some(s.id(b2)));
    assert_eq!(
        s.restarts(a),
        0,
        "not a restart: the old instance was forgotten"
    );
    assert!(s.links_between(a, b2) >= 1);
    // Forgetting an unknown name changes nothing.
    s.nodes[a].peers.forget(&name("zz"));
    assert!(s.nodes[a].peers.take_actions().is_empty());
}

#[test]
fn an_offered_app_is_served_like_an_announced_one_while_connected() {
    let mut s = Sim::new();
    let a = s.add_with("a", 0xa1, false);
    let b = s.add("b", 0xb1);
    s.announce(a);
    s.announce(b);
    assert!(s.serves(a, "b", "app"), "announced");
    assert!(!s.serves(a, "b", "x"), "neither announced nor offered");
    s.offer(b, a, 1, &["x"]);
    assert!(s.serves(a, "b", "x"));
    assert_eq!(s.offered(a, "b"), ["x"]);
    assert!(!s.serves(a, "b", "y"));
    // Not while disconnected.
    s.cut(b, "idle timeout");
    s.run();
    assert!(!s.serves(a, "b", "x"));
    assert!(!s.serves(a, "b", "app"));
}

#[test]
fn the_newest_offer_replaces_the_previous_one_and_an_older_one_is_ignored() {
    let (mut s, a, b) = pair();
    s.offer(b, a, 5, &["x", "y"]);
    assert!(s.serves(a, "b", "x") && s.serves(a, "b", "y"));
    s.offer(b, a, 6, &["y"]);
    assert!(!s.serves(a, "b", "x"), "withdrawn by the newer offer");
    assert!(s.serves(a, "b", "y"));
    // A late copy of the first offer changes nothing and is counted.
    s.offer(b, a, 5, &["x", "y"]);
    assert!(!s.serves(a, "b", "x"));
    assert_eq!(s.count(a, Tally::Stale), 1);
    // The same seq again (a repeat) is fine; an empty offer withdraws all.
    s.offer(b, a, 6, &["y"]);
    assert_eq!(s.count(a, Tally::Stale), 1);
    s.offer(b, a, 7, &[]);
    assert!(!s.serves(a, "b", "y"));
    assert!(s.serves(a, "b", "app"), "announced apps stay");
}

#[test]
fn an_offer_from_an_unknown_site_asks_for_its_announcement() {
    let mut s = Sim::new();
    let a = s.add_with("a", 0xa1, false);
    let b = s.add("b", 0xb1);
    // B's offer overtakes its announcement.
    s.offer(b, a, 1, &["x"]);
    assert_eq!(
        s.nodes[a].log.first(),
        Some(&Action::Query(s.id(b))),
        "{:?}",
        s.nodes[a].log
    );
    assert_eq!(s.holder(a, "b"), Some(s.id(b)), "B answered the query");
    assert!(!s.serves(a, "b", "x"), "the early offer was not kept");
    s.offer(b, a, 1, &["x"]);
    s.announce(a);
    assert!(s.serves(a, "b", "x"));
}

#[test]
fn an_offer_from_an_instance_that_does_not_hold_the_name_is_ignored() {
    let (mut s, a, b) = pair();
    // A stranger claiming B's name, never announced.
    let b2 = s.add("b", 0xb2);
    s.nodes[b2].alive = false;
    s.offer(b2, a, 9, &["x"]);
    assert!(!s.serves(a, "b", "x"));
    assert_eq!(s.count(a, Tally::Stale), 1);
    // An offer naming this site's own name is another instance of it.
    s.offer(b, a, 1, &["x"]);
    assert!(s.serves(a, "b", "x"));
    let a2 = s.add("a", 0xa2);
    s.offer(a2, a, 1, &["x"]);
    assert_eq!(s.conflicts(a).len(), 1);
    let _ = b;
}

#[test]
fn a_restart_drops_the_old_instances_offer_and_keeps_the_new_ones() {
    let (mut s, a, b) = pair();
    s.offer(b, a, 3, &["x"]);
    assert!(s.serves(a, "b", "x"));
    // The old process goes; its restart announces and offers before the
    // old channels are down (a claimant meanwhile).
    let d = s.depart_of(b);
    s.deliver(a, Input::Depart(d));
    s.nodes[b].alive = false;
    let b2 = s.add("b", 0xb2);
    s.announce(b2);
    s.offer(b2, a, 1, &["y"]);
    assert!(s.serves(a, "b", "x"), "the old holder still has channels");
    assert!(!s.serves(a, "b", "y"));
    s.cut(b, "closed by peer: site shutting down");
    s.run();
    assert_eq!(s.holder(a, "b"), Some(s.id(b2)));
    assert!(
        !s.serves(a, "b", "x"),
        "the old offer went with its instance"
    );
    assert!(s.serves(a, "b", "y"), "the new holder's offer came along");
    assert_eq!(s.offered(a, "b"), ["y"]);
}

#[test]
fn the_serve_unoffered_test_hook_serves_every_app_of_a_connected_peer() {
    let (mut s, a, b) = pair();
    assert!(!s.serves(a, "b", "never-offered"));
    s.nodes[a].peers.serve_unoffered();
    assert!(s.serves(a, "b", "never-offered"));
    s.cut(b, "idle timeout");
    s.run();
    assert!(
        !s.serves(a, "b", "never-offered"),
        "still only when connected"
    );
}

/// An instance whose messages the trust check refused never gets a channel:
/// one waiting for its announcement is refused at once, later ones too, and
/// `forget` (the operator accepting a new identity) clears that.
#[test]
fn channels_of_an_instance_refused_by_identity_are_refused_at_once() {
    let now = Instant::now();
    let mut p = Peers::new(name("a"), InstanceId::from_bytes([0xa1; 16]));
    let impostor = InstanceId::from_bytes([0xbb; 16]);
    let up = |channel: u64| ChannelUp {
        peer: PeerId {
            site: name("b"),
            instance: impostor,
        },
        channel: ChannelId(channel),
        direction: Direction::Inbound,
        cert: Fingerprint([0xbb; 32]),
        transport: Transport::Quic,
    };
    let closes = |p: &mut Peers| -> Vec<(ChannelId, CloseReason)> {
        p.take_actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Close {
                    channel, reason, ..
                } => Some((channel, reason)),
                _ => None,
            })
            .collect()
    };
    let refused = CloseReason::Refused(Refusal::Identity);
    p.on_channel_up(up(1), now);
    assert!(closes(&mut p).is_empty(), "waits for an announcement");
    p.refuse_instance(&name("b"), impostor, now);
    assert_eq!(closes(&mut p), [(ChannelId(1), refused)]);
    p.on_channel_up(up(2), now + Duration::from_secs(1));
    assert_eq!(closes(&mut p), [(ChannelId(2), refused)]);
    // Not a claim of another site name.
    p.on_channel_up(
        ChannelUp {
            peer: PeerId {
                site: name("c"),
                instance: impostor,
            },
            ..up(3)
        },
        now,
    );
    assert!(closes(&mut p).is_empty());
    // Remembered for TOMBSTONE_TTL after the latest refused message.
    p.on_channel_up(up(4), now + TOMBSTONE_TTL);
    assert!(closes(&mut p).is_empty());
    p.refuse_instance(&name("b"), impostor, now + TOMBSTONE_TTL);
    closes(&mut p);
    p.forget(&name("b"));
    closes(&mut p);
    p.on_channel_up(up(5), now + TOMBSTONE_TTL);
    assert!(closes(&mut p).is_empty(), "forgotten: may be the next pin");
    // Bounded.
    for i in 0..(2 * MAX_REFUSED_INSTANCES) {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(i as u64).to_be_bytes());
        p.refuse_instance(&name("b"), InstanceId::from_bytes(id), now);
    }
    assert!(p.refused.len() <= MAX_REFUSED_INSTANCES);
}

/// TCP fallback: site "a" and a peer "b" announcing a QUIC socket (id 0) and,
/// when `tcp`, a TCP socket (id 1) on the same port. Driven directly, with
/// the clock as input.
mod fallback {
    use super::*;
    use crate::site::fallback::{FAIL_THRESHOLD, GRACE, SETTLE};

    const B: u8 = 0xb1;

    fn b_id() -> PeerId {
        PeerId {
            site: name("b"),
            instance: InstanceId::from_bytes([B; 16]),
        }
    }

    fn announce(quic: bool, tcp: bool) -> Announce {
        let addr = SocketAddr::from(([192, 0, 2, B], 29090));
        let mut sockets = Vec::new();
        if quic {
            sockets.push(AnnouncedSocket {
                id: 0,
                addr,
                punch: None,
                transport: AnnouncedTransport::Quic,
            });
        }
        if tcp {
            sockets.push(AnnouncedSocket {
                id: 1,
                addr,
                punch: None,
                transport: AnnouncedTransport::Tcp,
            });
        }
        Announce {
            site: name("b"),
            instance: b_id().instance,
            protocol_version: PROTOCOL_VERSION,
            seq: 1,
            epoch: 1,
            sockets,
            apps: vec![AppName::new("app").unwrap()],
            cert_sha256: Fingerprint([B; 32]).to_string(),
            reply: false,
        }
    }

    /// What the actions say about dial loops: ("dial"|"stop"|"drain", socket).
    fn dials(p: &mut Peers) -> Vec<(&'static str, u32)> {
        p.take_actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Dial { socket, .. } => Some(("dial", socket)),
                Action::StopDial { socket, .. } => Some(("stop", socket)),
                Action::DrainDial { socket, .. } => Some(("drain", socket)),
                _ => None,
            })
            .collect()
    }

    fn up(p: &mut Peers, channel: u64, transport: Transport, now: Instant) {
        p.on_channel_up(
            ChannelUp {
                peer: b_id(),
                channel: ChannelId(channel),
                direction: Direction::Outbound,
                cert: Fingerprint([B; 32]),
                transport,
            },
            now,
        );
    }

    fn start(quic: bool, tcp: bool) -> (Peers, Instant) {
        let t0 = Instant::now();
        let mut p = Peers::new(name("a"), InstanceId::from_bytes([0xa1; 16]));
        p.on_announce(announce(quic, tcp), t0);
        (p, t0)
    }

    #[test]
    fn quic_that_works_never_dials_tcp() {
        let (mut p, t0) = start(true, true);
        assert_eq!(dials(&mut p), [("dial", 0)], "QUIC first, TCP not yet");
        up(&mut p, 1, Transport::Quic, t0 + Duration::from_millis(20));
        for s in 1..120 {
            p.on_timeout(t0 + Duration::from_secs(s));
        }
        assert_eq!(dials(&mut p), []);
    }

    #[test]
    fn failed_quic_dials_bring_tcp_in_and_settled_quic_drains_it() {
        let (mut p, t0) = start(true, true);
        assert_eq!(dials(&mut p), [("dial", 0)]);
        for n in 1..=FAIL_THRESHOLD {
            p.on_dial_failed(&b_id(), 0, n, t0 + Duration::from_secs(u64::from(n)));
        }
        assert_eq!(
            dials(&mut p),
            [("dial", 1)],
            "TCP dialled after the failures"
        );
        up(&mut p, 1, Transport::Tcp, t0 + Duration::from_secs(3));
        // A TCP dial failure does not count against QUIC, nor stop TCP.
        p.on_dial_failed(&b_id(), 1, 1, t0 + Duration::from_secs(4));
        assert_eq!(dials(&mut p), []);
        // UDP works again: QUIC comes up, TCP stays until QUIC settled.
        let back = t0 + Duration::from_secs(60);
        up(&mut p, 2, Transport::Quic, back);
        assert_eq!(p.poll_timeout(), Some(back + SETTLE));
        p.on_timeout(back + SETTLE - Duration::from_secs(1));
        assert_eq!(dials(&mut p), []);
        p.on_timeout(back + SETTLE);
        assert_eq!(dials(&mut p), [("drain", 1)], "drained, not cut");
        // QUIC lost again: TCP is dialled once the grace has passed.
        let lost = back + SETTLE + Duration::from_secs(10);
        p.on_channel_down(&name("b"), ChannelId(2), "idle", lost);
        p.on_timeout(lost + GRACE - Duration::from_secs(1));
        assert_eq!(dials(&mut p), []);
        assert_eq!(p.poll_timeout(), Some(lost + GRACE));
        p.on_timeout(lost + GRACE);
        assert_eq!(dials(&mut p), [("dial", 1)]);
    }

    #[test]
    fn a_quic_dial_that_hangs_brings_tcp_in_after_the_grace() {
        let (mut p, t0) = start(true, true);
        assert_eq!(dials(&mut p), [("dial", 0)]);
        assert_eq!(p.poll_timeout(), Some(t0 + GRACE));
        p.on_timeout(t0 + GRACE);
        assert_eq!(dials(&mut p), [("dial", 1)]);
    }

    #[test]
    fn a_peer_with_only_a_tcp_socket_is_dialled_over_tcp_at_once() {
        let (mut p, _) = start(false, true);
        assert_eq!(dials(&mut p), [("dial", 1)]);
    }

    /// The site loop sleeps until `poll_timeout`: a deadline that `on_timeout`
    /// leaves at or before `now` makes it spin. It did for a peer announcing
    /// only a TCP socket once the grace had passed (a core at 100 % for as
    /// long as the peer was known).
    #[test]
    fn handled_deadlines_never_stay_due() {
        for (quic, tcp) in [(true, true), (false, true), (true, false)] {
            let (mut p, t0) = start(quic, tcp);
            let mut now = t0;
            for step in 0..400u64 {
                now = t0 + Duration::from_millis(step * 250);
                match step {
                    40 if quic => up(&mut p, 1, Transport::Quic, now),
                    60 if tcp => up(&mut p, 2, Transport::Tcp, now),
                    200 if quic => p.on_channel_down(&name("b"), ChannelId(1), "idle", now),
                    _ => {}
                }
                p.on_timeout(now);
                let _ = p.take_actions();
                if let Some(due) = p.poll_timeout() {
                    assert!(
                        due > now,
                        "quic {quic}, tcp {tcp}: deadline {:?} after start left due at {:?}",
                        due - t0,
                        now - t0
                    );
                }
            }
            assert!(now > t0 + GRACE + SETTLE);
        }
    }

    #[test]
    fn a_peer_without_a_tcp_socket_needs_no_fallback_wakeups() {
        let (mut p, t0) = start(true, false);
        assert_eq!(dials(&mut p), [("dial", 0)]);
        assert_eq!(p.poll_timeout(), None);
        p.on_timeout(t0 + GRACE);
        assert_eq!(dials(&mut p), []);
    }
}
