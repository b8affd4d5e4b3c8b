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

/// [`CLUSTER_SECRET_HEADER`] as a header name (a lookup by `&str` parses the name each time).
static SECRET_HEADER: axum::http::HeaderName = axum::http::HeaderName::from_static(CLUSTER_SECRET_HEADER);

/// Shortest cluster secret accepted.
pub const MIN_SECRET_LEN: usize = 16;

/// Most verified credentials remembered; the cache starts afresh past it. Only credentials
/// that passed enter it, so a client without any cannot flush it.
const CACHE_CAP: usize = 100_000;

/// Most refused credentials remembered (a client retrying a wrong password is answered
/// without another hash); kept apart from the verified ones, which a flood of wrong
/// passwords must not push out.
const REFUSED_CAP: usize = 10_000;

/// Requests that may wait for a password check at once; more are answered 503 at once, so a
/// flood of new credentials cannot hold every connection of the node.
const MAX_WAITING: usize = 64;

/// Longest a request waits for its turn to have its password checked.
const VERIFY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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
    /// 503: too many password checks waiting; the client should retry shortly.
    Busy(String),
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
    user: Option<Arc<users::User>>,
}

/// Hashes a cache key (itself a SHA-256, uniformly spread and not steerable by a client) by
/// its first eight bytes: a second keyed hash per request would only cost time.
#[derive(Default, Clone, Copy)]
struct KeyPrefix;

impl std::hash::BuildHasher for KeyPrefix {
    type Hasher = PrefixHasher;

    fn build_hasher(&self) -> PrefixHasher {
        PrefixHasher(0)
    }
}

/// See [`KeyPrefix`].
struct PrefixHasher(u64);

impl std::hash::Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its bytes in one call; anything else folds in.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
            if bytes.len() == 32 {
                break;
            }
        }
    }
}

/// A policy and the reload count that brought it: cached verifications carry it, so that one
/// made against an older file is never trusted.
struct Generation {
    policy: Policy,
    number: u64,
    /// SHA-256 of the file's text.
    digest: [u8; 32],
}

