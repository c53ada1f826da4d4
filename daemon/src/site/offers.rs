//! Which restricted apps (`allowedSites`) this site offered to which peer,
//! and when to offer again: a pure bookkeeping the site actor consults
//! before sending [`Offer`](crate::message::announce::Offer)s.
//!
//! An app with `allowedSites` is left out of the broadcast announcement; the
//! holder instance of each site it lists gets a unicast offer instead (the
//! apps that site may reach). Offers are planned:
//! - to a holder not offered to yet (a new site, or a restart: a new
//!   instance), when it is offered something;
//! - after this site's own unicast announcement to an instance, so the offer
//!   follows the announcement on the same topic and arrives after it;
//! - with every broadcast announcement (periodic: lost offers heal; after a
//!   live app change: at once) to every holder offered something, and an
//!   empty offer to a holder that just lost its last app, sent
//!   [`EMPTY_REPEATS`] times so one lost message does not leave its
//!   listener open (the exposing side refuses its streams anyway).
//!
//! Nothing here sends, reads a clock or locks; the actor passes the holders
//! (from [`super::peers::Peers::holders`]) and the restricted apps and sends
//! what comes back.

use std::collections::{HashMap, HashSet};

use crate::config::{AppName, ExposedApp, SiteName};
use crate::message::announce::InstanceId;

/// How many times an empty offer goes to a holder that lost its last app.
pub const EMPTY_REPEATS: u8 = 2;

/// Why offers are planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// After the peer bookkeeping changed: holders not offered to yet.
    NewHolders,
    /// With a broadcast announcement: every holder that needs one.
    Announced,
    /// After a unicast announcement to this instance.
    AnnouncedTo(InstanceId),
}

/// One offer to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The site offered to.
    pub site: SiteName,
    /// Its holder instance, where the unicast goes.
    pub to: InstanceId,
    /// The apps it may reach (sorted; empty withdraws earlier offers).
    pub apps: Vec<AppName>,
}

/// What was last offered to one site.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    to: InstanceId,
    apps: Vec<AppName>,
    /// Empty offers still to send after it lost its last app.
    empties_left: u8,
}

/// The offers sent so far, per site (only sites holding a name are kept).
#[derive(Debug, Default)]
pub struct Offers {
    sent: HashMap<SiteName, Sent>,
}

/// The restricted apps among `apps` that `site` may reach, sorted by name.
pub fn allowed_for(apps: &[ExposedApp], site: &SiteName) -> Vec<AppName> {
    let mut names: Vec<AppName> = apps
        .iter()
        .filter(|a| a.is_restricted() && a.allows(site))
        .map(|a| a.name.clone())
        .collect();
    names.sort();
    names
}

impl Offers {
    /// The offers to send now, given every site's holder instance and this
    /// site's apps (only the restricted ones matter; asked for only when
    /// some holder is due), and records them as sent.
    pub fn plan<'a>(
        &mut self,
        trigger: Trigger,
        holders: impl IntoIterator<Item = (&'a SiteName, InstanceId)>,
        apps: impl FnOnce() -> Vec<ExposedApp>,
    ) -> Vec<Planned> {
        let holders: Vec<(&SiteName, InstanceId)> = holders.into_iter().collect();
        if trigger == Trigger::NewHolders && !self.sent.is_empty() {
            let names: HashSet<&SiteName> = holders.iter().map(|(s, _)| *s).collect();
            self.sent.retain(|site, _| names.contains(site));
        }
        let due: Vec<(&SiteName, InstanceId)> = holders
            .into_iter()
            .filter(|(site, to)| match trigger {
                Trigger::NewHolders => self.sent.get(*site).is_none_or(|s| s.to != *to),
                Trigger::Announced => true,
                Trigger::AnnouncedTo(i) => i == *to,
            })
            .collect();
        if due.is_empty() {
            // The common case after an event: nothing new, no apps read.
            return Vec::new();
        }
        let apps = apps();
        let mut out: Vec<Planned> = due
            .into_iter()
            .filter_map(|(site, to)| self.decide(site, to, allowed_for(&apps, site)))
            .collect();
        out.sort_by(|a, b| a.site.cmp(&b.site));
        out
    }

