//! Credentials and certificates for benchmarking secured nodes: an auth file with one user
//! allowed everything a client does, a cluster secret, and a CA with one node certificate
//! (for 127.0.0.1) plus the client configuration that trusts it.
#![allow(dead_code)]

use std::sync::Arc;

use base64::Engine;

#[path = "../../tests/common/certs.rs"]
mod certs;

/// The files and client settings of secured bench nodes.
pub struct Secure {
    _dir: tempfile::TempDir,
    auth: String,
    secret: String,
    cert: String,
    key: String,
    ca: String,
    /// TLS client configuration trusting the bench CA.
    pub client: Arc<rustls::ClientConfig>,
    /// `Authorization` header value of the bench user.
    pub basic: String,
}

impl Secure {
    pub fn new() -> Secure {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = certs::TestCa::new(dir.path(), "bench-ca");
        let node = ca.issue("node");
        let hash = synod::auth::users::hash_password("bench-password").expect("hash");
        let auth = dir.path().join("auth.toml");
        std::fs::write(
            &auth,
            format!("[[users]]\nname = \"bench\"\npassword_hash = \"{hash}\"\nroles = [\"read\", \"register:*\"]\n"),
        )
        .expect("auth file");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "bench-cluster-secret-0123456789\n").expect("secret");
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(&ca.pem).expect("CA") {
            roots.add(cert.expect("CA cert")).expect("add CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let path = |p: &std::path::Path| p.display().to_string();
        Secure {
            auth: path(&auth),
            secret: path(&secret),
            cert: path(&node.cert),
            key: path(&node.key),
            ca: path(&ca.pem),
            client: Arc::new(client),
            basic: format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("bench:bench-password")),
            _dir: dir,
        }
    }

    /// `serve` arguments: the auth file and the cluster secret.
    pub fn auth_args(&self) -> Vec<String> {
        ["--auth-file", &self.auth, "--cluster-secret-file", &self.secret].map(String::from).to_vec()
    }

    /// `serve` arguments: HTTPS with the bench certificate, trusting the bench CA for peers.
    pub fn tls_args(&self) -> Vec<String> {
        ["--tls-cert", &self.cert, "--tls-key", &self.key, "--tls-ca", &self.ca].map(String::from).to_vec()
    }

    /// The bench CA certificate, for reqwest clients.
    pub fn ca_certificate(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(&std::fs::read(&self.ca).expect("CA file")).expect("CA certificate")
    }

    /// The header line the bench user's requests carry.
    pub fn header_line(&self) -> String {
        format!("Authorization: {}\r\n", self.basic)
    }
}
