//! Writes and linearizable reads in raft mode.
//!
//! Concurrent commands are gathered into one [`Proposal`] (one log entry: one append, one
//! sync and one replication round for the whole batch). On the leader a proposal goes to
//! `client_write`; on a follower it is forwarded as a whole to the leader's
//! `/v1/raft/forward`, and answered once the leader applied it and this node caught up to
//! it (so a client reads its own write on the node it wrote to). With no reachable leader
//! the write is refused with 503 and the reason, rather than left hanging.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::types::{decode, encode, Proposal};
use super::RaftShared;
use crate::core::command::{Command, Outcome};
use crate::replication::ReplicationError;

/// Most commands in one log entry.
const MAX_BATCH: usize = 256;
/// Most (approximate) bytes of commands in one log entry. sled stores values larger than a
/// quarter of its 512 KiB segment as separate blob files, which it never fsyncs; entries
/// stay well below that so each one lives in the synced log file. One command is at most
/// ~70 KiB (the instance size limits), so it always fits on its own.
const MAX_ENTRY_BYTES: usize = 96 * 1024;
/// Proposals in flight at once per node. openraft appends (and syncs) one entry at a time,
/// so a second proposal only has to be ready when the first is written; more would just
/// split the same commands into smaller entries (measured with two: 14 instead of 21
/// registrations per entry and more CPU per write, no gain in throughput on 2 cores).
const MAX_IN_FLIGHT: usize = 1;

/// Why a queued command was not committed.
#[derive(Debug, Clone)]
pub enum Refused {
    /// It came from another node for this one to propose, and this node no longer leads.
    NotLeader,
    Failed(ReplicationError),
}

type Done = oneshot::Sender<Result<(Outcome, u64), Refused>>;

struct Pending {
    cmd: Command,
    /// Forwarded by a follower: propose here or refuse, never forward again (two nodes
    /// with stale views of each other must not bounce a write between them).
    here_only: bool,
    done: Done,
}

/// The batching front of the log: every command proposed on or forwarded to this node
/// goes through one queue, so concurrent writes from clients and from followers share
/// log entries.
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
    rx: Mutex<Option<mpsc::Receiver<Pending>>>,
}

impl Default for Proposer {
    fn default() -> Self {
        Self::new()
    }
}

impl Proposer {
    /// A proposer; [`spawn`] starts its task.
    pub fn new() -> Proposer {
        let (tx, rx) = mpsc::channel(64 * 1024);
        Proposer { tx, rx: Mutex::new(Some(rx)) }
    }

    /// Submits one client command and waits for its outcome.
    pub async fn submit(&self, cmd: Command) -> Result<Outcome, ReplicationError> {
        let rx = self.enqueue(cmd, false).await?;
        match rx.await {
            Ok(Ok((outcome, _))) => Ok(outcome),
            Ok(Err(Refused::Failed(e))) => Err(e),
            Ok(Err(Refused::NotLeader)) | Err(_) => Err(stopped()),
        }
    }

    /// Submits commands forwarded by a follower; they are proposed here (with whatever else
    /// is queued) or refused with [`Refused::NotLeader`]. Returns one result per command.
    pub async fn submit_forwarded(&self, cmds: Vec<Command>) -> Vec<Result<(Outcome, u64), Refused>> {
        let mut waiting = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            waiting.push(self.enqueue(cmd, true).await);
        }
        let mut out = Vec::with_capacity(waiting.len());
        for w in waiting {
            out.push(match w {
                Ok(rx) => rx.await.unwrap_or_else(|_| Err(Refused::Failed(stopped()))),
                Err(e) => Err(Refused::Failed(e)),
            });
        }
        out
    }

    async fn enqueue(
        &self,
        cmd: Command,
        here_only: bool,
    ) -> Result<oneshot::Receiver<Result<(Outcome, u64), Refused>>, ReplicationError> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Pending { cmd, here_only, done }).await.map_err(|_| stopped())?;
        Ok(rx)
    }
}

fn stopped() -> ReplicationError {
    ReplicationError::Unavailable("raft proposer stopped".into())
}

