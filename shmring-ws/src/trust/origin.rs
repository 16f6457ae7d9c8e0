//! The Origin policy: which web pages may open a WebSocket to this server through a
//! visitor's browser.
//!
//! Browsers attach an `Origin` header to every WebSocket handshake and let any page
//! open a socket to any address, the visitor's own `127.0.0.1` included (cross-site
//! WebSocket hijacking). A handshake is accepted when it carries no `Origin` (not a
//! browser: a program that could connect anyway), when its origin is the server's own
//! (the `Host` the browser asked for, as when the viewer page or a same-host reverse
//! proxy such as Caddy served the page), or when the origin is on the configured
//! allow-list (a development server on another port, app.foxglove.dev).
//!
//! "The server's own" compares the scheme too: a page of `http://robot` is not one of
//! `https://robot`. The scheme of a request is the one the server serves (`https`
//! with `--tls-cert`), or the `X-Forwarded-Proto` a reverse proxy that terminates TLS
//! sets (Caddy does). A browser cannot add that header to a WebSocket handshake or a
//! navigation, so a page cannot use it to pass for another scheme; a program can, but
//! a program can write any `Origin` too.

use std::fmt;

/// The scheme a request reached the server by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (`http://`, `ws://`).
    #[default]
    Http,
    /// TLS (`https://`, `wss://`): served natively, or terminated by a proxy.
    Https,
}

impl Scheme {
    /// The scheme an `X-Forwarded-Proto` value names (`http`, `https`, `ws`, `wss`).
    pub fn from_forwarded(value: &str) -> Option<Scheme> {
        let first = value.split(',').next()?.trim();
        match first.to_ascii_lowercase().as_str() {
            "http" | "ws" => Some(Scheme::Http),
            "https" | "wss" => Some(Scheme::Https),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Why an allowed-origins entry was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginListError {
    /// The entry is not `scheme://host[:port]`.
    NotAnOrigin {
        /// The entry as given.
        entry: String,
    },
}

impl fmt::Display for OriginListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginListError::NotAnOrigin { entry } => write!(
                f,
                "allowed origin {entry:?} is not an origin: write it as scheme://host[:port], e.g. http://localhost:3000"
            ),
        }
    }
}

impl std::error::Error for OriginListError {}

/// What the policy says about one handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginVerdict {
    /// No `Origin` header: not a browser.
    NoOrigin,
    /// The page came from this server (its origin names the `Host` requested).
    SameOrigin,
    /// The page's origin is on the allow-list.
    Allowed,
    /// A page of another site: refused.
    CrossSite,
}

impl OriginVerdict {
    /// True when the handshake may proceed.
    pub fn accepted(self) -> bool {
        self != OriginVerdict::CrossSite
    }
}

/// The allow-list of origins besides the server's own.
#[derive(Clone, Debug, Default)]
pub struct OriginPolicy {
    /// Normalised origins (`scheme://host[:port]`, default ports left out).
    allowed: Vec<String>,
    /// `*`: every origin is allowed (the check is off).
    any: bool,
}

/// Parses an origin (`scheme://host[:port]`) into (scheme, host, port): lowercase,
/// the scheme's default port filled in. `None` if it is not such an origin (`null`,
/// a path, no scheme).
fn parse_origin(origin: &str) -> Option<(Scheme, String, u16)> {
    let origin = origin.trim().to_ascii_lowercase();
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = Scheme::from_forwarded(scheme)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = split_authority(rest, scheme.default_port())?;
    Some((scheme, host, port))
}

/// Splits `host[:port]` (IPv6 in brackets), filling in `default_port`.
fn split_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let authority = authority.trim().to_ascii_lowercase();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        (format!("[{addr}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()?),
            None => (authority.clone(), default_port),
        }
    };
    (!host.is_empty()).then_some((host, port))
}

fn normalise(scheme: Scheme, host: &str, port: u16) -> String {
    format!("{}://{host}:{port}", scheme.name())
}

impl OriginPolicy {
    /// A policy allowing, besides the server's own origin, each origin in `allowed`
    /// (`https://ops.example.com`, `http://localhost:3000`; `*` allows every origin).
    /// Fails on an entry that is not an origin, saying which.
    pub fn new<S: AsRef<str>>(allowed: &[S]) -> Result<OriginPolicy, OriginListError> {
        let mut policy = OriginPolicy::default();
        for entry in allowed.iter().map(|e| e.as_ref().trim()).filter(|e| !e.is_empty()) {
            if entry == "*" {
                policy.any = true;
                continue;
            }
            let (scheme, host, port) = parse_origin(entry).ok_or_else(|| OriginListError::NotAnOrigin {
                entry: entry.to_owned(),
            })?;
            policy.allowed.push(normalise(scheme, &host, port));
        }
        Ok(policy)
    }

