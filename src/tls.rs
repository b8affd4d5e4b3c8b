//! TLS for the listener and for requests to peers (rustls with the ring provider).
//!
//! The certificate, its key and the CA files are read at start and again on SIGHUP; the
//! server and client configurations are built once and look up the current files through
//! [`Current`], so a reload reaches new connections without rebuilding any client or the
//! acceptor. A file that does not load keeps the previous ones.
//!
//! The node's certificate serves both directions: it is the server certificate of the
//! listener and the client certificate this node presents to peers that ask for one
//! (`--tls-client-ca` on their side), so it should carry both the serverAuth and clientAuth
//! extended key usages.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

/// The TLS files of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain served by the listener (and presented to peers as a client).
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM CA certificates that peers' server certificates must chain to; without it, the
    /// public web PKI roots.
    pub ca: Option<PathBuf>,
    /// PEM CA certificates that client certificates must chain to; with it, clients may (or,
    /// with `require_client_cert`, must) present one, and peers must.
    pub client_ca: Option<PathBuf>,
    /// Every connection must present a client certificate.
    pub require_client_cert: bool,
}

/// What the files held at the last (re)load.
struct Loaded {
    key: Arc<CertifiedKey>,
    server_verifier: Arc<WebPkiServerVerifier>,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
}

/// A node's TLS state, reloadable.
pub struct Tls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    loaded: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Reads the files; the error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = read_files(&files, &provider)?;
        Ok(Arc::new(Tls { files, provider, loaded: RwLock::new(Arc::new(loaded)) }))
    }

    /// Reads the files again; on an error the previous ones stay in use.
    pub fn reload(&self) -> Result<(), String> {
        let loaded = read_files(&self.files, &self.provider)?;
        *self.loaded.write() = Arc::new(loaded);
        Ok(())
    }

    /// Whether client certificates are verified (`--tls-client-ca`).
    pub fn verifies_clients(&self) -> bool {
        self.files.client_ca.is_some()
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded.read().clone()
    }

    /// The current client-certificate verifier (there is one whenever `--tls-client-ca` is
    /// given, the only case in which the listener asks for certificates).
    fn client_verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        self.current()
            .client_verifier
            .clone()
            .ok_or_else(|| rustls::Error::General("client certificates are not accepted".into()))
    }

    /// The listener's configuration.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, String> {
        let builder = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if self.files.client_ca.is_some() {
            builder.with_client_cert_verifier(Arc::new(Current(self.clone())))
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(Arc::new(Current(self.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The configuration of requests to peers (and of the CLI): the CA file's roots, and this
    /// node's certificate for servers that ask for one.
    pub fn client_config(self: &Arc<Self>) -> Result<rustls::ClientConfig, String> {
        let config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Current(self.clone())))
            .with_client_cert_resolver(Arc::new(Current(self.clone())));
        Ok(config)
    }
}

/// A client configuration trusting `ca` (PEM file), or the public web PKI roots without one;
/// for the CLI, which has no certificate of its own.
pub fn trusting(ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = roots(ca)?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn roots(ca: Option<&std::path::Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

fn read_files(files: &TlsFiles, provider: &Arc<CryptoProvider>) -> Result<Loaded, String> {
    let chain = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", files.key.display()))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: unusable private key: {e}", files.key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("{} and {} do not belong together: {e}", files.cert.display(), files.key.display()))?;
    let server_verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots(files.ca.as_deref())?), provider.clone())
            .build()
            .map_err(|e| format!("--tls-ca: {e}"))?;
    let client_verifier = match &files.client_ca {
        Some(path) => {
            let roots = roots(Some(path))?;
            let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = if files.require_client_cert { builder } else { builder.allow_unauthenticated() };
            Some(builder.build().map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    Ok(Loaded { key: Arc::new(certified), server_verifier, client_verifier })
}

/// Looks up the files of the last (re)load for every handshake.
#[derive(Debug)]
struct Current(Arc<Tls>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().key.clone())
    }
}

impl ResolvesClientCert for Current {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ServerCertVerifier for Current {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.current().server_verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().server_verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().server_verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().server_verifier.supported_verify_schemes()
    }
}

impl ClientCertVerifier for Current {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.files.require_client_cert
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; clients then offer whichever certificate they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.client_verifier()?.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.client_verifier()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.client_verifier()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        match self.0.client_verifier() {
            Ok(v) => v.supported_verify_schemes(),
            Err(_) => self.0.current().server_verifier.supported_verify_schemes(),
        }
    }
}
