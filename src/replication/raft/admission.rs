//! What a raft message must satisfy before openraft sees it.
//!
//! openraft trusts its peers: it adopts any higher term it is shown (and persists it), computes
//! `term + 1` on the next election, and writes snapshot chunks at whatever offset they claim.
//! Anyone who can reach the port could therefore wrap a node's term (a panic at every start,
//! for good), depose the leader with a forged term, or make a node allocate an arbitrary
//! buffer. So every RPC is checked here first:
//!
//! - terms and log indexes stay far below where arithmetic on them could overflow;
//! - the sender is a member of the configuration this node knows (current or joint, learners
//!   included). A node that has not caught up with a membership change may not know a new
//!   member yet; such a stranger is admitted once a member this node already knows vouches
//!   for it (its `/v1/cluster` lists it). A node that was never initialized admits anyone, as
//!   it has no configuration to protect yet;
//! - snapshot chunks continue the stream they belong to (offset 0 starts one; a later chunk
//!   may repeat but never skip ahead).
//!
//! Telling genuine members from impostors needs authentication, which is not this module's
//! job; these checks keep a node and its cluster safe from malformed and stray messages.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use parking_lot::Mutex;
use serde::Deserialize;

use super::types::{LogId, NodeId, TypeConfig, Vote};

/// Highest term accepted. A term grows by one per election; 2^48 of them would take millions
/// of years, and leaves `term + 1` nowhere near overflow.
pub const MAX_TERM: u64 = 1 << 48;
/// Highest log index accepted (far beyond any real log, far below overflow).
pub const MAX_INDEX: u64 = 1 << 62;

/// How long a vouched-for stranger stays admitted without asking again.
const VOUCHED_FOR: Duration = Duration::from_secs(30);
/// At most one round of asking members about strangers per this interval, so a flood of
/// made-up sender ids cannot turn into a flood of lookups.
const LOOKUP_EVERY: Duration = Duration::from_secs(1);
/// How long one round of asking may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed or implausible content (answered 400).
    Invalid(String),
    /// The sender is not a member (answered 403).
    Stranger(NodeId),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Invalid(why) => f.write_str(why),
            Refusal::Stranger(id) => write!(f, "node {id} is not a member of this raft cluster"),
        }
    }
}

fn check_term(term: u64, what: &str) -> Result<(), Refusal> {
    if term > MAX_TERM {
        return Err(Refusal::Invalid(format!("{what} term {term} is implausibly high (limit {MAX_TERM})")));
    }
    Ok(())
}

fn check_vote(v: &Vote) -> Result<(), Refusal> {
    check_term(v.leader_id.term, "vote")
}

fn check_log_id(l: &Option<LogId>, what: &str) -> Result<(), Refusal> {
    let Some(l) = l else { return Ok(()) };
    check_term(l.leader_id.term, what)?;
    if l.index > MAX_INDEX {
        return Err(Refusal::Invalid(format!("{what} index {} is implausibly high (limit {MAX_INDEX})", l.index)));
    }
    Ok(())
}

/// The sender of an AppendEntries, after checking its content: the vote's node.
pub fn check_append(req: &AppendEntriesRequest<TypeConfig>) -> Result<NodeId, Refusal> {
    check_vote(&req.vote)?;
    check_log_id(&req.prev_log_id, "prev_log_id")?;
    check_log_id(&req.leader_commit, "leader_commit")?;
    // Entries follow prev_log_id one index at a time, with terms that never fall.
    let mut prev = req.prev_log_id;
    for e in &req.entries {
        check_log_id(&Some(e.log_id), "entry")?;
        let expected = prev.map_or(0, |p| p.index + 1);
        if e.log_id.index != expected {
            return Err(Refusal::Invalid(format!("entry index {} where {expected} was due", e.log_id.index)));
        }
        if prev.is_some_and(|p| p.leader_id.term > e.log_id.leader_id.term) {
            return Err(Refusal::Invalid("entry terms go backwards".into()));
        }
        if e.log_id.leader_id.term > req.vote.leader_id.term {
            return Err(Refusal::Invalid("an entry's term is above the leader's".into()));
        }
        prev = Some(e.log_id);
    }
    Ok(req.vote.leader_id.node_id)
}

