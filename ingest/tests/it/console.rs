//! The console's page and assets over HTTP: served from the binary with their types, a strict
//! Content-Security-Policy, cache headers and gzip; every module the page imports exists; nothing
//! is loaded from another host; the whole download stays under the issue's 300 KB.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::{TestApp, error_of};
use triggers_ingest::console::CONTENT_SECURITY_POLICY;

const MAX_TOTAL_COMPRESSED_BYTES: usize = 300 * 1024;

/// A GET with these request headers: status, headers, body bytes.
async fn get(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = app.client.get(app.url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.bytes().await.expect("body").to_vec())
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Every `href="..."` and `src="..."` of a page (but links within it, `#...`), and every relative `import ... from '...'` or
/// `import '...'` of a module, resolved against `base` (the module's own path).
fn links(text: &str, base: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attr in ["href=\"", "src=\""] {
        for part in text.split(attr).skip(1) {
            if let Some((link, _)) = part.split_once('"')
                && !link.starts_with('#')
            {
                found.push(link.to_owned());
            }
        }
    }
    for part in text
        .split(" from '")
        .skip(1)
        .chain(text.split("import '").skip(1))
    {
        if let Some((spec, _)) = part.split_once('\'') {
            let dir = base.rsplit_once('/').map_or("", |(dir, _)| dir);
            let mut segments: Vec<&str> = dir.split('/').collect();
            for piece in spec.split('/') {
                match piece {
                    "." => {}
                    ".." => {
                        segments.pop();
                    }
                    other => segments.push(other),
                }
            }
            found.push(segments.join("/"));
        }
    }
    found
}

#[tokio::test]
async fn the_console_page_is_served_with_a_strict_policy_and_revalidated_on_every_load() {
    let app = TestApp::spawn().await;
    let (status, headers, body) = get(&app, "/console", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    assert_eq!(
        header(&headers, "content-security-policy"),
        CONTENT_SECURITY_POLICY
    );
    for directive in [
        "default-src 'none'",
        "script-src 'self';",
        "connect-src 'self';",
        "frame-ancestors 'none'",
    ] {
        assert!(CONTENT_SECURITY_POLICY.contains(directive), "{directive}");
    }
    assert!(
        !CONTENT_SECURITY_POLICY.contains("unsafe"),
        "no unsafe-inline or unsafe-eval"
    );
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    assert_eq!(header(&headers, "referrer-policy"), "no-referrer");
    let page = String::from_utf8(body).expect("utf-8");
    assert!(page.contains("<title>Triggers console</title>"), "{page}");
    assert!(!page.contains("{{") && !page.contains("<script>"), "{page}");

    let etag = header(&headers, "etag").to_owned();
    assert!(etag.starts_with('"'), "{etag}");
    let (status, again, body) = get(&app, "/console", &[("if-none-match", &etag)]).await;
    assert_eq!((status, body.len()), (304, 0));
    assert_eq!(header(&again, "etag"), etag);

    let res = app
        .client
        .get(app.url("/console/"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 308);
    assert_eq!(header(res.headers(), "location"), "/console");
}

#[tokio::test]
async fn every_asset_the_page_loads_exists_with_its_type_is_cached_for_a_year_and_fits_300_kb_gzipped() {
    let app = TestApp::spawn().await;
    let gzip = [("accept-encoding", "gzip")];
    let (_, headers, _) = get(&app, "/console", &gzip).await;
    assert_eq!(header(&headers, "content-encoding"), "gzip");
    let mut total = header(&headers, "content-length")
        .parse::<usize>()
        .expect("content-length");
    let (_, _, plain) = get(&app, "/console", &[]).await;
    let plain = String::from_utf8(plain).expect("utf-8");
    assert!(
        total < plain.len(),
        "the page is served gzipped: {total} >= {}",
        plain.len()
    );

    let mut queue: Vec<String> = links(&plain, "/console");
    assert!(queue.iter().any(|l| l.ends_with("/js/main.js")), "{queue:?}");
    let mut seen = BTreeSet::new();
    let mut sizes = BTreeMap::new();
    while let Some(link) = queue.pop() {
        assert!(
            link.starts_with("/console/assets/"),
            "a link off the console's assets: {link}"
        );
        if !seen.insert(link.clone()) {
            continue;
        }
        let (status, headers, _) = get(&app, &link, &gzip).await;
        assert_eq!(status, 200, "{link}");
        assert_eq!(
            header(&headers, "cache-control"),
            "public, max-age=31536000, immutable",
            "{link}"
        );
        assert_eq!(
            header(&headers, "content-security-policy"),
            CONTENT_SECURITY_POLICY
        );
        let expected_type = match link.rsplit_once('.').map(|(_, ext)| ext) {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            other => panic!("unexpected asset kind {other:?}: {link}"),
        };
        assert_eq!(header(&headers, "content-type"), expected_type, "{link}");
        let bytes = header(&headers, "content-length")
            .parse::<usize>()
            .expect("content-length");
        sizes.insert(link.clone(), bytes);
        total += bytes;

        let (_, _, body) = get(&app, &link, &[]).await;
        let text = String::from_utf8(body).expect("utf-8");
        let external = text.replace("http://www.w3.org/2000/svg", "");
        assert!(!external.contains("://"), "{link} names another host");
        if link.ends_with(".js") {
            queue.extend(links(&text, &link));
        }
    }
    assert!(sizes.len() >= 6, "{sizes:?}");
    println!(
        "console download, gzipped: {total} bytes in {} files: {sizes:?}",
        sizes.len() + 1
    );
    assert!(total < MAX_TOTAL_COMPRESSED_BYTES, "{total} bytes: {sizes:?}");
}

#[tokio::test]
async fn assets_of_another_build_unknown_assets_and_undecodable_paths_are_404_json() {
    let app = TestApp::spawn().await;
    let build = app_build(&app).await;
    let (status, _, _) = get(&app, &format!("/console/assets/{build}/js/main.js"), &[]).await;
    assert_eq!(status, 200);
    for path in [
        "/console/assets/0000000000000000/js/main.js".to_owned(),
        format!("/console/assets/{build}/js/nope.js"),
        format!("/console/assets/{build}/index.html"),
        format!("/console/assets/{build}/../Cargo.toml"),
        "/console/assets/%ff/js/main.js".to_owned(),
        format!("/console/assets/{build}/js/%C0%AF.js"),
    ] {
        let res = app.client.get(app.url(&path)).send().await.expect("request");
        let (status, body) = error_of(res).await;
        assert_eq!(
            (status.as_u16(), body["code"].as_str()),
            (404, Some("not_found")),
            "{path}"
        );
    }
    let (status, headers, _) = get(
        &app,
        &format!("/console/assets/{build}/console.css"),
        &[("accept-encoding", "gzip;q=0, br")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-encoding"), "", "gzip refused by q=0");
}

/// The build named in the page's asset links.
async fn app_build(app: &TestApp) -> String {
    let (_, _, page) = get(app, "/console", &[]).await;
    let page = String::from_utf8(page).expect("utf-8");
    let (_, rest) = page.split_once("/console/assets/").expect("an asset link");
    rest.split_once('/').expect("build/").0.to_owned()
}
