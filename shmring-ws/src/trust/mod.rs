//! The trust boundary: who may watch, who may command.
//!
//! | client | without tokens | with tokens |
//! |---|---|---|
//! | a program (no `Origin`) | watches and commands | needs a *view* token to watch, a *control* token to command |
//! | a browser page of this server, or of an allowed origin | watches and commands | same as a program |
//! | a browser page of another site | refused (403) | refused (403) |
//!
//! Before any of that, a request whose `Host` is not one of the server's names is
//! refused (421), whatever it asks for: the DNS-rebinding guard ([`host`]).
//! `/health` is otherwise always open (healthchecks); `/metrics` is open without tokens,
//! needs a token with them, unless it has its own listen address. The viewer page itself
//! holds nothing secret and is always served; it asks for the token.
//!
//! [`tokens`] holds the tokens and where clients put them, [`grant`] what a connection
//! was granted (and whether the tokens file still grants it), [`origin`] the Origin
//! policy, [`host`] the Host allow-list, [`tls`] the native HTTPS/WSS listener.

pub(crate) mod grant;
pub(crate) mod host;
pub(crate) mod origin;
pub(crate) mod tls;
pub(crate) mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;

use host::HostPolicy;
use origin::{OriginPolicy, OriginVerdict, Scheme};
use tokens::{presented_token, Role, Tokens};

/// The port the server listens on when no address is given.
pub const DEFAULT_PORT: u16 = 8080;

/// The address to listen on when none is given: `127.0.0.1:8080` (this machine only)
/// on a workstation, `0.0.0.0:8080` inside a container, where loopback would be
/// unreachable for the published port and the proxy beside it (the container's
/// network is the boundary there, and the server logs what it exposes).
pub fn default_listen() -> SocketAddr {
    let in_container = ["/.dockerenv", "/run/.containerenv"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    default_listen_for(in_container)
}

fn default_listen_for(in_container: bool) -> SocketAddr {
    let ip = if in_container {
        std::net::Ipv4Addr::UNSPECIFIED
    } else {
        std::net::Ipv4Addr::LOCALHOST
    };
    SocketAddr::from((ip, DEFAULT_PORT))
}

/// What a request says about who sent it (from its HTTP head).
#[derive(Clone, Copy, Debug, Default)]
pub struct Credentials<'a> {
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// The `Host` header.
    pub host: Option<&'a str>,
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The entries of the `Sec-WebSocket-Protocol` header(s).
    pub subprotocols: &'a [&'a str],
    /// The query string of the request target (after `?`).
    pub query: Option<&'a str>,
    /// The scheme the request reached the server by (see [`origin`]).
    pub scheme: Scheme,
}

/// The headers of a request that say who sent it, owned (collected while the request
/// head is parsed).
#[derive(Clone, Debug, Default)]
pub(crate) struct RequestAuth {
    origin: Option<String>,
    host: Option<String>,
    authorization: Option<String>,
    subprotocols: Vec<String>,
    query: Option<String>,
    forwarded_proto: Option<String>,
    served_tls: bool,
}

