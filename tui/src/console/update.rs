//! `State::update`: applies one [`Action`] to the model and view, sets the dirty flag and
//! returns an [`Effect`] for the loop to run (RPCs, quitting). Pure: no I/O, no clock
//! reads beyond the `now` it is given.

use std::time::SystemTime;

use wovenet_proto::v1 as pb;

use super::action::{Action, Feed};
use super::form::{Form, Request};
use super::model::{Link, Model, refused};
use super::view::{Confirm, StreamSort, Tab, ViewState};

/// Something only the loop can do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Run this RPC in a spawned task; its result comes back as [`Action::RpcDone`].
    Rpc(Request),
    /// Leave the console.
    Quit,
}

/// The console's whole state.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// The daemon mirror.
    pub model: Model,
    /// The operator's place.
    pub view: ViewState,
    /// Needs a redraw.
    pub dirty: bool,
}

/// Streams as shown: filtered by `view.filter`, ordered by `view.sort`.
pub fn visible_streams<'a>(model: &'a Model, view: &ViewState) -> Vec<&'a pb::Stream> {
    let f = view.filter.to_lowercase();
    let mut v: Vec<&pb::Stream> = model
        .streams
        .iter()
        .filter(|s| {
            f.is_empty()
                || s.app.to_lowercase().contains(&f)
                || s.peer.to_lowercase().contains(&f)
                || s.client_addr.to_lowercase().contains(&f)
        })
        .collect();
    match view.sort {
        StreamSort::Age => {}
        StreamSort::Bytes => {
            v.sort_by_key(|s| std::cmp::Reverse(s.bytes_sent + s.bytes_received));
        }
        StreamSort::App => v.sort_by(|a, b| a.app.cmp(&b.app)),
        StreamSort::Peer => v.sort_by(|a, b| a.peer.cmp(&b.peer)),
    }
    v
}

/// Number of rows in `tab`.
pub fn rows(model: &Model, view: &ViewState, tab: Tab) -> usize {
    match tab {
        Tab::Sites => model.peers.len(),
        Tab::Tunnels => model.channels.len(),
        Tab::Streams => visible_streams(model, view).len(),
        Tab::Apps => model.exposed.len() + model.remote.len(),
        Tab::Events => model.events.len(),
    }
}

impl State {
    /// Applies `action`; `now` dates a disconnect's next retry.
    pub fn update(&mut self, action: Action, now: SystemTime) -> Option<Effect> {
        self.dirty = true;
        let tab = self.view.tab.index();
        match action {
            Action::Quit => return Some(Effect::Quit),
            Action::Tick | Action::Redraw => {}
            Action::Help => self.view.help = !self.view.help,
            Action::SwitchTab(t) => {
                self.view.tab = t;
                self.view.detail = false;
            }
            Action::NextTab => {
                self.view.tab = Tab::ALL[(tab + 1) % Tab::ALL.len()];
                self.view.detail = false;
            }
            Action::PrevTab => {
                self.view.tab = Tab::ALL[(tab + Tab::ALL.len() - 1) % Tab::ALL.len()];
                self.view.detail = false;
            }
            Action::Down => self.view.selected[tab] = self.view.selected[tab].saturating_add(1),
            Action::Up => self.view.selected[tab] = self.view.selected[tab].saturating_sub(1),
            Action::Top => self.view.selected[tab] = 0,
            Action::Bottom => self.view.selected[tab] = usize::MAX,
            Action::Enter => {
                if let Some(form) = &mut self.view.form {
                    if !form.submitting {
                        match form.request() {
                            Ok(request) => {
                                form.submitting = true;
                                form.error = None;
                                return Some(Effect::Rpc(request));
                            }
                            Err(why) => form.error = Some(why),
                        }
                    }
                } else {
                    self.view.detail = !self.view.detail;
                }
            }
            Action::Back => {
                if self.view.form.is_some() {
                    self.view.form = None;
                } else if self.view.filtering {
                    self.view.filtering = false;
                } else if self.view.help {
                    self.view.help = false;
                } else if self.view.detail {
                    self.view.detail = false;
                } else {
                    self.view.filter.clear();
                }
            }
            Action::Filter => {
                self.view.tab = Tab::Streams;
                self.view.filtering = true;
            }
            Action::CycleSort => self.view.sort = self.view.sort.next(),
            Action::Char(c) => {
                if let Some(f) = &mut self.view.form {
                    f.input(c);
                } else if self.view.filtering {
                    self.view.filter.push(c);
                }
            }
            Action::Backspace => {
                if let Some(f) = &mut self.view.form {
                    f.backspace();
                } else if self.view.filtering {
                    self.view.filter.pop();
                }
            }
            Action::NextField => self.view.form.iter_mut().for_each(Form::next),
            Action::PrevField => self.view.form.iter_mut().for_each(Form::prev),
            Action::OpenAddApp => {
                self.view.tab = Tab::Apps;
                self.view.form = Some(Form::default());
            }
            Action::RemoveSelected => self.view.confirm = self.selected_app(),
            Action::ForgetSelected => self.view.confirm = self.selected_peer(),
            Action::Confirm(yes) => {
                let c = self.view.confirm.take();
                if let (true, Some(c)) = (yes, c) {
                    return Some(Effect::Rpc(match c {
                        Confirm::RemoveExposed(name) => Request::RemoveExposed(name),
                        Confirm::RemoveRemote { site, app, local } => {
                            Request::RemoveRemote { site, app, local }
                        }
                        Confirm::ForgetPeer { site, .. } => Request::ForgetPeer(site),
                    }));
                }
            }
            Action::RpcDone(req, result) => self.rpc_done(&req, result),
            Action::Feed(f) => self.feed(f, now),
        }
        self.clamp();
        None
    }

