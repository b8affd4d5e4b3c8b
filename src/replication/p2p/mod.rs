//! `--replication p2p`: Eureka-style peer-to-peer replication (AP). Every node accepts
//! writes, applies them locally and replicates them to its peers in batches over Eureka's
//! peer replication endpoint.
//!
//! In progress: the wire protocol ([`protocol`]) is in place; the backend (per-peer
//! coalescing queues, the batch endpoint, anti-entropy, start-up sync) follows.

pub mod protocol;

#[cfg(test)]
mod tests;
