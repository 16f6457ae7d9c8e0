//! Access tokens: two roles (*view*, *control*), loaded from a file and/or the
//! environment, compared in constant time, reloadable for rotation.
//!
//! The tokens file holds one token per line, `ROLE TOKEN`, where ROLE is `view` or
//! `control`; blank lines and lines starting with `#` are ignored:
//!
//! ```text
//! # operators
//! control 3f1c9a0e5b7d24c68e10f4a2b9d7c3e1
//! # the wall display
//! view    8d2e6b4f0a1c3e5d7f9b2a4c6e8d0f1a
//! ```
//!
//! Several tokens per role may be valid at once, which is how a token is rotated: add
//! the new one, move the clients over, remove the old one. The file is read again when
//! it changes ([`Tokens::reload_if_changed`], every [`RELOAD_INTERVAL`] and at each
//! handshake); connections whose token it no longer grants are then closed (see
//! [`super::grant`]).
//!
//! A client presents its token in one of three places (see [`presented_token`]):
//! an `Authorization: Bearer TOKEN` header (programs), a `shmring.token.TOKEN` entry in
//! its `Sec-WebSocket-Protocol` list (browsers and Foxglove clients, which cannot set
//! headers), or a `token=TOKEN` URL query parameter (a typed URL, Foxglove Studio).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

/// What a client may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Watch: video, telemetry, keyframe requests, `/metrics`.
    View,
    /// Everything *view* may do, and send commands to the simulator.
    Control,
}

impl Role {
    /// The role's name, as written in the tokens file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::View => "view",
            Role::Control => "control",
        }
    }
}

/// The `Sec-WebSocket-Protocol` entry that carries a token: `shmring.token.<TOKEN>`.
pub const SUBPROTOCOL_TOKEN_PREFIX: &str = "shmring.token.";
/// The URL query parameter that carries a token.
pub(crate) const QUERY_TOKEN_PARAM: &str = "token";
/// Shortest token accepted (guessing one must stay out of reach).
pub(crate) const MIN_TOKEN_LEN: usize = 16;
/// Longest token accepted.
pub(crate) const MAX_TOKEN_LEN: usize = 256;
/// The tokens file is checked for changes this often (and at every handshake).
pub(crate) const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Why tokens could not be loaded.
#[derive(Debug)]
pub enum TokenError {
    /// The tokens file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// A line of the tokens file (or an environment variable) is not `ROLE TOKEN`.
    Syntax {
        /// Where: `FILE:LINE` or the variable's name.
        place: String,
        /// What is wrong.
        what: String,
    },
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Read { path, error } => {
                write!(f, "cannot read the tokens file {}: {error}", path.display())
            }
            TokenError::Syntax { place, what } => write!(f, "{place}: {what}"),
        }
    }
}

impl std::error::Error for TokenError {}

/// Where tokens come from (`Debug` shows how many tokens, never one).
#[derive(Clone, Default)]
pub struct TokenSource {
    /// A tokens file (`ROLE TOKEN` lines), read again when it changes.
    pub file: Option<PathBuf>,
    /// *view* tokens given directly (an environment variable).
    pub view: Vec<String>,
    /// *control* tokens given directly (an environment variable).
    pub control: Vec<String>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("file", &self.file)
            .field("view", &format_args!("{} tokens", self.view.len()))
            .field("control", &format_args!("{} tokens", self.control.len()))
            .finish()
    }
}

impl TokenSource {
    /// True when no token is configured at all (authentication off).
    pub fn is_empty(&self) -> bool {
        self.file.is_none() && self.view.iter().chain(&self.control).all(|t| t.trim().is_empty())
    }
}

/// The tokens in force (`Debug` shows how many, never one).
pub struct Tokens {
    source: TokenSource,
    state: RwLock<Loaded>,
    /// Counts the loads: connections watch it to check their grant again.
    generation: watch::Sender<u64>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (view, control) = self.counts();
        f.debug_struct("Tokens")
            .field("source", &self.source)
            .field("view", &view)
            .field("control", &control)
            .finish()
    }
}

/// A token in force and the role it grants.
type Entry = (Role, Box<[u8]>);

#[derive(Default)]
struct Loaded {
    entries: Vec<Entry>,
    /// The file's modification time and length when it was read.
    stamp: Option<(SystemTime, u64)>,
}