/// Starts the batching task.
pub fn spawn(shared: Arc<RaftShared>) {
    let Some(mut rx) = shared.proposer.rx.lock().take() else { return };
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut held: Option<Pending> = None;
        loop {
            let first = match held.take() {
                Some(p) => p,
                None => match rx.recv().await {
                    Some(p) => p,
                    None => return,
                },
            };
            // Waiting for a slot lets more commands queue up behind `first`.
            let Ok(permit) = permits.clone().acquire_owned().await else { return };
            let mut bytes = approx_size(&first.cmd);
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH && bytes < MAX_ENTRY_BYTES {
                let Some(next) = held.take().or_else(|| rx.try_recv().ok()) else { break };
                let size = approx_size(&next.cmd);
                if bytes + size > MAX_ENTRY_BYTES {
                    // Starts the next entry instead.
                    held = Some(next);
                    break;
                }
                bytes += size;
                batch.push(next);
            }
            let shared = shared.clone();
            tokio::spawn(async move {
                dispatch(&shared, batch).await;
                drop(permit);
            });
        }
    });
}

/// Roughly how many bytes a command takes in a log entry.
fn approx_size(cmd: &Command) -> usize {
    const FIXED: usize = 128;
    let map =
        |m: &std::collections::BTreeMap<String, String>| m.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>();
    match cmd {
        Command::Register { instance: i, .. } => {
            let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
            FIXED
                + i.instance_id.len()
                + i.host_name.len()
                + i.app.len()
                + i.ip_addr.len()
                + map(&i.metadata)
                + map(&i.data_center_info.metadata)
                + i.data_center_info.name.len()
                + [
                    &i.sid,
                    &i.app_group_name,
                    &i.home_page_url,
                    &i.status_page_url,
                    &i.health_check_url,
                    &i.secure_health_check_url,
                    &i.vip_address,
                    &i.secure_vip_address,
                    &i.asg_name,
                ]
                .into_iter()
                .map(opt)
                .sum::<usize>()
        }
        Command::Cancel { key, .. }
        | Command::SetStatusOverride { key, .. }
        | Command::DeleteStatusOverride { key, .. } => FIXED + key.app.len() + key.id.len(),
        Command::UpdateMetadata { key, entries, .. } => FIXED + key.app.len() + key.id.len() + map(entries),
        Command::Evict { keys, .. } => FIXED + keys.iter().map(|k| k.app.len() + k.id.len() + 4).sum::<usize>(),
        Command::Adopt { replica, .. } => match replica {
            crate::core::command::Replica::Live { entry, .. } => FIXED + entry.info.approx_bytes(),
            crate::core::command::Replica::Deleted { .. } => FIXED,
        },
    }
}

/// Proposes one batch and answers every command in it.
async fn dispatch(shared: &RaftShared, batch: Vec<Pending>) {
    let leading = shared.leads();
    let (mut cmds, mut dones) = (Vec::with_capacity(batch.len()), Vec::with_capacity(batch.len()));
    for p in batch {
        if p.here_only && !leading {
            let _ = p.done.send(Err(Refused::NotLeader));
        } else {
            cmds.push(p.cmd);
            dones.push(p.done);
        }
    }
    if cmds.is_empty() {
        return;
    }
    let n = cmds.len();
    let result = match propose(shared, cmds).await {
        Ok(r) if r.outcomes.len() == n => Ok(r),
        Ok(r) => {
            Err(ReplicationError::Unavailable(format!("raft answered {} outcomes for {n} commands", r.outcomes.len())))
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(r) => {
            for (done, o) in dones.into_iter().zip(r.outcomes) {
                let _ = done.send(Ok((o, r.index)));
            }
        }
        Err(e) => {
            for done in dones {
                let _ = done.send(Err(Refused::Failed(e.clone())));
            }
        }
    }
}

/// The leader's answer to a forwarded proposal.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardReply {
    /// Log index of the entry that carried the proposal.
    pub index: u64,
    pub outcomes: Vec<Outcome>,
}

/// Result of one attempt.
pub enum Attempt<T> {
    Done(T),
    /// Leadership moved (or is unknown) and the request certainly entered no log; try again
    /// with the new leader. A write whose fate is unknown is never retried: its entry may
    /// still commit, and a second copy would apply it twice (a cancel answered 404 after its
    /// first copy removed the instance, or a registration undoing a later cancel).
    Retry,
    Failed(ReplicationError),
}

/// A write that may or may not commit: not retried, answered 503 saying so.
fn in_doubt() -> ReplicationError {
    ReplicationError::Unavailable(
        "leadership changed while the write was in flight; it may still be applied (retry is safe: every \
         registry change is idempotent)"
            .into(),
    )
}

