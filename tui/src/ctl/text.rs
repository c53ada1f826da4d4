//! `-o table`: what people read. One function per command output, pure (the current time is
//! an argument), built on [`Table`] and [`units`]. The layout may change between versions;
//! scripts use `-o json`.

use std::fmt::Write as _;
use std::time::SystemTime;

use wovenet_proto::v1::{self as pb, event, watch_events_response};

use super::escape::visible;
use super::shell;
use super::table::Table;
use super::units::{self, or_empty, yes_no};

/// `status`: a key/value block (this site's identity whole: it is what other sites pin and
/// list in `trust.sites`), then the tunnel sockets, then why public address detection
/// failed, if it did.
pub fn status(s: &pb::SiteInfo) -> String {
    let mut kv = Table::plain(2);
    let broker_state = units::broker_state(s.broker_state);
    let broker = if s.broker_reason.is_empty() {
        broker_state
    } else {
        format!("{broker_state} ({})", s.broker_reason)
    };
    let mode = units::trust_mode(s.trust_mode);
    let trust = match mode.as_str() {
        "open" => "open (identities are not checked)".to_owned(),
        _ => units::cell(mode),
    };
    kv.row(["site", s.name.as_str()])
        .row(["identity", s.identity.as_str()])
        .row(["trust mode".to_owned(), trust])
        .row(["instance", s.instance.as_str()])
        .row(["version", s.version.as_str()])
        .row([
            "started".to_owned(),
            s.started_at
                .as_ref()
                .map_or_else(String::new, units::timestamp),
        ])
        .row([
            "uptime".to_owned(),
            units::proto_duration(s.uptime.as_ref()),
        ])
        .row(["broker", s.broker_url.as_str()])
        .row(["broker state".to_owned(), broker]);
    let mut out = kv.render();
    out.push('\n');
    let mut sockets = Table::new(&["LISTEN", "MODE", "PUBLIC", "AUTO-DETECT", "NAT"]);
    for t in &s.sockets {
        sockets.row([
            t.listen.as_str(),
            or_empty(&t.mode),
            if t.public.is_empty() && !t.detect_error.is_empty() {
                "detection failed"
            } else if t.public.is_empty() && t.auto_detect {
                "detecting"
            } else {
                t.public.as_str()
            },
            yes_no(t.auto_detect),
            or_empty(&t.nat_mapping),
        ]);
    }
    if sockets.is_empty() {
        out.push_str("no tunnel sockets\n");
    } else {
        out.push_str(&sockets.render());
    }
    for t in s.sockets.iter().filter(|t| !t.detect_error.is_empty()) {
        let at = t
            .detect_error_at
            .as_ref()
            .map_or_else(String::new, |at| format!(" at {}", units::timestamp(at)));
        let _ = writeln!(
            out,
            "public address detection for {} failed{at}: {}",
            t.listen, t.detect_error
        );
    }
    out
}

/// `peers`: one row per peer, refused identities as rows of their own (state `refused`)
/// right after the site they claim to be, then what each refusal means and, for a
/// conflict, the command that accepts a reinstalled site; then name conflicts between
/// running instances. Identities are shown whole: they are compared with what
/// `wovenetd identity` prints on the other host, and a prefix is cheap to forge.
/// `selection` is how this command chose the daemon (see [`shell::selection`]), repeated
/// in the suggested command so it can be pasted as is.
pub fn peers(peers: &[pb::Peer], now: SystemTime, selection: &str) -> String {
    if peers.is_empty() {
        return "no peers\n".to_owned();
    }
    let mut t = Table::new(&[
        "NAME",
        "STATE",
        "TRUST",
        "IDENTITY",
        ">CHANNELS",
        ">STREAMS",
        ">SENT",
        ">RECEIVED",
        "LAST-SEEN",
        "APPS",
    ]);
    for p in peers {
        // A refused identity never had channels or traffic: dashes, not zeros.
        let counted = |v: String| if refused(p) { String::new() } else { v };
        t.row([
            p.name.clone(),
            units::cell(units::peer_state(p.state)),
            units::trust_cell(p.trust),
            p.identity.clone(),
            counted(p.channels.to_string()),
            counted(p.streams.to_string()),
            counted(units::bytes(p.bytes_sent)),
            counted(units::bytes(p.bytes_received)),
            units::ago(p.last_seen.as_ref(), now),
            p.apps.join(","),
        ]);
    }
    let mut out = t.render();
    let refusals: Vec<String> = peers
        .iter()
        .filter(|p| refused(p))
        .map(|p| refusal(p, selection))
        .collect();
    if !refusals.is_empty() {
        out.push_str("\nREFUSED IDENTITIES (nothing they send is used)\n");
        for r in refusals {
            out.push_str(&r);
        }
    }
    // Only when two running sites share a name: which one is used, which refused.
    let mut c = Table::new(&["NAME", "INSTANCE", "REFUSED-INSTANCE"]);
    let mut any = false;
    for p in peers {
        for other in &p.conflicting_instances {
            any = true;
            c.row([p.name.clone(), p.instance.clone(), other.clone()]);
        }
    }
    if any {
        out.push_str("\nNAME CONFLICTS (two running sites share a siteName; rename one)\n");
        out.push_str(&c.render());
    }
    out
}

/// Whether `p` is an identity refused for its name rather than a peer.
fn refused(p: &pb::Peer) -> bool {
    p.state == pb::PeerState::Refused as i32
}