/// Authentication and authorization state of a node.
pub struct Auth {
    /// Tells this node's entries in the per-thread caches from other nodes' in one process.
    id: u64,
    file: Option<PathBuf>,
    /// The file's policy and its generation, replaced together on a reload.
    policy: RwLock<Arc<Generation>>,
    /// The current generation's number, read without a lock by the per-thread caches.
    number: AtomicU64,
    /// SHA-256 of an `Authorization` header that passed → its user.
    cache: RwLock<HashMap<[u8; 32], Cached, KeyPrefix>>,
    /// SHA-256 of an `Authorization` header that was refused.
    refused: RwLock<HashMap<[u8; 32], u64, KeyPrefix>>,
    verifying: tokio::sync::Semaphore,
    /// Requests waiting for (or in) a password check.
    waiting: std::sync::atomic::AtomicUsize,
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
        Auth::build(None, Policy::default(), [0; 32], None, false)
    }

    /// Reads the auth file (if any) and the cluster secret file (if any); `certificate` says
    /// that peers present client certificates.
    pub fn load(file: Option<PathBuf>, secret_file: Option<PathBuf>, certificate: bool) -> Result<Auth, String> {
        let (policy, digest) = match &file {
            Some(path) => Policy::load(path)?,
            None => (Policy::default(), [0; 32]),
        };
        let secret = match &secret_file {
            Some(path) => Some(read_secret(path)?),
            None => None,
        };
        Ok(Auth::build(file, policy, digest, secret, certificate))
    }

    fn build(
        file: Option<PathBuf>,
        policy: Policy,
        digest: [u8; 32],
        secret: Option<Vec<u8>>,
        certificate: bool,
    ) -> Auth {
        static IDS: AtomicU64 = AtomicU64::new(0);
        Auth {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            number: AtomicU64::new(0),
            file,
            policy: RwLock::new(Arc::new(Generation { policy, number: 0, digest })),
            cache: RwLock::new(HashMap::default()),
            refused: RwLock::new(HashMap::default()),
            waiting: std::sync::atomic::AtomicUsize::new(0),
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
        Some((SECRET_HEADER.clone(), v))
    }

    /// Reads the auth file again. A file with an error changes nothing; the error says why.
    /// An unchanged file keeps every verified credential (a SIGHUP for the certificates
    /// does not send every client's password through a check again).
    pub fn reload(&self) -> Result<Option<usize>, String> {
        let Some(path) = &self.file else { return Ok(None) };
        let (policy, digest) = Policy::load(path)?;
        let users = policy.users();
        {
            let mut current = self.policy.write();
            if current.digest == digest {
                return Ok(Some(users));
            }
            let number = current.number + 1;
            *current = Arc::new(Generation { policy, number, digest });
            self.number.store(number, Ordering::Release);
        }
        self.cache.write().clear();
        self.refused.write().clear();
        Ok(Some(users))
    }

    /// Who sent a request with `headers`, on a connection that did (`client_cert`) or did
    /// not present a verified client certificate; verifies a password not seen before.
    pub async fn principal(&self, headers: &HeaderMap, client_cert: bool) -> Result<Principal, Refusal> {
        match self.principal_now(headers, client_cert) {
            Known::Decided(r) => r,
            Known::Verify(v) => self.verify(v).await,
        }
    }

    /// [`Self::principal`] without waiting: `Verify` when a password must be checked first.
    fn principal_now(&self, headers: &HeaderMap, client_cert: bool) -> Known {
        if self.is_open() {
            return Known::Decided(Ok(anonymous(Arc::new(Roles::all()), true)));
        }
        // Peers first: a member's request carries its proof and no user.
        if let Some(sent) = headers.get(&SECRET_HEADER) {
            // Digests of equal length compared in constant time: neither the secret's length
            // nor whether this node has one shows in the answer or its timing.
            let matches =
                self.secret.as_ref().is_some_and(|secret| bool::from(sha256(sent.as_bytes()).ct_eq(&sha256(secret))));
            if !matches {
                return Known::Decided(Err(bad_credentials("wrong cluster secret")));
            }
            if self.certificate && !client_cert {
                return Known::Decided(Err(bad_credentials("cluster members must present a client certificate")));
            }
            return Known::Decided(Ok(peer()));
        }
        if self.certificate && client_cert && self.secret.is_none() {
            return Known::Decided(Ok(peer()));
        }
        let current = self.policy.read().clone();
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            let roles = if self.file.is_some() { current.policy.anonymous.clone() } else { Arc::new(Roles::all()) };
            return Known::Decided(Ok(anonymous(roles, false)));
        };
        if self.file.is_none() {
            // Credentials mean nothing without users; the request is anonymous (all roles).
            return Known::Decided(Ok(anonymous(Arc::new(Roles::all()), false)));
        }
        self.user_now(current, value)
    }

    /// The user an `Authorization` header proves, if the cache or a token says so now.
    fn user_now(&self, current: Arc<Generation>, value: &HeaderValue) -> Known {
        let policy = &current.policy;
        let Ok(raw) = value.to_str() else {
            return Known::Decided(Err(bad_credentials("the Authorization header is not text")));
        };
        let (scheme, rest) = raw.trim().split_once(' ').unwrap_or((raw, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            let found = policy.token_user(rest.trim()).map(|u| authenticated(u));
            return Known::Decided(found.ok_or_else(|| bad_credentials("unknown bearer token")));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Known::Decided(Err(bad_credentials("the Authorization scheme must be Basic or Bearer")));
        }
        let key = sha256(raw.as_bytes());
        if let Some(known) = self.cached(&current, &key) {
            if let Ok(user) = &known {
                remember_here(self.id, key, current.number, Some(user.clone()));
            }
            return Known::Decided(known.map(|u| authenticated(&u)));
        }
        let decoded =
            base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok().and_then(|b| String::from_utf8(b).ok());
        let Some((name, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            return Known::Decided(Err(bad_credentials("Basic credentials are not base64 of user:password")));
        };
        let found = policy.user(name).cloned();
        Known::Verify(Pending { current: current.clone(), key, user: found, password: password.to_string() })
    }

    /// Checks a password against its user's hash (off the async workers, a few at a time) and
    /// remembers the answer. An unknown user's password is checked against a stand-in hash,
    /// so the time of a refusal does not tell which user names exist.
    async fn verify(&self, v: Pending) -> Result<Principal, Refusal> {
        let Pending { current, key, user, password } = v;
        let _waiting = Waiting::enter(&self.waiting)?;
        let _slot = match tokio::time::timeout(VERIFY_WAIT, self.verifying.acquire()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) | Err(_) => return Err(busy()),
        };
        // Many requests with the same new header (every instance of a service after a start
        // or a reload) queue here; the first one's answer serves the rest.
        if let Some(known) = self.cached(&current, &key) {
            return known.map(|u| authenticated(&u));
        }
        let checked = user.clone();
        let matches = tokio::task::spawn_blocking(move || match checked {
            Some(u) => u.password_matches(&password),
            None => users::stand_in_check(&password),
        })
        .await
        .unwrap_or(false);
        match user.filter(|_| matches) {
            Some(user) => {
                {
                    let mut cache = self.cache.write();
                    if cache.len() >= CACHE_CAP {
                        cache.clear();
                    }
                    cache.insert(key, Cached { generation: current.number, user: Some(user.clone()) });
                }
                remember_here(self.id, key, current.number, Some(user.clone()));
                Ok(authenticated(&user))
            }
            None => {
                let mut refused = self.refused.write();
                if refused.len() >= REFUSED_CAP {
                    refused.clear();
                }
                refused.insert(key, current.number);
                Err(bad_credentials("wrong user name or password"))
            }
        }
    }

    /// What the caches know of the header with SHA-256 `key`, if it was checked against the
    /// current file.
    fn cached(&self, current: &Generation, key: &[u8; 32]) -> Option<Result<Arc<users::User>, Refusal>> {
        if let Some(c) = self.cache.read().get(key).filter(|c| c.generation == current.number) {
            return c.user.clone().map(Ok);
        }
        let refused = self.refused.read().get(key).is_some_and(|g| *g == current.number);
        refused.then(|| Err(bad_credentials("wrong user name or password")))
    }

    /// Decides a request: the principal, or why it is refused.
    pub async fn authorize(&self, headers: &HeaderMap, client_cert: bool, need: &Need) -> Result<Principal, Refusal> {
        judge(self.principal(headers, client_cert).await?, need)
    }

    /// [`Self::authorize`] without waiting, saying only whether the sender is a member:
    /// `None` when a password not seen before must be verified first (then call
    /// `authorize`). A Basic header this thread has seen is decided from its own copy, with no
    /// lock and no shared counter touched: the path of every heartbeat.
    pub fn authorize_now(&self, headers: &HeaderMap, client_cert: bool, need: &Need) -> Option<Result<bool, Refusal>> {
        let plain_client =
            self.file.is_some() && !(self.certificate && client_cert) && !headers.contains_key(&SECRET_HEADER);
        if let Some(value) = headers.get(header::AUTHORIZATION).filter(|_| plain_client) {
            let raw = value.as_bytes();
            if raw.len() > 6 && raw[..6].eq_ignore_ascii_case(b"basic ") {
                let known =
                    recall_here(self.id, &sha256(raw), self.number.load(Ordering::Acquire), |user| match user {
                        Some(u) => {
                            u.roles.allows(need).map_err(|reason| Refusal::Forbidden(format!("{}: {reason}", u.name)))
                        }
                        None => Err(bad_credentials("wrong user name or password")),
                    });
                if let Some(decided) = known {
                    return Some(decided.map(|()| false));
                }
            }
        }
        match self.principal_now(headers, client_cert) {
            Known::Decided(r) => Some(r.and_then(|p| judge(p, need)).map(|p| p.peer)),
            Known::Verify(_) => None,
        }
    }
}

