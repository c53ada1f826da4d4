//! The add-app form: which kind (exposed or remote), the text fields of the matching proto
//! spec, the focused field, and the daemon's error shown inline. Pure; submission is an
//! effect run by the loop.

use wovenet_proto::v1 as pb;

/// Which spec the form builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `ExposedAppSpec`.
    Exposed,
    /// `RemoteAppSpec`.
    Remote,
}

/// Field labels for exposed apps, in `ExposedAppSpec` order.
pub const EXPOSED_FIELDS: [&str; 6] = [
    "name",
    "mode",
    "appSocket",
    "portRange",
    "addressRange",
    "allowedSites",
];
/// Field labels for remote apps, in `RemoteAppSpec` order.
pub const REMOTE_FIELDS: [&str; 4] = ["siteName", "appName", "localSocket", "appSocket"];

/// The form's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    /// Exposed or remote.
    pub kind: Kind,
    /// Values for the exposed fields.
    pub exposed: [String; 6],
    /// Values for the remote fields.
    pub remote: [String; 4],
    /// Focused row: 0 is the kind selector, then the fields.
    pub focus: usize,
    /// The daemon's answer to the last submit.
    pub error: Option<String>,
    /// A submit is in flight.
    pub submitting: bool,
}

impl Default for Form {
    fn default() -> Self {
        Self {
            kind: Kind::Exposed,
            exposed: Default::default(),
            remote: Default::default(),
            focus: 1,
            error: None,
            submitting: false,
        }
    }
}

impl Form {
    /// `(label, value)` for the current kind.
    pub fn fields(&self) -> Vec<(&'static str, &str)> {
        match self.kind {
            Kind::Exposed => EXPOSED_FIELDS
                .iter()
                .zip(&self.exposed)
                .map(|(l, v)| (*l, v.as_str()))
                .collect(),
            Kind::Remote => REMOTE_FIELDS
                .iter()
                .zip(&self.remote)
                .map(|(l, v)| (*l, v.as_str()))
                .collect(),
        }
    }

    fn rows(&self) -> usize {
        1 + match self.kind {
            Kind::Exposed => EXPOSED_FIELDS.len(),
            Kind::Remote => REMOTE_FIELDS.len(),
        }
    }

    fn value_mut(&mut self) -> Option<&mut String> {
        let i = self.focus.checked_sub(1)?;
        match self.kind {
            Kind::Exposed => self.exposed.get_mut(i),
            Kind::Remote => self.remote.get_mut(i),
        }
    }

    /// Moves focus down (wrapping).
    pub fn next(&mut self) {
        self.focus = (self.focus + 1) % self.rows();
    }

    /// Moves focus up (wrapping).
    pub fn prev(&mut self) {
        self.focus = (self.focus + self.rows() - 1) % self.rows();
    }

    /// Flips exposed/remote.
    pub fn toggle_kind(&mut self) {
        self.kind = match self.kind {
            Kind::Exposed => Kind::Remote,
            Kind::Remote => Kind::Exposed,
        };
        self.focus = self.focus.min(self.rows() - 1);
    }

    /// Types a character into the focused field (space on the kind row flips the kind).
    pub fn input(&mut self, c: char) {
        match self.value_mut() {
            Some(v) => v.push(c),
            None if c == ' ' => self.toggle_kind(),
            None => {}
        }
    }

    /// Deletes the last character of the focused field.
    pub fn backspace(&mut self) {
        if let Some(v) = self.value_mut() {
            v.pop();
        }
    }

    /// The spec to send.
    pub fn request(&self) -> Request {
        let list = |s: &str| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        };
        match self.kind {
            Kind::Exposed => {
                let [name, mode, app_socket, ports, addrs, allowed] = &self.exposed;
                Request::AddExposed(Box::new(pb::ExposedAppSpec {
                    name: name.trim().to_owned(),
                    mode: mode.trim().to_owned(),
                    app_socket: app_socket.trim().to_owned(),
                    port_range: list(ports),
                    address_range: list(addrs),
                    // Not in the form yet: the daemon's default applies.
                    max_connections: None,
                    // Empty: every site may reach the app.
                    allowed_sites: list(allowed),
                    // Not in the form yet: tcp ranges, the default idle timeout.
                    protocol: String::new(),
                    udp_idle_timeout: None,
                    // Not in the form yet: no PROXY protocol header.
                    proxy_protocol: String::new(),
                }))
            }
            Kind::Remote => {
                let [site, app, local, app_socket] = &self.remote;
                Request::AddRemote(pb::RemoteAppSpec {
                    site_name: site.trim().to_owned(),
                    app_name: app.trim().to_owned(),
                    local_socket: local.trim().to_owned(),
                    app_socket: app_socket.trim().to_owned(),
                    max_connections: None,
                    // Not in the form yet: the daemon's default applies.
                    udp_idle_timeout: None,
                })
            }
        }
    }
}

/// An RPC the console asks the loop to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `AddExposedApp` (boxed: the spec is by far the largest request).
    AddExposed(Box<pb::ExposedAppSpec>),
    /// `AddRemoteApp`.
    AddRemote(pb::RemoteAppSpec),
    /// `RemoveExposedApp`.
    RemoveExposed(String),
    /// `RemoveRemoteApp`.
    RemoveRemote {
        /// Peer site.
        site: String,
        /// App name.
        app: String,
        /// Local socket (empty: all).
        local: String,
    },
    /// `ForgetPeer` of this site name.
    ForgetPeer(String),
}

impl Request {
    /// Whether this request came from the add form (its error goes back into the form).
    pub fn is_add(&self) -> bool {
        matches!(self, Self::AddExposed(_) | Self::AddRemote(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_fills_the_focused_field_and_lists_split_on_commas() {
        let mut f = Form::default();
        "web".chars().for_each(|c| f.input(c));
        f.next();
        f.next();
        "127.0.0.1:80".chars().for_each(|c| f.input(c));
        f.next();
        "80, 443".chars().for_each(|c| f.input(c));
        let Request::AddExposed(spec) = f.request() else {
            panic!("exposed form must build an exposed request");
        };
        assert_eq!(spec.name, "web");
        assert_eq!(spec.app_socket, "127.0.0.1:80");
        assert_eq!(spec.port_range, vec!["80", "443"]);
    }

    #[test]
    fn allowed_sites_are_a_comma_separated_list_and_empty_means_every_site() {
        let mut f = Form::default();
        "db".chars().for_each(|c| f.input(c));
        let Request::AddExposed(spec) = f.request() else {
            panic!("exposed form must build an exposed request");
        };
        assert!(spec.allowed_sites.is_empty());
        for _ in 0..5 {
            f.next();
        }
        assert_eq!(f.fields()[f.focus - 1].0, "allowedSites");
        "beta, gamma,".chars().for_each(|c| f.input(c));
        let Request::AddExposed(spec) = f.request() else {
            panic!("exposed form must build an exposed request");
        };
        assert_eq!(spec.allowed_sites, vec!["beta", "gamma"]);
    }

    #[test]
    fn space_on_the_kind_row_switches_to_a_remote_form() {
        let mut f = Form::default();
        f.prev();
        f.input(' ');
        assert_eq!(f.kind, Kind::Remote);
        f.next();
        f.input('b');
        assert!(matches!(f.request(), Request::AddRemote(s) if s.site_name == "b"));
    }
}
