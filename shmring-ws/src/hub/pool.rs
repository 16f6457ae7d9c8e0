//! The fan-out threads, one pool per server shared by the hub of every camera.
//!
//! A server of N cameras has N hubs; each handing its messages to threads of its own
//! would start N times the threads and pay N times the wake-ups, so per-client-frame CPU
//! would grow with the cameras. Instead every hub sends its jobs to the one pool: thread
//! `k` of `n` owns the clients with `id % n == k` of every hub, takes whatever jobs wait
//! (of any hub) in one go, and delivers each hub's share in publication order. A client
//! belongs to one hub, so its messages stay in order whatever the other hubs send.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use crate::client::{ClientQueue, QueueLimits};
use crate::keyframe::KeyframeRequests;
use crate::message::Outgoing;
use crate::metrics::Metrics;

/// What a hub's deliveries need, whichever thread makes them.
#[derive(Debug)]
pub(super) struct Delivery {
    pub(super) limits: QueueLimits,
    pub(super) metrics: Arc<Metrics>,
    pub(super) keyframes: Arc<KeyframeRequests>,
    /// The hub's jobs sent to the pool and not yet delivered.
    pub(super) in_flight: AtomicUsize,
}

/// One message of one hub for the fan-out: what the clients get and who they are.
#[derive(Debug)]
pub(super) struct FanoutJob {
    /// Publication number; clients that joined later already have it (GOP cache) or
    /// must not get it.
    pub(super) seq: u64,
    /// The hub's clients at publication (a snapshot).
    pub(super) clients: Arc<Vec<Arc<ClientQueue>>>,
    pub(super) item: Outgoing,
    /// CLOCK_MONOTONIC ns when it was published, with stage times on (else 0).
    pub(super) queued_ns: u64,
    /// The hub it is from.
    pub(super) to: Arc<Delivery>,
}

/// Most queued jobs a fan-out thread takes in one go when it is behind.
const FANOUT_BATCH: usize = 256;

/// The server's fan-out threads. They end when the last hub holding the pool is dropped.
#[derive(Debug)]
pub(crate) struct FanoutPool {
    /// One queue per thread (client `id % len` is that thread's).
    shards: Vec<Sender<FanoutJob>>,
}

impl FanoutPool {
    /// A pool of `threads` fan-out threads (0: none; every hub's publishing thread then
    /// delivers itself).
    pub(crate) fn new(threads: usize) -> io::Result<Arc<FanoutPool>> {
        let mut shards = Vec::with_capacity(threads);
        for k in 0..threads {
            let (tx, rx) = std::sync::mpsc::channel::<FanoutJob>();
            std::thread::Builder::new()
                .name(format!("shmring-fanout-{k}"))
                .spawn(move || run(rx, (k, threads)))?;
            shards.push(tx);
        }
        Ok(Arc::new(FanoutPool { shards }))
    }

    /// How many threads it has.
    pub(crate) fn threads(&self) -> usize {
        self.shards.len()
    }

    /// Hands `job` to every thread (each delivers to its own clients), counting the
    /// jobs in flight on the hub's [`Delivery`].
    pub(super) fn send(&self, job: FanoutJob) {
        let Some((last, others)) = self.shards.split_last() else {
            return;
        };
        job.to.in_flight.fetch_add(self.shards.len(), Ordering::Relaxed);
        // A send fails only if that thread is gone (it panicked); its clients then get
        // nothing more and time out on keyframes (and its jobs stay in flight, so the
        // publisher no longer writes itself).
        for shard in others {
            let _ = shard.send(FanoutJob {
                seq: job.seq,
                clients: job.clients.clone(),
                item: job.item.clone(),
                queued_ns: job.queued_ns,
                to: job.to.clone(),
            });
        }
        let _ = last.send(job);
    }
}

/// Fan-out thread `shard.0` of `shard.1`: delivers its clients' share of every job.
fn run(rx: Receiver<FanoutJob>, shard: (usize, usize)) {
    let mut jobs = Vec::with_capacity(FANOUT_BATCH);
    let (mut mine, mut others) = (Vec::with_capacity(FANOUT_BATCH), Vec::with_capacity(FANOUT_BATCH));
    while let Ok(job) = rx.recv() {
        // Behind? Take everything waiting: each client then gets all of it in one
        // writev instead of one call per message.
        jobs.push(job);
        jobs.extend(rx.try_iter().take(FANOUT_BATCH - 1));
        // One hub at a time, each hub's jobs in publication order.
        while let Some(to) = jobs.first().map(|j| j.to.clone()) {
            for job in jobs.drain(..) {
                if Arc::ptr_eq(&job.to, &to) {
                    mine.push(job);
                } else {
                    others.push(job);
                }
            }
            super::deliver(&mine, shard, &to);
            // SYNC POINT (in flight): Release pairs with the Acquire load in the hub's
            // `push_to_all`: a publisher that sees no job of its hub in flight writes
            // after these deliveries.
            to.in_flight.fetch_sub(mine.len(), Ordering::Release);
            mine.clear();
            std::mem::swap(&mut jobs, &mut others);
        }
    }
}