/// What can be said of a request's sender without waiting.
enum Known {
    Decided(Result<Principal, Refusal>),
    Verify(Pending),
}

/// A Basic credential whose password is still to be checked.
struct Pending {
    current: Arc<Generation>,
    key: [u8; 32],
    user: Option<Arc<users::User>>,
    password: String,
}

/// Whether `principal`'s roles allow `need`.
fn judge(principal: Principal, need: &Need) -> Result<Principal, Refusal> {
    if principal.peer {
        return Ok(principal);
    }
    match principal.roles.allows(need) {
        Ok(()) => Ok(principal),
        Err(reason) if principal.authenticated => Err(Refusal::Forbidden(format!("{}: {reason}", principal.name))),
        Err(reason) => Err(Refusal::Unauthenticated(format!("credentials required ({reason} for anonymous requests)"))),
    }
}

/// Most credentials one thread remembers; its copy starts afresh past it.
const LOCAL_CAP: usize = 10_000;

thread_local! {
    /// This thread's copy of verified credentials: (node, SHA-256 of the header) →
    /// (generation, user or refused). Kept per thread so that the request path reads no lock
    /// and moves no reference count shared with the other workers.
    static LOCAL: std::cell::RefCell<HashMap<(u64, [u8; 32]), Cached, KeyPrefix>> =
        std::cell::RefCell::new(HashMap::default());
}

fn remember_here(id: u64, key: [u8; 32], generation: u64, user: Option<Arc<users::User>>) {
    LOCAL.with_borrow_mut(|local| {
        if local.len() >= LOCAL_CAP {
            local.clear();
        }
        local.insert((id, key), Cached { generation, user });
    });
}

