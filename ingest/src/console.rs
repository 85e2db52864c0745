//! The web console at `/console`: the files of `console/` (HTML, CSS and JavaScript modules, no
//! build step), embedded in the binary and served from memory.
//!
//! The page reaches data only through the public `/api` routes, with the credential the person
//! signed in with (an API key or a console session, kept in the tab's `sessionStorage`).
//!
//! - `GET /console` is `index.html`, revalidated on every load (`no-cache` with an `ETag`); its
//!   asset links name the build (a digest of every file), so `GET
//!   /console/assets/{build}/{path}` can be cached for a year (`immutable`). Another build's
//!   assets are `404`.
//! - Each file is gzipped once, at start; a client that accepts gzip gets those bytes.
//! - Every answer carries a Content-Security-Policy that allows scripts, styles, images and
//!   requests from this origin only, no inline script or style, and DOM writes through the
//!   browser's safe APIs only (Trusted Types with no policy: `innerHTML` throws).

use std::{collections::HashMap, io::Write as _, sync::Arc};

use anyhow::{Context, bail};
use axum::{
    body::{Body, Bytes},
    extract::{Path, State, rejection::PathRejection},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use flate2::{Compression, write::GzEncoder};
use rust_embed::Embed;
use sha2::{Digest, Sha256};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;

#[derive(Embed)]
#[folder = "../console/"]
struct Files;

/// What every console answer allows the page to do.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

/// The placeholder `index.html` holds where asset paths start.
const ASSET_BASE_PLACEHOLDER: &str = "{{assets}}";
/// The placeholder `index.html` holds where the modulepreload links go.
const PRELOAD_PLACEHOLDER: &str = "<!-- modulepreload -->";

/// The console's files, ready to serve.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    /// Names this set of files in asset URLs.
    build: String,
    index: Asset,
    /// By path under `console/` (`js/main.js`); `index.html` is not among them.
    assets: HashMap<String, Asset>,
}

struct Asset {
    content_type: HeaderValue,
    etag: HeaderValue,
    identity: Bytes,
    /// Only when smaller than `identity`.
    gzip: Option<Bytes>,
}

impl Console {
    /// Read the embedded files, name the build, fill in `index.html` and gzip everything.
    pub fn load() -> anyhow::Result<Self> {
        let mut files: Vec<(String, Vec<u8>)> = Files::iter()
            .map(|path| {
                let file = Files::get(&path).with_context(|| format!("console file {path} vanished"))?;
                Ok((path.into_owned(), file.data.into_owned()))
            })
            .collect::<anyhow::Result<_>>()?;
        files.sort();
        let mut digest = Sha256::new();
        for (path, data) in &files {
            digest.update((path.len() as u64).to_le_bytes());
            digest.update(path.as_bytes());
            digest.update((data.len() as u64).to_le_bytes());
            digest.update(data);
        }
        let build = hex::encode(&digest.finalize()[..8]);
        let base = format!("/console/assets/{build}/");

        let mut index = None;
        let mut assets = HashMap::new();
        for (path, data) in &files {
            if path == "index.html" {
                index = Some(data.clone());
            } else {
                assets.insert(path.clone(), Asset::new(path, data.clone())?);
            }
        }
        let index = index.context("console/index.html is missing")?;
        let mut preloads: Vec<&String> = assets.keys().filter(|p| p.ends_with(".js")).collect();
        preloads.sort();
        let preloads: String = preloads
            .iter()
            .map(|p| format!("<link rel=\"modulepreload\" href=\"{base}{p}\">\n  "))
            .collect();
        let index = String::from_utf8(index)
            .context("console/index.html is not UTF-8")?
            .replace(PRELOAD_PLACEHOLDER, preloads.trim_end())
            .replace(ASSET_BASE_PLACEHOLDER, &base);
        Ok(Self {
            inner: Arc::new(Inner {
                index: Asset::new("index.html", index.into_bytes())?,
                build,
                assets,
            }),
        })
    }

    /// The build's name, as asset URLs carry it.
    pub fn build(&self) -> &str {
        &self.inner.build
    }

    /// Every file's path and the bytes a gzip-accepting client downloads for it (`index.html`
    /// as served).
    pub fn served_sizes(&self) -> Vec<(String, usize)> {
        let inner = &self.inner;
        std::iter::once(("index.html".to_owned(), &inner.index))
            .chain(inner.assets.iter().map(|(p, a)| (p.clone(), a)))
            .map(|(path, asset)| (path, asset.gzip.as_ref().unwrap_or(&asset.identity).len()))
            .collect()
    }
}

