//! synod: a service registry that speaks Netflix Eureka's REST protocol and replicates its
//! registry through a pluggable replication layer.
//!
//! Module map: [`core`] (registry model and rules, no I/O), [`codec`] (Eureka JSON/XML),
//! [`store`] (durable records in sled), [`replication`] (the backend trait and backends),
//! [`http`] (REST API), [`metrics`] (Prometheus exposition), [`auth`] (who may do what), [`tls`] (certificates), [`config`] (CLI and config file), [`cli`] (operator subcommands), [`server`] (wiring), [`snapshot`] (backups).

pub mod auth;
pub mod cli;
pub mod codec;
pub mod config;
pub mod core;
pub mod http;
pub mod metrics;
pub mod replication;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod tls;
