//! Histories of writes under faults and what they allow: each key is written by one writer
//! at a time, so its writes are ordered, and a key must end in the state of its last
//! acknowledged write or of a write whose fate is unknown.
#![allow(dead_code)]

use reqwest::StatusCode;

/// What became of one write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fate {
    /// Answered 2xx.
    Acked,
    /// Certainly not applied: refused before it reached the node, or 404 (the node did not
    /// know the instance).
    NotApplied,
    /// No answer (timeout, reset, 5xx): it may have been applied, even late (a paused node
    /// applies what it had received once it runs again).
    Unknown,
}

/// One write: `effect` is the state it leaves the key in, as the test shows states.
#[derive(Debug, Clone)]
pub struct Write {
    pub effect: Option<String>,
    pub fate: Fate,
}

/// The fate of a write from its answer.
pub fn fate(r: &Result<reqwest::Response, reqwest::Error>) -> Fate {
    match r {
        Ok(resp) if resp.status().is_success() => Fate::Acked,
        Ok(resp) if resp.status() == StatusCode::NOT_FOUND => Fate::NotApplied,
        Err(e) if e.is_connect() => Fate::NotApplied,
        _ => Fate::Unknown,
    }
}

/// The states a key with this history may be in: the last acknowledged write's (or
/// `initial` when none was acknowledged), or that of any write whose fate is unknown.
pub fn allowed(history: &[Write], initial: Option<String>) -> Vec<Option<String>> {
    let last_acked = history.iter().rposition(|w| w.fate == Fate::Acked);
    let mut out = vec![last_acked.map_or(initial, |i| history[i].effect.clone())];
    out.extend(history.iter().filter(|w| w.fate == Fate::Unknown).map(|w| w.effect.clone()));
    out
}
