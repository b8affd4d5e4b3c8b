//! Who sends a request and what it may do: clients by HTTP Basic (the `user:password@` of a
//! stock Eureka client's service URL) or a bearer token, checked against the auth file;
//! cluster members by the cluster secret and/or a client certificate. Every request is
//! decided in [`crate::http::HttpService`] before any handler runs.
//!
//! A node without an auth file and without a cluster secret is open: every request may do
//! everything (the start-up check allows that only on loopback or with `--allow-anonymous`).

pub mod access;
pub mod roles;
pub mod users;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue};
use base64::Engine;
use parking_lot::RwLock;
use subtle::ConstantTimeEq;

use roles::{Need, Roles};
use users::{sha256, Policy};

/// The header carrying the cluster secret on requests between members.
pub const CLUSTER_SECRET_HEADER: &str = "x-synod-cluster-secret";

/// Shortest cluster secret accepted.
pub const MIN_SECRET_LEN: usize = 16;

/// Most verified credentials remembered; the cache starts afresh past it.
const CACHE_CAP: usize = 100_000;

/// Password verifications running at once (each holds Argon2's 19 MiB for tens of
/// milliseconds): a flood of wrong passwords costs this many cores, not the node.
const CONCURRENT_VERIFICATIONS: usize = 2;

/// Who sent a request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User name, `anonymous`, or `peer`.
    pub name: Arc<str>,
    pub roles: Arc<Roles>,
    /// A cluster member (cluster secret or peer certificate): may use the replication routes.
    pub peer: bool,
    /// Whether the request carried credentials (a refusal is then 403, else 401).
    pub authenticated: bool,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no credentials where some are needed, or wrong ones.
    Unauthenticated(String),
    /// 403: the principal's roles do not allow it.
    Forbidden(String),
}

/// How peers prove they are members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerProof {
    /// The cluster secret must be sent.
    pub secret: bool,
    /// A client certificate verified against `--tls-client-ca` must be presented.
    pub certificate: bool,
}

/// A verified (or refused) credential, valid while the auth file is unchanged.
struct Cached {
    generation: u64,
    user: Option<Arc<str>>,
}

/// Authentication and authorization state of a node.
pub struct Auth {
    file: Option<PathBuf>,
    policy: RwLock<Arc<Policy>>,
    /// Moves on every reload; cached verifications of an older file are not trusted.
    generation: AtomicU64,
    /// SHA-256 of an `Authorization` header → what it proved.
    cache: RwLock<HashMap<[u8; 32], Cached>>,
    verifying: tokio::sync::Semaphore,
    secret: Option<Vec<u8>>,
    certificate: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("file", &self.file).field("peer_proof", &self.peer_proof()).finish()
    }
}

impl Auth {
    /// A node where everyone may do everything.
    pub fn open() -> Auth {
        Auth::build(None, Policy::default(), None, false)
    }

    /// Reads the auth file (if any) and the cluster secret file (if any); `certificate` says
    /// that peers present client certificates.
    pub fn load(file: Option<PathBuf>, secret_file: Option<PathBuf>, certificate: bool) -> Result<Auth, String> {
        let policy = match &file {
            Some(path) => Policy::load(path)?,
            None => Policy::default(),
        };
        let secret = match &secret_file {
            Some(path) => Some(read_secret(path)?),
            None => None,
        };
        Ok(Auth::build(file, policy, secret, certificate))
    }

    fn build(file: Option<PathBuf>, policy: Policy, secret: Option<Vec<u8>>, certificate: bool) -> Auth {
        Auth {
            file,
            policy: RwLock::new(Arc::new(policy)),
            generation: AtomicU64::new(0),
            cache: RwLock::new(HashMap::new()),
            verifying: tokio::sync::Semaphore::new(CONCURRENT_VERIFICATIONS),
            secret,
            certificate,
        }
    }

    /// Whether every request may do everything (no auth file, no peer proof): the request
    /// path then skips authentication altogether.
    pub fn is_open(&self) -> bool {
        self.file.is_none() && self.secret.is_none() && !self.certificate
    }

    /// Whether clients are checked against an auth file.
    pub fn has_users(&self) -> bool {
        self.file.is_some()
    }

    /// How peers prove membership.
    pub fn peer_proof(&self) -> PeerProof {
        PeerProof { secret: self.secret.is_some(), certificate: self.certificate }
    }

    /// The header a member sends to its peers, if a cluster secret is configured.
    pub fn peer_header(&self) -> Option<(axum::http::HeaderName, HeaderValue)> {
        let secret = self.secret.as_ref()?;
        let mut v = HeaderValue::from_bytes(secret).ok()?;
        v.set_sensitive(true);
        Some((axum::http::HeaderName::from_static(CLUSTER_SECRET_HEADER), v))
    }

