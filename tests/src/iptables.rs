//! Packet-loss injection: an iptables guard that drops all UDP to and from one local port (a
//! QUIC `localSocket`) while it lives. Needs root and iptables; fails loudly without them,
//! because a fault test that silently skips proves nothing.

use std::path::PathBuf;
use std::process::Command;

/// The iptables binary (on `PATH`, or in `/usr/sbin` / `/sbin`).
pub fn iptables_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("iptables"))
        .find(|p| p.is_file())
}

/// Drops UDP packets whose destination port (INPUT) or source port (OUTPUT) is `port`; the
/// rules are removed on drop.
#[derive(Debug)]
pub struct IptablesDrop {
    bin: PathBuf,
    rules: Vec<Vec<String>>,
}

/// The two rule specs (chain first) for `port`.
fn udp_rules(port: u16) -> Vec<Vec<String>> {
    let p = port.to_string();
    let spec = |chain: &str, dir: &str| {
        [chain, "-p", "udp", dir, &p, "-j", "DROP"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    };
    vec![spec("INPUT", "--dport"), spec("OUTPUT", "--sport")]
}

impl IptablesDrop {
    /// Inserts the DROP rules for UDP `port`. Panics (with iptables' stderr) if iptables is
    /// missing or refuses.
    pub fn udp_port(port: u16) -> Self {
        let bin = iptables_binary().unwrap_or_else(|| {
            panic!("this test needs iptables (apt-get install iptables) and root; not found on PATH or /usr/sbin")
        });
        let mut guard = Self {
            bin,
            rules: Vec::new(),
        };
        for rule in udp_rules(port) {
            guard.run("-I", &rule).unwrap_or_else(|e| panic!("{e}"));
            // Recorded only once inserted, so Drop deletes exactly what exists.
            guard.rules.push(rule);
        }
        guard
    }

    fn run(&self, action: &str, rule: &[String]) -> Result<(), String> {
        // -w waits for the xtables lock instead of failing when tests run in parallel.
        let out = Command::new(&self.bin)
            .arg("-w")
            .arg(action)
            .args(rule)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "iptables {action} {} failed ({}): {} (needs root)",
                rule.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for IptablesDrop {
    fn drop(&mut self) {
        for rule in std::mem::take(&mut self.rules) {
            if let Err(e) = self.run("-D", &rule) {
                // No panic in Drop; say loudly what is left behind.
                eprintln!("wovenet-e2e: could not remove iptables rule, remove it by hand: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    #[test]
    fn rules_drop_udp_to_and_from_the_port() {
        assert_eq!(
            udp_rules(4433),
            vec![
                vec!["INPUT", "-p", "udp", "--dport", "4433", "-j", "DROP"],
                vec!["OUTPUT", "-p", "udp", "--sport", "4433", "-j", "DROP"],
            ]
        );
    }

    /// Whether a datagram from `a` reaches `b`. An OUTPUT DROP makes `send_to` fail with EPERM,
    /// which counts as not delivered (a QUIC endpoint sees the same).
    fn roundtrip(a: &UdpSocket, b: &UdpSocket) -> bool {
        let mut buf = [0u8; 16];
        a.send_to(b"ping", b.local_addr().unwrap()).is_ok() && b.recv_from(&mut buf).is_ok()
    }

    /// Changes the machine's firewall for a moment (one rule pair on a free port), so it needs
    /// root and iptables, like the fault tests that use the guard.
    #[test]
    fn guard_drops_udp_while_alive_and_restores_on_drop() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        a.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(roundtrip(&a, &b));
        let guard = IptablesDrop::udp_port(b.local_addr().unwrap().port());
        assert!(!roundtrip(&a, &b), "packets to the port still arrive");
        assert!(!roundtrip(&b, &a), "packets from the port still leave");
        drop(guard);
        assert!(
            roundtrip(&a, &b),
            "packets to the port still dropped after the guard was dropped"
        );
        assert!(roundtrip(&b, &a));
    }
}
