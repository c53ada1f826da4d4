//! Dialling a daemon's control socket and turning connection failures into
//! messages a person can act on.

use std::io;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use wovenet_proto::paths;
use wovenet_proto::v1::control_service_client::ControlServiceClient;

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

/// Picks the socket: `--socket`, else `--site` in the default directory,
/// else `$WOVENET_CONTROL_SOCKET`, else the only socket in the default directory.
pub fn resolve(socket: Option<&Path>, site: Option<&str>) -> Result<PathBuf, ClientError> {
    if let Some(p) = socket {
        return Ok(p.to_path_buf());
    }
    if let Some(s) = site {
        return Ok(paths::default_socket_path(s));
    }
    if let Some(p) = std::env::var_os(paths::ENV_SOCKET).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let dir = paths::default_socket_dir();
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(paths::SOCKET_SUFFIX))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    match found.len() {
        0 => Err(ClientError::Discovery(format!(
            "no wovenetd control socket in {} (start one with `wovenetd --config FILE`, or pass --socket PATH)",
            dir.display()
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
