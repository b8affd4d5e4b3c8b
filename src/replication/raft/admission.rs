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
//!   included), and not this node itself. A node that has not caught up with a membership
//!   change may not know a new member yet (say, the new leader); while it hears from no
//!   leader it asks the members it knows for their member lists, and admits the ids they
//!   name. A node that was never initialized admits anyone, as it has no configuration to
//!   protect yet;
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

/// Highest term accepted (and persisted): far below where `term + 1` overflows.
pub const MAX_TERM: u64 = 1 << 62;
/// Farthest a message's term may lie above this node's own. A term grows by one per election;
/// a node cut off for months at an election a second stays well inside it, while a forged
/// term cannot push the cluster to [`MAX_TERM`] in any number of messages that could be sent.
pub const MAX_TERM_JUMP: u64 = 1 << 24;
/// Highest log index accepted (far beyond any real log, far below overflow).
pub const MAX_INDEX: u64 = 1 << 62;

/// How long an id a member listed stays admitted.
const VOUCHED_FOR: Duration = Duration::from_secs(30);
/// How often a node that hears from no leader asks the members it knows who the members are.
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

/// Checks a message's vote against this node: not beyond [`MAX_TERM_JUMP`] above its term,
/// and not in this node's own name (openraft would take it as having won an election, and
/// lead with a log nobody checked).
pub fn check_vote_against(v: &Vote, own_id: NodeId, own_term: u64) -> Result<(), Refusal> {
    if v.leader_id.node_id == own_id {
        return Err(Refusal::Invalid(format!("a message in this node's own name ({own_id})")));
    }
    if v.leader_id.term > own_term.saturating_add(MAX_TERM_JUMP) {
        return Err(Refusal::Invalid(format!(
            "vote term {} is more than {MAX_TERM_JUMP} above this node's term {own_term}",
            v.leader_id.term
        )));
    }
    Ok(())
}

