//! Choosing which expired leases to evict. The choice is random (as Eureka's, so a mass
//! expiry does not wipe whole applications first) and happens outside `apply`; the chosen
//! keys then travel in a deterministic `Evict` command.

use rand::seq::SliceRandom;
use rand::Rng;

use super::model::InstanceKey;
use super::state::RegistryState;

/// Tracks when eviction last ran, to compensate for a late run.
#[derive(Debug, Default, Clone)]
pub struct EvictionClock {
    last_run: Option<u64>,
}

impl EvictionClock {
    /// The slack for a run at `now`: how much later than `interval_ms` after the previous
    /// run this one is. A paused process or a clock jump would otherwise make every lease
    /// look expired at once.
    pub fn compensation(&mut self, now: u64, interval_ms: u64) -> u64 {
        let slack = match self.last_run {
            Some(prev) => now.saturating_sub(prev).saturating_sub(interval_ms),
            None => 0,
        };
        self.last_run = Some(now);
        slack
    }
}

/// Most leases one run may evict: `size − floor(size × percent)`, e.g. 15 of 100 at 0.85.
pub fn eviction_cap(size: usize, percent_threshold: f64) -> usize {
    size - ((size as f64 * percent_threshold).floor() as usize).min(size)
}

/// Picks up to the cap of expired leases, uniformly at random.
pub fn plan(
    state: &RegistryState,
    now: u64,
    compensation_ms: u64,
    percent_threshold: f64,
    rng: &mut impl Rng,
) -> Vec<InstanceKey> {
    let mut expired: Vec<InstanceKey> = state
        .apps()
        .flat_map(|(app, m)| {
            m.iter()
                .filter(|(_, e)| e.is_expired(now, compensation_ms))
                .map(move |(id, _)| InstanceKey { app: app.clone(), id: id.clone() })
        })
        .collect();
    let cap = eviction_cap(state.len(), percent_threshold);
    if expired.len() > cap {
        let (chosen, _) = expired.partial_shuffle(rng, cap);
        return chosen.to_vec();
    }
    expired
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_matches_eureka() {
        assert_eq!(eviction_cap(1, 0.85), 1);
        assert_eq!(eviction_cap(10, 0.85), 2);
        assert_eq!(eviction_cap(100, 0.85), 15);
        assert_eq!(eviction_cap(1000, 0.85), 150);
        assert_eq!(eviction_cap(0, 0.85), 0);
    }

    #[test]
    fn compensation_counts_only_lateness() {
        let mut c = EvictionClock::default();
        assert_eq!(c.compensation(1_000, 60_000), 0);
        assert_eq!(c.compensation(61_000, 60_000), 0);
        assert_eq!(c.compensation(151_000, 60_000), 30_000);
    }
}
