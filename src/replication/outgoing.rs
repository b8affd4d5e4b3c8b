//! How this node's requests to its peers are made: every request names the sending node and
//! carries the cluster secret (when one is configured), and with TLS configured trusts
//! `--tls-ca` and presents this node's certificate to peers that ask for one.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};

use crate::auth::Auth;
use crate::tls::Tls;

/// Settings shared by every HTTP client a backend builds for talking to peers.
#[derive(Clone, Default)]
pub struct Outgoing {
    headers: HeaderMap,
    tls: Option<rustls::ClientConfig>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing").field("tls", &self.tls.is_some()).finish()
    }
}

/// Header naming the sending node on requests between members (logs and diagnostics).
pub const NODE_ID_HEADER: &str = "x-synod-node-id";

impl Outgoing {
    /// Requests from node `id`, with `auth`'s cluster secret and `tls`'s trust.
    pub fn new(id: u64, auth: &Auth, tls: Option<&Arc<Tls>>) -> Result<Outgoing, String> {
        let mut headers = HeaderMap::new();
        headers.insert(NODE_ID_HEADER, HeaderValue::from(id));
        if let Some((name, value)) = auth.peer_header() {
            headers.insert(name, value);
        }
        let tls = tls.map(|t| t.client_config()).transpose()?;
        Ok(Outgoing { headers, tls })
    }

    /// A client builder for requests to peers: no system proxy (peers are addressed
    /// directly), no Nagle delay, a short connect timeout.
    pub fn builder(&self) -> reqwest::ClientBuilder {
        let builder = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(1))
            // A redirect would carry the cluster secret to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(self.headers.clone());
        match &self.tls {
            Some(config) => builder.use_preconfigured_tls(config.clone()),
            None => builder,
        }
    }
}
