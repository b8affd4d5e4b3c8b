//! What each route needs, from the method and the path alone, before any handler runs.
//! Eureka paths are split and decoded by the same [`segments`] the handlers use, so that a
//! path cannot name one application here and another one there.

use axum::http::Method;

use super::roles::{InstanceAct, Need};
use crate::http::path::segments;

/// What a request with `method` on `path` needs.
pub fn need(method: &Method, path: &str) -> Need {
    match path {
        "/healthz" | "/readyz" => return Need::Open,
        _ => {}
    }
    if path.starts_with("/v1/raft/") || path.starts_with("/v1/p2p/") {
        return Need::Peer;
    }
    // A backup holds the whole registry, as much as every read together, and is costly to
    // build: for administrators only.
    if path == "/v1/snapshot" {
        return Need::Admin;
    }
    if path == "/v1/cluster" || path.starts_with("/v1/cluster/") {
        return if method == Method::GET { Need::Read } else { Need::Admin };
    }
    let Some(rest) = path.strip_prefix("/eureka") else { return Need::Read };
    // Every Eureka GET is a read (the batch route takes POST only): no need to split its path.
    if method == Method::GET {
        return Need::Read;
    }
    // Paths that do not decode are refused by the handler; nothing changes on them.
    let Ok(segs) = segments(rest) else { return Need::Read };
    let at = |i: usize| segs.get(i).map(|s| s.as_ref());
    let act = match (at(0), segs.len(), method, at(3)) {
        (Some("peerreplication"), 2, _, _) if at(1) == Some("batch") => return Need::Peer,
        (Some("apps"), 2, &Method::POST, _) => InstanceAct::Register,
        (Some("apps"), 3, &Method::PUT, _) => InstanceAct::Renew,
        (Some("apps"), 3, &Method::DELETE, _) => InstanceAct::Cancel,
        (Some("apps"), 4, &Method::PUT | &Method::DELETE, Some("status")) => InstanceAct::Status,
        (Some("apps"), 4, &Method::PUT, Some("metadata")) => InstanceAct::Metadata,
        // Reads, and methods the handler refuses (405/404) without changing anything.
        _ => return Need::Read,
    };
    Need::Instance { app: at(1).unwrap_or_default().to_ascii_uppercase(), act }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(app: &str, act: InstanceAct) -> Need {
        Need::Instance { app: app.into(), act }
    }

    #[test]
    fn routes_map_to_needs() {
        let cases = [
            (Method::GET, "/healthz", Need::Open),
            (Method::GET, "/readyz", Need::Open),
            (Method::GET, "/", Need::Read),
            (Method::GET, "/v1/status", Need::Read),
            (Method::GET, "/eureka/apps", Need::Read),
            (Method::GET, "/eureka/v2/apps/delta", Need::Read),
            (Method::POST, "/eureka/apps/orders", inst("ORDERS", InstanceAct::Register)),
            (Method::POST, "/eureka/v2/apps/orders/", inst("ORDERS", InstanceAct::Register)),
            (Method::PUT, "/eureka/apps/ORDERS/i-1", inst("ORDERS", InstanceAct::Renew)),
            (Method::DELETE, "/eureka//apps/ORDERS/i-1", inst("ORDERS", InstanceAct::Cancel)),
            (Method::PUT, "/eureka/apps/ORDERS/i-1/status", inst("ORDERS", InstanceAct::Status)),
            (Method::DELETE, "/eureka/apps/ORDERS/i-1/status", inst("ORDERS", InstanceAct::Status)),
            (Method::PUT, "/eureka/apps/ORDERS/i-1/metadata", inst("ORDERS", InstanceAct::Metadata)),
            // Escapes decode as the handler decodes them.
            (Method::DELETE, "/eureka/apps/BILL%49NG/i-1", inst("BILLING", InstanceAct::Cancel)),
            (Method::POST, "/eureka/peerreplication/batch", Need::Peer),
            (Method::POST, "/eureka/v2/peerreplication/batch/", Need::Peer),
            (Method::POST, "/v1/raft/append", Need::Peer),
            (Method::GET, "/v1/p2p/digest", Need::Peer),
            (Method::GET, "/v1/cluster", Need::Read),
            (Method::GET, "/v1/snapshot", Need::Admin),
            (Method::POST, "/v1/cluster/nodes", Need::Admin),
            (Method::DELETE, "/v1/cluster/nodes/2", Need::Admin),
            (Method::PATCH, "/eureka/apps/ORDERS", Need::Read),
        ];
        for (m, p, want) in cases {
            assert_eq!(need(&m, p), want, "{m} {p}");
        }
    }
}