fn no_leader() -> ReplicationError {
    ReplicationError::Unavailable(
        "no raft leader reachable from this node (election under way, or this node is cut off from the majority)"
            .into(),
    )
}

/// Commits `cmds` as one entry, through whichever node leads; waits at most the write
/// timeout, and at most the election timeout for a leader to exist.
pub async fn propose(shared: &RaftShared, cmds: Vec<Command>) -> Result<ForwardReply, ReplicationError> {
    let started = Instant::now();
    let deadline = started + shared.write_timeout();
    let mut leaderless_since: Option<Instant> = None;
    // Shared with the log entry rather than copied for it; a retry after the entry was
    // handed to openraft copies the commands only if openraft still holds them.
    let mut cmds = Arc::new(cmds);
    loop {
        let attempt = match shared.live_leader() {
            Some((id, _)) if id == shared.id => propose_local(shared, &mut cmds, deadline).await,
            Some((_, url)) => {
                leaderless_since = None;
                let sent = Instant::now();
                let attempt = forward(shared, &url, &cmds, deadline).await;
                let s = &shared.stats;
                s.forward_latency.observe_duration(sent.elapsed());
                let outcome = match attempt {
                    Attempt::Done(_) => &s.forwarded_ok,
                    Attempt::Retry => &s.forwarded_retried,
                    Attempt::Failed(_) => &s.forwarded_failed,
                };
                super::stats::RaftStats::bump(outcome, 1);
                attempt
            }
            None => Attempt::Retry,
        };
        match attempt {
            Attempt::Done(o) => return Ok(o),
            Attempt::Failed(e) => return Err(e),
            Attempt::Retry => {
                retry_or_give_up(shared, &mut leaderless_since, deadline, || {
                    format!(
                        "write not committed within {} ms (leadership changing); it may still be applied",
                        shared.write_timeout().as_millis()
                    )
                })
                .await?
            }
        }
    }
}