/// A membership a leader may hand out: one or two configurations (two while joint), none
/// empty, every voter among the nodes, every node with an http(s) URL. openraft trusts it and
/// panics later (at every start, once it is in the log) on a voter without a node.
fn check_membership(m: &openraft::Membership<NodeId, super::types::Member>, what: &str) -> Result<(), Refusal> {
    let configs = m.get_joint_config();
    let bad = |why: String| Err(Refusal::Invalid(format!("{what}: {why}")));
    if configs.is_empty() || configs.len() > 2 {
        return bad(format!("{} configurations (1, or 2 while joint)", configs.len()));
    }
    if configs.iter().any(|c| c.is_empty()) {
        return bad("an empty configuration".into());
    }
    if let Some(v) = configs.iter().flatten().find(|v| m.get_node(v).is_none()) {
        return bad(format!("voter {v} is not among the nodes"));
    }
    if let Some((id, e)) = m.nodes().find_map(|(id, n)| crate::config::member_url(&n.url).err().map(|e| (id, e))) {
        return bad(format!("node {id}: {e}"));
    }
    Ok(())
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
    if !req.vote.committed {
        return Err(Refusal::Invalid("an append from a leader whose vote is not committed".into()));
    }
    let mut prev = req.prev_log_id;
    for e in &req.entries {
        check_log_id(&Some(e.log_id), "entry")?;
        if let openraft::EntryPayload::Membership(m) = &e.payload {
            check_membership(m, "membership entry")?;
        }
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
    if req.vote.committed {
        return Err(Refusal::Invalid("a vote request with a committed vote".into()));
    }
    check_log_id(&req.last_log_id, "last_log_id")?;
    Ok(req.vote.leader_id.node_id)
}

/// The sender of a snapshot chunk, after checking its metadata (the offset is
/// [`SnapshotIntake`]'s).
pub fn check_snapshot(req: &InstallSnapshotRequest<TypeConfig>) -> Result<NodeId, Refusal> {
    check_vote(&req.vote)?;
    check_log_id(&req.meta.last_log_id, "snapshot last_log_id")?;
    check_log_id(req.meta.last_membership.log_id(), "snapshot membership")?;
    if !req.vote.committed {
        return Err(Refusal::Invalid("a snapshot from a leader whose vote is not committed".into()));
    }
    if req.meta.last_membership.log_id().is_some() {
        check_membership(req.meta.last_membership.membership(), "snapshot membership")?;
    }
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

/// Node ids that members this node knows list in their membership, learnt while this node
/// hears from no leader (it may have missed a membership change that added the new leader).
/// Learnt by this node's own asking, on its own schedule, so a flood of made-up sender ids
/// can neither trigger lookups nor crowd out the real one.
#[derive(Default)]
pub struct Strangers {
    vouched: Mutex<HashMap<NodeId, Instant>>,
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
    /// Whether a member recently listed `id`.
    pub fn vouched_for(&self, id: NodeId) -> bool {
        self.vouched.lock().get(&id).is_some_and(|at| at.elapsed() < VOUCHED_FOR)
    }

    /// Asks the members at `urls` for their member lists and remembers every id they name.
    async fn learn(&self, client: &reqwest::Client, urls: Vec<String>) {
        let asks = urls.into_iter().map(|url| {
            let req = client.get(format!("{url}{}", super::rpc::paths::CLUSTER)).timeout(LOOKUP_TIMEOUT).send();
            async move {
                let resp = req.await.ok()?;
                let body = crate::replication::read_answer(resp, crate::replication::MAX_SMALL_ANSWER).await.ok()?;
                serde_json::from_slice::<ClusterMembers>(&body).ok()
            }
        });
        let answers = futures::future::join_all(asks).await;
        let mut vouched = self.vouched.lock();
        vouched.retain(|_, at| at.elapsed() < VOUCHED_FOR);
        for m in answers.into_iter().flatten().flat_map(|a| a.members) {
            vouched.insert(m.id, Instant::now());
        }
    }
}

/// While this node hears from no leader, asks the members it knows, every
/// [`LOOKUP_EVERY`], who the members are (see [`Strangers`]).
pub fn spawn_membership_watch(shared: std::sync::Arc<super::RaftShared>) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(LOOKUP_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if shared.live_leader_id().is_some() {
                continue;
            }
            let urls: Vec<String> = {
                let m = shared.raft.metrics();
                let m = m.borrow();
                let membership = m.membership_config.membership();
                membership.nodes().filter(|(id, _)| **id != shared.id).map(|(_, n)| n.url.clone()).collect()
            };
            if !urls.is_empty() {
                shared.strangers.learn(&shared.client, urls).await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{CommittedLeaderId, EntryPayload, Membership};

    use super::*;
    use crate::replication::raft::types::{Entry, Member};

    fn append(vote: Vote, entries: Vec<Entry>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest { vote, prev_log_id: None, entries, leader_commit: None }
    }

    fn membership(voters: &[u64], nodes: &[(u64, &str)]) -> Membership<NodeId, Member> {
        let nodes: BTreeMap<u64, Member> = nodes.iter().map(|(id, u)| (*id, Member { url: u.to_string() })).collect();
        Membership::new(vec![voters.iter().copied().collect::<BTreeSet<_>>()], nodes)
    }

    fn membership_entry(m: Membership<NodeId, Member>) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), 0), payload: EntryPayload::Membership(m) }
    }

    #[test]
    fn votes_must_be_plausible_for_this_node() {
        let v = Vote::new_committed(5, 2);
        assert_eq!(check_vote_against(&v, 1, 4), Ok(()));
        assert!(check_vote_against(&v, 2, 4).is_err(), "in this node's own name");
        assert!(check_vote_against(&Vote::new_committed(4 + MAX_TERM_JUMP + 1, 2), 1, 4).is_err());
        assert!(check_append(&append(Vote::new(5, 2), vec![])).is_err(), "append with an uncommitted vote");
        let req = VoteRequest { vote: Vote::new_committed(5, 2), last_log_id: None };
        assert!(check_vote_request(&req).is_err(), "vote request with a committed vote");
    }

    #[test]
    fn membership_entries_must_be_usable() {
        let ok = membership(&[1, 2], &[(1, "http://a"), (2, "http://b")]);
        assert_eq!(check_append(&append(Vote::new_committed(1, 1), vec![membership_entry(ok)])), Ok(1));
        // Membership::new adds missing voters as nodes with a default (empty) URL.
        let no_url = membership(&[1, 3], &[(1, "http://a")]);
        assert!(check_append(&append(Vote::new_committed(1, 1), vec![membership_entry(no_url)])).is_err());
        let bad_url = membership(&[1], &[(1, "file:///etc")]);
        assert!(check_append(&append(Vote::new_committed(1, 1), vec![membership_entry(bad_url)])).is_err());
    }
}
