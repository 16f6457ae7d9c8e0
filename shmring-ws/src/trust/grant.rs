//! What a connection was granted at its handshake, and whether the tokens in force
//! still grant it: revocation.
//!
//! The role is decided once, at the handshake, from the token the client presented. A
//! token removed from the tokens file (or moved to a lesser role) must not keep
//! commanding: each connection keeps its token (never shown: [`Grant`]'s `Debug` leaves
//! it out) and watches the tokens' generation ([`Tokens::changes`]); when the tokens
//! are loaded again it looks its token up, and [`Grant::revoked`] resolves if the token
//! is gone or now grants less. The server then closes the connection (1008); a client
//! whose token was moved to *view* reconnects and gets *view*. A token that now grants
//! more does not raise a connection's role: it reconnects for that.

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

use super::tokens::{Role, Tokens};
use super::TrustPolicy;

/// A connection's role, and the token it was granted by (if tokens are required).
pub struct Grant {
    role: Role,
    presented: Option<Presented>,
}

/// The token a connection presented, with what to look it up in.
struct Presented {
    token: Box<str>,
    policy: Arc<TrustPolicy>,
    changes: watch::Receiver<u64>,
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("role", &self.role)
            .field("token", &self.presented.as_ref().map(|_| "(not shown)"))
            .finish()
    }
}

/// Why a connection's grant was taken back (the close reason its client reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// The token is no longer in force.
    TokenRemoved,
    /// The token now grants less than the connection has (control became view).
    RoleLowered,
}

impl Revocation {
    /// The close reason sent to the client (never the token).
    pub fn reason(self) -> &'static str {
        match self {
            Revocation::TokenRemoved => "token revoked: it is no longer in the server's tokens",
            Revocation::RoleLowered => "token demoted: reconnect to continue with the role it grants now",
        }
    }
}

impl Grant {
    /// A grant that nothing can revoke: tokens are not required.
    pub fn unconditional(role: Role) -> Grant {
        Grant { role, presented: None }
    }

    /// A grant by `token` of `tokens` (in `policy`), watching `changes` (taken before
    /// the role was looked up).
    pub(crate) fn by_token(role: Role, token: &str, policy: Arc<TrustPolicy>, changes: watch::Receiver<u64>) -> Grant {
        Grant {
            role,
            presented: Some(Presented {
                token: token.into(),
                policy,
                changes,
            }),
        }
    }

    /// The role granted at the handshake.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Resolves when the tokens in force no longer grant this connection its role;
    /// never when tokens are not required.
    pub async fn revoked(&mut self) -> Revocation {
        let Some(p) = self.presented.as_mut() else {
            return std::future::pending().await;
        };
        let Some(tokens) = p.policy.tokens() else {
            return std::future::pending().await;
        };
        loop {
            if p.changes.changed().await.is_err() {
                return std::future::pending().await;
            }
            if let Some(why) = judge(tokens, &p.token, self.role) {
                return why;
            }
        }
    }
}

/// What the tokens in force say of `token`, granted `role` before.
fn judge(tokens: &Tokens, token: &str, role: Role) -> Option<Revocation> {
    match tokens.role_of(token) {
        None => Some(Revocation::TokenRemoved),
        Some(now) if now < role => Some(Revocation::RoleLowered),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::origin::OriginPolicy;
    use super::super::tokens::TokenSource;
    use super::*;

    const CONTROL: &str = "control-token-0123456789";
    const OTHER: &str = "other-control-token-0123456789";

    fn policy_with_file(path: &std::path::Path) -> Arc<TrustPolicy> {
        let tokens = Tokens::load(TokenSource {
            file: Some(path.to_owned()),
            ..Default::default()
        })
        .unwrap();
        Arc::new(TrustPolicy::new(tokens, OriginPolicy::default()))
    }

    fn grant(policy: &Arc<TrustPolicy>) -> Grant {
        let tokens = policy.tokens().unwrap();
        let changes = tokens.changes();
        let role = tokens.role_of(CONTROL).unwrap();
        Grant::by_token(role, CONTROL, policy.clone(), changes)
    }

    #[tokio::test]
    async fn removing_or_demoting_the_token_revokes_the_grant() {
        let path = std::env::temp_dir().join(format!("shmring-grant-{}", std::process::id()));
        std::fs::write(&path, format!("control {CONTROL}\ncontrol {OTHER}\n")).unwrap();
        let policy = policy_with_file(&path);
        let mut g = grant(&policy);
        // Another token removed: this grant stands (checked, then waits again).
        std::fs::write(&path, format!("control {CONTROL}\n")).unwrap();
        policy.tokens().unwrap().reload().unwrap();
        let still = tokio::time::timeout(std::time::Duration::from_millis(50), g.revoked()).await;
        assert!(still.is_err(), "a grant whose token stays in force was revoked");
        std::fs::write(&path, format!("view {CONTROL}\n")).unwrap();
        policy.tokens().unwrap().reload().unwrap();
        assert_eq!(g.revoked().await, Revocation::RoleLowered);
        let mut g = Grant::by_token(Role::View, CONTROL, policy.clone(), policy.tokens().unwrap().changes());
        std::fs::write(&path, format!("control {OTHER}\n")).unwrap();
        policy.tokens().unwrap().reload().unwrap();
        assert_eq!(g.revoked().await, Revocation::TokenRemoved);
        std::fs::remove_file(&path).unwrap();
        assert!(!format!("{g:?}").contains(CONTROL), "Debug shows the token");
        assert!(!Revocation::TokenRemoved.reason().contains(CONTROL));
    }

    #[tokio::test]
    async fn without_tokens_nothing_is_revoked() {
        let mut g = Grant::unconditional(Role::Control);
        let r = tokio::time::timeout(std::time::Duration::from_millis(20), g.revoked()).await;
        assert!(r.is_err());
    }
}