impl RequestAuth {
    /// Collects what matters from a request target (`/path?query`) and its headers.
    pub(crate) fn from_request(target: &str, headers: &[httparse::Header<'_>]) -> RequestAuth {
        let mut auth = RequestAuth {
            query: target.split_once('?').map(|(_, q)| q.to_owned()),
            ..Default::default()
        };
        for h in headers {
            let Ok(value) = std::str::from_utf8(h.value) else {
                continue;
            };
            let value = value.trim();
            if h.name.eq_ignore_ascii_case("origin") {
                auth.origin = Some(value.to_owned());
            } else if h.name.eq_ignore_ascii_case("host") {
                auth.host = Some(value.to_owned());
            } else if h.name.eq_ignore_ascii_case("authorization") {
                auth.authorization = Some(value.to_owned());
            } else if h.name.eq_ignore_ascii_case("x-forwarded-proto") {
                auth.forwarded_proto = Some(value.to_owned());
            } else if h.name.eq_ignore_ascii_case("sec-websocket-protocol") {
                auth.subprotocols.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned),
                );
            }
        }
        auth
    }

    /// Records that the listener serves TLS (the request's scheme is `https` unless a
    /// proxy's `X-Forwarded-Proto` says otherwise).
    pub(crate) fn set_served_tls(&mut self, tls: bool) {
        self.served_tls = tls;
    }

    /// The `Host` header.
    pub(crate) fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// The scheme the request reached the server by: a proxy's `X-Forwarded-Proto`,
    /// else the one the listener serves.
    pub(crate) fn scheme(&self) -> Scheme {
        let served = if self.served_tls { Scheme::Https } else { Scheme::Http };
        self.forwarded_proto
            .as_deref()
            .and_then(Scheme::from_forwarded)
            .unwrap_or(served)
    }

    /// The subprotocols the client offered.
    pub(crate) fn subprotocols(&self) -> Vec<&str> {
        self.subprotocols.iter().map(String::as_str).collect()
    }

    /// Calls `f` with the request's [`Credentials`].
    pub(crate) fn with_credentials<T>(&self, f: impl FnOnce(&Credentials<'_>) -> T) -> T {
        let protocols = self.subprotocols();
        f(&Credentials {
            origin: self.origin.as_deref(),
            host: self.host.as_deref(),
            authorization: self.authorization.as_deref(),
            subprotocols: &protocols,
            query: self.query.as_deref(),
            scheme: self.scheme(),
        })
    }
}

/// Why a request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A page of another site (403).
    CrossSite,
    /// No token, or not one in force (401).
    Unauthorized,
    /// A `Host` that is not one of the server's names (421): DNS rebinding.
    MisdirectedHost,
}

impl Refusal {
    /// The HTTP status line.
    pub fn status(self) -> &'static str {
        match self {
            Refusal::CrossSite => "403 Forbidden",
            Refusal::Unauthorized => "401 Unauthorized",
            Refusal::MisdirectedHost => "421 Misdirected Request",
        }
    }

    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::CrossSite => {
                "this page's origin may not connect: open the viewer from this server, or ask the operator to add the origin to SDR_ALLOWED_ORIGINS"
            }
            Refusal::Unauthorized => {
                "a token is required: Authorization: Bearer TOKEN, a shmring.token.TOKEN WebSocket subprotocol, or ?token=TOKEN"
            }
            Refusal::MisdirectedHost => {
                "this server does not answer to the name in the Host header (a guard against DNS rebinding): if it is a name of this server, ask the operator to add it to SDR_ALLOWED_HOSTS (--allowed-hosts)"
            }
        }
    }

    /// The `reason` label of the refusal counter.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::CrossSite => "origin",
            Refusal::Unauthorized => "token",
            Refusal::MisdirectedHost => "host",
        }
    }
}

/// The server's trust settings: tokens (optional), the Origin policy and the Host
/// allow-list.
#[derive(Debug, Default)]
pub struct TrustPolicy {
    tokens: Option<Tokens>,
    origins: OriginPolicy,
    hosts: HostPolicy,
}

impl TrustPolicy {
    /// A policy with these tokens (`None`: authentication off) and origins, and the
    /// default Host allow-list.
    pub fn new(tokens: Option<Tokens>, origins: OriginPolicy) -> TrustPolicy {
        TrustPolicy {
            tokens,
            origins,
            hosts: HostPolicy::default(),
        }
    }

    /// This policy with the Host allow-list `hosts`.
    pub fn with_hosts(self, hosts: HostPolicy) -> TrustPolicy {
        TrustPolicy { hosts, ..self }
    }

    /// Decides whether a request with this `Host` header may be served at all.
    pub fn admit_host(&self, host: Option<&str>) -> Result<(), Refusal> {
        if self.hosts.allows(host) {
            Ok(())
        } else {
            Err(Refusal::MisdirectedHost)
        }
    }

    /// True when tokens are required.
    pub fn tokens_required(&self) -> bool {
        self.tokens.is_some()
    }

    /// The tokens in force, if any (to reload them).
    pub fn tokens(&self) -> Option<&Tokens> {
        self.tokens.as_ref()
    }