/// Checks one token's characters and length; `place` says where it came from.
fn check_token(token: &str, place: &str) -> Result<(), TokenError> {
    let syntax = |what: String| TokenError::Syntax {
        place: place.to_owned(),
        what,
    };
    if token.len() < MIN_TOKEN_LEN || token.len() > MAX_TOKEN_LEN {
        return Err(syntax(format!(
            "a token must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters long (this one has {}); make one with `openssl rand -hex 32`",
            token.len()
        )));
    }
    if let Some(c) = token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~".contains(*c)))
    {
        return Err(syntax(format!(
            "a token may hold only letters, digits and - . _ ~ (it travels in URLs and WebSocket subprotocols), not {c:?}"
        )));
    }
    Ok(())
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Parses a tokens file's text (`ROLE TOKEN` lines).
fn parse_file(text: &str, path: &Path) -> Result<Vec<Entry>, TokenError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let place = format!("{}:{}", path.display(), n + 1);
        let mut words = line.split_whitespace();
        let (Some(role), Some(token), None) = (words.next(), words.next(), words.next()) else {
            return Err(TokenError::Syntax {
                place,
                what: "expected `view TOKEN` or `control TOKEN`".into(),
            });
        };
        let role = match role {
            "view" => Role::View,
            "control" => Role::Control,
            // The first word is never shown when it could be a token (role and token
            // swapped): the error goes to the log.
            _ if matches!(token, "view" | "control") => {
                return Err(TokenError::Syntax {
                    place,
                    what: format!("role and token are swapped: write `{token} TOKEN`"),
                })
            }
            other if other.len() >= MIN_TOKEN_LEN => {
                return Err(TokenError::Syntax {
                    place,
                    what: "the first word must be the role, `view` or `control`".into(),
                })
            }
            other => {
                return Err(TokenError::Syntax {
                    place,
                    what: format!("unknown role {other:?}: use `view` or `control`"),
                })
            }
        };
        check_token(token, &place)?;
        out.push((role, token.as_bytes().into()));
    }
    Ok(out)
}

/// Compares two byte strings in time that depends on their lengths only, not on where
/// they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl Tokens {
    /// Loads the tokens `source` describes; `Ok(None)` when it describes none
    /// (authentication off). Fails on an unreadable file or a malformed token.
    pub fn load(source: TokenSource) -> Result<Option<Tokens>, TokenError> {
        if source.is_empty() {
            return Ok(None);
        }
        let tokens = Tokens {
            state: RwLock::new(Loaded::default()),
            source,
            generation: watch::Sender::new(0),
        };
        tokens.reload()?;
        Ok(Some(tokens))
    }

    /// Reads the tokens again (file and the tokens given directly); on an error the
    /// tokens in force stay. Returns how many tokens are now in force.
    pub fn reload(&self) -> Result<usize, TokenError> {
        let mut entries = Vec::new();
        for (role, list, name) in [
            (Role::View, &self.source.view, "view token"),
            (Role::Control, &self.source.control, "control token"),
        ] {
            for token in list.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
                check_token(token, name)?;
                entries.push((role, token.as_bytes().into()));
            }
        }
        let mut stamp = None;
        if let Some(path) = &self.source.file {
            stamp = file_stamp(path);
            let text = std::fs::read_to_string(path).map_err(|error| TokenError::Read {
                path: path.clone(),
                error,
            })?;
            entries.extend(parse_file(&text, path)?);
        }
        let n = entries.len();
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        *state = Loaded { entries, stamp };
        drop(state);
        self.generation.send_modify(|g| *g += 1);
        Ok(n)
    }

    /// True when the tokens come (partly) from a file, which may change.
    pub fn has_file(&self) -> bool {
        self.source.file.is_some()
    }

    /// A receiver that sees a change each time the tokens are loaded again (subscribe
    /// before looking up a role, so no reload after the look-up is missed).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Reads the tokens file again if it changed since it was last read (one `stat`).
    /// A file that cannot be read or parsed leaves the tokens in force, and says why.
    pub fn reload_if_changed(&self) {
        let Some(path) = &self.source.file else { return };
        let now = file_stamp(path);
        let changed = now != self.state.read().unwrap_or_else(|e| e.into_inner()).stamp;
        if changed {
            match self.reload() {
                Ok(n) => tracing::info!("tokens file {} read again: {n} tokens in force", path.display()),
                Err(e) => tracing::error!("{e}; the tokens read before stay in force"),
            }
        }
    }

    /// The role `presented` grants, if it is a token in force. Every token is compared
    /// (in constant time), so the time taken does not say which one nearly matched.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut role = None;
        for (r, token) in &state.entries {
            if constant_time_eq(presented.as_bytes(), token) {
                role = role.max(Some(*r));
            }
        }
        role
    }

    /// How many tokens of each role are in force: (view, control).
    pub fn counts(&self) -> (usize, usize) {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let control = state.entries.iter().filter(|(r, _)| *r == Role::Control).count();
        (state.entries.len() - control, control)
    }
}