    fn rpc_done(&mut self, req: &Request, result: Result<String, String>) {
        match (req.is_add(), result) {
            (true, Err(e)) => {
                if let Some(f) = &mut self.view.form {
                    f.submitting = false;
                    f.error = Some(e);
                } else {
                    self.view.status = Some(format!("error: {e}"));
                }
            }
            (true, Ok(msg)) => {
                self.view.form = None;
                self.view.status = Some(msg);
            }
            (false, Ok(msg)) => self.view.status = Some(msg),
            (false, Err(e)) => self.view.status = Some(format!("error: {e}")),
        }
    }

    fn feed(&mut self, f: Feed, now: SystemTime) {
        match f {
            Feed::Snapshot(s) => self.model.apply_snapshot(*s),
            Feed::Event(e) => self.model.apply_event(*e),
            Feed::Stats(s) => self.model.apply_stats(*s),
            Feed::Site(s) => self.model.site = Some(*s),
            Feed::Peers(p) => self.model.apply_peers(p),
            Feed::Lost { reason, retry_in } => {
                self.model.link = Link::Disconnected {
                    reason,
                    retry_at: now + retry_in,
                };
                // A form in flight will never hear back from this connection.
                if let Some(f) = &mut self.view.form {
                    f.submitting = false;
                }
            }
        }
    }

    /// The app under the cursor on the Apps tab, as a removal to confirm.
    fn selected_app(&self) -> Option<Confirm> {
        if self.view.tab != Tab::Apps {
            return None;
        }
        let i = self.view.selected[Tab::Apps.index()];
        let n = self.model.exposed.len();
        if i < n {
            let name = self.model.exposed[i].spec.as_ref()?.name.clone();
            return Some(Confirm::RemoveExposed(name));
        }
        let s = self.model.remote.get(i - n)?.spec.as_ref()?;
        Some(Confirm::RemoveRemote {
            site: s.site_name.clone(),
            app: s.app_name.clone(),
            local: s.local_socket.clone(),
        })
    }

    /// The peer under the cursor on the Sites tab, as a forget to confirm: the name, the
    /// identity pinned for it and, on a refused identity's row, that identity (the one a
    /// reinstalled site now presents). Whether the name can be forgotten is the daemon's
    /// call (trust.sites, open mode): its answer is shown.
    fn selected_peer(&self) -> Option<Confirm> {
        if self.view.tab != Tab::Sites {
            return None;
        }
        let p = self.model.peers.get(self.view.selection())?;
        let (pinned, presented) = if refused(p) {
            (p.pinned_identity.clone(), p.identity.clone())
        } else {
            let is_pinned = matches!(
                pb::TrustState::try_from(p.trust),
                Ok(pb::TrustState::Pinned | pb::TrustState::New)
            );
            let claimant = self
                .model
                .peers
                .iter()
                .find(|r| r.name == p.name && refused(r))
                .map(|r| r.identity.clone())
                .unwrap_or_default();
            let pinned = if is_pinned {
                p.identity.clone()
            } else {
                String::new()
            };
            (pinned, claimant)
        };
        Some(Confirm::ForgetPeer {
            site: p.name.clone(),
            pinned,
            refused: presented,
        })
    }