/// `judge` applied to what this thread remembers of `key` under `generation`, if anything.
fn recall_here<T>(
    id: u64,
    key: &[u8; 32],
    generation: u64,
    judge: impl FnOnce(Option<&users::User>) -> T,
) -> Option<T> {
    LOCAL.with_borrow(|local| {
        let c = local.get(&(id, *key))?;
        (c.generation == generation).then(|| judge(c.user.as_deref()))
    })
}

fn anonymous(roles: Arc<Roles>, peer: bool) -> Principal {
    Principal { name: "anonymous".into(), roles, peer, authenticated: false }
}

fn authenticated(u: &users::User) -> Principal {
    Principal { name: u.name.clone(), roles: u.roles.clone(), peer: false, authenticated: true }
}

fn peer() -> Principal {
    Principal { name: "peer".into(), roles: Arc::new(Roles::all()), peer: true, authenticated: true }
}

fn busy() -> Refusal {
    Refusal::Busy("too many password checks waiting; retry in a second".into())
}

/// One request counted among those waiting for a password check, while it lives.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a std::sync::atomic::AtomicUsize) -> Result<Waiting<'a>, Refusal> {
        if count.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
            count.fetch_sub(1, Ordering::AcqRel);
            return Err(busy());
        }
        Ok(Waiting(count))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
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
    async fn a_known_header_is_decided_without_waiting() {
        let (auth, dir) = auth_with(&orders_file(), None);
        let reg = |app: &str| Need::Instance { app: app.into(), act: InstanceAct::Renew };
        let h = basic("orders", "pw");
        assert!(auth.authorize_now(&h, false, &reg("ORDERS")).is_none(), "a new password waits for its check");
        assert!(auth.authorize(&h, false, &reg("ORDERS")).await.is_ok());
        assert_eq!(auth.authorize_now(&h, false, &reg("ORDERS")), Some(Ok(false)));
        assert!(matches!(auth.authorize_now(&h, false, &reg("BILLING")), Some(Err(Refusal::Forbidden(_)))));
        let wrong = basic("orders", "nope");
        assert!(auth.authorize(&wrong, false, &Need::Read).await.is_err());
        assert!(matches!(auth.authorize_now(&wrong, false, &Need::Read), Some(Err(Refusal::Unauthenticated(_)))));
        // Another node in the same process knows nothing of it.
        let (other, _d) = auth_with(&orders_file(), None);
        assert!(other.authorize_now(&h, false, &reg("ORDERS")).is_none());
        // After a reload the header is checked against the new file.
        std::fs::write(dir.path().join("auth.toml"), "anonymous = [\"read\"]\n").unwrap();
        auth.reload().unwrap();
        assert!(matches!(auth.authorize_now(&h, false, &Need::Read), None | Some(Err(_))));
        assert!(auth.authorize(&h, false, &Need::Read).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_wrong_passwords_neither_holds_nor_flushes_the_door() {
        let (auth, _d) = auth_with(&orders_file(), None);
        let auth = Arc::new(auth);
        let good = basic("orders", "pw");
        assert!(auth.authorize(&good, false, &Need::Read).await.is_ok());
        let started = std::time::Instant::now();
        // Polled together in one task: all 200 arrive before any check can finish (a check's
        // place is only given up when its request is polled again), whatever the machine's load.
        let guesses: Vec<_> = (0..200).map(|i| basic("orders", &format!("guess-{i}"))).collect();
        let flood = futures::future::join_all(guesses.iter().map(|h| auth.authorize(h, false, &Need::Read))).await;
        let mut busy = 0;
        for f in flood {
            match f {
                Err(Refusal::Busy(_)) => busy += 1,
                Err(Refusal::Unauthenticated(_)) => {}
                other => panic!("a guessed password got {other:?}"),
            }
        }
        assert!(busy >= 200 - MAX_WAITING, "only {busy} of 200 were turned away at once");
        assert!(started.elapsed() < VERIFY_WAIT * 3, "the flood held requests for {:?}", started.elapsed());
        // The verified header is still known, here and in the shared cache.
        assert_eq!(auth.cache.read().len(), 1);
        assert!(auth.authorize(&good, false, &Need::Read).await.is_ok());
        // An unknown user is refused like a wrong password.
        assert!(matches!(
            auth.authorize(&basic("nobody", "pw"), false, &Need::Read).await,
            Err(Refusal::Unauthenticated(_))
        ));
    }

    #[tokio::test]
    async fn a_reload_of_an_unchanged_file_keeps_what_was_verified() {
        let (auth, _d) = auth_with(&orders_file(), None);
        let h = basic("orders", "pw");
        assert!(auth.authorize(&h, false, &Need::Read).await.is_ok());
        auth.reload().unwrap();
        assert_eq!(auth.authorize_now(&h, false, &Need::Read), Some(Ok(false)));
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
