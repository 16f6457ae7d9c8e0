//! Where in its period a writer commits, fitted over its recent arrivals.
//!
//! A writer paced by deadlines (a simulation loop, a timer, the encoder's frame clock)
//! commits at `deadline + lateness`, where the lateness is its own wake-up and work, and
//! varies frame to frame. Predicting the next commit from the last one alone adds the
//! last frame's lateness to the next frame's, doubling the spread a window must cover;
//! worse, a lateness that alternates (seen on VMs: a thread woken alternately ~60 and
//! ~360 µs late) makes the intervals bimodal, and their median is then one mode, not the
//! period. So the recent arrivals are fitted to a line `time = slot × period + phase`
//! (slots counted in periods, which also absorbs a skipped commit), robustly:
//!
//! - the slope is the median of the slopes between arrivals half a history apart (a
//!   split-half Theil–Sen estimate: long baselines, so a lateness of hundreds of µs
//!   moves it little, and a median, so a few outliers (a descheduled writer) do not);
//! - the phase is the median of the arrivals' offsets from the slope;
//! - the spread is the range of the offsets around that phase, less the single most
//!   extreme one on each side once there are enough arrivals.
//!
//! A writer that paces itself by sleeping a period after each commit drifts instead: its
//! offsets wander, the spread widens with them, and the window covers it as far as the
//! reader's largest window allows.

/// Arrivals the line is fitted through (about a quarter second at 60 fps).
const HISTORY: usize = 16;

/// The recent arrival times of one writer, oldest first once full.
#[derive(Clone, Debug, Default)]
pub(super) struct Arrivals {
    times: [u64; HISTORY],
    len: usize,
    next: usize,
}

/// A line fitted through the recent arrivals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fit {
    /// The fitted period (ns).
    pub(super) period: u64,
    /// The fitted time of the newest arrival's slot (ns): where the next slots are
    /// counted from.
    pub(super) slot0: u64,
    /// Earliest and latest offset (ns, `early <= 0 <= late`) of the arrivals from the
    /// line: the span a commit is expected in around each slot.
    pub(super) early: i64,
    /// See `early`.
    pub(super) late: i64,
}

impl Arrivals {
    /// Forgets every arrival (a new writer, a pause, a clock that stepped).
    pub(super) fn forget(&mut self) {
        *self = Arrivals::default();
    }

    /// Records an arrival at `t`, never earlier than the previous one; the oldest goes
    /// once [`HISTORY`] are recorded.
    pub(super) fn push(&mut self, t: u64) {
        self.times[self.next] = t;
        self.next = (self.next + 1) % HISTORY;
        self.len = (self.len + 1).min(HISTORY);
    }

    /// How many arrivals are recorded.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Fits the arrivals to slots of about `period` (the median interval) ns. `None` with
    /// fewer than three arrivals, or when the fitted slope strays more than an eighth
    /// from `period` (the arrivals do not follow one line).
    pub(super) fn fit(&self, period: u64) -> Option<Fit> {
        if self.len < 3 || period == 0 {
            return None;
        }
        let oldest = if self.len == HISTORY { self.next } else { 0 };
        let newest = self.times[(self.next + HISTORY - 1) % HISTORY];
        // (slot, offset from the newest arrival) of each arrival, oldest first: slot <= 0,
        // offset <= 0.
        let mut points = [(0i64, 0i64); HISTORY];
        for (i, point) in points.iter_mut().enumerate().take(self.len) {
            let back = newest.saturating_sub(self.times[(oldest + i) % HISTORY]);
            let slot = (back + period / 2) / period;
            *point = (-(slot as i64), -(back.min(i64::MAX as u64) as i64));
        }
        let points = &points[..self.len];
        let slope = median_slope(points)?;
        if slope.abs_diff(period as i64) > period / 8 {
            return None;
        }
        // The offset of each arrival from a line of that slope through the newest one.
        let mut offsets = [0i64; HISTORY];
        for (o, &(slot, x)) in offsets.iter_mut().zip(points) {
            *o = x - slot * slope;
        }
        let offsets = &mut offsets[..self.len];
        offsets.sort_unstable();
        let phase = offsets[offsets.len() / 2];
        // Trim the most extreme arrival on each side once there are enough of them: one
        // descheduled writer should not widen every window for a whole history.
        let trim = usize::from(offsets.len() >= 6);
        let early = offsets[trim] - phase;
        let late = offsets[offsets.len() - 1 - trim] - phase;
        if late.abs_diff(early) > period / 4 {
            // Arrivals this scattered follow no line worth a window.
            return None;
        }
        Some(Fit {
            period: slope as u64,
            slot0: newest.checked_add_signed(phase)?,
            early,
            late,
        })
    }
}

/// The median slope between points half the list apart (oldest first), over pairs
/// with different slots.
fn median_slope(points: &[(i64, i64)]) -> Option<i64> {
    let half = points.len() / 2;
    let mut slopes = [0i64; HISTORY / 2];
    let mut n = 0;
    for (&(s1, x1), &(s2, x2)) in points.iter().zip(&points[half..]) {
        if s1 != s2 {
            slopes[n] = (x2 - x1) / (s2 - s1);
            n += 1;
        }
    }
    let slopes = &mut slopes[..n];
    slopes.sort_unstable();
    (n > 0).then(|| slopes[n / 2]).filter(|&s| s > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1_000;
    const P: u64 = 16_666_667;

    fn arrivals(times: impl IntoIterator<Item = u64>) -> Arrivals {
        let mut a = Arrivals::default();
        for t in times {
            a.push(t);
        }
        a
    }

    #[test]
    fn alternating_lateness_gives_the_true_period_and_both_modes() {
        let base = 1_000_000_000;
        let a = arrivals((0..8).map(|k| base + k * P + if k % 2 == 0 { 60 * US } else { 360 * US }));
        // The intervals are P - 300 µs and P + 300 µs: their median is one of them.
        let fit = a.fit(P + 300 * US).expect("fits");
        assert!(fit.period.abs_diff(P) < 100, "{fit:?}");
        // The newest (k = 7) was late: its slot is about 300 µs before the late mode.
        let late_mode = base + 7 * P + 360 * US;
        assert!(fit.slot0 + fit.late as u64 >= late_mode - US, "{fit:?}");
        assert!(
            fit.slot0.checked_add_signed(fit.early).unwrap() <= late_mode - 299 * US,
            "{fit:?}"
        );
        assert!(fit.late - fit.early <= 301 * US as i64, "{fit:?}");
    }

    #[test]
    fn a_skipped_commit_and_one_outlier_do_not_move_the_line() {
        let base = 5_000_000_000;
        // Slot 3 skipped; slot 5 committed 3 ms late (the writer was descheduled).
        let slots = [0u64, 1, 2, 4, 5, 6, 7, 8];
        let a = arrivals(
            slots
                .iter()
                .map(|&k| base + k * P + if k == 5 { 3_000 * US } else { 0 }),
        );
        let fit = a.fit(P).expect("fits");
        assert!(fit.period.abs_diff(P) < 1_000, "{fit:?}");
        assert!(fit.slot0.abs_diff(base + 8 * P) < 10 * US, "{fit:?}");
        assert!(fit.late < 10 * US as i64, "the outlier is trimmed: {fit:?}");
    }

    #[test]
    fn points_off_any_line_do_not_fit() {
        let a = arrivals([0, 3, 40, 41, 90, 200].map(|ms| 1_000_000_000 + ms * 1_000_000));
        assert_eq!(a.fit(P), None);
        assert_eq!(arrivals([1, 2]).fit(P), None, "too few");
    }
}