    /// Keeps every tab's selection inside its rows (rows come and go with events).
    fn clamp(&mut self) {
        for t in Tab::ALL {
            let n = rows(&self.model, &self.view, t);
            let s = &mut self.view.selected[t.index()];
            *s = (*s).min(n.saturating_sub(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposed(name: &str) -> pb::ExposedApp {
        pb::ExposedApp {
            spec: Some(pb::ExposedAppSpec {
                name: name.into(),
                ..Default::default()
            }),
            live: true,
        }
    }

    #[test]
    fn losing_the_daemon_keeps_the_tab_and_selection() {
        let mut s = State::default();
        let snap = pb::Snapshot {
            exposed: vec![exposed("a"), exposed("b")],
            ..Default::default()
        };
        s.update(
            Action::Feed(Feed::Snapshot(Box::new(snap.clone()))),
            SystemTime::now(),
        );
        s.update(Action::SwitchTab(Tab::Apps), SystemTime::now());
        s.update(Action::Down, SystemTime::now());
        s.update(
            Action::Feed(Feed::Lost {
                reason: "gone".into(),
                retry_in: std::time::Duration::from_secs(1),
            }),
            SystemTime::now(),
        );
        assert!(matches!(s.model.link, Link::Disconnected { .. }));
        s.update(
            Action::Feed(Feed::Snapshot(Box::new(snap))),
            SystemTime::now(),
        );
        assert_eq!(s.view.tab, Tab::Apps);
        assert_eq!(s.view.selection(), 1);
        assert_eq!(s.model.link, Link::Connected);
    }

    #[test]
    fn removing_asks_first_and_only_yes_sends_the_rpc() {
        let mut s = State::default();
        s.model.exposed = vec![exposed("web")];
        s.update(Action::SwitchTab(Tab::Apps), SystemTime::now());
        assert_eq!(s.update(Action::RemoveSelected, SystemTime::now()), None);
        assert_eq!(s.view.confirm, Some(Confirm::RemoveExposed("web".into())));
        assert_eq!(s.update(Action::Confirm(false), SystemTime::now()), None);
        s.update(Action::RemoveSelected, SystemTime::now());
        assert_eq!(
            s.update(Action::Confirm(true), SystemTime::now()),
            Some(Effect::Rpc(Request::RemoveExposed("web".into())))
        );
    }

    /// beta (pinned), an identity refused for beta, delta (not allowed in strict mode).
    fn trust_peers() -> Vec<pb::Peer> {
        vec![
            pb::Peer {
                name: "beta".into(),
                state: pb::PeerState::Connected as i32,
                identity: "hfqku7jmljxqcy44vv6js2nuzo7hxo4u".into(),
                trust: pb::TrustState::Pinned.into(),
                ..Default::default()
            },
            pb::Peer {
                name: "beta".into(),
                state: pb::PeerState::Refused as i32,
                identity: "x7rq2mfk4dzl3pwn6yb5tcehv2sjoa7i".into(),
                trust: pb::TrustState::Conflict.into(),
                pinned_identity: "hfqku7jmljxqcy44vv6js2nuzo7hxo4u".into(),
                ..Default::default()
            },
            pb::Peer {
                name: "delta".into(),
                state: pb::PeerState::Refused as i32,
                identity: "mz4kq7v2nx6wfb3jle5rht2ocu7ypsia".into(),
                trust: pb::TrustState::NotAllowed.into(),
                ..Default::default()
            },
        ]
    }

    #[test]
    fn forgetting_asks_first_naming_both_identities_and_only_yes_sends_the_rpc() {
        let mut s = State::default();
        let now = SystemTime::now();
        s.update(Action::Feed(Feed::Peers(trust_peers())), now);
        assert_eq!(s.model.peers.len(), 3);
        // The refused identity's row: the name's pin, and the identity that wants it.
        s.update(Action::Down, now);
        assert_eq!(s.update(Action::ForgetSelected, now), None);
        let asked = Confirm::ForgetPeer {
            site: "beta".into(),
            pinned: "hfqku7jmljxqcy44vv6js2nuzo7hxo4u".into(),
            refused: "x7rq2mfk4dzl3pwn6yb5tcehv2sjoa7i".into(),
        };
        assert_eq!(s.view.confirm, Some(asked.clone()));
        assert_eq!(s.update(Action::Confirm(false), now), None);
        assert_eq!(s.view.confirm, None);
        // The accepted row asks the same about the same name.
        s.update(Action::Up, now);
        s.update(Action::ForgetSelected, now);
        assert_eq!(s.view.confirm, Some(asked));
        let effect = s.update(Action::Confirm(true), now);
        assert_eq!(
            effect,
            Some(Effect::Rpc(Request::ForgetPeer("beta".into())))
        );
        s.update(
            Action::RpcDone(
                Request::ForgetPeer("beta".into()),
                Ok("forgot beta: the next identity that announces beta is pinned".into()),
            ),
            now,
        );
        assert_eq!(
            s.view.status.as_deref(),
            Some("forgot beta: the next identity that announces beta is pinned")
        );
        // The daemon decides what can be forgotten; its refusal is shown as it says it.
        s.update(Action::Bottom, now);
        s.update(Action::ForgetSelected, now);
        assert!(matches!(
            &s.view.confirm,
            Some(Confirm::ForgetPeer { site, pinned, refused })
                if site == "delta" && pinned.is_empty() && refused == "mz4kq7v2nx6wfb3jle5rht2ocu7ypsia"
        ));
        let Some(Effect::Rpc(req)) = s.update(Action::Confirm(true), now) else {
            panic!("yes must send the forget");
        };
        s.update(
            Action::RpcDone(req, Err("no identity is pinned for site 'delta'".into())),
            now,
        );
        assert_eq!(
            s.view.status.as_deref(),
            Some("error: no identity is pinned for site 'delta'")
        );
    }

    #[test]
    fn forget_works_on_the_sites_tab_only() {
        let mut s = State::default();
        let now = SystemTime::now();
        s.update(Action::Feed(Feed::Peers(trust_peers())), now);
        s.update(Action::SwitchTab(Tab::Apps), now);
        assert_eq!(s.update(Action::ForgetSelected, now), None);
        assert_eq!(s.view.confirm, None);
        s.update(Action::SwitchTab(Tab::Sites), now);
        s.model.peers.clear();
        s.update(Action::ForgetSelected, now);
        assert_eq!(s.view.confirm, None);
    }

    /// Regression: trust and refused identities only came with the snapshot, so a site
    /// discovered later never showed its identity, and a refusal never showed at all.
    #[test]
    fn a_peers_refresh_brings_trust_and_refused_identities_and_keeps_the_selection_inside() {
        let mut s = State::default();
        let now = SystemTime::now();
        s.update(
            Action::Feed(Feed::Event(Box::new(pb::Event {
                kind: Some(pb::event::Kind::PeerDiscovered(pb::PeerEvent {
                    site: "beta".into(),
                    reason: String::new(),
                })),
                ..Default::default()
            }))),
            now,
        );
        assert_eq!(s.model.peers[0].trust, 0);
        s.update(Action::Feed(Feed::Peers(trust_peers())), now);
        assert_eq!(s.model.peers[0].trust, pb::TrustState::Pinned as i32);
        assert_eq!(s.model.peers[1].state, pb::PeerState::Refused as i32);
        s.update(Action::Bottom, now);
        assert_eq!(s.view.selection(), 2);
        s.update(Action::Feed(Feed::Peers(trust_peers()[..1].to_vec())), now);
        assert_eq!(s.view.selection(), 0);
    }

    #[test]
    fn a_failed_add_keeps_the_form_open_with_the_daemons_message() {
        let mut s = State::default();
        s.update(Action::OpenAddApp, SystemTime::now());
        let eff = s.update(Action::Enter, SystemTime::now());
        let Some(Effect::Rpc(req)) = eff else {
            panic!("enter in the form must submit");
        };
        s.update(
            Action::RpcDone(req.clone(), Err("name: must not be empty".into())),
            SystemTime::now(),
        );
        let f = s.view.form.as_ref().expect("form stays open");
        assert_eq!(f.error.as_deref(), Some("name: must not be empty"));
        assert!(!f.submitting);
        s.update(Action::RpcDone(req, Ok("added".into())), SystemTime::now());
        assert!(s.view.form.is_none());
    }

    #[test]
    fn streams_filter_matches_app_peer_or_client() {
        let mut s = State::default();
        for (id, app) in [(1, "web"), (2, "db"), (3, "webdav")] {
            s.model.streams.push(pb::Stream {
                id,
                app: app.into(),
                ..Default::default()
            });
        }
        s.update(Action::Filter, SystemTime::now());
        for c in "web".chars() {
            s.update(Action::Char(c), SystemTime::now());
        }
        let ids: Vec<u64> = visible_streams(&s.model, &s.view)
            .iter()
            .map(|x| x.id)
            .collect();
        assert_eq!(ids, vec![1, 3]);
    }
}
