//! `transport-server --publish`: every frame the hub sees goes to NATS on
//! `video.<stream>` (chunked above the server's `max_payload`), keyframes are also kept
//! in JetStream for late-joining servers, and keyframe requests from subscribing
//! servers (`video.<stream>.idr`) are handed to this server's producer path.
//!
//! The publisher is one more hub client: it starts from the GOP cache and gets every
//! frame after it through a bounded queue that waits for keyframes. When NATS does not
//! keep up (a dead server, a slow link), the queue overflows and the publisher skips to
//! the next keyframe, like a slow browser would; the ring reader and the browsers are never
//! held up. Skipped frames are counted (`shmring_ws_nats_publish_skipped_total`) and
//! show up downstream as a frame_seq gap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use async_nats::{Client, HeaderMap, Subject};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::connection::{max_payload, subscribe_retrying, wait_connected};
use super::video::{split_record, Chunk, NatsVideoTarget, SplitError, CHUNK_HEADER};
use crate::client::{Batch, ClientQueue};
use crate::hub::Hub;
use crate::keyframe::KeyframeRequests;
use crate::message::{Outgoing, VideoFrame};
use crate::metrics::Metrics;

/// Keyframes waiting for JetStream; a newer one replaces them if the store is slow.
const STORE_QUEUE: usize = 2;
/// How long JetStream has to acknowledge a stored keyframe chunk.
const STORE_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Least time between two attempts to create the keyframe store.
const STORE_RETRY: Duration = Duration::from_secs(5);
/// Least time between two log lines about the same kind of failure.
const LOG_EVERY: Duration = Duration::from_secs(2);

/// Why a frame, or a keyframe for the store, did not reach NATS.
#[derive(Debug)]
enum PublishError {
    /// The frame cannot be cut into messages the server takes.
    Split(SplitError),
    /// NATS (or JetStream) refused a message.
    Nats(Box<dyn std::error::Error + Send + Sync>),
    /// JetStream did not acknowledge a stored chunk in time.
    NoAck(Duration),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Split(e) => e.fmt(f),
            PublishError::Nats(e) => e.fmt(f),
            PublishError::NoAck(timeout) => write!(f, "no JetStream acknowledgement within {timeout:?}"),
        }
    }
}

impl PublishError {
    fn nats(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        PublishError::Nats(Box::new(e))
    }
}

/// Settings of `--publish`.
#[derive(Clone, Debug)]
pub struct NatsPublishOptions {
    /// Servers and the live subject.
    pub target: NatsVideoTarget,
    /// JetStream replicas of the keyframe store (3 on a 3-node cluster keeps it through
    /// the loss of a node).
    pub keyframe_replicas: usize,
}

/// The JetStream stream holding the newest keyframe of `target`: one message per
/// chunk subject, in memory, replicated `replicas` times, readable by direct get.
pub(crate) fn keyframe_store_config(target: &NatsVideoTarget, replicas: usize) -> stream::Config {
    stream::Config {
        name: target.keyframe_stream(),
        subjects: vec![target.keyframe_subjects()],
        max_messages_per_subject: 1,
        storage: stream::StorageType::Memory,
        num_replicas: replicas.max(1),
        allow_direct: true,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    }
}

/// The publisher's role name in logs.
pub(crate) fn role(options: &NatsPublishOptions) -> String {
    format!("publish {}", options.target.subject)
}

/// Runs the publisher over `client` until the process ends.
pub(crate) async fn run(
    options: NatsPublishOptions,
    client: Client,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    keyframes: Arc<KeyframeRequests>,
) {
    let target = &options.target;
    let role = role(&options);
    tracing::info!(
        "{role}: publishing every frame on {}, keyframes kept in JetStream stream {}",
        target.subject,
        target.keyframe_stream()
    );
    // Keyframe requests from subscribing servers go to this server's producer path.
    let requests = subscribe_retrying(&client, &target.idr_subject(), &role).await;
    tokio::spawn(forward_keyframe_requests(requests, metrics.clone(), keyframes));
    let (store_tx, store_rx) = mpsc::channel(STORE_QUEUE);
    tokio::spawn(store_keyframes(
        client.clone(),
        options.clone(),
        metrics.clone(),
        store_rx,
    ));

    // The server's max_payload is known once connected; a frame published before
    // could exceed it, and the server would close the connection.
    wait_connected(&client, &role, &target.servers).await;
    let mut publisher = Publisher {
        subject: Subject::from(target.subject.as_str()),
        client,
        metrics,
        store_tx,
        role,
        last_error_log: None,
    };
    let mut batch = Batch::default();
    loop {
        let queue = hub.join(true);
        publisher.drain(&queue, &mut batch).await;
        hub.leave(&queue);
    }
}

async fn forward_keyframe_requests(
    mut requests: async_nats::Subscriber,
    metrics: Arc<Metrics>,
    keyframes: Arc<KeyframeRequests>,
) {
    while requests.next().await.is_some() {
        metrics.nats_video.idr_requests_received.inc();
        keyframes.request("a subscribing server asked over NATS");
    }
}

/// Publishes the frames of one hub queue.
struct Publisher {
    client: Client,
    subject: Subject,
    metrics: Arc<Metrics>,
    /// Keyframes for the JetStream store.
    store_tx: mpsc::Sender<(u64, Bytes)>,
    role: String,
    last_error_log: Option<Instant>,
}