/// What one refused identity means, and what the operator can do about it (lines ending
/// in `\n`, daemon strings escaped).
fn refusal(p: &pb::Peer, selection: &str) -> String {
    let name = visible(&p.name);
    let presented = visible(or_empty(&p.identity));
    let count = units::plural(
        usize::try_from(p.refused_messages).unwrap_or(usize::MAX),
        "message",
    );
    match pb::TrustState::try_from(p.trust) {
        Ok(pb::TrustState::Conflict) => {
            let command = shell::forget_command(selection, &p.name);
            format!(
                "{name}: identity {presented} is refused: {name} is pinned to identity {} \
                 ({count} refused)\n  \
                 if {name} was reinstalled and `wovenetd identity` there prints {presented}, \
                 accept it with: {}\n",
                visible(or_empty(&p.pinned_identity)),
                visible(&command),
            )
        }
        Ok(pb::TrustState::NotAllowed) => format!(
            "{name}: identity {presented} is not allowed: trust.mode is strict and trust.sites \
             does not list {name} ({count} refused)\n  \
             to admit it, add {{siteName: {name}, identity: {presented}}} to trust.sites and \
             restart\n"
        ),
        _ => format!(
            "{name}: identity {presented} is refused ({}, {count} refused)\n",
            units::trust_cell(p.trust)
        ),
    }
}

/// `peers forget`: what was forgotten and what happens next.
pub fn peer_forgotten(site: &str, identity: &str) -> String {
    let site = visible(site);
    format!(
        "forgot site {site}: identity {} is no longer pinned and its dataChannels are closed\n\
         the next identity that announces {site} is pinned: check that `wovenetctl peers` shows \
         the one you expect\n",
        visible(or_empty(identity))
    )
}

/// `peers forget` in one line, most important first (the console's status line, which a
/// narrow terminal cuts at the end).
pub fn peer_forgotten_short(site: &str, identity: &str) -> String {
    let site = visible(site);
    format!(
        "forgot {site}: the next identity that announces {site} is pinned (was {})",
        visible(or_empty(identity))
    )
}

/// `channels`.
pub fn channels(channels: &[pb::Channel]) -> String {
    if channels.is_empty() {
        return "no channels\n".to_owned();
    }
    let mut t = Table::new(&[
        "PEER",
        ">ID",
        "DIRECTION",
        "ROUTE",
        "TRANSPORT",
        "STATE",
        "LOCAL",
        "REMOTE",
        ">RTT",
        ">CWND",
        ">LOST/SENT",
        ">SENT",
        ">RECEIVED",
        ">STREAMS",
        ">AGE",
        ">RETRIES",
        "LAST-ERROR",
    ]);
    for c in channels {
        t.row([
            c.peer.clone(),
            if c.id == 0 {
                String::new()
            } else {
                c.id.to_string()
            },
            units::cell(units::direction(c.direction)),
            units::cell(units::channel_route(c.route)),
            units::cell(units::channel_transport(c.transport)),
            units::cell(units::channel_state(c.state)),
            c.local_addr.clone(),
            c.remote_addr.clone(),
            units::proto_duration(c.rtt.as_ref()),
            units::bytes(c.cwnd),
            format!("{}/{}", c.lost_packets, c.sent_packets),
            units::bytes(c.bytes_sent),
            units::bytes(c.bytes_received),
            c.open_streams.to_string(),
            units::proto_duration(c.age.as_ref()),
            c.reconnect_attempts.to_string(),
            c.last_error.clone(),
        ]);
    }
    t.render()
}

/// `streams`.
pub fn streams(streams: &[pb::Stream]) -> String {
    if streams.is_empty() {
        return "no streams\n".to_owned();
    }
    let mut t = Table::new(&[
        ">ID",
        "APP",
        "KIND",
        "PEER",
        "DIRECTION",
        "CLIENT",
        ">SENT",
        ">RECEIVED",
        ">AGE",
    ]);
    for s in streams {
        t.row([
            s.id.to_string(),
            s.app.clone(),
            units::stream_kind(&s.kind),
            s.peer.clone(),
            units::cell(units::stream_direction(s.direction)),
            s.client_addr.clone(),
            units::bytes(s.bytes_sent),
            units::bytes(s.bytes_received),
            units::proto_duration(s.age.as_ref()),
        ]);
    }
    t.render()
}

/// Where an exposed app leads: its socket, or its ranges.
fn exposed_target(s: &pb::ExposedAppSpec) -> String {
    if s.mode == "range" {
        let udp = if s.protocol == "udp" { "udp " } else { "" };
        format!(
            "{udp}ports {} at {}",
            or_empty(&s.port_range.join(",")),
            or_empty(&s.address_range.join(","))
        )
    } else {
        s.app_socket.clone()
    }
}

fn exposed_mode(s: &pb::ExposedAppSpec) -> &str {
    if s.mode.is_empty() { "single" } else { &s.mode }
}