/// The candidate of a RequestVote, after checking its content.
pub fn check_vote_request(req: &VoteRequest<NodeId>) -> Result<NodeId, Refusal> {
    check_vote(&req.vote)?;
    check_log_id(&req.last_log_id, "last_log_id")?;
    Ok(req.vote.leader_id.node_id)
}

/// The sender of a snapshot chunk, after checking its metadata (the offset is
/// [`SnapshotIntake`]'s).
pub fn check_snapshot(req: &InstallSnapshotRequest<TypeConfig>) -> Result<NodeId, Refusal> {
    check_vote(&req.vote)?;
    check_log_id(&req.meta.last_log_id, "snapshot last_log_id")?;
    check_log_id(req.meta.last_membership.log_id(), "snapshot membership")?;
    Ok(req.vote.leader_id.node_id)
}

/// Tracks the snapshot stream being received, so that a chunk can only continue it.
#[derive(Default)]
pub struct SnapshotIntake {
    /// (snapshot id, bytes received so far).
    current: Mutex<Option<(String, u64)>>,
}

impl SnapshotIntake {
    /// Admits a chunk of `len` bytes at `offset` of snapshot `id`.
    pub fn admit(&self, id: &str, offset: u64, len: usize) -> Result<(), Refusal> {
        let mut cur = self.current.lock();
        let end = offset.saturating_add(len as u64);
        if offset == 0 {
            *cur = Some((id.to_string(), end));
            return Ok(());
        }
        match cur.as_mut() {
            Some((cid, received)) if cid == id && offset <= *received => {
                *received = (*received).max(end);
                Ok(())
            }
            Some((cid, received)) if cid == id => Err(Refusal::Invalid(format!(
                "snapshot chunk at offset {offset} skips ahead of the {received} bytes received"
            ))),
            _ => Err(Refusal::Invalid(format!("snapshot chunk at offset {offset} of a stream that never started"))),
        }
    }
}

/// Members' answers about strangers, and when this node last asked.
#[derive(Default)]
pub struct Strangers {
    state: Mutex<StrangerState>,
}

#[derive(Default)]
struct StrangerState {
    vouched: HashMap<NodeId, Instant>,
    last_lookup: Option<Instant>,
}

/// The part of a member's `GET /v1/cluster` answer that names the members.
#[derive(Deserialize)]
struct ClusterMembers {
    members: Vec<MemberId>,
}

#[derive(Deserialize)]
struct MemberId {
    id: NodeId,
}

impl Strangers {
    /// Whether a member recently vouched for `id`.
    fn recently_vouched(&self, id: NodeId) -> bool {
        let st = self.state.lock();
        st.vouched.get(&id).is_some_and(|at| at.elapsed() < VOUCHED_FOR)
    }

    /// Claims the lookup slot: false when another lookup ran less than [`LOOKUP_EVERY`] ago.
    fn may_look_up(&self) -> bool {
        let mut st = self.state.lock();
        if st.last_lookup.is_some_and(|at| at.elapsed() < LOOKUP_EVERY) {
            return false;
        }
        st.last_lookup = Some(Instant::now());
        st.vouched.retain(|_, at| at.elapsed() < VOUCHED_FOR);
        true
    }

    /// Asks the members at `urls` whether `id` is one of them; remembers a yes.
    pub async fn vouched(&self, client: &reqwest::Client, id: NodeId, urls: Vec<String>) -> bool {
        if self.recently_vouched(id) {
            return true;
        }
        if urls.is_empty() || !self.may_look_up() {
            return false;
        }
        let asks = urls.into_iter().map(|url| {
            let req = client.get(format!("{url}{}", super::rpc::paths::CLUSTER)).timeout(LOOKUP_TIMEOUT).send();
            async move {
                let resp = req.await.ok()?;
                let body = crate::replication::read_answer(resp, crate::replication::MAX_SMALL_ANSWER).await.ok()?;
                let m: ClusterMembers = serde_json::from_slice(&body).ok()?;
                Some(m.members.iter().any(|m| m.id == id))
            }
        });
        let yes = futures::future::join_all(asks).await.into_iter().any(|r| r == Some(true));
        if yes {
            tracing::info!(node = id, "raft: a member vouched for a node this one does not know yet");
            self.state.lock().vouched.insert(id, Instant::now());
        }
        yes
    }
}
