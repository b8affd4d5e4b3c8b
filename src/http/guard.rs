//! The door every request passes before a handler runs: who sent it ([`crate::auth`]),
//! whether its roles allow what the route does, and the audit line of every change.

use std::convert::Infallible;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::respond;
use super::serve::ClientCertificate;
use super::HttpService;
use crate::auth::access;
use crate::auth::roles::{InstanceAct, Need};
use crate::auth::{Principal, Refusal};

/// Eureka's header marking a request as replication from a peer node.
static REPLICATION_HEADER: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-netflix-discovery-replication");

/// The roles of a client registering an instance, for the checks only the decoded body
/// allows: the VIP addresses it announces, and an instance id held by another application.
/// Absent for members and admins.
#[derive(Debug, Clone)]
pub struct RegisterScope(pub std::sync::Arc<crate::auth::roles::Roles>);

/// What to do with a request, decided without waiting where possible.
pub enum Decision {
    /// Let it through as it is (nothing to audit).
    Run,
    /// Refuse it with this answer.
    Refuse(Response),
    /// Go through [`checked`]: a password to verify first, or an audit line to write after.
    Check,
}

/// Decides `req` at once from the credential cache (the path of every heartbeat after the
/// first), stripping a non-member's replication header.
pub fn decide(svc: &HttpService, req: &mut Request) -> Decision {
    let need = access::need(req.method(), req.uri().path());
    let cert = req.extensions().get::<ClientCertificate>().is_some();
    match svc.state.auth.authorize_now(req.headers(), cert, &need) {
        None => Decision::Check,
        Some(Err(r)) => Decision::Refuse(refusal(r)),
        Some(Ok(peer)) => {
            if !peer {
                req.headers_mut().remove(&REPLICATION_HEADER);
            }
            let registers = matches!(need, Need::Instance { act: InstanceAct::Register, .. });
            if !peer && (registers || audited(&need)) {
                Decision::Check
            } else {
                Decision::Run
            }
        }
    }
}

/// Decides `req` (verifying a password not seen before), runs it through `svc` if allowed,
/// and writes the audit line of a change. Only for nodes that check requests: an open node
/// serves them directly.
pub async fn checked(svc: HttpService, mut req: Request) -> Result<Response, Infallible> {
    let need = access::need(req.method(), req.uri().path());
    let cert = req.extensions().get::<ClientCertificate>().is_some();
    let principal = match svc.state.auth.authorize(req.headers(), cert, &need).await {
        Ok(p) => p,
        Err(r) => return Ok(refusal(r)),
    };
    // Only members may claim to be replicating: anyone else's request is a client's. A
    // member's changes are audited where they were made.
    if !principal.peer {
        req.headers_mut().remove(&REPLICATION_HEADER);
        if matches!(need, Need::Instance { act: InstanceAct::Register, .. }) && !principal.roles.admin {
            req.extensions_mut().insert(RegisterScope(principal.roles.clone()));
        }
    }
    if principal.peer || !audited(&need) {
        return svc.handle_owned(req).await;
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let resp = svc.handle_owned(req).await?;
    audit(&principal, &need, &method, &path, resp.status());
    Ok(resp)
}

/// Whether the audit log takes a line for a request that needs `need`.
fn audited(need: &Need) -> bool {
    match need {
        Need::Instance { act: InstanceAct::Renew, .. } => {
            tracing::enabled!(target: "synod::audit", tracing::Level::DEBUG)
        }
        Need::Instance { .. } | Need::Admin => tracing::enabled!(target: "synod::audit", tracing::Level::INFO),
        _ => false,
    }
}

fn audit(who: &Principal, need: &Need, method: &Method, path: &str, status: StatusCode) {
    let (who, status) = (&*who.name, status.as_u16());
    match need {
        // A heartbeat every 30 s per instance: kept out of the info log.
        Need::Instance { act: InstanceAct::Renew, .. } => {
            tracing::debug!(target: "synod::audit", principal = who, %method, path, status, "renew")
        }
        Need::Instance { app, act } => {
            tracing::info!(target: "synod::audit", principal = who, %method, path, app, status, "{}", act.as_str())
        }
        _ => tracing::info!(target: "synod::audit", principal = who, %method, path, status, "membership change"),
    }
}

/// 401 (with the schemes a client may answer with), 403, or 503 while password checks are
/// saturated, each with a one-line reason.
fn refusal(r: Refusal) -> Response {
    match r {
        Refusal::Unauthenticated(reason) => {
            let mut resp = respond::error(StatusCode::UNAUTHORIZED, reason);
            let h = resp.headers_mut();
            h.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"synod\", charset=\"UTF-8\""));
            h.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"synod\""));
            resp
        }
        Refusal::Forbidden(reason) => respond::error(StatusCode::FORBIDDEN, reason),
        Refusal::Busy(reason) => {
            let mut resp = respond::error(StatusCode::SERVICE_UNAVAILABLE, reason);
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
    }
}
