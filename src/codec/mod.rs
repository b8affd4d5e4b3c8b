//! Eureka's wire formats: JSON (the legacy server codec's shapes) and XML (XStream's), in
//! both directions. Input of either format is first turned into a document tree (a borrowed
//! [`tree::Node`] for JSON registrations, a `serde_json::Value` otherwise) and then read by one
//! lenient decoder, so both formats accept the same variations (numbers and booleans as
//! strings, `overriddenStatus`/`overriddenstatus`, bare or wrapped ports).

pub mod decode;
pub mod json;
pub mod tree;
pub mod xml;

/// Why a request body was rejected. The message is one line, shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    /// An error with a message.
    pub fn new(msg: impl Into<String>) -> Self {
        DecodeError(msg.into())
    }
}

/// Input limits (shared with the core, which enforces them on merged state too).
pub use crate::core::limits;
