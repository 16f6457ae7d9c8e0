//! A reader of a ring file.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use std::vec;
use std::vec::Vec;

use core::sync::atomic::Ordering;

use super::mapping::{map_ring, MappedWords};
use super::sigbus::Damage;
use super::{monotonic_ns, open, Error, LayoutChoice, RingKind};
use crate::cadence::{Monotonic, Step, WakePlanner};
use crate::layout::WriterState;
use crate::wake;
use crate::{futex, FrameInfo, LegacyReader, ReadError, ReaderOptions, ReaderStats, RegionReader};

pub(super) enum ReaderInner {
    V1(RegionReader<MappedWords>),
    Legacy(LegacyReader<MappedWords>),
}

/// A frame borrowed from the reader's buffer (valid until the next read).
#[derive(Debug)]
pub struct Frame<'a> {
    /// Header fields and loss count.
    pub info: FrameInfo,
    /// The payload.
    pub payload: &'a [u8],
}

/// How long a blocked reader spins before it sleeps on the futex.
const DEFAULT_SPIN: Duration = Duration::from_micros(20);
/// How often an idle reader checks whether its ring was replaced or retired.
const REPLACED_CHECK: Duration = Duration::from_millis(100);
/// Sleep between polls of a legacy ring (it has no futex word), without a cadence.
const LEGACY_POLL: Duration = Duration::from_micros(500);
/// Poll interval of a legacy ring in the guard band of an expected commit (the writer's
/// jitter around it, [`crate::cadence`]): a frame that lands outside the spin window but
/// inside the band is seen at most this late.
const LEGACY_NEAR_POLL: Duration = Duration::from_micros(100);
/// Poll interval of a legacy ring with a cadence, away from every expected commit: only
/// a frame far off the writer's rhythm waits for it.
const LEGACY_FAR_POLL: Duration = Duration::from_millis(2);

/// A reader of a ring file. Maps the file read-only: a reader can never damage the ring.
///
/// # The SIGBUS truncation guard
///
/// The first ring a process maps installs a process-wide SIGBUS handler: another process
/// truncating a mapped ring file (`truncate -s 0 RING`, a writer restarting with
/// `O_TRUNC`) would otherwise kill this process when it touches a vanished page. Faults
/// inside ring mappings are recovered and reported as [`Error::Truncated`]; every other
/// SIGBUS goes to the action installed before, honouring its `SIG_IGN`, signal mask and
/// `SA_RESETHAND` (see `docs/protocol.md` 6.1 for the exact rules). Set
/// `SHMRING_NO_SIGBUS_GUARD=1` ([`crate::NO_SIGBUS_GUARD_VAR`]) in the environment to
/// leave SIGBUS alone: a truncated ring then kills the process.
/// [`crate::sigbus_guard_installed`] says whether it is installed.
pub struct RingReader {
    pub(super) inner: ReaderInner,
    pub(super) kind: RingKind,
    path: PathBuf,
    pub(super) file: File,
    identity: (u64, u64),
    options: ReaderOptions,
    layout: LayoutChoice,
    buf: Vec<u8>,
    spin: Duration,
    /// When to sleep and when to spin, from the writer's cadence.
    planner: WakePlanner<Monotonic>,
    /// Set before a sleep (a legacy ring's timed poll, a v1 ring's futex wait): when the
    /// ring last held nothing unread (monotonic ns). A frame found after the sleep landed
    /// after it; 0 while spinning, which sees a commit at once.
    blind_since_ns: u64,
    last_replaced_check: Instant,
    reopens: u64,
    /// The mapping's damage flag (the file shrank under it).
    damage: Damage,
    /// Bytes mapped, compared with the file's size on the periodic checks.
    mapped_len: usize,
    /// The damage was reported ([`Error::Truncated`]); reads return nothing until the
    /// path holds a valid ring again.
    damage_reported: bool,
    /// The ring's retirement was reported ([`Error::Retired`]).
    retired_reported: bool,
}

impl RingReader {
    /// Opens the ring at `path`, detecting its layout.
    pub fn open(path: impl AsRef<Path>, options: &ReaderOptions) -> Result<Self, Error> {
        Self::open_layout(path, options, LayoutChoice::Auto)
    }

