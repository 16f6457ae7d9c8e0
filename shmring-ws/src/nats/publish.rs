//! `transport-server --publish`: every frame the hub sees goes to NATS on
//! `video.<stream>` (chunked above the server's `max_payload`), keyframes are also kept
//! in JetStream for late-joining servers, and keyframe requests from subscribing
//! servers (`video.<stream>.idr`) are handed to this server's producer path.
//!
//! The publisher is one more hub client: it starts from the GOP cache and gets every
//! frame after it through a bounded, keyframe-gated queue. When NATS does not keep up
//! (a dead server, a slow link), the queue overflows and the publisher skips to the
//! next keyframe, like a slow browser would; the ring reader and the browsers are never
//! held up. Skipped frames are counted (`shmring_ws_nats_publish_skipped_total`) and
//! show up downstream as a frame_seq gap.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use async_nats::{Client, HeaderMap, Subject};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::client::wait_connected;
use super::video::{split_record, Chunk, NatsVideoTarget, CHUNK_HEADER, DEFAULT_MAX_PAYLOAD};
use crate::client::Batch;
use crate::hub::Hub;
use crate::keyframe::KeyframeRequests;
use crate::message::Outgoing;
use crate::metrics::Metrics;

/// Keyframes waiting for JetStream; a newer one replaces them if the store is slow.
const STORE_QUEUE: usize = 2;
/// How long JetStream has to acknowledge a stored keyframe chunk.
const STORE_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Least time between two attempts to create the keyframe store.
const STORE_RETRY: Duration = Duration::from_secs(5);
/// Least time between two log lines about the same kind of failure.
const LOG_EVERY: Duration = Duration::from_secs(2);

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
    let target = options.target.clone();
    let role = role(&options);
    tracing::info!(
        "{role}: publishing every frame on {}, keyframes kept in JetStream stream {}",
        target.subject,
        target.keyframe_stream()
    );
    // Keyframe requests from subscribing servers go to this server's producer path.
    match client.subscribe(target.idr_subject()).await {
        Ok(mut sub) => {
            let (metrics, keyframes) = (metrics.clone(), keyframes.clone());
            tokio::spawn(async move {
                while sub.next().await.is_some() {
                    metrics.nats_video.idr_requests_received.fetch_add(1, Ordering::Relaxed);
                    keyframes.request("a subscribing server asked over NATS");
                }
            });
        }
        Err(e) => tracing::error!("{role}: cannot subscribe to {}: {e}", target.idr_subject()),
    }
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
    let subject = Subject::from(target.subject.as_str());
    let mut batch = Batch::default();
    let mut last_error_log: Option<Instant> = None;
    loop {
        let queue = hub.join();
        let mut skipped_before = 0;
        loop {
            batch.clear();
            queue.next_batch(&mut batch).await;
            for item in &batch.items {
                let Outgoing::Video(frame) = item else { continue };
                let record = frame.record();
                let max_payload = match client.server_info().max_payload {
                    0 => DEFAULT_MAX_PAYLOAD,
                    n => n,
                };
                let result = match split_record(record.clone(), frame.frame_seq, max_payload) {
                    Ok(chunks) => publish_chunks(&client, &subject, chunks, &metrics).await,
                    Err(e) => Err(e.to_string()),
                };
                match result {
                    Ok(()) => {
                        metrics.nats_video.frames_published.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        metrics.nats_video.publish_errors.fetch_add(1, Ordering::Relaxed);
                        if last_error_log.is_none_or(|t| t.elapsed() > LOG_EVERY) {
                            last_error_log = Some(Instant::now());
                            tracing::warn!("{role}: frame {} not published: {e}", frame.frame_seq);
                        }
                    }
                }
                if frame.keyframe {
                    // A newer keyframe matters more than an older one still waiting.
                    if store_tx.try_send((frame.frame_seq, record)).is_err() {
                        metrics.nats_video.keyframe_store_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let skipped = queue.dropped();
            metrics
                .nats_video
                .publish_skipped
                .fetch_add(skipped - skipped_before, Ordering::Relaxed);
            skipped_before = skipped;
            if let Some(reason) = &batch.close {
                tracing::warn!(
                    "{role}: fell behind ({}); restarting at the next keyframe",
                    reason.reason
                );
                break;
            }
        }
        hub.leave(&queue);
    }
}

async fn publish_chunks(
    client: &Client,
    subject: &Subject,
    chunks: Vec<Chunk>,
    metrics: &Metrics,
) -> Result<(), String> {
    for chunk in chunks {
        let sent = match chunk.header {
            None => client.publish(subject.clone(), chunk.data).await,
            Some(value) => {
                let mut headers = HeaderMap::new();
                headers.insert(CHUNK_HEADER, value);
                client.publish_with_headers(subject.clone(), headers, chunk.data).await
            }
        };
        sent.map_err(|e| e.to_string())?;
        metrics.nats_video.chunks_published.fetch_add(1, Ordering::Relaxed);
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
                metrics.nats_video.keyframe_store_errors.fetch_add(1, Ordering::Relaxed);
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
                    metrics.nats_video.keyframe_store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "keyframe store: cannot create JetStream stream {}: {e}; late-joining servers wait for a live keyframe (retrying in {STORE_RETRY:?})",
                        target.keyframe_stream()
                    );
                    continue;
                }
            }
        }
        let max_payload = match client.server_info().max_payload {
            0 => DEFAULT_MAX_PAYLOAD,
            n => n,
        };
        let result = match split_record(record, frame_seq, max_payload) {
            Ok(chunks) => store_chunks(&js, target, chunks).await,
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => {
                metrics.nats_video.keyframes_stored.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                metrics.nats_video.keyframe_store_errors.fetch_add(1, Ordering::Relaxed);
                if last_error_log.is_none_or(|t| t.elapsed() > LOG_EVERY) {
                    last_error_log = Some(Instant::now());
                    tracing::warn!("keyframe store: keyframe {frame_seq} not stored: {e}");
                }
            }
        }
    }
}

async fn store_chunks(js: &jetstream::Context, target: &NatsVideoTarget, chunks: Vec<Chunk>) -> Result<(), String> {
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
        .map_err(|e| e.to_string())?;
        tokio::time::timeout(STORE_ACK_TIMEOUT, ack)
            .await
            .map_err(|_| format!("no JetStream acknowledgement within {STORE_ACK_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
