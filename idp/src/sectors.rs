//! Pairwise clients' `sector_identifier_uri` (OpenID Connect Core §8.1),
//! checked at start-up: fetched through the provider's one outbound HTTP
//! client for client documents (no redirects, 5 s, 64 KiB; see
//! [`crate::client_jwks`]), it must be a JSON array of URIs holding every
//! redirect URI of the client. Any failure stops the start-up with an
//! error naming the client file and the field: a sector no one checked
//! could put a foreign redirect URI among a sector's clients, who then
//! share its users' identifiers.

use anyhow::anyhow;
use idp_core::client::Client;
use idp_core::oidc::client_auth::JwksFetcher;
use std::sync::Arc;

/// Checks every pairwise client's `sector_identifier_uri`.
pub async fn check_sector_identifiers(
    clients: &[Arc<Client>],
    http: &dyn JwksFetcher,
) -> anyhow::Result<()> {
    for c in clients {
        let Some(p) = &c.protocol.pairwise else {
            continue;
        };
        let Some(uri) = &p.sector_identifier_uri else {
            continue;
        };
        let fail = |why: String| anyhow!("{}: sector_identifier_uri: {uri}: {why}", p.declared_in);
        let body = http.fetch(uri).await.map_err(fail)?;
        let listed: Vec<String> = serde_json::from_str(&body)
            .map_err(|_| fail("not a JSON array of redirect URIs".into()))?;
        check_listed(&c.redirect_uris, &listed).map_err(fail)?;
    }
    Ok(())
}

/// §8.1: the document lists every redirect URI of the client (exactly).
fn check_listed(redirect_uris: &[String], listed: &[String]) -> Result<(), String> {
    match redirect_uris.iter().find(|r| !listed.contains(r)) {
        Some(missing) => Err(format!(
            "does not list the redirect URI {missing} (OpenID Connect Core §8.1: it must list every redirect_uris entry)"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_redirect_uri_is_listed() {
        let r = vec![
            "https://a.example/cb".to_owned(),
            "https://b.example/cb".to_owned(),
        ];
        assert!(check_listed(&r, &[r[1].clone(), r[0].clone(), "x".into()]).is_ok());
        let e = check_listed(&r, &r[..1]).unwrap_err();
        assert!(e.contains("https://b.example/cb"), "{e}");
    }
}