/// After an attempt that found no usable leader: gives up when no leader has been
/// reachable for the longest election timeout, or at the deadline (`late` says why);
/// otherwise waits a moment before the next attempt.
async fn retry_or_give_up(
    shared: &RaftShared,
    leaderless_since: &mut Option<Instant>,
    deadline: Instant,
    late: impl FnOnce() -> String,
) -> Result<(), ReplicationError> {
    let now = Instant::now();
    if shared.live_leader_id().is_none() {
        // A leader cut off from its quorum refuses at once: waiting for a new leader it
        // cannot hear of would only stall the client that should fail over.
        if shared.leads_without_quorum() {
            return Err(no_leader());
        }
        let since = *leaderless_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= shared.election_max() {
            return Err(no_leader());
        }
    }
    if now >= deadline {
        return Err(ReplicationError::Unavailable(late()));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(())
}

/// On the leader: stamps the commands with the leader's clock and commits them as one entry.
async fn propose_local(shared: &RaftShared, cmds: &mut Arc<Vec<Command>>, deadline: Instant) -> Attempt<ForwardReply> {
    let now = shared.registry.now();
    for c in Arc::make_mut(cmds) {
        c.set_now(now);
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(remaining, shared.raft.client_write(Proposal { commands: cmds.clone() })).await {
        Err(_) => Attempt::Failed(ReplicationError::Unavailable(format!(
            "write not committed within {} ms (no quorum?); it may still be applied",
            shared.write_timeout().as_millis()
        ))),
        Ok(Ok(resp)) => Attempt::Done(ForwardReply { index: resp.log_id.index, outcomes: resp.data }),
        // openraft answers this also when the leader stepped down after appending the entry,
        // which a new leader may still commit.
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Attempt::Failed(in_doubt()),
        Ok(Err(e)) => Attempt::Failed(ReplicationError::Unavailable(format!("raft: {e}"))),
    }
}

/// On a follower: sends the proposal to the leader and waits until this node applied it.
async fn forward(shared: &RaftShared, url: &str, cmds: &Arc<Vec<Command>>, deadline: Instant) -> Attempt<ForwardReply> {
    let body = match encode(&Proposal { commands: cmds.clone() }) {
        Ok(b) => b,
        Err(e) => return Attempt::Failed(ReplicationError::Unavailable(format!("cannot encode proposal: {e}"))),
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let resp = shared
        .client
        .post(format!("{url}{}", super::rpc::paths::FORWARD))
        .header("content-type", "application/octet-stream")
        .timeout(remaining.max(Duration::from_millis(1)))
        .body(body)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        // Never connected: the leader did not see the write.
        Err(e) if e.is_connect() => {
            tracing::debug!(error = %e, url, "forwarding a write to the leader failed");
            return Attempt::Retry;
        }
        Err(e) => {
            tracing::debug!(error = %e, url, "no answer from the leader to a forwarded write");
            return Attempt::Failed(in_doubt());
        }
    };
    let status = resp.status();
    let Ok(bytes) = crate::replication::read_answer(resp, crate::replication::MAX_SMALL_ANSWER).await else {
        return Attempt::Failed(in_doubt());
    };
    if status == reqwest::StatusCode::MISDIRECTED_REQUEST {
        // Refused before it was proposed: not the leader any more. Ask the next one.
        tracing::debug!(url, "the former leader refused a forwarded write");
        return Attempt::Retry;
    }
    if status.is_server_error() {
        tracing::debug!(%status, url, reason = %String::from_utf8_lossy(&bytes), "leader could not commit a forwarded write");
        return Attempt::Failed(in_doubt());
    }
    if !status.is_success() {
        return Attempt::Failed(ReplicationError::Unavailable(format!(
            "leader at {url} refused the write: HTTP {status}: {}",
            String::from_utf8_lossy(&bytes).trim()
        )));
    }
    let reply: ForwardReply = match decode(&bytes) {
        Ok(r) => r,
        Err(e) => return Attempt::Failed(ReplicationError::Unavailable(format!("bad reply from leader: {e}"))),
    };
    wait_applied(shared, reply.index, deadline).await;
    Attempt::Done(reply)
}

/// Waits (until `deadline`) for this node to apply `index`; returns whether it did.
pub async fn wait_applied(shared: &RaftShared, index: u64, deadline: Instant) -> bool {
    let mut rx = shared.sm.applied_index();
    let remaining = deadline.saturating_duration_since(Instant::now());
    let reached = matches!(tokio::time::timeout(remaining, rx.wait_for(|i| *i >= index)).await, Ok(Ok(_)));
    reached
}

/// On the leader: confirms leadership with a quorum and returns the index a linearizable
/// read must have applied.
pub async fn read_index_local(shared: &RaftShared, deadline: Instant) -> Attempt<u64> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(remaining, shared.raft.ensure_linearizable()).await {
        Err(_) => Attempt::Failed(ReplicationError::Unavailable("leader could not confirm its quorum in time".into())),
        Ok(Ok(log_id)) => Attempt::Done(log_id.map_or(0, |l| l.index)),
        Ok(Err(RaftError::APIError(_))) => Attempt::Retry,
        Ok(Err(e)) => Attempt::Failed(ReplicationError::Unavailable(format!("raft: {e}"))),
    }
}

/// Resolves once this node has applied everything committed before the call.
pub async fn read_barrier(shared: &RaftShared) -> Result<(), ReplicationError> {
    let deadline = Instant::now() + shared.write_timeout();
    let mut leaderless_since: Option<Instant> = None;
    loop {
        let attempt = match shared.live_leader() {
            Some((id, _)) if id == shared.id => read_index_local(shared, deadline).await,
            Some((_, url)) => {
                leaderless_since = None;
                remote_read_index(shared, &url, deadline).await
            }
            None => Attempt::Retry,
        };
        match attempt {
            Attempt::Done(index) => {
                return if wait_applied(shared, index, deadline).await {
                    Ok(())
                } else {
                    Err(ReplicationError::Unavailable("this node did not catch up with the leader in time".into()))
                };
            }
            Attempt::Failed(e) => return Err(e),
            Attempt::Retry => {
                retry_or_give_up(shared, &mut leaderless_since, deadline, || "linearizable read timed out".into())
                    .await?
            }
        }
    }
}

async fn remote_read_index(shared: &RaftShared, url: &str, deadline: Instant) -> Attempt<u64> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let resp = shared
        .client
        .get(format!("{url}{}", super::rpc::paths::READ_INDEX))
        .timeout(remaining.max(Duration::from_millis(1)))
        .send()
        .await;
    let Ok(resp) = resp else { return Attempt::Retry };
    if !resp.status().is_success() {
        return Attempt::Retry;
    }
    match crate::replication::read_answer(resp, 1024).await.ok().and_then(|b| decode::<u64>(&b).ok()) {
        Some(i) => Attempt::Done(i),
        None => Attempt::Retry,
    }
}
