//! Discovery and the JWKS: cacheable documents with an entity tag, answered
//! with 304 Not Modified when the client already holds them.

mod support;

use idp_core::keys::SigningAlg;
use support::*;

async fn get(app: &TestApp, path: &str, if_none_match: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(app.url(path));
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    req.send().await.unwrap()
}

async fn documents_carry_an_entity_tag_and_answer_304(app: &TestApp) {
    for path in ["/.well-known/openid-configuration", "/jwks"] {
        let res = get(app, path, None).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["cache-control"], "public, max-age=300");
        let tag = res.headers()["etag"].to_str().unwrap().to_owned();
        assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert!(body.is_object());

        // The same version: 304, no body, the same tag.
        let res = get(app, path, Some(&tag)).await;
        assert_eq!(res.status(), 304, "{path}");
        assert_eq!(res.headers()["etag"], tag.as_str());
        assert!(res.bytes().await.unwrap().is_empty());
        // Among others, or weak: still held.
        let res = get(app, path, Some(&format!("\"other\", W/{tag}"))).await;
        assert_eq!(res.status(), 304, "{path}");
        // Another version: the document.
        let res = get(app, path, Some("\"stale\"")).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["etag"], tag.as_str());
    }
}

async fn the_jwks_tag_changes_with_the_keys(app: &TestApp) {
    let before = get(app, "/jwks", None).await.headers()["etag"].clone();
    let kid = unpublish_active_key(app, SigningAlg::ES256).await;
    let res = get(app, "/jwks", Some(before.to_str().unwrap())).await;
    assert_eq!(res.status(), 200, "the old version is no longer current");
    assert_ne!(res.headers()["etag"], before);
    let jwks: serde_json::Value = res.json().await.unwrap();
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["kid"] != kid.as_str()),
        "the retired key is gone"
    );
}

matrix!(
    documents_carry_an_entity_tag_and_answer_304,
    the_jwks_tag_changes_with_the_keys,
);
