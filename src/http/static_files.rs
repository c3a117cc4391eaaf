//! Static files for the demo page (`--static-dir`). Only plain relative paths inside the
//! directory are served; anything that could climb out of it is a 404.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;

use super::{text, Body};
use crate::settings::Settings;

/// Serves `GET`/`HEAD` of a file below the static directory.
pub async fn serve<B>(req: &Request<B>, settings: &Settings) -> Response<Body> {
    let Some(root) = settings.config.static_dir.as_deref() else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let Some(mut path) = resolve(root, req.uri().path()) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    if tokio::fs::metadata(&path)
        .await
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        path.push("index.html");
    }
    match tokio::fs::read(&path).await {
        Ok(data) => {
            let len = data.len();
            let body = if req.method() == Method::HEAD {
                Bytes::new()
            } else {
                Bytes::from(data)
            };
            Response::builder()
                .header(header::CONTENT_TYPE, content_type(&path))
                .header(header::CONTENT_LENGTH, len)
                .body(Full::new(body))
                .expect("static response parts are valid")
        }
        Err(_) => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Maps a URL path to a file below `root`, refusing `..`, absolute parts and odd bytes.
fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let rel = url_path.trim_start_matches('/');
    if rel.contains(['\\', '\0', '%']) {
        return None;
    }
    let rel = Path::new(rel);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_paths_cannot_escape_the_directory() {
        let root = Path::new("/srv/demo");
        assert_eq!(
            resolve(root, "/index.html"),
            Some(PathBuf::from("/srv/demo/index.html"))
        );
        assert_eq!(resolve(root, "/"), Some(PathBuf::from("/srv/demo/")));
        for bad in [
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/x",
            "/a\\b",
            "//etc/passwd/..",
        ] {
            assert_eq!(resolve(root, bad), None, "{bad}");
        }
    }
}
