//! Secured nodes for the tests: a test CA and certificates, an auth file with one user per
//! role, a cluster secret, and clusters started with all of them.

use std::path::{Path, PathBuf};

use super::certs::{Issued, TestCa};
use super::ServerProcess;

/// Users of the test auth file: (name, password, roles).
pub const USERS: &[(&str, &str, &str)] = &[
    ("svc", "svc-password", r#"["read", "register:PY-*", "register:JS-*", "register:RUST-*"]"#),
    ("orders", "orders-password", r#"["read", "register:ORDERS*"]"#),
    ("ops", "ops-password", r#"["operator"]"#),
    ("root", "root-password", r#"["admin"]"#),
];

/// The bearer token of the test auth file's `ci` user (role `read`).
pub const CI_TOKEN: &str = "synod_test_token_for_ci_scripts";

/// The cluster secret of the test nodes.
pub const SECRET: &str = "test-cluster-secret-0123456789";

/// Files a secured node is started with.
pub struct Files {
    pub ca: TestCa,
    pub node: Issued,
    pub auth: PathBuf,
    pub secret: PathBuf,
}

impl Files {
    /// Writes every file into `dir`.
    pub fn write(dir: &Path) -> Files {
        let ca = TestCa::new(dir, "test-ca");
        let node = ca.issue("node");
        let auth = dir.join("auth.toml");
        std::fs::write(&auth, auth_file(&[])).expect("auth file");
        let secret = dir.join("cluster-secret");
        std::fs::write(&secret, format!("{SECRET}\n")).expect("secret file");
        Files { ca, node, auth, secret }
    }

    /// `serve` arguments for the auth file and the cluster secret.
    pub fn auth_args(&self) -> Vec<String> {
        vec![
            "--auth-file".into(),
            self.auth.display().to_string(),
            "--cluster-secret-file".into(),
            self.secret.display().to_string(),
        ]
    }

    /// `serve` arguments for HTTPS with the test CA trusted for peers.
    pub fn tls_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.node.cert.display().to_string(),
            "--tls-key".into(),
            self.node.key.display().to_string(),
            "--tls-ca".into(),
            self.ca.pem.display().to_string(),
        ]
    }
}

/// An auth file with [`USERS`], the `ci` token user, and `extra` users (name, password,
/// roles).
pub fn auth_file(extra: &[(&str, &str, &str)]) -> String {
    let mut text = String::new();
    for (name, password, roles) in USERS.iter().chain(extra) {
        let hash = synod::auth::users::hash_password(password).expect("hash");
        text.push_str(&format!("[[users]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\nroles = {roles}\n\n"));
    }
    let digest = synod::auth::users::hex(&synod::auth::users::sha256(CI_TOKEN.as_bytes()));
    text.push_str(&format!("[[users]]\nname = \"ci\"\ntoken_sha256 = \"{digest}\"\nroles = [\"read\"]\n"));
    text
}

/// A secured cluster: every member with the auth file, the cluster secret and TLS.
pub struct Cluster {
    pub files: Files,
    pub nodes: Vec<ServerProcess>,
    /// The CA file clients trust.
    pub ca: PathBuf,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// Starts `n` members replicating with `mode` (`p2p` or `raft`), files kept in `dir`.
    pub fn start(dir: &Path, mode: &str, n: usize) -> Cluster {
        Cluster::start_with(dir, mode, n, "https", |f| [f.auth_args(), f.tls_args()].concat())
    }

    /// [`Self::start`] with members reached by `scheme` and started with `security(files)`.
    pub fn start_with(
        dir: &Path,
        mode: &str,
        n: usize,
        scheme: &str,
        security: impl Fn(&Files) -> Vec<String>,
    ) -> Cluster {
        let files = Files::write(dir);
        let addrs: Vec<String> = (0..n).map(|_| super::free_addr()).collect();
        let peers: Vec<String> = addrs.iter().enumerate().map(|(i, a)| format!("{}={scheme}://{a}", i + 1)).collect();
        let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().expect("temp dir")).collect();
        let nodes = (0..n)
            .map(|i| {
                let mut args: Vec<String> =
                    vec!["--replication".into(), mode.into(), "--node-id".into(), (i + 1).to_string()];
                for p in &peers {
                    args.extend(["--peer".into(), p.clone()]);
                }
                args.extend(security(&files));
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                ServerProcess::start_at(&addrs[i], dirs[i].path(), &args)
            })
            .collect();
        let ca = files.ca.pem.clone();
        Cluster { files, nodes, ca, _dirs: dirs }
    }
}
