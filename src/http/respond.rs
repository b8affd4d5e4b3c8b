//! Content negotiation and response building.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::core::cache::Payload;
use crate::core::registry::Format;

/// The response format a request asks for: JSON only when `Accept` mentions json (Eureka's
/// test), XML otherwise — py-eureka-client sends `*/*` and parses only XML.
pub fn format(headers: &HeaderMap) -> Format {
    let json = headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.to_ascii_lowercase().contains("json")));
    if json {
        Format::Json
    } else {
        Format::Xml
    }
}

/// Whether the client accepts a gzip-encoded response (`gzip` or `*` listed without `q=0`).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("").to_ascii_lowercase();
            let refused = parts
                .any(|p| p.strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()).is_some_and(|q| q <= 0.0));
            (coding == "gzip" || coding == "x-gzip" || coding == "*") && !refused
        },
    )
}

/// A 200 with an encoded payload, gzipped when the client accepts it.
pub fn payload(p: &Payload, fmt: Format, headers: &HeaderMap) -> Response {
    let gzip = accepts_gzip(headers);
    encoded(if gzip { p.gzipped() } else { p.body() }, gzip, fmt)
}

/// A 200 with an encoded body in `fmt`, gzipped or not.
pub fn encoded(body: bytes::Bytes, gzipped: bool, fmt: Format) -> Response {
    let ctype = match fmt {
        Format::Json => "application/json",
        Format::Xml => "application/xml",
    };
    let mut resp = Response::new(Body::from(body));
    if gzipped {
        resp.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
    resp
}

/// A status with an empty body, as Eureka clients require for register, renew, cancel and
/// status calls (a body on a 404 renew breaks Spring's client).
pub fn empty(status: StatusCode) -> Response {
    status.into_response()
}

/// A 4xx/5xx with a one-line plain-text reason; logged at debug level.
pub fn error(status: StatusCode, reason: impl std::fmt::Display) -> Response {
    crate::replication::refusal(status, reason)
}

/// A rejected request: status and one-line reason (see [`error`]).
#[derive(Debug)]
pub struct Reject(pub StatusCode, pub String);

impl Reject {
    /// A 400 with a reason.
    pub fn bad_request(reason: impl std::fmt::Display) -> Self {
        Reject(StatusCode::BAD_REQUEST, reason.to_string())
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// Whether reading a body failed because it exceeded its size limit (http-body's limit error
/// is the only one whose chain mentions the limit).
pub fn over_limit(e: &axum::Error) -> bool {
    std::error::Error::source(e).is_some_and(|src| src.downcast_ref::<http_body_util::LengthLimitError>().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_encoding(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip(&with_encoding("gzip, deflate")));
        assert!(accepts_gzip(&with_encoding("deflate, gzip;q=0.5")));
        assert!(!accepts_gzip(&with_encoding("gzip;q=0")));
        assert!(!accepts_gzip(&with_encoding("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