    /// Opens the ring at `path` with an explicit layout choice.
    pub fn open_layout(path: impl AsRef<Path>, options: &ReaderOptions, layout: LayoutChoice) -> Result<Self, Error> {
        let path = path.as_ref();
        let (file, meta) = open::open_for_reading(path)?;
        let (kind, words) = map_ring(path, &file, meta.len(), layout, false)?;
        let layout_err = Error::layout(path);
        if let RingKind::V1(g) = kind {
            // A retired ring's frames are stale and its writer is gone for good.
            if crate::region::load_state(&words, &g) == WriterState::Retired {
                return Err(Error::retired(path));
            }
        }
        let (damage, mapped_len) = (words.damage(), words.len());
        let inner = match kind {
            RingKind::V1(_) => ReaderInner::V1(RegionReader::new(words, *options).map_err(layout_err)?),
            RingKind::Legacy { .. } => ReaderInner::Legacy(LegacyReader::new(words, *options).map_err(layout_err)?),
        };
        Ok(RingReader {
            inner,
            kind,
            path: path.to_path_buf(),
            file,
            identity: (meta.dev(), meta.ino()),
            options: *options,
            layout,
            buf: vec![0; kind.max_frame_size()],
            spin: DEFAULT_SPIN,
            planner: WakePlanner::new(Monotonic, options.wake.max_window()),
            blind_since_ns: 0,
            last_replaced_check: Instant::now(),
            reopens: 0,
            damage,
            mapped_len,
            damage_reported: false,
            retired_reported: false,
        })
    }

