//! Renewals counted over a sliding one-minute window (one bucket per second), for
//! self-preservation. Eureka reports the previous complete minute instead, which reads 0 for
//! a whole minute after start and lags real changes by up to two minutes.

const BUCKETS: usize = 60;

/// Counts events in the last 60 seconds.
#[derive(Debug, Clone)]
pub struct RenewMeter {
    /// `(second, count)` per slot; a slot is stale when its second is not the one it covers.
    slots: [(u64, u64); BUCKETS],
}

impl Default for RenewMeter {
    fn default() -> Self {
        RenewMeter { slots: [(u64::MAX, 0); BUCKETS] }
    }
}

impl RenewMeter {
    /// Records one event at `now_ms`.
    pub fn record(&mut self, now_ms: u64) {
        let sec = now_ms / 1000;
        let slot = &mut self.slots[(sec % BUCKETS as u64) as usize];
        if slot.0 == sec {
            slot.1 += 1;
        } else {
            *slot = (sec, 1);
        }
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
    fn reused_slot_forgets_old_counts() {
        let mut m = RenewMeter::default();
        m.record(5_000);
        m.record(65_000);
        assert_eq!(m.last_minute(65_000), 1);
    }
}
