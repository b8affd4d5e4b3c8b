//! Operator subcommands that talk to a running node over HTTP.

use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

/// `synod cluster …`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Any node of the cluster (its base URL; a trailing /eureka or /eureka/v2 is ignored).
    #[arg(long, env = "SYNOD_SERVER", default_value = "http://127.0.0.1:8761", global = true)]
    pub server: String,

    /// Output: a human-readable table, or the server's JSON.
    #[arg(long, value_enum, default_value = "table", global = true)]
    pub output: Output,

    #[command(subcommand)]
    pub action: ClusterAction,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum ClusterAction {
    /// Leader, term, indexes and members.
    Status,
    /// Add a node: as a learner first, promoted to voter once it has caught up.
    Add {
        /// The new node's id (as given to it with --node-id).
        id: u64,
        /// The URL the other nodes reach it at, e.g. http://10.0.0.4:8761.
        url: String,
    },
    /// Remove a node from the cluster.
    Remove {
        /// Id of the node to remove.
        id: u64,
    },
    /// Change the URL a member is reached at (its identity and data stay).
    SetUrl {
        /// Id of the member.
        id: u64,
        /// Its new URL.
        url: String,
    },
}

fn base(server: &str) -> String {
    let s = server.trim().trim_end_matches('/');
    s.strip_suffix("/eureka/v2").or_else(|| s.strip_suffix("/eureka")).unwrap_or(s).to_string()
}

/// Runs a `cluster` subcommand; returns what to print.
pub async fn cluster(args: ClusterArgs) -> anyhow::Result<String> {
    let base = base(&args.server);
    let client = reqwest::Client::builder().no_proxy().connect_timeout(Duration::from_secs(3)).build()?;
    let req = match &args.action {
        ClusterAction::Status => client.get(format!("{base}/v1/cluster")),
        ClusterAction::Add { id, url } => {
            client.post(format!("{base}/v1/cluster/nodes")).json(&serde_json::json!({"id": id, "url": url}))
        }
        ClusterAction::Remove { id } => client.delete(format!("{base}/v1/cluster/nodes/{id}")),
        ClusterAction::SetUrl { id, url } => {
            client.put(format!("{base}/v1/cluster/nodes/{id}")).json(&serde_json::json!({"url": url}))
        }
    };
    // Adding a node waits for it to catch up.
    let resp = req.timeout(Duration::from_secs(120)).send().await.with_context(|| format!("{base}: unreachable"))?;
    let status = resp.status();
    let body = resp.text().await.with_context(|| format!("{base}: reading the answer"))?;
    if !status.is_success() {
        return Err(anyhow!("{base}: {} {}", status.as_u16(), body.trim()));
    }
    let v: Value = serde_json::from_str(&body).with_context(|| format!("{base}: not a synod raft node"))?;
    Ok(match args.output {
        Output::Json => serde_json::to_string_pretty(&v)?,
        Output::Table => table(&v),
    })
}

/// The cluster status as a table.
fn table(v: &Value) -> String {
    let leader = v["leader"].as_u64();
    let mut out = format!(
        "node {} is {}; leader {}; term {}; applied index {}\n",
        v["node_id"],
        v["state"].as_str().unwrap_or("?"),
        leader.map_or("none".to_string(), |l| l.to_string()),
        v["term"],
        v["applied_index"].as_u64().map_or("-".into(), |i| i.to_string()),
    );
    let members = v["members"].as_array().cloned().unwrap_or_default();
    let width = members.iter().filter_map(|m| m["url"].as_str()).map(str::len).max().unwrap_or(3).max(3);
    out.push_str(&format!("{:<4} {:<width$} ROLE\n", "ID", "URL"));
    for m in members {
        let id = m["id"].as_u64().unwrap_or(0);
        let mut role = if m["voter"] == true { "voter" } else { "learner" }.to_string();
        if Some(id) == leader {
            role.push_str(", leader");
        }
        out.push_str(&format!("{:<4} {:<width$} {role}\n", id, m["url"].as_str().unwrap_or("")));
    }
    out
}
