//! Fetches clients' `jwks_uri` documents (RFC 7591 §2) for
//! `idp_core::oidc::client_auth`, which caches them: redirects are not
//! followed, a fetch gives up after 5 seconds, and a document over 64 KiB
//! is refused (a key set is a few kilobytes; a larger answer is not one).

use async_trait::async_trait;
use idp_core::oidc::client_auth::JwksFetcher;
use std::time::Duration;

/// The largest JWKS document read.
const MAX_BYTES: usize = 64 * 1024;

pub struct HttpJwksFetcher {
    http: reqwest::Client,
}

impl HttpJwksFetcher {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(5))
                .user_agent(concat!("idp/", env!("CARGO_PKG_VERSION")))
                .build()?,
        })
    }
}

#[async_trait]
impl JwksFetcher for HttpJwksFetcher {
    async fn fetch(&self, uri: &str) -> Result<String, String> {
        let mut res = self
            .http
            .get(uri)
            .header(
                reqwest::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .send()
            .await
            .map_err(|e| format!("fetch failed: {e}"))?;
        if !res.status().is_success() {
            return Err(format!("answered {}", res.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| format!("read failed: {e}"))? {
            if body.len() + chunk.len() > MAX_BYTES {
                return Err(format!("the document is over {MAX_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|_| "the document is not UTF-8".to_owned())
    }
}