/// The token a request presents, looked for in this order: an `Authorization: Bearer`
/// header, a `shmring.token.` entry in the `Sec-WebSocket-Protocol` list, a `token=`
/// query parameter of the request target.
pub(crate) fn presented_token<'a>(
    authorization: Option<&'a str>,
    subprotocols: &[&'a str],
    query: Option<&'a str>,
) -> Option<&'a str> {
    if let Some(auth) = authorization {
        let auth = auth.trim();
        if let Some((scheme, token)) = auth.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
                return Some(token.trim());
            }
        }
    }
    if let Some(token) = subprotocols
        .iter()
        .find_map(|p| p.trim().strip_prefix(SUBPROTOCOL_TOKEN_PREFIX))
    {
        return Some(token);
    }
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(QUERY_TOKEN_PARAM)?.strip_prefix('='))
        .filter(|t| !t.is_empty())
}

/// The subprotocol the server answers with, chosen from the client's list: `preferred`
/// if offered (Foxglove's), else the first entry that is not a token, else none. A
/// token entry is never named in the answer (a response header ends up in proxies'
/// and browsers' logs). A browser fails a handshake whose answer names no subprotocol
/// when it offered some, so a browser page offers a protocol name besides its token
/// (the viewer offers `shmring.v1`); programs accept an answer without one.
pub(crate) fn response_subprotocol<'a>(offered: &[&'a str], preferred: &str) -> Option<&'a str> {
    let offered: Vec<&str> = offered.iter().map(|p| p.trim()).filter(|p| !p.is_empty()).collect();
    offered
        .iter()
        .find(|p| **p == preferred)
        .or_else(|| offered.iter().find(|p| !p.starts_with(SUBPROTOCOL_TOKEN_PREFIX)))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIEW: &str = "view-token-0123456789";
    const CONTROL: &str = "control.token_0123456789~";

    fn scratch_file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("shmring-tokens-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn no_token_configured_means_authentication_off() {
        assert!(Tokens::load(TokenSource::default()).unwrap().is_none());
        let blank = TokenSource {
            view: vec![" ".into()],
            ..Default::default()
        };
        assert!(Tokens::load(blank).unwrap().is_none());
    }

    #[test]
    fn roles_from_the_environment() {
        let t = Tokens::load(TokenSource {
            file: None,
            view: vec![VIEW.into()],
            control: vec![CONTROL.into()],
        })
        .unwrap()
        .unwrap();
        assert_eq!(t.role_of(VIEW), Some(Role::View));
        assert_eq!(t.role_of(CONTROL), Some(Role::Control));
        assert_eq!(t.role_of("view-token-012345678"), None, "a prefix is not the token");
        assert_eq!(t.role_of(""), None);
        assert_eq!(t.counts(), (1, 1));
    }

    #[test]
    fn a_token_in_both_roles_grants_control() {
        let t = Tokens::load(TokenSource {
            file: None,
            view: vec![CONTROL.into()],
            control: vec![CONTROL.into()],
        })
        .unwrap()
        .unwrap();
        assert_eq!(t.role_of(CONTROL), Some(Role::Control));
    }

    #[test]
    fn weak_or_unsafe_tokens_are_refused_with_a_reason() {
        for (bad, says) in [
            ("short", "openssl rand"),
            ("has space in it 0123456789", "not ' '"),
            ("percent%20encoded-0123456", "not '%'"),
        ] {
            let e = Tokens::load(TokenSource {
                control: vec![bad.into()],
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
            assert!(e.contains("control token") && e.contains(says), "{e}");
        }
    }

    #[test]
    fn the_file_is_parsed_and_read_again_when_it_changes() {
        let path = scratch_file(
            "rotate",
            &format!("# operators\ncontrol {CONTROL}\n\n  view   {VIEW}  \n"),
        );
        let t = Tokens::load(TokenSource {
            file: Some(path.clone()),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        assert_eq!(
            (t.role_of(CONTROL), t.role_of(VIEW)),
            (Some(Role::Control), Some(Role::View))
        );
        // Rotation: the control token is replaced (a different length, so the change
        // shows even within the file system's timestamp granularity).
        let new = "new-control-token-0123456789abcdef";
        std::fs::write(&path, format!("control {new}\nview {VIEW}\n")).unwrap();
        t.reload_if_changed();
        assert_eq!((t.role_of(new), t.role_of(CONTROL)), (Some(Role::Control), None));
        // A broken file leaves the tokens in force.
        std::fs::write(&path, "admin nope\n").unwrap();
        t.reload_if_changed();
        assert_eq!(t.role_of(new), Some(Role::Control));
        let e = t.reload().unwrap_err().to_string();
        assert!(e.contains(":1") && e.contains("unknown role \"admin\""), "{e}");
        std::fs::remove_file(&path).unwrap();
        let e = t.reload().unwrap_err().to_string();
        assert!(e.contains("cannot read the tokens file"), "{e}");
        assert_eq!(t.role_of(VIEW), Some(Role::View));
    }

    /// The error of loading a tokens file holding `contents` (the file is removed).
    fn file_error(name: &str, contents: &str) -> String {
        let path = scratch_file(name, contents);
        let e = Tokens::load(TokenSource {
            file: Some(path.clone()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        std::fs::remove_file(&path).unwrap();
        e
    }

    #[test]
    fn malformed_file_lines_are_refused() {
        let e = file_error("bad", &format!("control {CONTROL} extra\n"));
        assert!(e.contains("expected `view TOKEN` or `control TOKEN`"), "{e}");
    }

    #[test]
    fn a_line_with_role_and_token_swapped_never_shows_the_token() {
        for (line, says) in [
            (format!("{CONTROL} control\n"), "swapped"),
            (format!("{CONTROL} {VIEW}\n"), "the first word must be the role"),
        ] {
            let e = file_error("swapped", &line);
            assert!(e.contains(says) && e.contains(":1"), "{e}");
            assert!(!e.contains(CONTROL) && !e.contains(VIEW), "the token was shown: {e}");
        }
    }

    #[test]
    fn debug_output_never_shows_a_token() {
        let t = Tokens::load(TokenSource {
            view: vec![VIEW.into()],
            control: vec![CONTROL.into()],
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains(VIEW) && !shown.contains(CONTROL), "{shown}");
    }

    #[test]
    fn a_reload_is_seen_by_connections_watching() {
        let t = Tokens::load(TokenSource {
            control: vec![CONTROL.into()],
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        let changes = t.changes();
        assert!(!changes.has_changed().unwrap());
        t.reload().unwrap();
        assert!(changes.has_changed().unwrap());
    }

    #[test]
    fn tokens_are_found_in_each_place_a_client_can_put_them() {
        assert_eq!(presented_token(Some("Bearer abc"), &[], None), Some("abc"));
        assert_eq!(presented_token(Some("bearer  abc "), &[], None), Some("abc"));
        assert_eq!(presented_token(Some("Basic abc"), &[], None), None);
        assert_eq!(
            presented_token(None, &["foxglove.websocket.v1", " shmring.token.xyz"], None),
            Some("xyz")
        );
        assert_eq!(presented_token(None, &[], Some("a=1&token=qq&b=2")), Some("qq"));
        assert_eq!(presented_token(None, &[], Some("tokens=qq&token=")), None);
        assert_eq!(presented_token(None, &[], None), None);
        // The header wins over the others.
        assert_eq!(
            presented_token(Some("Bearer h"), &["shmring.token.p"], Some("token=q")),
            Some("h")
        );
    }

    #[test]
    fn the_answered_subprotocol_is_one_the_client_offered() {
        let fox = "foxglove.websocket.v1";
        assert_eq!(response_subprotocol(&["shmring.token.x", fox], fox), Some(fox));
        assert_eq!(
            response_subprotocol(&["shmring.token.x", "shmring.v1"], fox),
            Some("shmring.v1")
        );
        assert_eq!(
            response_subprotocol(&["shmring.token.x"], fox),
            None,
            "the token is never echoed"
        );
        assert_eq!(response_subprotocol(&[], fox), None);
    }

    #[test]
    fn comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
