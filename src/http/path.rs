//! Parsing of Eureka resource paths: `/eureka/[v2/]apps/{app}/{id}/…`, with trailing and
//! repeated slashes ignored and every segment percent-decoded (py-eureka-client sends ids as
//! `127.0.0.1%3Aapp%3A8080`, eureka-js-client sends them literally).

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use crate::core::limits::{is_xml_safe, MAX_NAME};

/// Why a path was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("invalid percent-encoding in path segment {0:?}")]
    BadEncoding(String),
    #[error("path segment longer than {MAX_NAME} bytes")]
    TooLong,
    #[error("path segment contains control characters")]
    ControlCharacters,
}

/// Splits the part of the path after `/eureka` into decoded segments, dropping empty ones and
/// a leading version segment (`v2`, or `v1`).
pub fn segments(rest: &str) -> Result<Vec<Cow<'_, str>>, PathError> {
    let mut out = Vec::with_capacity(5);
    for raw in rest.split('/').filter(|s| !s.is_empty()) {
        out.push(decode(raw)?);
    }
    if out.len() > 1 && matches!(out[0].as_ref(), "v2" | "v1") {
        out.remove(0);
    }
    Ok(out)
}

/// Decodes one segment; borrows it when it holds no escapes (the common case).
fn decode(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bad = || PathError::BadEncoding(raw.to_string());
    // percent_decode passes malformed escapes through unchanged; reject them instead.
    let bytes = raw.as_bytes();
    let mut has_escape = false;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            has_escape = true;
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(bad());
            }
        }
    }
    // Without escapes the segment is its own decoding (and already UTF-8): no decoder pass.
    let decoded =
        if has_escape { percent_decode_str(raw).decode_utf8().map_err(|_| bad())? } else { Cow::Borrowed(raw) };
    if decoded.len() > MAX_NAME {
        return Err(PathError::TooLong);
    }
    if !is_xml_safe(&decoded) {
        return Err(PathError::ControlCharacters);
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_version_and_slashes() {
        assert_eq!(segments("/v2/apps/").unwrap(), vec!["apps"]);
        assert_eq!(segments("//apps//FOO/").unwrap(), vec!["apps", "FOO"]);
        assert_eq!(segments("/apps").unwrap(), vec!["apps"]);
    }

    #[test]
    fn decodes_ids() {
        assert_eq!(segments("/apps/A/127.0.0.1%3Aa%3A80").unwrap(), vec!["apps", "A", "127.0.0.1:a:80"]);
        assert_eq!(segments("/apps/A/x:y").unwrap(), vec!["apps", "A", "x:y"]);
    }

    #[test]
    fn rejects_bad_encoding() {
        assert!(segments("/apps/A/%zz").is_err());
        assert!(segments("/apps/A/%4").is_err());
        assert!(segments("/apps/A/%ff%fe").is_err());
        assert_eq!(segments("/apps/A/%01"), Err(PathError::ControlCharacters));
        assert_eq!(segments(&format!("/vips/{}", "v".repeat(2000))), Err(PathError::TooLong));
    }
}
