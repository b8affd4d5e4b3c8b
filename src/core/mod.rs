//! The registry core: model, commands, `apply`, leases, eviction, self-preservation, the
//! delta queue and the response cache. No HTTP and no replication code lives here, so every
//! backend shares it and tests drive it with a manual clock.

pub mod cache;
pub mod clock;
pub mod command;
pub mod counters;
pub mod delta;
pub mod digest;
pub mod eviction;
pub mod fragments;
pub mod gzip;
pub mod limits;
pub mod meter;
pub mod model;
pub mod preservation;
pub mod registry;
pub mod rules;
pub mod state;
pub mod tombstones;
pub mod version;
pub mod views;

#[cfg(test)]
mod convergence_tests;
#[cfg(test)]
pub(crate) mod tests;