    /// Reads the auth file again. A file with an error changes nothing; the error says why.
    pub fn reload(&self) -> Result<Option<usize>, String> {
        let Some(path) = &self.file else { return Ok(None) };
        let policy = Policy::load(path)?;
        let users = policy.users();
        *self.policy.write() = Arc::new(policy);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.write().clear();
        Ok(Some(users))
    }

    /// Who sent a request with `headers`, on a connection that did (`client_cert`) or did
    /// not present a verified client certificate.
    pub async fn principal(&self, headers: &HeaderMap, client_cert: bool) -> Result<Principal, Refusal> {
        if self.is_open() {
            return Ok(Principal {
                name: "anonymous".into(),
                roles: Arc::new(Roles::all()),
                peer: true,
                authenticated: false,
            });
        }
        // Peers first: a member's request carries its proof and no user.
        if let Some(sent) = headers.get(CLUSTER_SECRET_HEADER) {
            let Some(secret) = &self.secret else {
                return Err(Refusal::Unauthenticated("this node has no cluster secret".into()));
            };
            if !bool::from(sent.as_bytes().ct_eq(secret)) {
                return Err(Refusal::Unauthenticated("wrong cluster secret".into()));
            }
            if self.certificate && !client_cert {
                return Err(Refusal::Unauthenticated("cluster members must present a client certificate".into()));
            }
            return Ok(peer());
        }
        if self.certificate && client_cert && self.secret.is_none() {
            return Ok(peer());
        }
        let policy = self.policy.read().clone();
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            let roles = if self.file.is_some() { policy.anonymous.clone() } else { Arc::new(Roles::all()) };
            return Ok(Principal { name: "anonymous".into(), roles, peer: false, authenticated: false });
        };
        if self.file.is_none() {
            // Credentials mean nothing without users; the request is anonymous (all roles).
            return Ok(Principal {
                name: "anonymous".into(),
                roles: Arc::new(Roles::all()),
                peer: false,
                authenticated: false,
            });
        }
        let user = self.user(&policy, value).await?;
        Ok(Principal { name: user.name.clone(), roles: user.roles.clone(), peer: false, authenticated: true })
    }

    /// The user an `Authorization` header proves, from the cache or by verifying it.
    async fn user(&self, policy: &Policy, value: &HeaderValue) -> Result<Arc<users::User>, Refusal> {
        let raw = value.to_str().map_err(|_| bad_credentials("the Authorization header is not text"))?;
        let (scheme, rest) = raw.trim().split_once(' ').unwrap_or((raw, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return policy.token_user(rest.trim()).cloned().ok_or_else(|| bad_credentials("unknown bearer token"));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(bad_credentials("the Authorization scheme must be Basic or Bearer"));
        }
        let key = sha256(raw.as_bytes());
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(c) = self.cache.read().get(&key).filter(|c| c.generation == generation) {
            return match &c.user {
                Some(name) => policy.user(name).cloned().ok_or_else(|| bad_credentials("wrong user name or password")),
                None => Err(bad_credentials("wrong user name or password")),
            };
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| bad_credentials("Basic credentials are not base64 of user:password"))?;
        let (name, password) =
            decoded.split_once(':').ok_or_else(|| bad_credentials("Basic credentials are not user:password"))?;
        let found = match policy.user(name) {
            Some(user) => {
                let _slot = self.verifying.acquire().await.map_err(|_| bad_credentials("shutting down"))?;
                let (u, pw) = (user.clone(), password.to_string());
                tokio::task::spawn_blocking(move || u.password_matches(&pw))
                    .await
                    .unwrap_or(false)
                    .then(|| user.clone())
            }
            None => None,
        };
        let mut cache = self.cache.write();
        if cache.len() >= CACHE_CAP {
            cache.clear();
        }
        cache.insert(key, Cached { generation, user: found.as_ref().map(|u| u.name.clone()) });
        found.ok_or_else(|| bad_credentials("wrong user name or password"))
    }

    /// Decides a request: the principal, or why it is refused.
    pub async fn authorize(&self, headers: &HeaderMap, client_cert: bool, need: &Need) -> Result<Principal, Refusal> {
        let principal = self.principal(headers, client_cert).await?;
        if principal.peer {
            return Ok(principal);
        }
        match principal.roles.allows(need) {
            Ok(()) => Ok(principal),
            Err(reason) if principal.authenticated => Err(Refusal::Forbidden(format!("{}: {reason}", principal.name))),
            Err(reason) => {
                Err(Refusal::Unauthenticated(format!("credentials required ({reason} for anonymous requests)")))
            }
        }
    }
}

fn peer() -> Principal {
    Principal { name: "peer".into(), roles: Arc::new(Roles::all()), peer: true, authenticated: true }
}

