//! Raft RPCs to other nodes: bincode bodies over HTTP `POST {url}/v1/raft/{append,vote,snapshot}`,
//! answered by [`super::rpc`]. A refused connection is reported as `Unreachable`, so
//! openraft backs off instead of retrying every heartbeat.

use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::RPCTypes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::rpc::paths;
use super::types::{decode, encode, Member, NodeId, TypeConfig};
use crate::replication::{read_answer, AnswerError, MAX_SMALL_ANSWER};

/// Builds one [`Connection`] per replication stream; all share one HTTP client pool.
#[derive(Clone)]
pub struct Network {
    pub id: NodeId,
    pub client: reqwest::Client,
}

impl Network {
    /// A factory for node `id`, sending through `client`.
    pub fn new(id: NodeId, client: reqwest::Client) -> Network {
        Network { id, client }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Connection {
        Connection { from: self.id, target, node: node.clone(), client: self.client.clone() }
    }
}

/// RPCs to one node.
pub struct Connection {
    from: NodeId,
    target: NodeId,
    node: Member,
    client: reqwest::Client,
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        action: RPCTypes,
        path: &str,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, Member, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let url = format!("{}{path}", self.node.url.trim_end_matches('/'));
        let timeout = || RPCError::Timeout(Timeout { action, id: self.from, target: self.target, timeout: ttl });
        let resp = self
            .client
            .post(&url)
            .header("content-type", "application/octet-stream")
            .timeout(ttl)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    timeout()
                } else if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        let status = resp.status();
        let bytes = read_answer(resp, MAX_SMALL_ANSWER).await.map_err(|e| match e {
            AnswerError::Transport(e) if e.is_timeout() => timeout(),
            e => RPCError::Network(NetworkError::new(&e)),
        })?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            return Err(RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
                "{url}: HTTP {status}: {text}"
            )))));
        }
        let result: Result<Resp, E> = decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call(RPCTypes::AppendEntries, paths::APPEND, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(RPCTypes::InstallSnapshot, paths::SNAPSHOT, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call(RPCTypes::Vote, paths::VOTE, &rpc, option.hard_ttl()).await
    }
}