    /// Reads the next frame if one is there, without waiting.
    pub fn try_read(&mut self) -> Result<Option<Frame<'_>>, Error> {
        Ok(self.try_read_info()?.map(|info| Frame {
            info,
            payload: &self.buf[..info.size],
        }))
    }

    /// Reads the next frame, waiting up to `timeout` (`None`: forever) for one. Spins
    /// briefly, then sleeps on the ring's futex; `Ok(None)` on timeout. Reopens the path
    /// if the ring was replaced meanwhile; reports a ring retired without a successor
    /// ([`Error::Retired`]) or truncated under its mapping ([`Error::Truncated`]) once,
    /// then keeps waiting for a valid ring at the path (see [`Self::check_replaced`]).
    /// The timeout holds whatever the ring holds: a read that finds only records it
    /// cannot deliver returns at the deadline.
    pub fn read_timeout(&mut self, timeout: Option<Duration>) -> Result<Option<Frame<'_>>, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(info) = self.try_read_info()? {
                return Ok(Some(Frame {
                    info,
                    payload: &self.buf[..info.size],
                }));
            }
            // `wait_until` returns at once while something is unread, without looking at
            // the deadline; a read that made no frame of it must not loop past it.
            if deadline.is_some_and(|d| Instant::now() >= d) || !self.wait_until(deadline)? {
                return Ok(None);
            }
        }
    }

    /// "Latest wins": the newest frame, skipping (and counting as lost) any in between.
    pub fn read_latest(&mut self) -> Result<Option<Frame<'_>>, Error> {
        if self.damaged()? {
            return Ok(None);
        }
        let read = match &mut self.inner {
            ReaderInner::V1(r) => r.read_latest(&mut self.buf),
            ReaderInner::Legacy(r) => r.read_latest(&mut self.buf),
        };
        let info = self.checked(read)?;
        Ok(info.map(|info| Frame {
            info,
            payload: &self.buf[..info.size],
        }))
    }

    /// Reads the next frame into `buf`, returning its description (for callers that keep
    /// their own buffers).
    pub fn try_read_into(&mut self, buf: &mut [u8]) -> Result<Option<FrameInfo>, Error> {
        if self.damaged()? {
            return Ok(None);
        }
        let read = match &mut self.inner {
            ReaderInner::V1(r) => r.try_read(buf),
            ReaderInner::Legacy(r) => r.try_read(buf),
        };
        self.checked(read)
    }

    fn try_read_info(&mut self) -> Result<Option<FrameInfo>, Error> {
        if self.damaged()? {
            return Ok(None);
        }
        let read = match &mut self.inner {
            ReaderInner::V1(r) => r.try_read(&mut self.buf),
            ReaderInner::Legacy(r) => r.try_read(&mut self.buf),
        };
        let info = self.checked(read)?;
        let blind_since = core::mem::take(&mut self.blind_since_ns);
        if let Some(info) = &info {
            // Only a caught-up reader sees frames as they land: a backlog says nothing
            // about when they were committed.
            if !self.has_unread() {
                let landed = self.landed_at(blind_since, monotonic_ns());
                self.planner.arrived_at(info.frame_seq, landed);
            }
        }
        Ok(info)
    }

    /// When the frame just read, with nothing more unread, most likely landed: now if
    /// the reader was spinning (`blind_since` 0); else, on a v1 ring, the writer's
    /// post-commit stamp (its heartbeat) if it falls in the interval the reader slept
    /// through, and on a legacy ring, which has no stamp, the middle of that interval.
    /// Dating a frame by when the reader woke would put the next cadence window a
    /// wake-up late (tens of µs after a futex wake, up to a poll after a legacy poll).
    fn landed_at(&self, blind_since: u64, now: u64) -> u64 {
        if blind_since == 0 || blind_since > now {
            return now;
        }
        match &self.inner {
            ReaderInner::V1(r) => {
                // SYNC POINT (arrival stamp): Relaxed; the writer stores it (Relaxed)
                // right after the commit's Release stores. Only a hint: a stamp older
                // than the sleep (the store not seen yet) or newer than now is ignored.
                let heartbeat = crate::region::load_heartbeat(r.words(), &r.geometry());
                if (blind_since..=now).contains(&heartbeat) {
                    heartbeat
                } else {
                    now
                }
            }
            ReaderInner::Legacy(_) => blind_since + (now - blind_since) / 2,
        }
    }

    /// A read's result, unless the file shrank under the mapping meanwhile: then what
    /// was read may be the zero pages the SIGBUS handler put there, and is discarded.
    fn checked(&mut self, read: Result<Option<FrameInfo>, ReadError>) -> Result<Option<FrameInfo>, Error> {
        if self.damaged()? {
            return Ok(None);
        }
        read.map_err(Error::Read)
    }

    /// True if the ring file shrank under the mapping. The first time, reports it
    /// ([`Error::Truncated`]); afterwards reads return nothing until the periodic check
    /// reopens the path.
    fn damaged(&mut self) -> Result<bool, Error> {
        if !self.damage.is_damaged() {
            return Ok(false);
        }
        if !self.damage_reported {
            self.damage_reported = true;
            return Err(Error::Truncated {
                path: self.path.clone(),
            });
        }
        Ok(true)
    }

    /// Waits until there is something unread, up to `timeout` (`None`: forever); false on
    /// timeout.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, Error> {
        self.wait_until(timeout.map(|t| Instant::now() + t))
    }

    fn has_unread(&self) -> bool {
        if self.damage.is_damaged() {
            // Nothing to read until the periodic check reopens the path.
            return false;
        }
        match &self.inner {
            ReaderInner::V1(r) => r.has_unread(),
            ReaderInner::Legacy(r) => r.has_unread(),
        }
    }

    fn wait_until(&mut self, deadline: Option<Instant>) -> Result<bool, Error> {
        if self.spin_until(Instant::now() + self.spin) {
            return Ok(true);
        }
        loop {
            if self.has_unread() {
                return Ok(true);
            }
            let now = Instant::now();
            if now.duration_since(self.last_replaced_check) >= REPLACED_CHECK {
                self.last_replaced_check = now;
                if self.check_replaced()? {
                    return Ok(true);
                }
            }
            let mut slice = REPLACED_CHECK;
            if let Some(deadline) = deadline {
                if now >= deadline {
                    return Ok(false);
                }
                slice = slice.min(deadline - now);
            }
            match self.planner.step() {
                Step::SpinUntil(until_ns) => {
                    let spin = Duration::from_nanos(until_ns.saturating_sub(self.planner.now_ns()));
                    if self.spin_until(now + spin.min(slice)) {
                        return Ok(true);
                    }
                }
                Step::SleepAtMost(bound) => {
                    let poll = self
                        .planner
                        .legacy_poll(LEGACY_NEAR_POLL, LEGACY_FAR_POLL)
                        .unwrap_or(LEGACY_POLL);
                    self.sleep(slice.min(bound), poll)
                }
                Step::Sleep => self.sleep(slice, LEGACY_POLL),
            }
        }
    }

    /// Spins until something is unread (true) or `end` passes (false).
    fn spin_until(&mut self, end: Instant) -> bool {
        // A frame there at the first look may have landed during the poll before.
        if self.has_unread() {
            return true;
        }
        // From here spinning sees a commit at once: it is stamped when read.
        self.blind_since_ns = 0;
        while Instant::now() < end {
            for _ in 0..32 {
                if self.has_unread() {
                    return true;
                }
                core::hint::spin_loop();
            }
        }
        false
    }

    /// Sleeps at most `slice` (at most `legacy_poll` on a legacy ring) or until the writer
    /// wakes the futex, and learns the timer's overshoot when nothing came.
    fn sleep(&mut self, slice: Duration, legacy_poll: Duration) {
        let (slice, target) = match &self.inner {
            ReaderInner::V1(r) => {
                let word = r.notify_word();
                // SYNC POINT (notify): Acquire pairs with the writer's Release store of
                // notify after write_index; re-checking write_index after this load
                // means a commit is either seen here or changes the futex word first.
                let seen = word.load(Ordering::Acquire);
                if r.has_unread() {
                    return;
                }
                // SYNC POINT (wake gap): loaded after the Acquire load of notify, so it
                // is at least the stamp the writer stored before that commit (its
                // heartbeat store in `RingWriter::write`). A recent commit means the
                // writer may skip the wake for the next one: sleep only until the gap
                // has passed.
                let heartbeat = crate::region::load_heartbeat(r.words(), &r.geometry());
                let now = monotonic_ns();
                let slice = wake::reader_sleep_bound(heartbeat, now).map_or(slice, |b| slice.min(b));
                // Nothing unread now: a frame found after the wait landed after this.
                self.blind_since_ns = now;
                futex::wait(word, seen, slice);
                (slice, now)
            }
            ReaderInner::Legacy(_) => {
                let slice = slice.min(legacy_poll);
                let now = monotonic_ns();
                // Nothing unread now (checked just before): a frame the poll finds
                // landed after this.
                self.blind_since_ns = now;
                std::thread::sleep(slice);
                (slice, now)
            }
        };
        if !self.has_unread() {
            let end = target + slice.as_nanos() as u64;
            if self.planner.now_ns() >= end {
                self.planner.woke(end);
            }
        }
    }

    /// Checks whether the file at the path was replaced (another inode), shrank under
    /// the mapping, or the ring was retired. A replaced ring, or a damaged one once the
    /// path holds a valid ring again, is reopened, starting at its newest keyframe: true
    /// if it reopened. A retired ring is reported once ([`Error::Retired`]) and then
    /// waited on, never replayed; so is a shrunk one ([`Error::Truncated`]). A missing
    /// path is not an error: the old ring is kept until a new one appears.
    pub fn check_replaced(&mut self) -> Result<bool, Error> {
        if !self.damage.is_damaged() {
            let len = self.file.metadata().map(|m| m.len());
            if len.is_ok_and(|len| len < self.mapped_len as u64) {
                self.damage.mark();
            }
        }
        if self.damaged()? {
            return Ok(self.reopen().is_ok());
        }
        let retired = matches!(self.status_state(), Some(WriterState::Retired));
        let replaced = match fs::metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()) != self.identity,
            Err(_) => false,
        };
        if replaced {
            match self.reopen() {
                Ok(()) => return Ok(true),
                // Gone again, or another retired ring: keep the old one.
                Err(Error::NotFound { .. }) | Err(Error::Retired { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if retired && !self.retired_reported {
            self.retired_reported = true;
            return Err(Error::Retired {
                path: self.path.clone(),
            });
        }
        Ok(false)
    }

    /// Opens the path again, starting at the newest keyframe, and continues with that
    /// ring.
    fn reopen(&mut self) -> Result<(), Error> {
        let mut fresh = Self::open_layout(
            &self.path,
            &ReaderOptions {
                start: crate::StartPosition::LatestKeyframe,
                ..self.options
            },
            self.layout,
        )?;
        fresh.reopens = self.reopens + 1;
        fresh.spin = self.spin;
        *self = fresh;
        Ok(())
    }

    fn status_state(&self) -> Option<WriterState> {
        match (&self.inner, self.kind) {
            (ReaderInner::V1(r), RingKind::V1(g)) => Some(crate::region::load_state(r.words(), &g)),
            _ => None,
        }
    }

    /// Sets how long a blocked read spins before sleeping (default 20 µs; zero never spins).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// Per-reader accounting.
    pub fn stats(&self) -> ReaderStats {
        match &self.inner {
            ReaderInner::V1(r) => r.stats(),
            ReaderInner::Legacy(r) => r.stats(),
        }
    }

    /// Times the reader reopened a replaced or retired ring.
    pub fn reopens(&self) -> u64 {
        self.reopens
    }

    /// Layout and geometry.
    pub fn kind(&self) -> RingKind {
        self.kind
    }

    /// The ring file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Largest payload the ring holds.
    pub fn max_frame_size(&self) -> usize {
        self.kind.max_frame_size()
    }
}
