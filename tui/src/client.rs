//! Dialling a daemon's control socket, turning connection failures into messages a person
//! can act on, and typed calls ([`Control`]) that hand back the daemon's status unchanged.
//! No formatting and no retries: callers decide what a failure means for them.

use std::io;
use std::path::{Path, PathBuf};

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Status, Streaming};
use tracing::instrument;
use wovenet_proto::paths;
use wovenet_proto::v1::control_service_client::ControlServiceClient;
use wovenet_proto::v1::{
    AddExposedAppRequest, AddRemoteAppRequest, Channel as DataChannel, ExposedApp, ExposedAppSpec,
    ForgetPeerRequest, GetSiteRequest, ListAppsRequest, ListAppsResponse, ListChannelsRequest,
    ListPeersRequest, ListStreamsRequest, Peer, ReloadReport, ReloadRequest, RemoteApp,
    RemoteAppSpec, RemoveExposedAppRequest, RemoveRemoteAppRequest, SiteInfo, Stream,
    WatchEventsRequest, WatchEventsResponse, WatchStatsRequest, WatchStatsResponse,
};

/// A connected control client.
pub type Client = ControlServiceClient<Channel>;

/// Why no daemon could be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error(
        "no wovenetd is listening on {path}: {reason} (start it with `wovenetd --config FILE`)"
    )]
    NoDaemon {
        /// The socket path.
        path: PathBuf,
        /// The OS reason.
        reason: String,
    },
    /// The socket exists but we may not use it.
    #[error(
        "permission denied on {0}: the control socket is mode 0660; run as its owner or a member of its group"
    )]
    PermissionDenied(PathBuf),
    /// No socket was given and none (or several) were found.
    #[error("{0}")]
    Discovery(String),
    /// Anything else while connecting.
    #[error("cannot connect to {path}: {reason}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Picks the socket: `--socket`, else `--site` in the default directories,
/// else `$WOVENET_CONTROL_SOCKET`, else the only socket in the default
/// directories ([`paths::client_socket_dirs`]: the user's, then `/run/wovenet`
/// where a systemd unit puts it).
pub fn resolve(socket: Option<&Path>, site: Option<&str>) -> Result<PathBuf, ClientError> {
    let env = std::env::var_os(paths::ENV_SOCKET).map(PathBuf::from);
    resolve_in(socket, site, env, &paths::client_socket_dirs())
}

/// [`resolve`] with the environment and the directories given.
fn resolve_in(
    socket: Option<&Path>,
    site: Option<&str>,
    env: Option<PathBuf>,
    dirs: &[PathBuf],
) -> Result<PathBuf, ClientError> {
    if let Some(p) = socket {
        return Ok(p.to_path_buf());
    }
    if let Some(s) = site {
        let file = format!("{s}{}", paths::SOCKET_SUFFIX);
        let candidates = dirs.iter().map(|d| d.join(&file));
        // The first that exists, or that we may not even look at (`/run/wovenet` is 0750:
        // the connection then says "permission denied" rather than "no daemon"); else the
        // first, so the error names it.
        return Ok(candidates
            .clone()
            .find(|p| worth_dialling(&std::fs::symlink_metadata(p)))
            .or_else(|| candidates.clone().next())
            .unwrap_or_else(|| paths::default_socket_path(s)));
    }
    if let Some(p) = env.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(p);
    }
    let mut found: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|dir| {
            std::fs::read_dir(dir)
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.to_string_lossy().ends_with(paths::SOCKET_SUFFIX))
                        .collect()
                })
                .unwrap_or_else(|_| Vec::new())
        })
        .collect();
    found.sort();
    match found.len() {
        0 => Err(ClientError::Discovery(format!(
            "no wovenetd control socket in {} (start one with `wovenetd --config FILE`, or pass --socket PATH)",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ))),
        1 => Ok(found.remove(0)),
        _ => {
            let names: Vec<String> = found
                .iter()
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect();
            Err(ClientError::Discovery(format!(
                "several sites run here ({}); choose one with --site NAME or --socket PATH",
                names.join(", ")
            )))
        }
    }
}

/// Whether a candidate socket path is worth dialling, given what `lstat` said: it exists,
/// or its directory may not be searched by us (then dialling says "permission denied").
fn worth_dialling(lstat: &io::Result<std::fs::Metadata>) -> bool {
    match lstat {
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::PermissionDenied,
    }
}

