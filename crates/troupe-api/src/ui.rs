//! The web UI: static files (HTML, CSS, ES modules, vendored libraries) embedded in the binary
//! and served at `/` and `/ui/...` without a token, since they hold no data: every data call
//! the UI makes goes to `/api/v1` with the user's token. Debug builds read the files from
//! `crates/troupe-api/ui/` on each request, so a reload shows an edit.
//!
//! Each response has its content type, an `ETag` (the file's SHA-256) with `Cache-Control:
//! no-cache` so browsers revalidate cheaply, and a Content-Security-Policy that allows only
//! this origin's scripts, styles and API: no inline script, no CDN.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

#[derive(rust_embed::Embed)]
#[folder = "ui/"]
#[exclude = "vendor/update.sh"]
struct Assets;

/// What the UI's pages may load and call: this origin only. Inline `<script>` and `style`
/// attributes are refused (the UI sets styles through the DOM, which the policy allows).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
    manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{*path}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, content_type(path))],
            file.data.into_owned(),
        )
            .into_response()
    };
    let h = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, etag);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The media type of one of the UI's files, by extension (ES modules must be served as
/// JavaScript or browsers refuse to run them).
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json" | "webmanifest") => "application/json",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "text/plain; charset=utf-8",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_file_has_a_known_type() {
        for path in Assets::iter() {
            let known = content_type(&path) != "text/plain; charset=utf-8";
            let text = path.starts_with("vendor/LICENSE") || path.ends_with("VERSIONS");
            assert!(known || text, "{path} would be served as text/plain");
        }
    }

    #[test]
    fn index_and_modules_are_embedded() {
        assert!(Assets::get("index.html").is_some());
        assert!(Assets::get("js/app.js").is_some());
        assert!(Assets::get("vendor/update.sh").is_none());
    }
}
