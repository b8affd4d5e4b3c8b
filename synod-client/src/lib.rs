//! A Eureka client for Rust services, for synod or any Netflix Eureka server.
//!
//! It does what the Java Eureka client does: registers on start, renews the lease every
//! renewal interval (re-registering when the server answers 404), reports status and
//! metadata changes, keeps a local copy of the registry (one full fetch, then deltas checked
//! against the server's hash code, with a full fetch on mismatch) that keeps answering while
//! every server is down, and cancels its registration on shutdown. Servers are tried
//! same-zone first; a failing server is skipped for a back-off period. Against synod the
//! registry copy is refreshed by a long-polled delta, so registrations and cancels reach the
//! cache within milliseconds; against other servers it falls back to periodic deltas.
//!
//! ```no_run
//! # async fn demo() -> Result<(), synod_client::Error> {
//! use synod_client::{ClientConfig, EurekaClient, InstanceConfig};
//!
//! let instance = InstanceConfig::new("orders", "10.0.0.5", 8080);
//! let config = ClientConfig::new(vec!["http://127.0.0.1:8761/eureka".into()]);
//! let client = EurekaClient::start(config, instance).await?;
//! if let Some(billing) = client.choose("billing") {
//!     println!("call http://{}:{}", billing.ip_addr, billing.port);
//! }
//! client.shutdown().await;
//! # Ok(()) }
//! ```

mod client;
mod instance;
mod registry;
mod servers;

pub use client::{ClientConfig, EurekaClient};
pub use instance::{InstanceConfig, Status};
pub use registry::{Instance, Registry};
pub use servers::Server;

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No server accepted the request.
    #[error("no Eureka server reachable: {0}")]
    Unavailable(String),
    /// A server answered with something this client cannot read.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol { url: String, reason: String },
}
