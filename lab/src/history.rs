//! The history of a run: every operation the workload sent, with when it was invoked, when it
//! completed and what it returned, and every fault the nemesis injected and healed. Saved as
//! JSON lines (`history.jsonl`), one [`Entry`] per line; every checker reads only this.
//!
//! Each instance is one register. Its value is `Some(generation)` while registered (the
//! workload writes a fresh, increasing generation into the instance's `lab-gen` metadata
//! with every register, so every write of a key is distinguishable) and `None` when absent.

use serde::{Deserialize, Serialize};

/// Microseconds since the start of the run.
pub type Micros = u64;

/// What one operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `POST /eureka/apps/APP`: writes `Some(generation)` (a first registration, a status
    /// change or a re-registration after a 404 heartbeat).
    Register,
    /// `DELETE /eureka/apps/APP/ID`: writes `None`.
    Cancel,
    /// `PUT /eureka/apps/APP/ID`: a heartbeat; changes no value.
    Renew,
    /// `GET /eureka/apps/APP/ID` from the node's local copy.
    Read,
    /// `GET /eureka/apps/APP/ID?consistency=linearizable` (raft).
    ReadLinearizable,
    /// `GET /eureka/apps` (a full fetch): `observed` holds every lab instance it listed.
    ReadAll,
    /// `GET /eureka/apps/delta`: counted for availability only.
    ReadDelta,
}

impl Kind {
    /// Whether the operation changes a register.
    pub fn is_write(self) -> bool {
        matches!(self, Kind::Register | Kind::Cancel)
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered with success (2xx; for reads also a 404 that says "absent").
    Ok,
    /// Certainly had no effect: the connection was refused, or the server answered a
    /// 4xx/503 that means "not applied".
    Fail,
    /// No answer in time, a reset, or an answer that leaves the effect unknown: a write may
    /// have been applied, even later.
    Unknown,
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// The client that sent it (one fleet member or discoverer; each sends one at a time).
    pub process: u32,
    /// The node (0-based) it was sent to.
    pub node: u8,
    pub kind: Kind,
    /// The instance (`APP/ID`), empty for `ReadAll` and `ReadDelta`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// For `Register`: the generation written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    /// For `Read`/`ReadLinearizable` with outcome `Ok`: the value seen (`None` = absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<Option<u64>>,
    /// For `ReadAll` with outcome `Ok`: every lab instance listed, as (`APP/ID`, generation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listed: Vec<(String, u64)>,
    pub invoke: Micros,
    pub complete: Micros,
    pub outcome: Outcome,
    /// The HTTP status, 0 when there was none.
    pub status: u16,
}

/// A fault, from when it was injected to when it was healed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// `kill`, `pause`, `partition` or `disk`.
    pub fault: String,
    /// What exactly: "kill leader", "pause follower", "isolate leader", …
    pub what: String,
    /// Nodes (0-based) on the minority side: the killed, paused or cut-off nodes.
    pub minority: Vec<u8>,
    pub start: Micros,
    pub heal: Micros,
}

impl Fault {
    /// When the faulty node's process was killed (to be started again): a kill at its
    /// start, a full disk at its heal (space freed, the node restarted).
    pub fn killed_at(&self) -> Option<Micros> {
        match self.fault.as_str() {
            "kill" => Some(self.start),
            "disk" => Some(self.heal),
            _ => None,
        }
    }
}

/// A sample of each node's own figures, taken every few hundred milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at: Micros,
    pub node: u8,
    /// Whether the node answered `/v1/status`.
    pub up: bool,
    /// raft: the last applied log index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_index: Option<u64>,
    pub evicted_instances: u64,
    pub self_preservation_active: bool,
    pub self_preservation_engagements: u64,
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    Op(Op),
    Fault(Fault),
    Sample(Sample),
}

/// A whole run's history, split by entry type (each in time order of completion).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub ops: Vec<Op>,
    pub faults: Vec<Fault>,
    pub samples: Vec<Sample>,
    /// When the workload stopped and the final reads were taken (every fault healed).
    pub end: Micros,
}
