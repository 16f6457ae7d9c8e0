//! The server's NATS connections, made one way: the first connect retried, reconnects
//! forever, every state change logged under the role that uses it, slow-consumer
//! events and lost connections of video connections counted. The relay, the video
//! publisher and the video source share one connection when they name the same
//! servers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::{Client, Event};

use crate::metrics::Metrics;

/// Why a NATS connection could not be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NatsError {
    /// A server address is not a NATS URL.
    BadAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The client refused the options.
    Connect(String),
}

impl std::fmt::Display for NatsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsError::BadAddress { address, reason } => {
                write!(
                    f,
                    "bad NATS address {address:?}: {reason} (write it as nats://HOST:PORT)"
                )
            }
            NatsError::Connect(e) => write!(f, "cannot connect to NATS: {e}"),
        }
    }
}

impl std::error::Error for NatsError {}

type StateCallback = Box<dyn Fn(bool) + Send + Sync>;

/// Who uses one connection: each role's name and state callback, and whether video
/// travels on it (its losses are then counted).
#[derive(Default)]
struct Users {
    roles: Mutex<Vec<(String, StateCallback)>>,
    video: AtomicBool,
}

impl Users {
    fn each(&self, f: impl Fn(&str, &StateCallback)) {
        for (role, on_state) in self.roles.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            f(role, on_state);
        }
    }
}

/// One connection and the servers it was made to.
struct Connection {
    servers: Vec<String>,
    client: Client,
    users: Arc<Users>,
}

/// The server's NATS connections, one per distinct server list.
pub(crate) struct Connections {
    metrics: Arc<Metrics>,
    open: Vec<Connection>,
}

impl Connections {
    /// No connection yet; they are made on first use.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Connections {
            metrics,
            open: Vec::new(),
        }
    }

    /// The connection to `servers` for `role` (a new one, or the one another role
    /// already uses). `on_state` hears every connect (true) and disconnect (false),
    /// including the current state at once if the connection is already up. `video`:
    /// frames travel on it (its losses and slow-consumer events are counted).
    pub(crate) async fn client(
        &mut self,
        servers: &[String],
        role: &str,
        video: bool,
        on_state: impl Fn(bool) + Send + Sync + 'static,
    ) -> Result<Client, NatsError> {
        let index = match self.open.iter().position(|c| c.servers == servers) {
            Some(i) => i,
            None => {
                let users = Arc::new(Users::default());
                // Named after its first user: NATS monitoring (`/connz`) shows who is who.
                let name = format!("transport-server {role}");
                let client = connect(servers, name, users.clone(), self.metrics.clone()).await?;
                self.open.push(Connection {
                    servers: servers.to_vec(),
                    client,
                    users,
                });
                self.open.len() - 1
            }
        };
        let connection = &self.open[index];
        connection.users.video.fetch_or(video, Ordering::Relaxed);
        connection
            .users
            .roles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((role.to_owned(), Box::new(on_state)));
        // Registered first, then checked: a connect in between is heard twice, which
        // the callbacks (state setters) do not mind.
        if connection.client.connection_state() == async_nats::connection::State::Connected {
            connection.users.each(|r, on_state| {
                if r == role {
                    on_state(true);
                }
            });
        }
        Ok(connection.client.clone())
    }
}

/// Connects (in the background: the client is returned at once) with the policy.
async fn connect(
    servers: &[String],
    name: String,
    users: Arc<Users>,
    metrics: Arc<Metrics>,
) -> Result<Client, NatsError> {
    let addrs: Vec<async_nats::ServerAddr> = servers
        .iter()
        .map(|s| {
            s.parse().map_err(|e: std::io::Error| NatsError::BadAddress {
                address: s.clone(),
                reason: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(move |event| {
            let (metrics, users) = (metrics.clone(), users.clone());
            async move {
                let video = users.video.load(Ordering::Relaxed);
                match event {
                    Event::Connected => users.each(|role, on_state| {
                        on_state(true);
                        tracing::info!("{role}: NATS connected");
                    }),
                    Event::Disconnected => {
                        if video {
                            metrics.nats_video.disconnects.inc();
                        }
                        users.each(|role, on_state| {
                            on_state(false);
                            tracing::warn!("{role}: NATS disconnected; reconnecting");
                        });
                    }
                    Event::SlowConsumer(_) => {
                        if video {
                            metrics.nats_video.slow_consumer_events.inc();
                        }
                        tracing::warn!("NATS messages dropped (slow consumer)");
                    }
                    other => tracing::debug!("NATS {other}"),
                }
            }
        })
        .connect(addrs)
        .await
        .map_err(|e| NatsError::Connect(e.to_string()))
}

/// Waits until the client's first connection is up (connect returns at once and
/// keeps trying in the background), saying so once if that takes a while.
pub(crate) async fn wait_connected(client: &Client, role: &str, servers: &[String]) {
    let started = Instant::now();
    let mut said = false;
    while client.connection_state() != async_nats::connection::State::Connected {
        if !said && started.elapsed() > Duration::from_secs(2) {
            said = true;
            tracing::warn!("{role}: NATS at {} not reachable yet; still trying", servers.join(","));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Subscribes `client` to `subject`, retrying every second while the client refuses
/// (it only does once it is closed), logging under `role`.
pub(crate) async fn subscribe_retrying(client: &Client, subject: &str, role: &str) -> async_nats::Subscriber {
    loop {
        match client.subscribe(subject.to_owned()).await {
            Ok(sub) => return sub,
            Err(e) => {
                tracing::error!("{role}: cannot subscribe to {subject}: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The largest message the connected server takes (its `max_payload`), or NATS's
/// default before the server said.
pub(crate) fn max_payload(client: &Client) -> usize {
    match client.server_info().max_payload {
        0 => super::video::DEFAULT_MAX_PAYLOAD,
        n => n,
    }
}