    /// Decides a WebSocket handshake: the role the client gets, or why it is refused.
    /// The Origin is checked first (a page of another site is refused even with a
    /// token: it may have found one in the visitor's browser).
    pub fn admit(&self, c: &Credentials<'_>) -> Result<(Role, OriginVerdict), Refusal> {
        let verdict = self.origins.check(c.origin, c.host, c.scheme);
        if !verdict.accepted() {
            return Err(Refusal::CrossSite);
        }
        let role = match &self.tokens {
            None => Role::Control,
            Some(tokens) => {
                tokens.reload_if_changed();
                presented_token(c.authorization, c.subprotocols, c.query)
                    .and_then(|t| tokens.role_of(t))
                    .ok_or(Refusal::Unauthorized)?
            }
        };
        Ok((role, verdict))
    }

    /// [`TrustPolicy::admit`], with the connection's grant: the role, and
    /// the token it was granted by, watched for revocation.
    pub fn admit_grant(self: &Arc<Self>, c: &Credentials<'_>) -> Result<grant::Grant, Refusal> {
        let Some(tokens) = &self.tokens else {
            return self.admit(c).map(|(role, _)| grant::Grant::unconditional(role));
        };
        // Watch before the look-up: a reload after it is then seen.
        let changes = tokens.changes();
        let (role, _) = self.admit(c)?;
        let token = presented_token(c.authorization, c.subprotocols, c.query).ok_or(Refusal::Unauthorized)?;
        Ok(grant::Grant::by_token(role, token, self.clone(), changes))
    }

    /// Reads the tokens file again whenever it changed, checking every
    /// `RELOAD_INTERVAL`, until dropped; connections whose token it no longer
    /// grants are closed (see the grant). Returns at once without a tokens file.
    pub async fn reload_tokens_file(self: Arc<Self>) {
        let Some(tokens) = self.tokens.as_ref().filter(|t| t.has_file()) else {
            return;
        };
        let mut tick = tokio::time::interval(tokens::RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            tokens.reload_if_changed();
        }
    }

    /// Decides a `/metrics` request on the main listener: open without tokens, any
    /// token in force with them.
    pub fn admit_metrics(&self, c: &Credentials<'_>) -> Result<(), Refusal> {
        match &self.tokens {
            None => Ok(()),
            Some(tokens) => {
                tokens.reload_if_changed();
                presented_token(c.authorization, c.subprotocols, c.query)
                    .and_then(|t| tokens.role_of(t))
                    .map(|_| ())
                    .ok_or(Refusal::Unauthorized)
            }
        }
    }

    /// One plain sentence for the log at start: who can reach `listen`, and who may
    /// watch and command.
    pub fn exposure(&self, listen: SocketAddr, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        let reach = if listen.ip().is_loopback() {
            format!("{scheme}://{listen} is reachable from this machine only")
        } else if listen.ip().is_unspecified() {
            format!(
                "{scheme}://{listen} is reachable from every network this host is on (set SDR_LISTEN_ADDR=127.0.0.1:{} to keep it local)",
                listen.port()
            )
        } else {
            format!("{scheme}://{listen} is reachable from the network of {}", listen.ip())
        };
        let who = match &self.tokens {
            None => "no tokens: anyone who reaches it may watch AND send commands to the simulator (set SDR_CONTROL_TOKEN / SDR_TOKENS_FILE to require tokens)".to_owned(),
            Some(t) => {
                let (view, control) = t.counts();
                format!("tokens required: {view} view and {control} control tokens in force; commands need a control token")
            }
        };
        let origins = if self.origins.allows_any() {
            "browser pages of ANY site may connect (SDR_ALLOWED_ORIGINS=*)"
        } else {
            "browser pages may connect from this server's own origin and SDR_ALLOWED_ORIGINS only"
        };
        let hosts = if self.hosts.allows_any() {
            "requests for ANY host name are served (SDR_ALLOWED_HOSTS=*: no DNS-rebinding guard)"
        } else {
            "requests are served for IP addresses, localhost, this machine's name and SDR_ALLOWED_HOSTS only"
        };
        format!("{reach}; {who}; {origins}; {hosts}")
    }
}