/// `apps`: exposed apps, then remote apps with their listeners.
pub fn apps(apps: &pb::ListAppsResponse) -> String {
    let mut out = String::from("EXPOSED APPS\n");
    if apps.exposed.is_empty() {
        out.push_str("none\n");
    } else {
        let mut t = Table::new(&[
            "NAME",
            "MODE",
            "TARGET",
            ">MAX-CONN",
            "LIMIT",
            "ALLOWED-SITES",
            "PROXY-PROTO",
            "LIVE",
        ]);
        for a in &apps.exposed {
            let spec = a.spec.clone().unwrap_or_default();
            t.row([
                spec.name.clone(),
                exposed_mode(&spec).to_owned(),
                exposed_target(&spec),
                max_connections(spec.max_connections),
                bandwidth_limit(&spec.bandwidth_limit),
                allowed_sites(&spec.allowed_sites),
                proxy_protocol(&spec.proxy_protocol),
                yes_no(a.live).to_owned(),
            ]);
        }
        out.push_str(&t.render());
    }
    out.push_str("\nREMOTE APPS\n");
    if apps.remote.is_empty() {
        out.push_str("none\n");
    } else {
        let mut t = Table::new(&[
            "SITE",
            "APP",
            "LOCAL",
            "APP-SOCKET",
            ">MAX-CONN",
            "LIMIT",
            "LISTENER",
            "ADDRESS",
            "LIVE",
            "ERROR",
        ]);
        for a in &apps.remote {
            let spec = a.spec.clone().unwrap_or_default();
            t.row([
                spec.site_name,
                spec.app_name,
                spec.local_socket,
                spec.app_socket,
                max_connections(spec.max_connections),
                bandwidth_limit(&spec.bandwidth_limit),
                units::cell(units::listener_state(a.listener_state)),
                a.listen_addr.clone(),
                yes_no(a.live).to_owned(),
                a.listener_error.clone(),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

/// An `allowedSites` cell: the sites, or `all` when every site may reach the app.
fn allowed_sites(sites: &[String]) -> String {
    if sites.is_empty() {
        "all".to_owned()
    } else {
        sites.join(",")
    }
}

/// A `proxyProtocol` cell: `v1`, `v2`, or `off`.
fn proxy_protocol(version: &str) -> String {
    if version.is_empty() {
        "off".to_owned()
    } else {
        version.to_owned()
    }
}

/// A `maxConnections` cell: the number, or `default` when not set.
fn max_connections(n: Option<u32>) -> String {
    n.map_or_else(|| "default".to_owned(), |n| n.to_string())
}

/// A `bandwidthLimit` cell: the rate each way, or `none` when unlimited.
fn bandwidth_limit(rate: &str) -> String {
    if rate.is_empty() {
        "none".to_owned()
    } else {
        rate.to_owned()
    }
}

/// `site/app on local` (and `-> app_socket` for range apps, the limit when set).
fn remote_spec(s: &pb::RemoteAppSpec) -> String {
    let mut out = format!("{}/{} on {}", s.site_name, s.app_name, s.local_socket);
    if !s.app_socket.is_empty() {
        let _ = write!(out, " -> {}", s.app_socket);
    }
    if !s.bandwidth_limit.is_empty() {
        let _ = write!(out, " (limited to {} each way)", s.bandwidth_limit);
    }
    out
}

fn exposed_spec(s: &pb::ExposedAppSpec) -> String {
    let mut out = format!("{} ({} {}", s.name, exposed_mode(s), exposed_target(s));
    if !s.allowed_sites.is_empty() {
        let _ = write!(out, ", only for {}", s.allowed_sites.join(","));
    }
    if !s.bandwidth_limit.is_empty() {
        let _ = write!(out, ", limited to {} each way", s.bandwidth_limit);
    }
    if !s.proxy_protocol.is_empty() {
        let _ = write!(out, ", PROXY protocol {}", s.proxy_protocol);
    }
    out.push(')');
    out
}

/// `expose add`.
pub fn exposed_added(a: &pb::ExposedApp) -> String {
    format!(
        "added exposed app {}\n",
        visible(&exposed_spec(&a.spec.clone().unwrap_or_default()))
    )
}

/// `expose rm`.
pub fn exposed_removed(a: &pb::ExposedApp) -> String {
    format!(
        "removed exposed app {}; open connections finish\n",
        visible(&exposed_spec(&a.spec.clone().unwrap_or_default()))
    )
}

fn listener(a: &pb::RemoteApp) -> String {
    let state = units::listener_state(a.listener_state);
    match state.as_str() {
        "open" if !a.listen_addr.is_empty() => format!("listener open on {}", a.listen_addr),
        "failed" if !a.listener_error.is_empty() => {
            format!("listener failed: {}", a.listener_error)
        }
        "waiting" => "listener waiting for the site to offer the app".to_owned(),
        _ => format!("listener {state}"),
    }
}

/// `remote add`.
pub fn remote_added(a: &pb::RemoteApp) -> String {
    format!(
        "added remote app {}; {}\n",
        visible(&remote_spec(&a.spec.clone().unwrap_or_default())),
        visible(&listener(a))
    )
}

/// `remote rm`.
pub fn remote_removed(removed: &[pb::RemoteApp]) -> String {
    if removed.is_empty() {
        return "no remote app removed\n".to_owned();
    }
    removed
        .iter()
        .map(|a| {
            format!(
                "removed remote app {}\n",
                visible(&remote_spec(&a.spec.clone().unwrap_or_default()))
            )
        })
        .collect()
}

/// One row per change a reload applied or left for a restart: (what, which).
fn reload_rows(r: &pb::ReloadReport) -> Vec<(&'static str, String)> {
    let mut rows = Vec::new();
    let exposed = [
        ("exposed app added", &r.exposed_added),
        ("exposed app removed", &r.exposed_removed),
        ("exposed app changed", &r.exposed_changed),
    ];
    for (what, apps) in exposed {
        rows.extend(apps.iter().map(|a| (what, exposed_spec(a))));
    }
    let remote = [
        ("remote app added", &r.remote_added),
        ("remote app removed", &r.remote_removed),
        ("remote app changed", &r.remote_changed),
    ];
    for (what, apps) in remote {
        rows.extend(apps.iter().map(|a| (what, remote_spec(a))));
    }
    if !r.log_level.is_empty() {
        rows.push(("log level", r.log_level.clone()));
    }
    rows
}

/// `path: reason`, or the reason alone for the file as a whole.
fn field_error(e: &pb::ConfigFieldError) -> String {
    if e.path.is_empty() {
        e.reason.clone()
    } else {
        format!("{}: {}", e.path, e.reason)
    }
}

/// `reload`, when the file was valid: what was applied, what needs a restart, warnings.
/// (An invalid file is reported as the error, see [`reload_invalid`].)
pub fn reload(r: &pb::ReloadReport) -> String {
    let rows = reload_rows(r);
    let file = visible(&r.config_file);
    let mut out = match rows.len() {
        0 => format!("reloaded {file}: no changes\n"),
        n => format!("reloaded {file}: {} applied\n", units::plural(n, "change")),
    };
    let mut t = Table::plain(2);
    for (what, which) in rows {
        t.row([format!("  {what}"), which]);
    }
    out.push_str(&t.render());
    if !r.needs_restart.is_empty() {
        let _ = writeln!(
            out,
            "not applied, needs a restart of wovenetd: {}",
            visible(&r.needs_restart.join(", "))
        );
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning: {}", visible(w));
    }
    out
}

/// `reload` of an invalid file: the error message, every error on its own line.
pub fn reload_invalid(r: &pb::ReloadReport) -> String {
    let mut out = format!(
        "invalid configuration in {}; nothing changed, wovenetd keeps running on the previous one:",
        visible(&r.config_file)
    );
    for e in &r.errors {
        let _ = write!(out, "\n  {}", visible(&field_error(e)));
    }
    out
}

/// The event line's detail of a reload.
fn reload_detail(r: &pb::ReloadReport) -> String {
    if !r.errors.is_empty() {
        let errors: Vec<String> = r.errors.iter().map(field_error).collect();
        return format!("{}: {}", r.config_file, errors.join("; "));
    }
    let rows = reload_rows(r);
    let mut parts: Vec<String> = rows
        .into_iter()
        .map(|(what, which)| format!("{what} {which}"))
        .collect();
    if parts.is_empty() {
        parts.push("no changes".to_owned());
    }
    if !r.needs_restart.is_empty() {
        parts.push(format!("needs a restart: {}", r.needs_restart.join(", ")));
    }
    format!("{}: {}", r.config_file, parts.join("; "))
}

/// `events`, first line: a summary of the snapshot.
pub fn snapshot(s: &pb::Snapshot) -> String {
    let site = s.site.clone().unwrap_or_default();
    let refused = s.peers.iter().filter(|p| refused(p)).count();
    let peers = match refused {
        0 => units::plural(s.peers.len(), "peer"),
        1 => format!(
            "{} (1 refused identity)",
            units::plural(s.peers.len() - 1, "peer")
        ),
        n => format!(
            "{} ({n} refused identities)",
            units::plural(s.peers.len() - n, "peer")
        ),
    };
    format!(
        "site {} ({}): {peers}, {}, {}, {}, {}; following events from #{} (Ctrl-C to stop)\n",
        visible(or_empty(&site.name)),
        units::broker_state(site.broker_state),
        units::plural(s.channels.len(), "channel"),
        units::plural(s.streams.len(), "stream"),
        units::plural(s.exposed.len(), "exposed app"),
        units::plural(s.remote.len(), "remote app"),
        s.next_seq
    )
}

/// Width of the event name column.
const EVENT_NAME_WIDTH: usize = 19;

/// `events`, one line per event: time, sequence number, what happened, details.
pub fn event(e: &pb::Event) -> String {
    let (name, detail) = match &e.kind {
        Some(k) => describe(k),
        None => ("unknown event", String::new()),
    };
    let at =
        e.at.as_ref()
            .map_or_else(|| "-".to_owned(), units::timestamp);
    let detail = visible(&detail);
    let line = format!("{at}  #{}  {name:<EVENT_NAME_WIDTH$}  {detail}", e.seq);
    format!("{}\n", line.trim_end())
}

fn with_reason(what: String, reason: &str) -> String {
    if reason.is_empty() {
        what
    } else {
        format!("{what}: {reason}")
    }
}

fn stream_detail(s: &pb::Stream, closed: bool) -> String {
    let mut out = format!(
        "#{} {} {} {} from {}",
        s.id,
        s.app,
        units::stream_direction(s.direction),
        or_empty(&s.peer),
        or_empty(&s.client_addr)
    );
    if closed {
        let _ = write!(
            out,
            ", sent {}, received {} in {}",
            units::bytes(s.bytes_sent),
            units::bytes(s.bytes_received),
            units::proto_duration(s.age.as_ref())
        );
    }
    out
}

fn describe(k: &event::Kind) -> (&'static str, String) {
    use event::Kind as K;
    match k {
        K::PeerDiscovered(p) => ("peer discovered", p.site.clone()),
        K::PeerConnected(p) => ("peer connected", p.site.clone()),
        K::PeerDisconnected(p) => ("peer disconnected", with_reason(p.site.clone(), &p.reason)),
        K::ChannelUp(c) => ("channel up", format!("{} #{}", c.site, c.channel)),
        K::ChannelDown(c) => (
            "channel down",
            with_reason(format!("{} #{}", c.site, c.channel), &c.reason),
        ),
        K::ExposedAppAdded(s) => ("exposed app added", exposed_spec(s)),
        K::ExposedAppRemoved(s) => ("exposed app removed", exposed_spec(s)),
        K::RemoteAppAdded(s) => ("remote app added", remote_spec(s)),
        K::RemoteAppRemoved(s) => ("remote app removed", remote_spec(s)),
        K::ListenerOpened(s) => ("listener opened", remote_spec(s)),
        K::ListenerClosed(s) => ("listener closed", remote_spec(s)),
        K::StreamOpened(s) => ("stream opened", stream_detail(s, false)),
        K::StreamClosed(s) => ("stream closed", stream_detail(s, true)),
        K::ConfigReloaded(r) if r.errors.is_empty() => ("config reloaded", reload_detail(r)),
        K::ConfigReloaded(r) => ("reload refused", reload_detail(r)),
    }
}

/// `events`: any message of the feed.
pub fn watch_event(r: &pb::WatchEventsResponse) -> String {
    match &r.kind {
        Some(watch_events_response::Kind::Snapshot(s)) => snapshot(s),
        Some(watch_events_response::Kind::Event(e)) => event(e),
        None => "unknown message from the daemon\n".to_owned(),
    }
}

/// `stats`: one sample, sections for apps, peers, channels and non-zero counters.
pub fn stats(s: &pb::WatchStatsResponse) -> String {
    let at =
        s.at.as_ref()
            .map_or_else(|| "-".to_owned(), units::timestamp);
    let mut out = format!("stats at {at}\n");
    let mut apps = Table::new(&[
        "APP",
        "PEER",
        "DIRECTION",
        ">OPEN",
        ">TOTAL",
        ">LIMITED",
        ">NOT-ALLOWED",
        ">SENT",
        ">RECEIVED",
        ">SEND-RATE",
        ">RECEIVE-RATE",
    ]);
    for a in &s.apps {
        apps.row([
            a.app.clone(),
            a.peer.clone(),
            units::cell(units::stream_direction(a.direction)),
            a.open_streams.to_string(),
            a.total_streams.to_string(),
            a.limited_streams.to_string(),
            a.not_allowed_streams.to_string(),
            units::bytes(a.bytes_sent),
            units::bytes(a.bytes_received),
            units::rate(a.send_rate),
            units::rate(a.receive_rate),
        ]);
    }
    let mut peers = Table::new(&["PEER", ">SENT", ">RECEIVED", ">SEND-RATE", ">RECEIVE-RATE"]);
    for p in &s.peers {
        peers.row([
            p.peer.clone(),
            units::bytes(p.bytes_sent),
            units::bytes(p.bytes_received),
            units::rate(p.send_rate),
            units::rate(p.receive_rate),
        ]);
    }
    let mut channels = Table::new(&[
        "PEER",
        ">ID",
        ">RTT",
        ">CWND",
        ">LOST/SENT",
        ">SENT",
        ">RECEIVED",
        ">SEND-RATE",
        ">RECEIVE-RATE",
        ">STREAMS",
    ]);
    for c in &s.channels {
        channels.row([
            c.peer.clone(),
            c.id.to_string(),
            units::proto_duration(c.rtt.as_ref()),
            units::bytes(c.cwnd),
            format!("{}/{}", c.lost_packets, c.sent_packets),
            units::bytes(c.bytes_sent),
            units::bytes(c.bytes_received),
            units::rate(c.send_rate),
            units::rate(c.receive_rate),
            c.open_streams.to_string(),
        ]);
    }
    let mut counters = Table::new(&["COUNTER", ">VALUE"]);
    let mut names: Vec<(&String, &u64)> = s.counters.iter().filter(|(_, v)| **v > 0).collect();
    names.sort();
    for (name, value) in names {
        counters.row([name.clone(), value.to_string()]);
    }
    for (title, table, empty) in [
        ("APPS", apps, "no app traffic"),
        ("PEERS", peers, "no peers"),
        ("CHANNELS", channels, "no channels"),
        ("COUNTERS", counters, "no drops or refusals"),
    ] {
        out.push('\n');
        if table.is_empty() {
            let _ = writeln!(out, "{title}: {empty}");
        } else {
            let _ = writeln!(out, "{title}");
            out.push_str(&table.render());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use wovenet_proto::v1::{ChannelEvent, PeerEvent, event::Kind};

    use super::*;
    use crate::ctl::fixtures as fx;

    /// Character offset of `needle` in `line` (the µ of µs is two bytes).
    fn column(line: &str, needle: &str) -> usize {
        line[..line.find(needle).unwrap()].chars().count()
    }

    #[test]
    fn status_shows_site_identity_trust_uptime_broker_reason_and_sockets() {
        let out = status(&fx::site());
        assert_eq!(
            out,
            "site          alpha\n\
             identity      a3stb5ycqzkxw2mhe7nvfgrl4pjduo6i\n\
             trust mode    pinned\n\
             instance      9f2c4e1a\n\
             version       0.1.0\n\
             started       2024-05-01T10:00:00Z\n\
             uptime        1h2m\n\
             broker        mqtt://127.0.0.1:1883\n\
             broker state  reconnecting (connection refused)\n\
             \n\
             LISTEN         MODE             PUBLIC             AUTO-DETECT  NAT\n\
             0.0.0.0:40001  hole-punching    203.0.113.7:40001  no           endpoint-independent\n\
             [::]:40002     port-forwarding  detecting          yes          -\n"
        );
    }

    #[test]
    fn status_warns_that_open_mode_checks_no_identity_and_tolerates_old_daemons() {
        let mut site = fx::site();
        site.trust_mode = pb::TrustMode::Open.into();
        let out = status(&site);
        assert!(
            out.contains("\ntrust mode    open (identities are not checked)\n"),
            "{out}"
        );
        // A daemon that predates identities sets neither field.
        site.identity.clear();
        site.trust_mode = 0;
        let out = status(&site);
        assert!(
            out.contains("\nidentity      -\ntrust mode    -\n"),
            "{out}"
        );
    }

    #[test]
    fn status_says_why_detection_failed() {
        let mut site = fx::site();
        site.sockets[1].detect_error =
            "'http://ip.test/' answered 'nope' (content type 'text/html'), which is not an IP address"
                .into();
        site.sockets[1].detect_error_at = Some(fx::at(fx::T0, 0));
        let out = status(&site);
        assert!(
            out.ends_with(
                "LISTEN         MODE             PUBLIC             AUTO-DETECT  NAT\n\
                 0.0.0.0:40001  hole-punching    203.0.113.7:40001  no           endpoint-independent\n\
                 [::]:40002     port-forwarding  detection failed   yes          -\n\
                 public address detection for [::]:40002 failed at 2024-05-01T10:00:00Z: \
                 'http://ip.test/' answered 'nope' (content type 'text/html'), which is not an IP address\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn peers_table_aligns_columns_with_human_units() {
        let out = peers(&fx::peers()[..1], fx::now(), "");
        assert_eq!(
            out,
            "NAME  STATE      TRUST   IDENTITY                          CHANNELS  STREAMS     SENT  RECEIVED  LAST-SEEN  APPS\n\
             beta  connected  pinned  hfqku7jmljxqcy44vv6js2nuzo7hxo4u         2        1  1.5 KiB   5.0 MiB  3s ago     echo,vnc\n"
        );
        assert_eq!(peers(&[], fx::now(), ""), "no peers\n");
    }

    /// The whole fingerprint in every row (a prefix is cheap to forge), refused identities
    /// as rows of their own with dashes for traffic they never had, then what each refusal
    /// means and the command that accepts a reinstalled site.
    #[test]
    fn peers_show_trust_whole_identities_and_refused_identities_with_the_way_out() {
        let out = peers(&fx::peers(), fx::now(), "");
        assert_eq!(
            out,
            "NAME        STATE      TRUST        IDENTITY                          CHANNELS  STREAMS     SENT  RECEIVED  LAST-SEEN  APPS\n\
             beta        connected  pinned       hfqku7jmljxqcy44vv6js2nuzo7hxo4u         2        1  1.5 KiB   5.0 MiB  3s ago     echo,vnc\n\
             beta        refused    conflict     x7rq2mfk4dzl3pwn6yb5tcehv2sjoa7i         -        -        -         -  5s ago     -\n\
             delta       refused    not allowed  mz4kq7v2nx6wfb3jle5rht2ocu7ypsia         -        -        -         -  1m ago     -\n\
             gamma-site  gone       new          g5mna2qkx7wzr4tpfj6vlh3ed2cuyobs         0        0      0 B       0 B  -          -\n\
             \n\
             REFUSED IDENTITIES (nothing they send is used)\n\
             beta: identity x7rq2mfk4dzl3pwn6yb5tcehv2sjoa7i is refused: beta is pinned to identity \
             hfqku7jmljxqcy44vv6js2nuzo7hxo4u (3 messages refused)\n  \
             if beta was reinstalled and `wovenetd identity` there prints x7rq2mfk4dzl3pwn6yb5tcehv2sjoa7i, \
             accept it with: wovenetctl peers forget beta\n\
             delta: identity mz4kq7v2nx6wfb3jle5rht2ocu7ypsia is not allowed: trust.mode is strict and \
             trust.sites does not list delta (1 message refused)\n  \
             to admit it, add {siteName: delta, identity: mz4kq7v2nx6wfb3jle5rht2ocu7ypsia} to trust.sites \
             and restart\n"
        );
    }

    #[test]
    fn the_suggested_command_names_the_daemon_as_chosen_and_quotes_the_name() {
        let mut ps = fx::peers();
        ps[1].name = "beta; rm -rf ~".into();
        let out = peers(&ps[1..2], fx::now(), " --site alpha");
        assert!(
            out.ends_with(
                "accept it with: wovenetctl --site alpha peers forget 'beta; rm -rf ~'\n"
            ),
            "{out}"
        );
        // Hidden characters are escaped inside the quotes as everywhere else.
        ps[1].name = "beta\n\u{202e}x".into();
        let out = peers(&ps[1..2], fx::now(), "");
        assert!(
            out.ends_with("accept it with: wovenetctl peers forget 'beta\\u{a}\\u{202e}x'\n"),
            "{out}"
        );
        assert_eq!(out.lines().count(), 6, "{out}");
    }

    #[test]
    fn the_consoles_forget_line_puts_what_happens_next_first() {
        assert_eq!(
            peer_forgotten_short("beta", fx::BETA_ID),
            "forgot beta: the next identity that announces beta is pinned \
             (was hfqku7jmljxqcy44vv6js2nuzo7hxo4u)"
        );
    }

    #[test]
    fn forgetting_says_what_was_pinned_and_what_happens_next() {
        assert_eq!(
            peer_forgotten("beta", fx::BETA_ID),
            "forgot site beta: identity hfqku7jmljxqcy44vv6js2nuzo7hxo4u is no longer pinned and \
             its dataChannels are closed\n\
             the next identity that announces beta is pinned: check that `wovenetctl peers` shows \
             the one you expect\n"
        );
    }

    #[test]
    fn peers_in_a_name_conflict_get_a_section_naming_both_instances() {
        let mut ps = fx::peers();
        ps[0].conflicting_instances = vec!["feedface".into()];
        let out = peers(&ps, fx::now(), "");
        assert!(
            out.ends_with(
                "\nNAME CONFLICTS (two running sites share a siteName; rename one)\n\
                 NAME  INSTANCE  REFUSED-INSTANCE\n\
                 beta  0badc0de  feedface\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn channels_table_shows_rtt_age_and_dashes_for_pending_dials() {
        let out = channels(&fx::channels());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(
            lines[0].starts_with("PEER        ID  DIRECTION  ROUTE    TRANSPORT  STATE"),
            "{out}"
        );
        let up: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            up,
            [
                "beta",
                "3",
                "outbound",
                "punched",
                "quic",
                "up",
                "10.0.0.1:40001",
                "10.0.0.2:40001",
                "350µs",
                "11.7",
                "KiB",
                "2/1200",
                "2.0",
                "KiB",
                "4.0",
                "KiB",
                "1",
                "2m5s",
                "0",
                "-"
            ]
        );
        assert!(
            lines[2].starts_with("gamma-site   -  outbound   direct   tcp        connecting  -"),
            "{out}"
        );
        assert!(lines[2].ends_with("350ms        4  timed out"), "{out}");
        // The last column starts at the same offset in every row.
        let last = column(lines[0], "LAST-ERROR");
        assert_eq!(lines[1].chars().count() - 1, last, "{out}");
        assert_eq!(column(lines[2], "timed out"), last, "{out}");
        assert_eq!(channels(&[]), "no channels\n");
    }

    #[test]
    fn streams_table_lists_each_connection() {
        assert_eq!(
            streams(&[fx::stream()]),
            "ID  APP   KIND  PEER  DIRECTION  CLIENT            SENT  RECEIVED  AGE\n\
             17  echo  tcp   beta  outbound   127.0.0.1:53124  100 B   2.5 KiB  12s\n"
        );
        assert_eq!(streams(&[]), "no streams\n");
    }

    #[test]
    fn apps_show_targets_listener_states_and_live_flags() {
        assert_eq!(
            apps(&fx::apps()),
            "EXPOSED APPS\n\
             NAME  MODE    TARGET                               MAX-CONN  LIMIT    ALLOWED-SITES  PROXY-PROTO  LIVE\n\
             echo  single  tcp:127.0.0.1:7                       default  none     all            off          no\n\
             vnc   range   ports 5900,5901-5990 at 10.0.2.0/24        50  10MiB/s  beta,gamma     v2           yes\n\
             \n\
             REMOTE APPS\n\
             SITE  APP   LOCAL               APP-SOCKET         MAX-CONN  LIMIT      LISTENER  ADDRESS         LIVE  ERROR\n\
             beta  echo  tcp:127.0.0.1:6000  -                   default  none       open      127.0.0.1:6000  no    -\n\
             beta  vnc   unix:/run/vnc.sock  tcp:10.0.2.9:5900         4  100Mbit/s  failed    -               yes   permission denied\n"
        );
        assert_eq!(
            apps(&pb::ListAppsResponse::default()),
            "EXPOSED APPS\nnone\n\nREMOTE APPS\nnone\n"
        );
    }

    #[test]
    fn changes_confirm_what_was_done() {
        assert_eq!(
            exposed_added(&fx::exposed_single()),
            "added exposed app echo (single tcp:127.0.0.1:7)\n"
        );
        assert_eq!(
            exposed_removed(&fx::exposed_range()),
            "removed exposed app vnc (range ports 5900,5901-5990 at 10.0.2.0/24, only for beta,gamma, limited to 10MiB/s each way, PROXY protocol v2); open connections finish\n"
        );
        assert_eq!(
            remote_added(&fx::remote_open()),
            "added remote app beta/echo on tcp:127.0.0.1:6000; listener open on 127.0.0.1:6000\n"
        );
        assert_eq!(
            remote_added(&fx::remote_failed()),
            "added remote app beta/vnc on unix:/run/vnc.sock -> tcp:10.0.2.9:5900 (limited to 100Mbit/s each way); listener failed: permission denied\n"
        );
        let mut waiting = fx::remote_open();
        waiting.listener_state = pb::ListenerState::Waiting as i32;
        assert!(
            remote_added(&waiting).ends_with("listener waiting for the site to offer the app\n")
        );
        assert_eq!(
            remote_removed(&[fx::remote_open(), fx::remote_failed()]),
            "removed remote app beta/echo on tcp:127.0.0.1:6000\n\
             removed remote app beta/vnc on unix:/run/vnc.sock -> tcp:10.0.2.9:5900 (limited to 100Mbit/s each way)\n"
        );
        assert_eq!(remote_removed(&[]), "no remote app removed\n");
    }

    #[test]
    fn events_start_with_a_summary_then_one_aligned_line_each() {
        assert_eq!(
            watch_event(&fx::snapshot()),
            "site alpha (reconnecting): 2 peers (2 refused identities), 2 channels, 1 stream, \
             1 exposed app, 1 remote app; following events from #42 (Ctrl-C to stop)\n"
        );
        assert_eq!(
            event(&fx::event(43, Kind::ListenerOpened(fx::remote_spec()))),
            "2024-05-01T10:00:00.123Z  #43  listener opened      beta/echo on tcp:127.0.0.1:6000\n"
        );
        assert_eq!(
            event(&fx::event(
                44,
                Kind::ChannelDown(ChannelEvent {
                    site: "beta".into(),
                    channel: 3,
                    reason: "idle timeout".into()
                })
            )),
            "2024-05-01T10:00:00.123Z  #44  channel down         beta #3: idle timeout\n"
        );
        assert_eq!(
            event(&fx::event(
                45,
                Kind::PeerConnected(PeerEvent {
                    site: "beta".into(),
                    reason: String::new()
                })
            )),
            "2024-05-01T10:00:00.123Z  #45  peer connected       beta\n"
        );
        assert_eq!(
            event(&fx::event(46, Kind::StreamClosed(fx::stream()))),
            "2024-05-01T10:00:00.123Z  #46  stream closed        #17 echo outbound beta from \
             127.0.0.1:53124, sent 100 B, received 2.5 KiB in 12s\n"
        );
        let spec = fx::exposed_range().spec.unwrap();
        assert!(
            event(&fx::event(47, Kind::ExposedAppRemoved(spec))).contains(
                "#47  exposed app removed  vnc (range ports 5900,5901-5990 at 10.0.2.0/24, only for beta,gamma, limited to 10MiB/s each way, PROXY protocol v2)"
            )
        );
        assert_eq!(
            watch_event(&pb::WatchEventsResponse { kind: None }),
            "unknown message from the daemon\n"
        );
    }

    #[test]
    fn a_reload_event_says_what_changed_or_why_nothing_did() {
        let applied = pb::ReloadReport {
            outcome: pb::ReloadOutcome::NeedsRestart.into(),
            config_file: "/etc/wovenet/alpha.yaml".into(),
            remote_added: vec![fx::remote_spec()],
            log_level: "debug".into(),
            needs_restart: vec!["siteName".into()],
            ..Default::default()
        };
        assert_eq!(
            event(&fx::event(48, Kind::ConfigReloaded(applied))),
            "2024-05-01T10:00:00.123Z  #48  config reloaded      /etc/wovenet/alpha.yaml: remote \
             app added beta/echo on tcp:127.0.0.1:6000; log level debug; needs a restart: siteName\n"
        );
        let nothing = pb::ReloadReport {
            outcome: pb::ReloadOutcome::Applied.into(),
            config_file: "/a.yaml".into(),
            ..Default::default()
        };
        assert!(
            event(&fx::event(49, Kind::ConfigReloaded(nothing.clone())))
                .ends_with("config reloaded      /a.yaml: no changes\n")
        );
        assert_eq!(reload(&nothing), "reloaded /a.yaml: no changes\n");
        let invalid = pb::ReloadReport {
            outcome: pb::ReloadOutcome::Invalid.into(),
            config_file: "/a.yaml".into(),
            errors: vec![
                pb::ConfigFieldError {
                    path: "siteName".into(),
                    reason: "is required".into(),
                },
                pb::ConfigFieldError {
                    path: String::new(),
                    reason: "line 3, column 1: did not find expected key".into(),
                },
            ],
            ..Default::default()
        };
        assert!(
            event(&fx::event(50, Kind::ConfigReloaded(invalid.clone()))).ends_with(
                "reload refused       /a.yaml: siteName: is required; line 3, column 1: did not \
                 find expected key\n"
            )
        );
        assert_eq!(
            reload_invalid(&invalid),
            "invalid configuration in /a.yaml; nothing changed, wovenetd keeps running on the \
             previous one:\n  siteName: is required\n  line 3, column 1: did not find expected key"
        );
    }

    #[test]
    fn stats_print_sections_and_only_nonzero_counters_sorted() {
        let out = stats(&fx::stats());
        assert_eq!(
            out,
            "stats at 2024-05-01T10:00:00Z\n\
             \n\
             APPS\n\
             APP   PEER  DIRECTION  OPEN  TOTAL  LIMITED  NOT-ALLOWED     SENT  RECEIVED  SEND-RATE  RECEIVE-RATE\n\
             echo  beta  inbound       1      9        3            2  2.0 KiB   1.0 KiB  1.5 KiB/s         0 B/s\n\
             \n\
             PEERS\n\
             PEER      SENT  RECEIVED  SEND-RATE  RECEIVE-RATE\n\
             beta  10.0 MiB  20.0 MiB  1.0 MiB/s       512 B/s\n\
             \n\
             CHANNELS\n\
             PEER  ID   RTT      CWND  LOST/SENT    SENT  RECEIVED  SEND-RATE  RECEIVE-RATE  STREAMS\n\
             beta   3  12ms  11.7 KiB       0/10  1000 B   2.0 KiB     10 B/s        20 B/s        1\n\
             \n\
             COUNTERS\n\
             COUNTER        VALUE\n\
             auth_failures      1\n\
             bad_preambles      3\n"
        );
        let empty = stats(&pb::WatchStatsResponse::default());
        assert!(empty.contains("APPS: no app traffic\n"), "{empty}");
        assert!(
            empty.contains("COUNTERS: no drops or refusals\n"),
            "{empty}"
        );
    }
}
