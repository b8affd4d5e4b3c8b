//! Renewals counted over a sliding one-minute window (one bucket per second), for
//! self-preservation. Eureka reports the previous complete minute instead, which reads 0 for
//! a whole minute after start and lags real changes by up to two minutes.

const BUCKETS: usize = 60;

/// Minutes of history kept for the dashboard (the current one included).
pub const MINUTES: usize = 16;

/// Counts events in the last 60 seconds, and per minute over the last [`MINUTES`].
#[derive(Debug, Clone)]
pub struct RenewMeter {
    /// `(second, count)` per slot; a slot is stale when its second is not the one it covers.
    slots: [(u64, u64); BUCKETS],
    /// `(minute, count)` per slot, likewise.
    minutes: [(u64, u64); MINUTES],
}

impl Default for RenewMeter {
    fn default() -> Self {
        RenewMeter { slots: [(u64::MAX, 0); BUCKETS], minutes: [(u64::MAX, 0); MINUTES] }
    }
}

fn bump(slot: &mut (u64, u64), at: u64) {
    if slot.0 == at {
        slot.1 += 1;
    } else {
        *slot = (at, 1);
    }
}

impl RenewMeter {
    /// Records one event at `now_ms`.
    pub fn record(&mut self, now_ms: u64) {
        let sec = now_ms / 1000;
        bump(&mut self.slots[(sec % BUCKETS as u64) as usize], sec);
        let min = sec / 60;
        bump(&mut self.minutes[(min % MINUTES as u64) as usize], min);
    }

    /// Events per calendar minute over the last [`MINUTES`] minutes ending at `now_ms`,
    /// oldest first (the last one is the minute under way).
    pub fn per_minute(&self, now_ms: u64) -> [u64; MINUTES] {
        let now = now_ms / 60_000;
        std::array::from_fn(|i| {
            // Minutes before the epoch (the first quarter hour of a test clock) held nothing.
            let Some(min) = (now + 1 + i as u64).checked_sub(MINUTES as u64) else { return 0 };
            let (at, n) = self.minutes[(min % MINUTES as u64) as usize];
            if at == min {
                n
            } else {
                0
            }
        })
    }

    /// Events in the 60 seconds ending at `now_ms` (the current second included).
    pub fn last_minute(&self, now_ms: u64) -> u64 {
        let sec = now_ms / 1000;
        let oldest = sec.saturating_sub(BUCKETS as u64 - 1);
        self.slots.iter().filter(|(s, _)| *s != u64::MAX && *s >= oldest && *s <= sec).map(|(_, c)| c).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_the_last_sixty_seconds() {
        let mut m = RenewMeter::default();
        m.record(1_000);
        m.record(1_500);
        m.record(30_000);
        assert_eq!(m.last_minute(30_000), 3);
        assert_eq!(m.last_minute(60_999), 3);
        assert_eq!(m.last_minute(61_000), 1);
        assert_eq!(m.last_minute(89_999), 1);
        assert_eq!(m.last_minute(90_000), 0);
        assert_eq!(m.last_minute(90_001_000), 0);
    }

    #[test]
    fn minutes_are_kept_for_a_quarter_hour() {
        let mut m = RenewMeter::default();
        m.record(30_000);
        m.record(61_000);
        m.record(62_000);
        let now = 16 * 60_000 + 5_000;
        let per = m.per_minute(now);
        assert_eq!(per[MINUTES - 1], 0, "minute 16 is under way and empty");
        assert_eq!(per[0], 2, "minute 1 is the oldest kept");
        assert_eq!(per.iter().sum::<u64>(), 2, "minute 0 fell out of the window");
        let early = m.per_minute(61_000);
        assert_eq!(early[MINUTES - 2..], [1, 2]);
        assert_eq!(early.iter().sum::<u64>(), 3, "no minute counted twice");
    }

    #[test]
    fn reused_slot_forgets_old_counts() {
        let mut m = RenewMeter::default();
        m.record(5_000);
        m.record(65_000);
        assert_eq!(m.last_minute(65_000), 1);
    }
}