fn bad_credentials(reason: &str) -> Refusal {
    Refusal::Unauthenticated(reason.to_string())
}

/// Reads a cluster secret file: its first line, trimmed, at least [`MIN_SECRET_LEN`] bytes of
/// visible ASCII (it travels in a header).
pub fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim();
    if secret.len() < MIN_SECRET_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{}: the cluster secret must be at least {MIN_SECRET_LEN} visible ASCII characters on the first line \
             (e.g. `openssl rand -hex 32 > FILE`)",
            path.display()
        ));
    }
    Ok(secret.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::roles::InstanceAct;
    use super::*;

    fn basic(user: &str, pw: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Basic {v}")).unwrap());
        h
    }

    fn auth_with(text: &str, secret: Option<&str>) -> (Auth, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.toml");
        std::fs::write(&file, text).unwrap();
        let secret_file = secret.map(|s| {
            let p = dir.path().join("secret");
            std::fs::write(&p, s).unwrap();
            p
        });
        (Auth::load(Some(file), secret_file, false).unwrap(), dir)
    }

    fn orders_file() -> String {
        let hash = users::hash_password("pw").unwrap();
        format!("[[users]]\nname = \"orders\"\npassword_hash = \"{hash}\"\nroles = [\"read\", \"register:ORDERS*\"]\n")
    }

    #[tokio::test]
    async fn basic_credentials_are_checked_and_remembered() {
        let (auth, _d) = auth_with(&orders_file(), None);
        let reg = |app: &str| Need::Instance { app: app.into(), act: InstanceAct::Register };
        let p = auth.authorize(&basic("orders", "pw"), false, &reg("ORDERS")).await.unwrap();
        assert_eq!(&*p.name, "orders");
        assert_eq!(auth.cache.read().len(), 1);
        // Cached now: the same header again needs no verification.
        assert!(auth.authorize(&basic("orders", "pw"), false, &reg("ORDERS")).await.is_ok());
        assert!(matches!(
            auth.authorize(&basic("orders", "pw"), false, &reg("BILLING")).await,
            Err(Refusal::Forbidden(_))
        ));
        for h in [basic("orders", "wrong"), basic("nobody", "pw"), basic("orders", "wrong")] {
            assert!(matches!(auth.authorize(&h, false, &Need::Read).await, Err(Refusal::Unauthenticated(_))));
        }
        assert!(matches!(
            auth.authorize(&HeaderMap::new(), false, &Need::Read).await,
            Err(Refusal::Unauthenticated(_))
        ));
        assert!(auth.authorize(&HeaderMap::new(), false, &Need::Open).await.is_ok());
    }

    #[tokio::test]
    async fn a_reload_forgets_what_the_old_file_allowed() {
        let (auth, dir) = auth_with(&orders_file(), None);
        assert!(auth.authorize(&basic("orders", "pw"), false, &Need::Read).await.is_ok());
        std::fs::write(dir.path().join("auth.toml"), "anonymous = [\"read\"]\n").unwrap();
        assert_eq!(auth.reload(), Ok(Some(0)));
        assert!(auth.authorize(&basic("orders", "pw"), false, &Need::Read).await.is_err());
        assert!(auth.authorize(&HeaderMap::new(), false, &Need::Read).await.is_ok());
        // A broken file keeps the one before.
        std::fs::write(dir.path().join("auth.toml"), "anonymous = [\"root\"]\n").unwrap();
        assert!(auth.reload().unwrap_err().contains("root"));
        assert!(auth.authorize(&HeaderMap::new(), false, &Need::Read).await.is_ok());
    }

    #[tokio::test]
    async fn peers_need_the_secret_and_nothing_else_does() {
        let (auth, _d) = auth_with(&orders_file(), Some("0123456789abcdef0123\n"));
        let mut h = HeaderMap::new();
        h.insert(CLUSTER_SECRET_HEADER, HeaderValue::from_static("0123456789abcdef0123"));
        assert!(auth.authorize(&h, false, &Need::Peer).await.unwrap().peer);
        h.insert(CLUSTER_SECRET_HEADER, HeaderValue::from_static("0123456789abcdef0124"));
        assert!(matches!(auth.authorize(&h, false, &Need::Peer).await, Err(Refusal::Unauthenticated(_))));
        assert!(matches!(auth.authorize(&basic("orders", "pw"), false, &Need::Peer).await, Err(Refusal::Forbidden(_))));
        assert!(matches!(
            auth.authorize(&HeaderMap::new(), false, &Need::Peer).await,
            Err(Refusal::Unauthenticated(_))
        ));
        assert_eq!(auth.peer_header().unwrap().1.as_bytes(), b"0123456789abcdef0123");
    }

    #[test]
    fn short_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "short\n").unwrap();
        assert!(read_secret(&p).unwrap_err().contains("at least"));
    }
}
