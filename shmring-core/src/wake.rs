//! When the writer must call `FUTEX_WAKE`, and how long a reader may sleep without one.
//!
//! Readers map the ring read-only, so the writer cannot know whether anyone sleeps on the
//! futex; calling `FUTEX_WAKE` after every commit costs a system call per frame, which
//! with readers asleep is most of the writer's time at high frame rates. Instead the
//! writer skips the call for a commit that follows the previous one closely (within
//! [`WAKE_GAP_NS`]), and a reader that sees a recent commit sleeps only until the gap
//! has passed since it, then looks again:
//!
//! - The writer stores the heartbeat word with a stamp `pre(c)` taken for each commit `c`
//!   before `c`'s Release store of `notify` (after its `write_index` store, so a spinning
//!   reader does not wait for the clock), and after that store reads the clock again,
//!   `post(c)`. It wakes iff `post(c) - pre(prev) >= WAKE_GAP_NS`, where `prev` is
//!   its previous commit (a fresh writer always wakes).
//! - A reader about to sleep has Acquire-loaded `notify` = the value of the last commit
//!   `k` before it sleeps (the futex compares that value, so no commit falls between),
//!   then loads the heartbeat `hb`: `hb >= pre(k)`. It sleeps at most until
//!   `hb + WAKE_GAP_NS` if that is still ahead (see [`reader_sleep_bound`]).
//! - Let `u` be the first commit after the reader fell asleep. If the writer skipped its
//!   wake, `post(u) < pre(k) + WAKE_GAP_NS <= hb + WAKE_GAP_NS`, and `u` was committed
//!   before `post(u)` was read, so `u` is visible when the bounded sleep ends. If instead
//!   `now - hb >= WAKE_GAP_NS` when the reader decided to sleep unbounded, then
//!   `post(u) > now >= pre(k) + WAKE_GAP_NS` and the writer does wake it.
//!
//! So a sleeping reader misses no commit by more than the gap plus the kernel's timer
//! slack, and a writer streaming faster than one frame per gap makes no system calls.
//! Both sides use CLOCK_MONOTONIC of the same machine (and time namespace).

use std::time::Duration;

/// Commits less than this long after the previous one (20 µs, the reader's default
/// spin) do not call `FUTEX_WAKE`.
pub(crate) const WAKE_GAP_NS: u64 = 20_000;

/// True if the writer must wake sleepers after a commit it finished at `after_commit_ns`,
/// when its previous commit stamped the heartbeat with `previous_stamp_ns` (0: none).
pub(crate) fn writer_must_wake(previous_stamp_ns: u64, after_commit_ns: u64) -> bool {
    previous_stamp_ns == 0 || after_commit_ns.saturating_sub(previous_stamp_ns) >= WAKE_GAP_NS
}

/// How long a reader that sees heartbeat `heartbeat_ns` at `now_ns` may sleep at most
/// before looking again, or `None` if it may sleep until woken.
pub(crate) fn reader_sleep_bound(heartbeat_ns: u64, now_ns: u64) -> Option<Duration> {
    let age = now_ns.saturating_sub(heartbeat_ns);
    (age < WAKE_GAP_NS).then(|| Duration::from_nanos(WAKE_GAP_NS - age))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The argument of the module doc over arbitrary timings: the previous commit `k`
        /// stamped `pre_k`; the reader saw heartbeat `hb >= pre_k` and decided at `now`;
        /// the next commit `u` landed at `commit_u > now` and the writer read `post_u >=
        /// commit_u`. Either the writer wakes, or the reader's sleep ends no earlier than
        /// the commit.
        #[test]
        fn a_skipped_wake_is_covered_by_the_reader_bound(
            pre_k in 1u64..1_000_000_000,
            hb_extra in 0u64..100_000,
            decide_after in 0u64..100_000,
            commit_after in 1u64..100_000,
            post_after in 0u64..100_000,
        ) {
            let hb = pre_k + hb_extra;
            let now = hb + decide_after;
            let commit_u = now + commit_after;
            let post_u = commit_u + post_after;
            if !writer_must_wake(pre_k, post_u) {
                let bound = reader_sleep_bound(hb, now);
                prop_assert!(bound.is_some(), "reader sleeps unbounded but the wake is skipped");
                let wakes_at = now + bound.unwrap().as_nanos() as u64;
                prop_assert!(wakes_at >= commit_u);
            }
        }
    }

    #[test]
    fn a_fresh_writer_always_wakes() {
        assert!(writer_must_wake(0, 1));
        assert!(!writer_must_wake(1_000, 1_000 + WAKE_GAP_NS - 1));
        assert!(writer_must_wake(1_000, 1_000 + WAKE_GAP_NS));
    }

    #[test]
    fn readers_sleep_unbounded_only_after_the_gap() {
        assert_eq!(
            reader_sleep_bound(1_000, 1_000),
            Some(Duration::from_nanos(WAKE_GAP_NS))
        );
        assert_eq!(reader_sleep_bound(1_000, 1_000 + WAKE_GAP_NS), None);
        // A heartbeat ahead of the reader's clock (impossible on one clock) bounds the sleep.
        assert_eq!(
            reader_sleep_bound(5_000, 1_000),
            Some(Duration::from_nanos(WAKE_GAP_NS))
        );
    }
}