/// Connects to the daemon on `path` (eagerly, so errors surface here).
pub async fn connect(path: &Path) -> Result<Client, ClientError> {
    // Probe first: tonic's errors hide the OS reason behind "transport error".
    if let Err(e) = UnixStream::connect(path).await {
        return Err(match e.kind() {
            io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(path.to_path_buf()),
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NoDaemon {
                path: path.to_path_buf(),
                reason: e.to_string(),
            },
            _ => ClientError::Connect {
                path: path.to_path_buf(),
                reason: e.to_string(),
            },
        });
    }
    let target = path.to_path_buf();
    // The URI is required by tonic but unused: the connector ignores it.
    let channel = Endpoint::from_static("http://wovenetd.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let target = target.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(target).await?)) }
        }))
        .await
        .map_err(|e| ClientError::Connect {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(ControlServiceClient::new(channel))
}

/// Typed calls on a connected daemon. Failures are the daemon's [`Status`], message
/// unchanged (config-style validation messages must reach the user as written).
#[derive(Debug, Clone)]
pub struct Control {
    client: Client,
}

/// A response field the daemon must always set; absent only from a broken daemon.
fn required<T>(field: Option<T>, what: &str) -> Result<T, Status> {
    field.ok_or_else(|| Status::internal(format!("the daemon's reply has no {what}")))
}

impl Control {
    /// Connects to the daemon on `path` (see [`connect`]).
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        connect(path).await.map(Self::new)
    }

    /// Wraps an already connected client.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// `GetSite`.
    #[instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn site(&mut self) -> Result<SiteInfo, Status> {
        let r = self.client.get_site(GetSiteRequest {}).await?.into_inner();
        required(r.site, "site")
    }

    /// `ListPeers`, sorted by name.
    #[instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn peers(&mut self) -> Result<Vec<Peer>, Status> {
        Ok(self
            .client
            .list_peers(ListPeersRequest {})
            .await?
            .into_inner()
            .peers)
    }

    /// `ListChannels`, sorted by peer, then id.
    #[instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn channels(&mut self) -> Result<Vec<DataChannel>, Status> {
        Ok(self
            .client
            .list_channels(ListChannelsRequest {})
            .await?
            .into_inner()
            .channels)
    }

    /// `ListStreams`, oldest first.
    #[instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn streams(&mut self) -> Result<Vec<Stream>, Status> {
        Ok(self
            .client
            .list_streams(ListStreamsRequest {})
            .await?
            .into_inner()
            .streams)
    }

    /// `ListApps`: exposed and remote apps.
    #[instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn apps(&mut self) -> Result<ListAppsResponse, Status> {
        Ok(self
            .client
            .list_apps(ListAppsRequest {})
            .await?
            .into_inner())
    }

    /// `AddExposedApp`: the app as added.
    #[instrument(level = "debug", skip(self), fields(app.name = %app.name), err(level = "debug"))]
    pub async fn add_exposed_app(&mut self, app: ExposedAppSpec) -> Result<ExposedApp, Status> {
        let r = self
            .client
            .add_exposed_app(AddExposedAppRequest { app: Some(app) })
            .await?
            .into_inner();
        required(r.app, "app")
    }

    /// `RemoveExposedApp`: the app removed.
    #[instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn remove_exposed_app(&mut self, name: &str) -> Result<ExposedApp, Status> {
        let r = self
            .client
            .remove_exposed_app(RemoveExposedAppRequest {
                name: name.to_owned(),
            })
            .await?
            .into_inner();
        required(r.app, "app")
    }

    /// `AddRemoteApp`: the app as added, with its listener state.
    #[instrument(
        level = "debug",
        skip(self),
        fields(peer.site = %app.site_name, app.name = %app.app_name),
        err(level = "debug")
    )]
    pub async fn add_remote_app(&mut self, app: RemoteAppSpec) -> Result<RemoteApp, Status> {
        let r = self
            .client
            .add_remote_app(AddRemoteAppRequest { app: Some(app) })
            .await?
            .into_inner();
        required(r.app, "app")
    }

    /// `RemoveRemoteApp`: every remote app of `site`/`app`, or only the one on `local`.
    #[instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn remove_remote_app(
        &mut self,
        site: &str,
        app: &str,
        local: Option<&str>,
    ) -> Result<Vec<RemoteApp>, Status> {
        Ok(self
            .client
            .remove_remote_app(RemoveRemoteAppRequest {
                site_name: site.to_owned(),
                app_name: app.to_owned(),
                local_socket: local.unwrap_or_default().to_owned(),
            })
            .await?
            .into_inner()
            .removed)
    }

    /// `ForgetPeer`: the identity that was pinned for `site`.
    #[instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn forget_peer(&mut self, site: &str) -> Result<String, Status> {
        Ok(self
            .client
            .forget_peer(ForgetPeerRequest {
                site_name: site.to_owned(),
            })
            .await?
            .into_inner()
            .identity)
    }

    /// `Reload`: what re-reading the daemon's config file did (an invalid file is a report
    /// with outcome INVALID, not an error).
    #[instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn reload(&mut self) -> Result<ReloadReport, Status> {
        let r = self.client.reload(ReloadRequest {}).await?.into_inner();
        required(r.report, "report")
    }

    /// `WatchEvents`: a snapshot, then events.
    #[instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn watch_events(&mut self) -> Result<Streaming<WatchEventsResponse>, Status> {
        Ok(self
            .client
            .watch_events(WatchEventsRequest {})
            .await?
            .into_inner())
    }

    /// `WatchStats`: a sample every `interval` (the daemon's default when `None`).
    #[instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn watch_stats(
        &mut self,
        interval: Option<Duration>,
    ) -> Result<Streaming<WatchStatsResponse>, Status> {
        let interval = interval
            .map(prost_types::Duration::try_from)
            .transpose()
            .map_err(|e| Status::invalid_argument(format!("interval: {e}")))?;
        Ok(self
            .client
            .watch_stats(WatchStatsRequest { interval })
            .await?
            .into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) -> PathBuf {
        std::fs::write(p, b"").expect("write");
        p.to_path_buf()
    }

    #[test]
    fn flag_wins_then_site_then_env() {
        let (user, system) = (PathBuf::from("/u"), PathBuf::from("/s"));
        let dirs = [user.clone(), system];
        let env = Some(PathBuf::from("/e.sock"));
        let flag = Path::new("/f.sock");
        assert_eq!(
            resolve_in(Some(flag), Some("x"), env.clone(), &dirs).unwrap(),
            flag
        );
        assert_eq!(
            resolve_in(None, Some("x"), env.clone(), &dirs).unwrap(),
            user.join("x.sock"),
            "a missing site socket is named in the user's directory"
        );
        assert_eq!(
            resolve_in(None, None, env, &dirs).unwrap(),
            Path::new("/e.sock")
        );
    }

    /// A daemon run by systemd as user `wovenet` puts its socket in /run/wovenet; before,
    /// clients only looked in the user's own directory and never found it.
    #[test]
    fn a_system_service_socket_is_found_by_site_and_by_discovery() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (user, system) = (tmp.path().join("user"), tmp.path().join("system"));
        std::fs::create_dir(&user).expect("mkdir");
        std::fs::create_dir(&system).expect("mkdir");
        let dirs = [user.clone(), system.clone()];
        let office = touch(&system.join("office.sock"));
        assert_eq!(
            resolve_in(None, Some("office"), None, &dirs).unwrap(),
            office
        );
        assert_eq!(resolve_in(None, None, None, &dirs).unwrap(), office);
        // The user's own socket of the same name comes first.
        let mine = touch(&user.join("office.sock"));
        assert_eq!(resolve_in(None, Some("office"), None, &dirs).unwrap(), mine);
        let err = resolve_in(None, None, None, &dirs).unwrap_err().to_string();
        assert!(
            err.contains("several sites run here (office, office)"),
            "{err}"
        );
    }

    /// `/run/wovenet` is 0750 wovenet:wovenet under systemd: someone outside the group was
    /// told "no wovenetd is listening" on a path in their own directory instead of
    /// "permission denied" on the real socket.
    #[test]
    fn a_socket_we_may_not_look_at_is_worth_dialling_a_missing_one_is_not() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(worth_dialling(&std::fs::symlink_metadata(tmp.path())));
        assert!(!worth_dialling(&std::fs::symlink_metadata(
            tmp.path().join("missing.sock")
        )));
        assert!(worth_dialling(&Err(io::ErrorKind::PermissionDenied.into())));
        assert!(!worth_dialling(&Err(io::ErrorKind::NotFound.into())));
    }

    #[test]
    fn no_socket_names_every_directory_searched() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = [tmp.path().join("a"), tmp.path().join("b")];
        let err = resolve_in(None, None, None, &dirs).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "no wovenetd control socket in {} or {} (",
                dirs[0].display(),
                dirs[1].display()
            )),
            "{err}"
        );
    }
}
