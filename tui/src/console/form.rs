//! The add-app form: which kind (exposed or remote), the text fields of the matching proto
//! spec, the focused field, and the daemon's error shown inline (or the form's own, for a
//! number that does not parse). Pure; submission is an effect run by the loop.

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
pub const EXPOSED_FIELDS: [&str; 10] = [
    "name",
    "mode",
    "appSocket",
    "portRange",
    "addressRange",
    "allowedSites",
    "protocol",
    "udpIdleTimeout",
    "maxConnections",
    "proxyProtocol",
];
/// Field labels for remote apps, in `RemoteAppSpec` order.
pub const REMOTE_FIELDS: [&str; 6] = [
    "siteName",
    "appName",
    "localSocket",
    "appSocket",
    "udpIdleTimeout",
    "maxConnections",
];

/// The form's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    /// Exposed or remote.
    pub kind: Kind,
    /// Values for the exposed fields.
    pub exposed: [String; 10],
    /// Values for the remote fields.
    pub remote: [String; 6],
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

    /// The spec to send, or why it cannot be sent (a number field that is not one).
    /// Empty optional fields leave the daemon's defaults.
    pub fn request(&self) -> Result<Request, String> {
        let list = |s: &str| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let number = |label: &str, s: &str| -> Result<Option<u32>, String> {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            s.parse()
                .map(Some)
                .map_err(|_| format!("{label}: {s:?} is not a whole number"))
        };
        match self.kind {
            Kind::Exposed => {
                let [
                    name,
                    mode,
                    app_socket,
                    ports,
                    addrs,
                    allowed,
                    protocol,
                    idle,
                    max,
                    proxy,
                ] = &self.exposed;
                Ok(Request::AddExposed(Box::new(pb::ExposedAppSpec {
                    name: name.trim().to_owned(),
                    mode: mode.trim().to_owned(),
                    app_socket: app_socket.trim().to_owned(),
                    port_range: list(ports),
                    address_range: list(addrs),
                    max_connections: number("maxConnections", max)?,
                    // Empty: every site may reach the app.
                    allowed_sites: list(allowed),
                    // Empty: tcp for range apps (single apps take it from appSocket).
                    protocol: protocol.trim().to_owned(),
                    udp_idle_timeout: number("udpIdleTimeout", idle)?,
                    // Empty: no PROXY protocol header.
                    proxy_protocol: proxy.trim().to_owned(),
                    // Not in the form: `wovenetctl expose add --bandwidth-limit`.
                    bandwidth_limit: String::new(),
                })))
            }
            Kind::Remote => {
                let [site, app, local, app_socket, idle, max] = &self.remote;
                Ok(Request::AddRemote(pb::RemoteAppSpec {
                    site_name: site.trim().to_owned(),
                    app_name: app.trim().to_owned(),
                    local_socket: local.trim().to_owned(),
                    app_socket: app_socket.trim().to_owned(),
                    max_connections: number("maxConnections", max)?,
                    udp_idle_timeout: number("udpIdleTimeout", idle)?,
                    // Not in the form: `wovenetctl remote add --bandwidth-limit`.
                    bandwidth_limit: String::new(),
                }))
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
        let Ok(Request::AddExposed(spec)) = f.request() else {
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
        let Ok(Request::AddExposed(spec)) = f.request() else {
            panic!("exposed form must build an exposed request");
        };
        assert!(spec.allowed_sites.is_empty());
        for _ in 0..5 {
            f.next();
        }
        assert_eq!(f.fields()[f.focus - 1].0, "allowedSites");
        "beta, gamma,".chars().for_each(|c| f.input(c));
        let Ok(Request::AddExposed(spec)) = f.request() else {
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
        assert!(matches!(f.request(), Ok(Request::AddRemote(s)) if s.site_name == "b"));
    }

    #[test]
    fn udp_and_limit_fields_reach_the_spec_and_a_bad_number_stays_in_the_form() {
        let mut f = Form::default();
        "dns".chars().for_each(|c| f.input(c));
        let focus = |f: &mut Form, label: &str| {
            while f.fields()[f.focus.max(1) - 1].0 != label || f.focus == 0 {
                f.next();
            }
        };
        focus(&mut f, "mode");
        "range".chars().for_each(|c| f.input(c));
        focus(&mut f, "protocol");
        "udp".chars().for_each(|c| f.input(c));
        focus(&mut f, "udpIdleTimeout");
        "30".chars().for_each(|c| f.input(c));
        focus(&mut f, "maxConnections");
        "100".chars().for_each(|c| f.input(c));
        let Ok(Request::AddExposed(spec)) = f.request() else {
            panic!("exposed form must build an exposed request");
        };
        assert_eq!(
            (
                spec.protocol.as_str(),
                spec.udp_idle_timeout,
                spec.max_connections
            ),
            ("udp", Some(30), Some(100))
        );
        f.input('x');
        assert_eq!(
            f.request(),
            Err("maxConnections: \"100x\" is not a whole number".to_owned())
        );

        let mut r = Form::default();
        r.toggle_kind();
        focus(&mut r, "udpIdleTimeout");
        "5".chars().for_each(|c| r.input(c));
        let Ok(Request::AddRemote(spec)) = r.request() else {
            panic!("remote form must build a remote request");
        };
        assert_eq!(
            (spec.udp_idle_timeout, spec.max_connections),
            (Some(5), None)
        );
    }
}
