//! The control API of a running site, as tests read it: a connected gRPC client (the shared
//! `wovenet_tui::client`) with one call per list, each panicking with the RPC status and the
//! site's logs on failure. Tests assert on what these return (states, counters, listener
//! states), never on log text.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use wovenet_proto::v1;
use wovenet_tui::client::{Client, connect};

use crate::site::Site;

/// A control client for one site.
#[derive(Clone)]
pub struct Api {
    client: Client,
    site: String,
    log: PathBuf,
    stderr: PathBuf,
}

impl Site {
    /// Connects to this site's control socket; panics with its logs if it cannot.
    pub async fn api(&self) -> Api {
        let client = connect(&self.control_socket())
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.diag()));
        Api {
            client,
            site: self.name().to_owned(),
            log: self.log_path(),
            stderr: self.stderr_path(),
        }
    }
}

impl Api {
    /// The raw client, for calls not wrapped here (add/remove apps, watch feeds).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    fn fail(&self, call: &str, status: &tonic::Status) -> ! {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        panic!(
            "{call} on site {} failed: {} {}\n--- log tail:\n{}--- stderr tail:\n{}",
            self.site,
            status.code(),
            status.message(),
            crate::log::tail(&log, 40),
            crate::process::file_tail(&self.stderr, 20)
        )
    }

    /// `GetSite`.
    pub async fn site(&self) -> v1::SiteInfo {
        match self.client().get_site(v1::GetSiteRequest {}).await {
            Ok(r) => r
                .into_inner()
                .site
                .unwrap_or_else(|| panic!("GetSite on {} answered no site", self.site)),
            Err(e) => self.fail("GetSite", &e),
        }
    }

    /// `ListPeers`.
    pub async fn peers(&self) -> Vec<v1::Peer> {
        match self.client().list_peers(v1::ListPeersRequest {}).await {
            Ok(r) => r.into_inner().peers,
            Err(e) => self.fail("ListPeers", &e),
        }
    }

    /// The peer called `name`, if listed.
    pub async fn peer(&self, name: &str) -> Option<v1::Peer> {
        self.peers().await.into_iter().find(|p| p.name == name)
    }

    /// `ListChannels`.
    pub async fn channels(&self) -> Vec<v1::Channel> {
        match self
            .client()
            .list_channels(v1::ListChannelsRequest {})
            .await
        {
            Ok(r) => r.into_inner().channels,
            Err(e) => self.fail("ListChannels", &e),
        }
    }

    /// Ids of the channels to `peer` that are up.
    pub async fn up_channels(&self, peer: &str) -> Vec<u64> {
        self.channels()
            .await
            .into_iter()
            .filter(|c| c.peer == peer && c.state() == v1::ChannelState::Up)
            .map(|c| c.id)
            .collect()
    }

    /// `ListApps`.
    pub async fn apps(&self) -> v1::ListAppsResponse {
        match self.client().list_apps(v1::ListAppsRequest {}).await {
            Ok(r) => r.into_inner(),
            Err(e) => self.fail("ListApps", &e),
        }
    }

    /// The listener state of the remote app `site`/`app` (`None` if not configured).
    pub async fn listener_state(&self, site: &str, app: &str) -> Option<v1::ListenerState> {
        remote_app(&self.apps().await, site, app).map(v1::RemoteApp::listener_state)
    }

    /// `ListStreams`.
    pub async fn streams(&self) -> Vec<v1::Stream> {
        match self.client().list_streams(v1::ListStreamsRequest {}).await {
            Ok(r) => r.into_inner().streams,
            Err(e) => self.fail("ListStreams", &e),
        }
    }

    /// The first `WatchStats` sample: per-app stats, peers, channels, counters.
    pub async fn stats(&self) -> v1::WatchStatsResponse {
        let interval = prost_types::Duration::try_from(Duration::from_millis(100))
            .unwrap_or_else(|e| panic!("interval: {e}"));
        let request = v1::WatchStatsRequest {
            interval: Some(interval),
        };
        let mut feed = match self.client().watch_stats(request).await {
            Ok(r) => r.into_inner(),
            Err(e) => self.fail("WatchStats", &e),
        };
        match feed.message().await {
            Ok(Some(m)) => m,
            Ok(None) => panic!("WatchStats on {} ended without a sample", self.site),
            Err(e) => self.fail("WatchStats", &e),
        }
    }

    /// The site-wide counters (`messages_undecryptable`, `auth_failures`, …), from the first
    /// `WatchStats` sample.
    pub async fn counters(&self) -> HashMap<String, u64> {
        self.stats().await.counters
    }

    /// One counter (0 when absent).
    pub async fn counter(&self, name: &str) -> u64 {
        self.counters().await.get(name).copied().unwrap_or(0)
    }
}

/// The remote app `site`/`app` in a `ListApps` answer.
pub fn remote_app<'a>(
    apps: &'a v1::ListAppsResponse,
    site: &str,
    app: &str,
) -> Option<&'a v1::RemoteApp> {
    apps.remote.iter().find(|r| {
        r.spec
            .as_ref()
            .is_some_and(|s| s.site_name == site && s.app_name == app)
    })
}