#[cfg(test)]
mod tests {
    use super::tokens::TokenSource;
    use super::*;

    const VIEW: &str = "view-token-0123456789";
    const CONTROL: &str = "control-token-0123456789";

    fn with_tokens() -> TrustPolicy {
        let tokens = Tokens::load(TokenSource {
            file: None,
            view: vec![VIEW.into()],
            control: vec![CONTROL.into()],
        })
        .unwrap();
        TrustPolicy::new(tokens, OriginPolicy::default())
    }

    #[test]
    fn without_tokens_everyone_but_other_sites_may_command() {
        let p = TrustPolicy::default();
        let program = Credentials::default();
        assert_eq!(p.admit(&program), Ok((Role::Control, OriginVerdict::NoOrigin)));
        let own_page = Credentials {
            origin: Some("http://127.0.0.1:8080"),
            host: Some("127.0.0.1:8080"),
            ..Default::default()
        };
        assert_eq!(p.admit(&own_page), Ok((Role::Control, OriginVerdict::SameOrigin)));
        let evil = Credentials {
            origin: Some("https://evil.example.com"),
            host: Some("127.0.0.1:8080"),
            ..Default::default()
        };
        assert_eq!(p.admit(&evil), Err(Refusal::CrossSite));
        assert_eq!(p.admit_metrics(&program), Ok(()));
    }

    #[test]
    fn with_tokens_the_role_comes_from_the_token() {
        let p = with_tokens();
        assert_eq!(p.admit(&Credentials::default()), Err(Refusal::Unauthorized));
        let bearer = format!("Bearer {VIEW}");
        let c = Credentials {
            authorization: Some(&bearer),
            ..Default::default()
        };
        assert_eq!(p.admit(&c).map(|a| a.0), Ok(Role::View));
        let proto = format!("shmring.token.{CONTROL}");
        let protos = [proto.as_str()];
        let c = Credentials {
            subprotocols: &protos,
            ..Default::default()
        };
        assert_eq!(p.admit(&c).map(|a| a.0), Ok(Role::Control));
        let query = "token=wrong-token-0123456789";
        let c = Credentials {
            query: Some(query),
            ..Default::default()
        };
        assert_eq!(p.admit(&c), Err(Refusal::Unauthorized));
        assert_eq!(p.admit_metrics(&c), Err(Refusal::Unauthorized));
        // A token does not make another site's page acceptable.
        let c = Credentials {
            origin: Some("https://evil.example.com"),
            authorization: Some(&bearer),
            ..Default::default()
        };
        assert_eq!(p.admit(&c), Err(Refusal::CrossSite));
    }

    #[test]
    fn credentials_are_collected_from_the_request_head() {
        let headers = [
            httparse::Header {
                name: "Host",
                value: b"robot:8080",
            },
            httparse::Header {
                name: "origin",
                value: b"http://robot:8080",
            },
            httparse::Header {
                name: "Sec-WebSocket-Protocol",
                value: b"foxglove.websocket.v1, shmring.token.control-token-0123456789",
            },
        ];
        let auth = RequestAuth::from_request("/?a=1", &headers);
        assert_eq!(
            auth.subprotocols(),
            ["foxglove.websocket.v1", "shmring.token.control-token-0123456789"]
        );
        let admitted = auth.with_credentials(|c| with_tokens().admit(c));
        assert_eq!(admitted, Ok((Role::Control, OriginVerdict::SameOrigin)));
    }

    #[test]
    fn the_default_address_is_local_outside_containers() {
        assert_eq!(default_listen_for(false).to_string(), "127.0.0.1:8080");
        assert_eq!(default_listen_for(true).to_string(), "0.0.0.0:8080");
    }

    #[test]
    fn the_exposure_line_says_what_is_open() {
        let open = TrustPolicy::default().exposure("0.0.0.0:8080".parse().unwrap(), false);
        assert!(
            open.contains("every network") && open.contains("AND send commands"),
            "{open}"
        );
        let local = with_tokens().exposure("127.0.0.1:8080".parse().unwrap(), true);
        assert!(
            local.contains("this machine only") && local.contains("1 view and 1 control"),
            "{local}"
        );
    }
}
