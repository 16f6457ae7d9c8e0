//! The Host allow-list: which names this server answers to, against DNS rebinding.
//!
//! A page at `http://rebind.attacker.example:8080` whose name the attacker re-resolves
//! to `127.0.0.1` reaches a server on the visitor's machine with a `Host` and an
//! `Origin` that agree (both name the attacker's host), so the Origin check calls it
//! same-origin. The attacker controls the *name*, never the server's own names, so
//! every request (HTTP or WebSocket upgrade) whose `Host` is not one of them is refused
//! before anything is served.
//!
//! Allowed without a setting, on any port:
//! - IP addresses (`127.0.0.1`, `[::1]`, the listen address, a LAN address): a page
//!   reached by an address has nothing to re-resolve;
//! - `localhost` and names under `.localhost` (browsers resolve them to loopback
//!   themselves);
//! - the machine's host name (`uname -n`; inside a container, the container's).
//!
//! Anything else (a DNS name of the machine, the compose service name a proxy or
//! Prometheus uses, a reverse proxy's public site name) is added with
//! `--allowed-hosts` / `SDR_ALLOWED_HOSTS`; `*` switches the check off. A request
//! without a `Host` header is not a browser's and is not judged here.

use std::fmt;
use std::net::IpAddr;

/// Why a `--allowed-hosts` entry was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostListError {
    /// The entry is not a host name (it holds a scheme, a path or a character a name
    /// cannot have).
    NotAHostName {
        /// The entry as given.
        entry: String,
    },
}

impl fmt::Display for HostListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostListError::NotAHostName { entry } => write!(
                f,
                "allowed host {entry:?} is not a host name: write the bare name (robot.example.com, \
                 transport-server), without scheme, port or path; `*` turns the check off"
            ),
        }
    }
}

impl std::error::Error for HostListError {}

/// The names this server answers to besides IP addresses and `localhost`.
#[derive(Clone, Debug)]
pub struct HostPolicy {
    /// Lowercase names, without port (the machine's host name first).
    names: Vec<String>,
    /// `*`: every `Host` is accepted (the check is off).
    any: bool,
}

impl Default for HostPolicy {
    /// Loopback names, IP addresses and the machine's host name.
    fn default() -> Self {
        HostPolicy {
            names: machine_host_name().into_iter().collect(),
            any: false,
        }
    }
}

/// The machine's host name (`uname -n`), lowercase; `None` if it has none.
fn machine_host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty() && name != "(none)").then_some(name)
}

/// The host part of a `Host` header value (`name[:port]`, `[v6][:port]`), lowercase,
/// without a trailing dot; `None` if it is malformed.
fn host_of(header: &str) -> Option<String> {
    let header = header.trim();
    let host = if let Some(v6) = header.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok())) {
            return None;
        }
        addr
    } else {
        match header.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h,
            Some(_) => return None,
            None => header,
        }
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// True for a name that could be a host name (letters, digits, `-`, `.`, `_`) or an IP
/// address.
fn is_host_name(name: &str) -> bool {
    name.parse::<IpAddr>().is_ok()
        || (!name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
}

impl HostPolicy {
    /// The default names plus each entry of `extra` (`robot.example.com`,
    /// `transport-server`; `*` accepts every `Host`). Fails on an entry that is not a
    /// host name, saying which.
    pub fn new<S: AsRef<str>>(extra: &[S]) -> Result<HostPolicy, HostListError> {
        let mut policy = HostPolicy::default();
        for entry in extra.iter().map(|e| e.as_ref().trim()).filter(|e| !e.is_empty()) {
            if entry == "*" {
                policy.any = true;
                continue;
            }
            let name = entry.trim_end_matches('.').to_ascii_lowercase();
            let name = name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .unwrap_or(&name);
            if !is_host_name(name) {
                return Err(HostListError::NotAHostName {
                    entry: entry.to_owned(),
                });
            }
            policy.names.push(name.to_owned());
        }
        Ok(policy)
    }

    /// True when every `Host` is accepted (`*`).
    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// True if a request with this `Host` header may be served (`None`: no header).
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(header) = host else { return true };
        if self.any {
            return true;
        }
        let Some(host) = host_of(header) else {
            return false;
        };
        host.parse::<IpAddr>().is_ok()
            || host == "localhost"
            || host.ends_with(".localhost")
            || self.names.contains(&host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_loopback_names_are_allowed_on_any_port() {
        let p = HostPolicy::new::<&str>(&[]).unwrap();
        for host in [
            "127.0.0.1:8080",
            "127.3.4.5",
            "[::1]:8080",
            "[::1]",
            "localhost:8080",
            "LOCALHOST",
            "localhost.",
            "app.localhost:3000",
            "0.0.0.0:8080",
            "192.168.1.20:8080",
        ] {
            assert!(p.allows(Some(host)), "{host}");
        }
        assert!(p.allows(None), "no Host: not a browser");
    }

    #[test]
    fn a_rebound_name_is_refused() {
        let p = HostPolicy::new::<&str>(&[]).unwrap();
        for host in [
            "rebind.attacker.example:8080",
            "rebind.attacker.example",
            "localhost.attacker.example",
            "127.0.0.1.attacker.example",
            "",
            "x:y",
            "[::1]x",
        ] {
            assert!(!p.allows(Some(host)), "{host:?}");
        }
    }

    #[test]
    fn the_setting_adds_names_or_turns_the_check_off() {
        let p = HostPolicy::new(&["Transport-Server", "robot.example.com."]).unwrap();
        assert!(p.allows(Some("transport-server:8080")));
        assert!(p.allows(Some("robot.example.com")));
        assert!(!p.allows(Some("other.example.com")));
        let any = HostPolicy::new(&["*"]).unwrap();
        assert!(any.allows_any() && any.allows(Some("rebind.attacker.example:8080")));
    }

    #[test]
    fn the_machines_own_name_is_allowed() {
        let p = HostPolicy::default();
        if let Some(name) = machine_host_name() {
            assert!(p.allows(Some(&format!("{name}:8080"))), "{name}");
        }
    }

    #[test]
    fn a_malformed_entry_says_how_to_write_it() {
        let e = HostPolicy::new(&["http://robot:8080"]).unwrap_err().to_string();
        assert!(e.contains("\"http://robot:8080\"") && e.contains("bare name"), "{e}");
        assert!(
            HostPolicy::new(&["robot:8080"]).is_err(),
            "a port is not part of the name"
        );
        assert!(HostPolicy::new(&["[::1]", "10.0.0.1"]).is_ok());
    }
}