impl Asset {
    fn new(path: &str, data: Vec<u8>) -> anyhow::Result<Self> {
        let content_type = content_type(path)?;
        let etag = HeaderValue::try_from(format!("\"{}\"", hex::encode(&Sha256::digest(&data)[..12])))?;
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(&data)?;
        let gzip = encoder.finish()?;
        Ok(Self {
            content_type: HeaderValue::from_static(content_type),
            etag,
            gzip: (gzip.len() < data.len()).then(|| gzip.into()),
            identity: data.into(),
        })
    }
}

/// The type of each kind of file the console may hold; any other kind fails the start (so no
/// file is ever served with a guessed type).
fn content_type(path: &str) -> anyhow::Result<&'static str> {
    Ok(match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => bail!("console/{path}: no content type is known for this kind of file"),
    })
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(console_page))
        .route("/console/", get(|| async { Redirect::permanent("/console") }))
        .route("/console/assets/{build}/{*path}", get(console_asset))
}

/// The web console.
///
/// An HTML page whose assets are served from the binary under `/console/assets/`. Sign in with
/// an API key, or open the `url` of `POST /api/portal/sessions`. The page calls the `/api`
/// routes with that credential; it loads nothing from another host.
#[utoipa::path(
    get, path = "/console", tag = "console",
    responses(
        (status = 200, description = "The console's page", content_type = "text/html", body = String, headers(
            ("Content-Security-Policy" = String, description = "Same origin only; no inline script"),
            ("Cache-Control" = String, description = "`no-cache`: revalidated with the `ETag` on every load"),
        )),
        (status = 304, description = "Unchanged since the `ETag` in `If-None-Match`"),
    )
)]
pub async fn console_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    serve(&state.console.inner.index, &headers, "no-cache")
}

/// One of the page's assets; another build's, an unknown path, or one that is not UTF-8 once
/// decoded, is `404`.
async fn console_asset(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let inner = &state.console.inner;
    let asset = path
        .ok()
        .filter(|Path((build, _))| *build == inner.build)
        .and_then(|Path((_, path))| inner.assets.get(&path));
    match asset {
        Some(asset) => serve(asset, &headers, "public, max-age=31536000, immutable"),
        None => triggers_shared::service::http::not_found(method, uri).await,
    }
}

fn serve(asset: &Asset, request: &HeaderMap, cache_control: &'static str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    headers.insert(header::ETAG, asset.etag.clone());
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    let unchanged = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == asset.etag || t.trim() == "*"));
    if unchanged {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(header::CONTENT_TYPE, asset.content_type.clone());
    let body = match &asset.gzip {
        Some(gzip) if accepts_gzip(request) => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            gzip.clone()
        }
        _ => asset.identity.clone(),
    };
    (headers, Body::from(body)).into_response()
}

/// Does `Accept-Encoding` allow gzip (named, with a weight above 0)?
fn accepts_gzip(request: &HeaderMap) -> bool {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let named = parts.next().is_some_and(|c| c.eq_ignore_ascii_case("gzip"));
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            named && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The issue's budget for everything the console downloads.
    const MAX_TOTAL_COMPRESSED_BYTES: usize = 300 * 1024;

    #[test]
    fn the_whole_console_downloads_in_under_300_kb_compressed() {
        let console = Console::load().expect("console loads");
        let sizes = console.served_sizes();
        let total: usize = sizes.iter().map(|(_, n)| n).sum();
        assert!(
            total < MAX_TOTAL_COMPRESSED_BYTES,
            "the console weighs {total} bytes compressed: {sizes:?}"
        );
        assert!(sizes.len() > 3, "{sizes:?}");
    }

    #[test]
    fn the_page_links_only_assets_of_its_own_build_that_exist() {
        let console = Console::load().expect("console loads");
        let index = String::from_utf8(console.inner.index.identity.to_vec()).expect("utf-8");
        assert!(!index.contains(ASSET_BASE_PLACEHOLDER) && !index.contains(PRELOAD_PLACEHOLDER));
        let prefix = format!("/console/assets/{}/", console.build());
        let linked: Vec<&str> = index
            .split('"')
            .filter_map(|part| part.strip_prefix(prefix.as_str()))
            .collect();
        assert!(
            linked.contains(&"js/main.js") && linked.contains(&"console.css"),
            "{linked:?}"
        );
        for path in linked {
            assert!(
                console.inner.assets.contains_key(path),
                "index.html links a missing {path}"
            );
        }
        assert!(
            !index.contains("<script>") && !index.contains("style="),
            "no inline script or style"
        );
    }

    #[test]
    fn gzip_is_accepted_only_when_named_with_a_weight() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            accepts_gzip(&headers)
        };
        assert!(with("gzip, deflate, br"));
        assert!(with("br;q=1.0, GZIP;q=0.5"));
        assert!(!with("gzip;q=0"));
        assert!(!with("br, identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
