//! The counters of the trust boundary: refused handshakes and commands, peers that
//! vanished, pending sockets evicted.

use super::{counter, Counter, Family, Reading};
use crate::trust::Refusal;

/// Counters of the trust boundary, shown on `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct TrustMetrics {
    /// Handshakes of browser pages from another site (403).
    pub(crate) refused_origin: Counter,
    /// Handshakes (and `/metrics` requests) without a token in force (401).
    pub(crate) refused_token: Counter,
    /// Requests whose `Host` is not one of the server's names (421).
    pub(crate) refused_host: Counter,
    /// Connections closed because the tokens file no longer grants their token's role.
    pub(crate) clients_revoked: Counter,
    /// Commands sent with a *view* token, not published.
    pub(crate) commands_refused_role: Counter,
    /// Commands over the global command budget, not published.
    pub(crate) commands_refused_budget: Counter,
    /// Connections the peer ended without a close frame (reset, or closed the socket).
    pub(crate) clients_reset_by_peer: Counter,
    /// Sockets in their HTTP (or TLS handshake) phase evicted to make room for newer ones.
    pub(crate) pending_evicted: Counter,
}

/// The trust counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustSnapshot {
    /// Handshakes of browser pages from another site (403).
    pub refused_origin: u64,
    /// Handshakes (and `/metrics` requests) without a token in force (401).
    pub refused_token: u64,
    /// Requests whose `Host` is not one of the server's names (421).
    pub refused_host: u64,
    /// Connections closed because the tokens file no longer grants their token's role.
    pub clients_revoked: u64,
    /// Commands sent with a *view* token, not published.
    pub commands_refused_role: u64,
    /// Commands over the global command budget, not published.
    pub commands_refused_budget: u64,
    /// Connections the peer ended without a close frame (reset, or closed the socket).
    pub clients_reset_by_peer: u64,
    /// Sockets in their HTTP (or TLS handshake) phase evicted to make room for newer ones.
    pub pending_evicted: u64,
}

impl TrustMetrics {
    /// Counts a refused request.
    pub(crate) fn refused(&self, why: Refusal) {
        match why {
            Refusal::CrossSite => &self.refused_origin,
            Refusal::Unauthorized => &self.refused_token,
            Refusal::MisdirectedHost => &self.refused_host,
        }
        .inc();
    }

    /// The counters as they are now.
    pub(crate) fn snapshot(&self) -> TrustSnapshot {
        TrustSnapshot {
            refused_origin: self.refused_origin.get(),
            refused_token: self.refused_token.get(),
            refused_host: self.refused_host.get(),
            clients_revoked: self.clients_revoked.get(),
            commands_refused_role: self.commands_refused_role.get(),
            commands_refused_budget: self.commands_refused_budget.get(),
            clients_reset_by_peer: self.clients_reset_by_peer.get(),
            pending_evicted: self.pending_evicted.get(),
        }
    }
}

/// The families on `/metrics`, in order.
pub(crate) const FAMILIES: &[Family<TrustSnapshot>] = &[
    Family {
        name: "shmring_ws_refused_total",
        help: "WebSocket handshakes and HTTP requests refused, by reason (origin: a page of another site; token: no token in force; host: a Host that is not one of the server's names).",
        reading: Reading::ByLabel(
            "reason",
            &[
                ("origin", |s| s.refused_origin),
                ("token", |s| s.refused_token),
                ("host", |s| s.refused_host),
            ],
        ),
    },
    counter(
        "shmring_ws_clients_revoked_total",
        "Connections closed because the tokens file no longer grants their token's role.",
        |s| s.clients_revoked,
    ),
    Family {
        name: "shmring_ws_commands_refused_total",
        help: "Client commands not published, by reason (role: a view token; budget: the global command budget was spent).",
        reading: Reading::ByLabel(
            "reason",
            &[("role", |s| s.commands_refused_role), ("budget", |s| s.commands_refused_budget)],
        ),
    },
    counter(
        "shmring_ws_clients_reset_by_peer_total",
        "Connections the client ended without a close frame (not counted as closed by the server).",
        |s| s.clients_reset_by_peer,
    ),
    counter(
        "shmring_ws_pending_evicted_total",
        "Sockets that sent no request in time, evicted to make room for newer ones.",
        |s| s.pending_evicted,
    ),
];