    /// True when every origin is allowed (`*`).
    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// Judges a handshake by its `Origin` and `Host` headers and the `scheme` it
    /// reached the server by.
    pub fn check(&self, origin: Option<&str>, host: Option<&str>, scheme: Scheme) -> OriginVerdict {
        let Some(origin) = origin else {
            return OriginVerdict::NoOrigin;
        };
        if self.any {
            return OriginVerdict::Allowed;
        }
        // `null` (a sandboxed frame, a file:// page) or garbage: no site to trust.
        let Some((o_scheme, o_host, o_port)) = parse_origin(origin) else {
            return OriginVerdict::CrossSite;
        };
        if let Some((h_host, h_port)) = host.and_then(|h| split_authority(h, scheme.default_port())) {
            if o_scheme == scheme && h_host == o_host && h_port == o_port {
                return OriginVerdict::SameOrigin;
            }
        }
        if self.allowed.contains(&normalise(o_scheme, &o_host, o_port)) {
            return OriginVerdict::Allowed;
        }
        OriginVerdict::CrossSite
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_without_an_origin_are_not_browsers() {
        let p = OriginPolicy::default();
        assert_eq!(p.check(None, Some("robot:8080"), Scheme::Http), OriginVerdict::NoOrigin);
        assert_eq!(p.check(None, None, Scheme::Http), OriginVerdict::NoOrigin);
    }

    #[test]
    fn the_servers_own_origin_is_accepted() {
        let p = OriginPolicy::default();
        assert_eq!(
            p.check(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080"), Scheme::Http),
            OriginVerdict::SameOrigin
        );
        // Behind Caddy on the same host: https on 443, Host without a port.
        assert_eq!(
            p.check(Some("https://Robot.Example"), Some("robot.example"), Scheme::Https),
            OriginVerdict::SameOrigin
        );
        assert_eq!(
            p.check(Some("https://robot.example:443"), Some("robot.example"), Scheme::Https),
            OriginVerdict::SameOrigin
        );
        assert_eq!(
            p.check(Some("http://[::1]:8080"), Some("[::1]:8080"), Scheme::Http),
            OriginVerdict::SameOrigin
        );
        assert_eq!(
            p.check(Some("https://robot:8443"), Some("robot:8443"), Scheme::Https),
            OriginVerdict::SameOrigin
        );
    }

    #[test]
    fn the_scheme_is_part_of_the_origin() {
        let p = OriginPolicy::default();
        // A plain-http page is not the TLS site of the same name, nor the other way.
        assert_eq!(
            p.check(Some("http://robot:8443"), Some("robot:8443"), Scheme::Https),
            OriginVerdict::CrossSite
        );
        assert_eq!(
            p.check(Some("https://robot:8080"), Some("robot:8080"), Scheme::Http),
            OriginVerdict::CrossSite
        );
        assert_eq!(Scheme::from_forwarded("https"), Some(Scheme::Https));
        assert_eq!(Scheme::from_forwarded("HTTP, https"), Some(Scheme::Http));
        assert_eq!(Scheme::from_forwarded("gopher"), None);
    }

    #[test]
    fn other_sites_are_refused() {
        let p = OriginPolicy::default();
        for (origin, host) in [
            ("https://evil.example.com", Some("127.0.0.1:8080")),
            ("http://127.0.0.1:3000", Some("127.0.0.1:8080")),
            ("null", Some("127.0.0.1:8080")),
            ("http://127.0.0.1:8080", None),
            ("file:///home/x/page.html", Some("127.0.0.1:8080")),
            ("http://127.0.0.1:8080.evil.example", Some("127.0.0.1:8080")),
        ] {
            assert_eq!(
                p.check(Some(origin), host, Scheme::Http),
                OriginVerdict::CrossSite,
                "{origin}"
            );
        }
    }

    #[test]
    fn the_allow_list_admits_exactly_its_origins() {
        let p = OriginPolicy::new(&["http://localhost:3000", "https://app.foxglove.dev/"]).unwrap();
        let host = Some("transport-server:8080");
        assert_eq!(
            p.check(Some("http://localhost:3000"), host, Scheme::Http),
            OriginVerdict::Allowed
        );
        assert_eq!(
            p.check(Some("https://app.foxglove.dev"), host, Scheme::Http),
            OriginVerdict::Allowed
        );
        assert_eq!(
            p.check(Some("https://app.foxglove.dev:443"), host, Scheme::Http),
            OriginVerdict::Allowed
        );
        assert_eq!(
            p.check(Some("http://localhost:3001"), host, Scheme::Http),
            OriginVerdict::CrossSite
        );
        assert_eq!(
            p.check(Some("http://app.foxglove.dev"), host, Scheme::Http),
            OriginVerdict::CrossSite
        );
        let any = OriginPolicy::new(&["*"]).unwrap();
        assert!(any.allows_any());
        assert_eq!(
            any.check(Some("https://evil.example.com"), host, Scheme::Http),
            OriginVerdict::Allowed
        );
    }

    #[test]
    fn a_malformed_allow_list_entry_is_refused_with_an_example() {
        let e = OriginPolicy::new(&["localhost:3000"]).unwrap_err().to_string();
        assert!(
            e.contains("\"localhost:3000\"") && e.contains("scheme://host[:port]"),
            "{e}"
        );
        assert!(OriginPolicy::new(&["http://x/path"]).is_err());
    }
}
