//! The counters of the trust boundary: refused handshakes and commands, peers that
//! vanished, pending sockets evicted.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::trust::Refusal;

/// Counters of the trust boundary, shown on `/metrics`.
#[derive(Debug, Default)]
pub struct TrustMetrics {
    /// Handshakes of browser pages from another site (403).
    pub refused_origin: AtomicU64,
    /// Handshakes (and `/metrics` requests) without a token in force (401).
    pub refused_token: AtomicU64,
    /// Requests whose `Host` is not one of the server's names (421).
    pub refused_host: AtomicU64,
    /// Connections closed because the tokens file no longer grants their token's role.
    pub clients_revoked: AtomicU64,
    /// Commands sent with a *view* token, not published.
    pub commands_refused_role: AtomicU64,
    /// Commands over the global command budget, not published.
    pub commands_refused_budget: AtomicU64,
    /// Connections the peer ended without a close frame (reset, or closed the socket).
    pub clients_reset_by_peer: AtomicU64,
    /// Sockets in their HTTP (or TLS handshake) phase evicted to make room for newer ones.
    pub pending_evicted: AtomicU64,
}

impl TrustMetrics {
    /// Counts a refused request.
    pub fn refused(&self, why: Refusal) {
        match why {
            Refusal::CrossSite => &self.refused_origin,
            Refusal::Unauthorized => &self.refused_token,
            Refusal::MisdirectedHost => &self.refused_host,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the counters in Prometheus text format.
    pub(crate) fn render(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP shmring_ws_refused_total WebSocket handshakes and HTTP requests refused, by reason (origin: a page of another site; token: no token in force; host: a Host that is not one of the server's names).\n# TYPE shmring_ws_refused_total counter"
        );
        let _ = writeln!(
            out,
            "shmring_ws_refused_total{{reason=\"origin\"}} {}",
            get(&self.refused_origin)
        );
        let _ = writeln!(
            out,
            "shmring_ws_refused_total{{reason=\"token\"}} {}",
            get(&self.refused_token)
        );
        let _ = writeln!(
            out,
            "shmring_ws_refused_total{{reason=\"host\"}} {}",
            get(&self.refused_host)
        );
        let _ = writeln!(
            out,
            "# HELP shmring_ws_clients_revoked_total Connections closed because the tokens file no longer grants their token's role.\n# TYPE shmring_ws_clients_revoked_total counter\nshmring_ws_clients_revoked_total {}",
            get(&self.clients_revoked)
        );
        let _ = writeln!(
            out,
            "# HELP shmring_ws_commands_refused_total Client commands not published, by reason (role: a view token; budget: the global command budget was spent).\n# TYPE shmring_ws_commands_refused_total counter"
        );
        let _ = writeln!(
            out,
            "shmring_ws_commands_refused_total{{reason=\"role\"}} {}",
            get(&self.commands_refused_role)
        );
        let _ = writeln!(
            out,
            "shmring_ws_commands_refused_total{{reason=\"budget\"}} {}",
            get(&self.commands_refused_budget)
        );
        let _ = writeln!(
            out,
            "# HELP shmring_ws_clients_reset_by_peer_total Connections the client ended without a close frame (not counted as closed by the server).\n# TYPE shmring_ws_clients_reset_by_peer_total counter\nshmring_ws_clients_reset_by_peer_total {}",
            get(&self.clients_reset_by_peer)
        );
        let _ = writeln!(
            out,
            "# HELP shmring_ws_pending_evicted_total Sockets that sent no request in time, evicted to make room for newer ones.\n# TYPE shmring_ws_pending_evicted_total counter\nshmring_ws_pending_evicted_total {}",
            get(&self.pending_evicted)
        );
    }
}
