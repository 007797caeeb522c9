//! The authorization response and how it reaches the client: in the query
//! of a redirect (RFC 6749 §4.1.2), posted by a self-submitting form (OAuth
//! 2.0 Form Post Response Mode), or either of them carrying one signed JWT
//! instead of the parameters (JARM: JWT Secured Authorization Response Mode
//! for OAuth 2.0, §2.3). A client may use `query` always and the other modes
//! its file lists (`response_modes`).

use super::authorize::redirect_with;
use crate::keys::{KeyRing, SigningAlg};
pub use crate::request::{Delivery, ResponseMode};
use serde_json::{Map, Value};

/// How long a JARM response JWT is valid (JARM §2.1: short-lived).
pub const JARM_LIFETIME_SECS: i64 = 60;

/// An authorization response, ready to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationResponse {
    pub redirect_uri: String,
    pub params: Vec<(String, String)>,
    pub delivery: Delivery,
}

impl AuthorizationResponse {
    /// The redirect URI with the parameters in its query (for [`Delivery::Redirect`]).
    pub fn location(&self) -> String {
        let params: Vec<(&str, &str)> = self
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        redirect_with(&self.redirect_uri, &params)
    }
}

/// Who signs a JARM response, and for whom.
pub struct Jarm<'a> {
    pub keys: &'a KeyRing,
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub alg: SigningAlg,
    pub now: i64,
}

/// Builds the response for `mode`: the parameters as they are, or (JARM)
/// one `response` parameter, a JWT signed by this provider holding them with
/// `iss`, `aud` (the client) and `exp` (JARM §2.1). `iss` is always among the
/// parameters (RFC 9207), so it is not added twice.
pub fn build(
    redirect_uri: &str,
    params: Vec<(String, String)>,
    mode: ResponseMode,
    jarm: Option<Jarm<'_>>,
) -> Result<AuthorizationResponse, crate::error::CoreError> {
    let params = match (mode.is_jwt(), jarm) {
        (true, Some(j)) => {
            let mut claims = Map::new();
            claims.insert("iss".into(), j.issuer.into());
            claims.insert("aud".into(), j.client_id.into());
            claims.insert("iat".into(), j.now.into());
            claims.insert("exp".into(), (j.now + JARM_LIFETIME_SECS).into());
            for (k, v) in params {
                if k != "iss" {
                    claims.insert(k, Value::String(v));
                }
            }
            let jwt = j.keys.current().sign(j.alg, "JWT", claims)?;
            vec![("response".to_owned(), jwt)]
        }
        (true, None) => {
            return Err(crate::error::CoreError::Internal(
                "a JWT response mode without a signer".into(),
            ));
        }
        (false, _) => params,
    };
    Ok(AuthorizationResponse {
        redirect_uri: redirect_uri.to_owned(),
        params,
        delivery: mode.delivery(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_and_jwt_is_query_jwt() {
        for m in ResponseMode::ALL {
            assert_eq!(ResponseMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(ResponseMode::parse("jwt"), Some(ResponseMode::QueryJwt));
        assert_eq!(ResponseMode::parse("fragment"), None);
        assert_eq!(ResponseMode::parse("fragment.jwt"), None);
        assert_eq!(ResponseMode::FormPostJwt.delivery(), Delivery::FormPost);
    }

    #[test]
    fn plain_modes_keep_the_parameters() {
        let r = build(
            "https://rp.example/cb?x=1",
            vec![("code".into(), "c".into()), ("state".into(), "s".into())],
            ResponseMode::FormPost,
            None,
        )
        .unwrap();
        assert_eq!(r.delivery, Delivery::FormPost);
        assert_eq!(r.location(), "https://rp.example/cb?x=1&code=c&state=s");
    }
}
