//! Static assets embedded in the binary (one small stylesheet, one small script that only
//! enhances, a favicon), served under names that carry a hash of their content, so they can be
//! cached for a year and a new release's assets are new names.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// The file's name as written (`style.css`).
    pub name: &'static str,
    /// Its content.
    pub body: &'static [u8],
    /// Its MIME type.
    pub content_type: &'static str,
    /// `/static/<stem>.<hash>.<ext>`.
    pub path: String,
}

/// Every embedded asset, and their hashed paths.
#[derive(Debug)]
pub struct Assets {
    /// The stylesheet.
    pub css: Asset,
    /// The enhancing script (live figures).
    pub js: Asset,
    /// The favicon.
    pub icon: Asset,
}

fn asset(name: &'static str, body: &'static [u8], content_type: &'static str) -> Asset {
    let hash = Sha256::digest(body);
    let hex: String = hash.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    Asset {
        name,
        body,
        content_type,
        path: format!("/static/{stem}.{hex}.{ext}"),
    }
}

/// The assets, hashed once.
pub fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| Assets {
        css: asset(
            "style.css",
            include_bytes!("../static/style.css"),
            "text/css; charset=utf-8",
        ),
        js: asset(
            "live.js",
            include_bytes!("../static/live.js"),
            "text/javascript; charset=utf-8",
        ),
        icon: asset(
            "favicon.svg",
            include_bytes!("../static/favicon.svg"),
            "image/svg+xml",
        ),
    })
}

/// `GET /static/{file}`: an asset by its hashed name, cached for a year (`immutable`: the name
/// changes with the content). An unhashed or stale name is a 404, never a stale file.
pub async fn serve(Path(file): Path<String>) -> Response {
    let all = assets();
    let wanted = format!("/static/{file}");
    let Some(found) = [&all.css, &all.js, &all.icon]
        .into_iter()
        .find(|a| a.path == wanted)
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(found.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        found.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_named_by_their_content_and_small() {
        let all = assets();
        assert!(all.css.path.starts_with("/static/style.") && all.css.path.ends_with(".css"));
        assert_eq!(all.css.path.len(), "/static/style..css".len() + 10);
        assert_ne!(all.css.path, all.js.path);
        // Every page with its assets must stay under 100 KB on the wire.
        let total = all.css.body.len() + all.js.body.len() + all.icon.body.len();
        assert!(total < 30_000, "assets are {total} bytes");
    }
}
