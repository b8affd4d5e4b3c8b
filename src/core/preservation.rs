//! Self-preservation: when far fewer renewals arrive than the registered fleet should send,
//! the likelier cause is a network problem between clients and this server, not a mass
//! death, so eviction is suspended.
//!
//! Unlike Eureka, the expected rate is summed from each instance's own renewal interval and
//! recomputed from the registry itself on every evaluation (Eureka adjusts a counter every
//! 15 minutes from its embedded client's copy), and the protection is bounded: an instance
//! silent for longer than `window_ms` no longer counts as expected, so a fleet that really
//! shrank is cleaned up instead of being protected forever.

use serde::Serialize;

use super::state::RegistryState;

/// Self-preservation settings.
#[derive(Debug, Clone)]
pub struct PreservationConfig {
    pub enabled: bool,
    /// Fraction of expected renewals below which eviction stops (Eureka: 0.85).
    pub percent_threshold: f64,
    /// Instances silent for longer than this stop counting as expected (Eureka's renewal
    /// threshold update interval, 15 minutes).
    pub window_ms: u64,
}

impl Default for PreservationConfig {
    fn default() -> Self {
        PreservationConfig { enabled: true, percent_threshold: 0.85, window_ms: 15 * 60_000 }
    }
}

/// The numbers behind the self-preservation decision, as shown in `/v1/status` and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PreservationStatus {
    pub enabled: bool,
    /// Eviction is suspended.
    pub active: bool,
    /// Sum of `60 / renewalIntervalInSecs` over the instances still counted as expected.
    pub expected_renews_per_min: f64,
    /// `floor(expected × percent)`.
    pub threshold: u64,
    pub renews_last_min: u64,
    /// Instances counted as expected.
    pub expected_instances: usize,
    /// Instances no longer counted because they have been silent longer than the window.
    pub silent_instances: usize,
}

/// Evaluates self-preservation at `now`.
pub fn evaluate(state: &RegistryState, cfg: &PreservationConfig, now: u64) -> PreservationStatus {
    let mut expected = 0.0;
    let mut counted = 0;
    let mut silent = 0;
    for (_, e) in state.entries() {
        if now.saturating_sub(e.last_renewal_ts) > cfg.window_ms {
            silent += 1;
            continue;
        }
        counted += 1;
        expected += 60.0 / f64::from(e.info.lease.renewal_interval_secs.max(1));
    }
    let threshold = (expected * cfg.percent_threshold).floor() as u64;
    let renews = state.renews_last_min(now);
    PreservationStatus {
        enabled: cfg.enabled,
        active: cfg.enabled && renews < threshold,
        expected_renews_per_min: expected,
        threshold,
        renews_last_min: renews,
        expected_instances: counted,
        silent_instances: silent,
    }
}
