//! The dashboard at `/`: a page, a script and a style sheet compiled into the binary (no
//! build step, nothing fetched from elsewhere, works offline). The script reads
//! `/v1/status` and `/eureka/apps` and acts through the Eureka routes, so the dashboard
//! can do exactly what the signed-in user may do.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/dashboard.js");
const STYLE: &str = include_str!("ui/dashboard.css");
const ICON: &str = include_str!("ui/icon.svg");

/// Only this origin's own files and API: injected markup could run nothing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidated on every load, so a node upgrade shows its own dashboard at once.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /ui/dashboard.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /ui/dashboard.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET /ui/icon.svg` (and `/favicon.ico`, which browsers ask for on their own).
pub async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}