impl Publisher {
    /// Publishes what `queue` hands out until it falls behind (the caller then joins
    /// again, to restart at the next keyframe).
    async fn drain(&mut self, queue: &ClientQueue, batch: &mut Batch) {
        let mut skipped_before = 0;
        loop {
            batch.clear();
            queue.next_batch(batch).await;
            for item in &batch.items {
                if let Outgoing::Video(frame) = item {
                    self.publish(frame).await;
                }
            }
            let skipped = queue.dropped();
            self.metrics.nats_video.publish_skipped.add(skipped - skipped_before);
            skipped_before = skipped;
            if let Some(reason) = &batch.close {
                tracing::warn!(
                    "{}: fell behind ({}); restarting at the next keyframe",
                    self.role,
                    reason.reason
                );
                return;
            }
        }
    }

    /// Publishes one frame on the live subject, and hands a keyframe to the store.
    async fn publish(&mut self, frame: &VideoFrame) {
        let record = frame.record();
        let result = match split_record(record.clone(), frame.frame_seq, max_payload(&self.client)) {
            Ok(chunks) => publish_chunks(&self.client, &self.subject, chunks, &self.metrics).await,
            Err(e) => Err(PublishError::Split(e)),
        };
        let counters = &self.metrics.nats_video;
        match result {
            Ok(()) => {
                counters.frames_published.inc();
            }
            Err(e) => {
                counters.publish_errors.inc();
                if self.last_error_log.is_none_or(|t| t.elapsed() > LOG_EVERY) {
                    self.last_error_log = Some(Instant::now());
                    tracing::warn!("{}: frame {} not published: {e}", self.role, frame.frame_seq);
                }
            }
        }
        // A newer keyframe matters more than an older one still waiting.
        if frame.keyframe && self.store_tx.try_send((frame.frame_seq, record)).is_err() {
            counters.keyframe_store_errors.inc();
        }
    }
}

async fn publish_chunks(
    client: &Client,
    subject: &Subject,
    chunks: Vec<Chunk>,
    metrics: &Metrics,
) -> Result<(), PublishError> {
    for chunk in chunks {
        let sent = match chunk.header {
            None => client.publish(subject.clone(), chunk.data).await,
            Some(value) => {
                let mut headers = HeaderMap::new();
                headers.insert(CHUNK_HEADER, value);
                client.publish_with_headers(subject.clone(), headers, chunk.data).await
            }
        };
        sent.map_err(PublishError::nats)?;
        metrics.nats_video.chunks_published.inc();
    }
    Ok(())
}

/// Stores each keyframe in JetStream: chunks 1.. first, chunk 0 last, so a reader
/// that finds chunk 0 of a frame finds the rest of it too (or a newer frame's, which
/// it detects and retries).
async fn store_keyframes(
    client: Client,
    options: NatsPublishOptions,
    metrics: Arc<Metrics>,
    mut keyframes: mpsc::Receiver<(u64, Bytes)>,
) {
    let target = &options.target;
    let js = jetstream::new(client.clone());
    let mut store_ready = false;
    let mut last_attempt: Option<Instant> = None;
    let mut last_error_log: Option<Instant> = None;
    while let Some((frame_seq, record)) = keyframes.recv().await {
        if !store_ready {
            if last_attempt.is_some_and(|t| t.elapsed() < STORE_RETRY) {
                metrics.nats_video.keyframe_store_errors.inc();
                continue;
            }
            last_attempt = Some(Instant::now());
            match js
                .get_or_create_stream(keyframe_store_config(target, options.keyframe_replicas))
                .await
            {
                Ok(_) => {
                    store_ready = true;
                    tracing::info!(
                        "keyframe store: JetStream stream {} ready (subjects {})",
                        target.keyframe_stream(),
                        target.keyframe_subjects()
                    );
                }
                Err(e) => {
                    metrics.nats_video.keyframe_store_errors.inc();
                    tracing::warn!(
                        "keyframe store: cannot create JetStream stream {}: {e}; late-joining servers wait for a live keyframe (retrying in {STORE_RETRY:?})",
                        target.keyframe_stream()
                    );
                    continue;
                }
            }
        }
        let result = match split_record(record, frame_seq, max_payload(&client)) {
            Ok(chunks) => store_chunks(&js, target, chunks).await,
            Err(e) => Err(PublishError::Split(e)),
        };
        match result {
            Ok(()) => {
                metrics.nats_video.keyframes_stored.inc();
            }
            Err(e) => {
                metrics.nats_video.keyframe_store_errors.inc();
                if last_error_log.is_none_or(|t| t.elapsed() > LOG_EVERY) {
                    last_error_log = Some(Instant::now());
                    tracing::warn!("keyframe store: keyframe {frame_seq} not stored: {e}");
                }
            }
        }
    }
}

async fn store_chunks(
    js: &jetstream::Context,
    target: &NatsVideoTarget,
    chunks: Vec<Chunk>,
) -> Result<(), PublishError> {
    let order = (1..chunks.len()).chain(std::iter::once(0));
    for i in order {
        let chunk = &chunks[i];
        let subject = target.keyframe_subject(i as u16);
        let ack = match &chunk.header {
            None => js.publish(subject, chunk.data.clone()).await,
            Some(value) => {
                let mut headers = HeaderMap::new();
                headers.insert(CHUNK_HEADER, value.as_str());
                js.publish_with_headers(subject, headers, chunk.data.clone()).await
            }
        }
        .map_err(PublishError::nats)?;
        tokio::time::timeout(STORE_ACK_TIMEOUT, ack)
            .await
            .map_err(|_| PublishError::NoAck(STORE_ACK_TIMEOUT))?
            .map_err(PublishError::nats)?;
    }
    Ok(())
}
