//! Eureka's wire formats: JSON (the legacy server codec's shapes) and XML (XStream's), in
//! both directions. Input of either format is first turned into a `serde_json::Value` tree and
//! then read by one lenient decoder, so both formats accept the same variations (numbers and
//! booleans as strings, `overriddenStatus`/`overriddenstatus`, bare or wrapped ports).

pub mod decode;
pub mod json;
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

/// Input limits; anything beyond them is rejected with 400 rather than stored.
pub mod limits {
    /// Most metadata entries per instance.
    pub const MAX_METADATA_ENTRIES: usize = 256;
    /// Longest metadata key, in bytes.
    pub const MAX_METADATA_KEY: usize = 256;
    /// Longest metadata value, in bytes.
    pub const MAX_METADATA_VALUE: usize = 8 * 1024;
    /// Longest identifier (app name, instance id, host name, address, VIP), in bytes.
    pub const MAX_NAME: usize = 1024;
    /// Longest URL field, in bytes.
    pub const MAX_URL: usize = 8 * 1024;
    /// Deepest element nesting accepted in XML input.
    pub const MAX_XML_DEPTH: usize = 32;
}
