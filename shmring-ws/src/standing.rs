//! Why the server ends a connection that is otherwise healthy: the tokens in force no
//! longer grant its token's role (revocation, see [`crate::trust::grant`]), or, for a
//! Foxglove client, it has subscribed to no channel when checked (every
//! [`crate::ServerOptions::subscribe_timeout`]): a client that answers pings but
//! watches nothing would otherwise hold its slot forever.

use std::time::Duration;

use crate::client::ClientQueue;
use crate::framing::{close_code, CloseReason};
use crate::metrics::Metrics;
use crate::trust::grant::Grant;

/// Closes `client` (1008, saying why) when its grant is revoked or, given a
/// `subscribe_timeout` (Foxglove clients), it is found subscribed to nothing; then
/// never returns (the writer sends the close frame and ends the connection).
pub(crate) async fn watch(
    grant: &mut Grant,
    client: &ClientQueue,
    subscribe_timeout: Option<Duration>,
    metrics: &Metrics,
) {
    let reason = tokio::select! {
        why = grant.revoked() => {
            metrics.trust.clients_revoked.inc();
            tracing::info!("client {}: {}", client.id(), why.reason());
            why.reason().to_owned()
        }
        reason = unsubscribed(client, subscribe_timeout.unwrap_or_default()), if subscribe_timeout.is_some() => reason,
    };
    client.close(CloseReason {
        code: close_code::POLICY_VIOLATION,
        reason,
    });
    std::future::pending().await
}

/// Resolves when `client` is found subscribed to no channel, checking every `timeout`.
async fn unsubscribed(client: &ClientQueue, timeout: Duration) -> String {
    loop {
        tokio::time::sleep(timeout).await;
        if !client.subscribed() {
            return format!("subscribed to no channel within {} ms", timeout.as_millis());
        }
    }
}