    /// Whether to send `offer` to `to` of `site`, recording the answer.
    fn decide(&mut self, site: &SiteName, to: InstanceId, offer: Vec<AppName>) -> Option<Planned> {
        // A new instance of the site was offered nothing yet.
        let prev = self.sent.get(site).filter(|s| s.to == to);
        let (send, empties_left) = match prev {
            _ if !offer.is_empty() => (true, 0),
            Some(p) if !p.apps.is_empty() => (true, EMPTY_REPEATS - 1),
            Some(p) if p.empties_left > 0 => (true, p.empties_left - 1),
            _ => (false, 0),
        };
        self.sent.insert(
            site.clone(),
            Sent {
                to,
                apps: offer.clone(),
                empties_left,
            },
        );
        send.then(|| Planned {
            site: site.clone(),
            to,
            apps: offer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppSocket, ExposedTarget};

    fn site(s: &str) -> SiteName {
        SiteName::new(s).unwrap()
    }

    fn app(name: &str, allowed: &[&str]) -> ExposedApp {
        ExposedApp {
            name: AppName::new(name).unwrap(),
            target: ExposedTarget::Single(AppSocket::Tcp(([127, 0, 0, 1], 1).into())),
            max_connections: None,
            allowed_sites: allowed.iter().map(|s| site(s)).collect(),
            udp_idle_timeout: None,
            bandwidth_limit: None,
            proxy_protocol: None,
        }
    }

    fn inst(tag: u8) -> InstanceId {
        InstanceId::from_bytes([tag; 16])
    }

    /// (site, instance tag, apps) of each planned offer.
    fn plan(
        o: &mut Offers,
        trigger: Trigger,
        holders: &[(&str, u8)],
        apps: &[ExposedApp],
    ) -> Vec<(String, u8, Vec<String>)> {
        let names: Vec<(SiteName, InstanceId)> =
            holders.iter().map(|(s, t)| (site(s), inst(*t))).collect();
        o.plan(trigger, names.iter().map(|(s, i)| (s, *i)), || {
            apps.to_vec()
        })
        .into_iter()
        .map(|p| {
            (
                p.site.to_string(),
                p.to.as_bytes()[0],
                p.apps.iter().map(ToString::to_string).collect(),
            )
        })
        .collect()
    }

    fn offer(s: &str, tag: u8, apps: &[&str]) -> (String, u8, Vec<String>) {
        (
            s.to_owned(),
            tag,
            apps.iter().map(|a| (*a).to_owned()).collect(),
        )
    }

    #[test]
    fn each_site_is_offered_only_the_restricted_apps_that_list_it() {
        let apps = [app("open", &[]), app("x", &["b"]), app("y", &["c", "b"])];
        assert_eq!(
            allowed_for(&apps, &site("b")),
            [AppName::new("x").unwrap(), AppName::new("y").unwrap()]
        );
        assert_eq!(allowed_for(&apps, &site("c")), [AppName::new("y").unwrap()]);
        assert!(allowed_for(&apps, &site("d")).is_empty());
        let mut o = Offers::default();
        assert_eq!(
            plan(
                &mut o,
                Trigger::NewHolders,
                &[("b", 1), ("c", 2), ("d", 3)],
                &apps
            ),
            [offer("b", 1, &["x", "y"]), offer("c", 2, &["y"])],
            "d is offered nothing and not told anything"
        );
    }

    #[test]
    fn a_holder_is_offered_once_when_learnt_and_again_after_a_restart() {
        let apps = [app("x", &["b"])];
        let mut o = Offers::default();
        let first = plan(&mut o, Trigger::NewHolders, &[("b", 1)], &apps);
        assert_eq!(first, [offer("b", 1, &["x"])]);
        assert!(plan(&mut o, Trigger::NewHolders, &[("b", 1)], &apps).is_empty());
        // A new instance of b holds the name.
        assert_eq!(
            plan(&mut o, Trigger::NewHolders, &[("b", 2)], &apps),
            [offer("b", 2, &["x"])]
        );
        // b forgotten, then seen again: offered again.
        assert!(plan(&mut o, Trigger::NewHolders, &[], &apps).is_empty());
        assert_eq!(
            plan(&mut o, Trigger::NewHolders, &[("b", 2)], &apps),
            [offer("b", 2, &["x"])]
        );
    }

    #[test]
    fn every_announcement_repeats_the_offers_so_lost_ones_heal() {
        let apps = [app("x", &["b"])];
        let mut o = Offers::default();
        plan(&mut o, Trigger::NewHolders, &[("b", 1), ("c", 3)], &apps);
        for _ in 0..3 {
            assert_eq!(
                plan(&mut o, Trigger::Announced, &[("b", 1), ("c", 3)], &apps),
                [offer("b", 1, &["x"])]
            );
        }
    }

    #[test]
    fn a_unicast_announcement_is_followed_by_that_instances_offer_only() {
        let apps = [app("x", &["b", "c"])];
        let mut o = Offers::default();
        let holders = [("b", 1), ("c", 3)];
        assert_eq!(
            plan(&mut o, Trigger::AnnouncedTo(inst(3)), &holders, &apps),
            [offer("c", 3, &["x"])]
        );
        assert!(plan(&mut o, Trigger::AnnouncedTo(inst(9)), &holders, &apps).is_empty());
    }

    #[test]
    fn a_site_that_loses_access_gets_an_empty_offer_twice_then_nothing() {
        let mut o = Offers::default();
        let holders = [("b", 1), ("c", 3)];
        let both = [app("x", &["b", "c"])];
        plan(&mut o, Trigger::NewHolders, &holders, &both);
        // Live change: x is now for b only.
        let only_b = [app("x", &["b"])];
        assert_eq!(
            plan(&mut o, Trigger::Announced, &holders, &only_b),
            [offer("b", 1, &["x"]), offer("c", 3, &[])]
        );
        assert_eq!(
            plan(&mut o, Trigger::Announced, &holders, &only_b),
            [offer("b", 1, &["x"]), offer("c", 3, &[])],
            "repeated once"
        );
        for _ in 0..3 {
            assert_eq!(
                plan(&mut o, Trigger::Announced, &holders, &only_b),
                [offer("b", 1, &["x"])]
            );
        }
        // x removed altogether: b gets its empty offers too.
        assert_eq!(
            plan(&mut o, Trigger::Announced, &holders, &[]),
            [offer("b", 1, &[])]
        );
        assert_eq!(
            plan(&mut o, Trigger::Announced, &holders, &[]),
            [offer("b", 1, &[])]
        );
        assert!(plan(&mut o, Trigger::Announced, &holders, &[]).is_empty());
        assert!(plan(&mut o, Trigger::NewHolders, &holders, &[]).is_empty());
    }

    #[test]
    fn a_changed_offer_goes_to_each_allowed_holder_with_the_announcement() {
        let mut o = Offers::default();
        let holders = [("b", 1), ("c", 3)];
        plan(&mut o, Trigger::NewHolders, &holders, &[app("x", &["b"])]);
        // Live change: y added for c (c had nothing before).
        let apps = [app("x", &["b"]), app("y", &["c"])];
        assert_eq!(
            plan(&mut o, Trigger::Announced, &holders, &apps),
            [offer("b", 1, &["x"]), offer("c", 3, &["y"])]
        );
        assert!(plan(&mut o, Trigger::NewHolders, &holders, &apps).is_empty());
    }

    #[test]
    fn without_restricted_apps_nothing_is_ever_sent() {
        let mut o = Offers::default();
        let holders = [("b", 1), ("c", 3)];
        let apps = [app("open", &[])];
        for trigger in [
            Trigger::NewHolders,
            Trigger::Announced,
            Trigger::AnnouncedTo(inst(1)),
        ] {
            assert!(plan(&mut o, trigger, &holders, &apps).is_empty());
        }
    }
}
