//! Token exchange (RFC 8693): a confidential portal exchanges a user's
//! access token (one of ours) for an access token meant for one declared
//! resource server, on the user's behalf.
//!
//! After the token endpoint's common steps (client authentication; the
//! grant allowed to this confidential client, `unauthorized_client`
//! otherwise; its DPoP proof), in order:
//!
//! 1. [`check_requested_token_type`] (§2.1): only access tokens are issued;
//! 2. [`check_token_type`] (§2.1, §3): the subject (and actor) token is an
//!    access token;
//! 3. the target (§2.1, RFC 8707 §2): `resource` and/or `audience` name one
//!    declared resource server whose `exchange_clients` list the client
//!    ([`ResourceServers::check_exchange_target`], `invalid_target`);
//! 4. the subject token is ours, unexpired, not revoked, nor its grant, and
//!    stands for an active user (§2.2.2, `invalid_grant`);
//! 5. [`check_subject_party`]: it was issued to the exchanging client, or
//!    names it in its audience (as Keycloak does); a token of another
//!    portal cannot be exchanged by this one (`invalid_grant`);
//! 6. [`check_token_key`] (RFC 9449 §6): a DPoP-bound token only with a
//!    proof of its key sent with this request;
//! 7. [`check_exchange_scope`] (§2.1, RFC 6749 §3.3): within the subject
//!    token's scope (`invalid_scope`);
//! 8. the actor token, if any (§2.1): ours, live, issued to the exchanging
//!    client; its `sub` is the actor, else the client itself.
//!
//! The token issued is for that resource alone (`aud`), lives no longer
//! than the resource server's lifetime, the subject token's remaining life
//! and `[token_exchange] max_token_secs`; its `sub` is the user as the
//! exchanging client sees them (pairwise or not), its `client_id` the
//! exchanging client, its `act` the actor nesting the subject token's own
//! `act` (§4.1). It belongs to the subject token's grant: revoking the grant
//! stops it. No refresh token (§2.2.1).

use super::{AccessGrant, TokenResponse, Tokens, token_type};
use crate::access_token::{ADMIN_API_SCOPE, AccessTokenInfo};
use crate::client::Client;
use crate::domain::{RequestMeta, UserStatus};
use crate::oidc::authorize::{OFFLINE_ACCESS, RawParams};
use crate::oidc::error::{ErrorCode, OAuthError};
use serde_json::{Value, json};

/// The grant type (RFC 8693 §2.1).
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// The token type of access tokens (RFC 8693 §3).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

impl Tokens {
    /// The token exchange grant (RFC 8693 §2), for a confidential client
    /// the pipeline authenticated and allowed this grant, with its checked
    /// DPoP key (see the module documentation).
    pub(crate) async fn grant_token_exchange(
        &self,
        client: &Client,
        form: &RawParams,
        meta: &RequestMeta,
        jkt: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        check_requested_token_type(form)?;
        let subject_token = check_token_type(form, "subject_token")?
            .ok_or_else(|| OAuthError::invalid_request("subject_token is missing"))?;
        let actor_token = check_token_type(form, "actor_token")?;
        let target =
            self.resources
                .check_exchange_target(client, form.resources(), form.get("audience"))?;
        let invalid =
            || OAuthError::invalid_grant("the subject token is invalid, expired or revoked");
        let subject = self
            .decode_access_token(subject_token)
            .await?
            .ok_or_else(invalid)?;
        check_subject_party(&subject.info, client)?;
        check_token_key(&subject.info, jkt)?;
        let live = self
            .check_live(&subject, false)
            .await?
            .ok_or_else(invalid)?;
        let user = live
            .user
            .as_ref()
            .filter(|u| u.status == UserStatus::Active)
            .ok_or_else(|| {
                OAuthError::invalid_grant("the subject token stands for no active user")
            })?;
        let scope = check_exchange_scope(form, &subject.info.scope)?;
        let actor = match actor_token {
            None => client.id.0.clone(),
            Some(token) => self.actor_of(token, client, jkt).await?,
        };
        let act = act_claim(&actor, subject.info.act.as_ref());
        let now = self.clock.now();
        // What is left of the subject token's life (it is unexpired: at
        // least a second).
        let remaining = u32::try_from(subject.info.exp - now.unix_timestamp()).unwrap_or(1);
        let sub = self.subjects.sub(client, user.id);
        let resources = [target.identifier.clone()];
        let (access_token, info) = self
            .mint_access_token(&AccessGrant {
                client,
                sub: &sub,
                user_id: Some(user.id),
                scope: &scope,
                sid: None,
                auth_time: None,
                acr: None,
                amr: &subject.info.amr,
                family_id: subject.info.family_id,
                userinfo_claims: &subject.info.userinfo_claims,
                jkt,
                resources: &resources,
                max_lifetime: Some(remaining.min(self.exchange_max_secs)),
                act: Some(&act),
            })
            .await?;
        self.audit_log
            .record(
                "token.exchanged",
                Some(user.id),
                Some(&client.id),
                meta,
                json!({
                    "resource": target.identifier,
                    "subject_client": subject.info.client_id,
                    "actor": actor,
                    "scope": scope,
                    "jti": info.jti,
                    "expires_in": info.lifetime_secs(),
                }),
            )
            .await;
        self.touch_client(&client.id, now).await?;
        Ok(TokenResponse {
            access_token,
            token_type: token_type(jkt),
            expires_in: info.lifetime_secs(),
            refresh_token: None,
            id_token: None,
            scope,
            issued_token_type: Some(ACCESS_TOKEN_TYPE),
        })
    }

    /// §2.1 `actor_token`: one of our live access tokens, issued to the
    /// exchanging client (a portal speaks only for itself); its `sub` is
    /// the actor.
    async fn actor_of(
        &self,
        token: &str,
        client: &Client,
        jkt: Option<&str>,
    ) -> Result<String, OAuthError> {
        let invalid =
            || OAuthError::invalid_grant("the actor token is invalid, expired or revoked");
        let actor = self.decode_access_token(token).await?.ok_or_else(invalid)?;
        if actor.info.client_id != client.id.0 {
            return Err(invalid().with_detail("the actor token was issued to another client"));
        }
        check_token_key(&actor.info, jkt)?;
        self.check_live(&actor, false).await?.ok_or_else(invalid)?;
        Ok(actor.info.sub.clone())
    }
}

/// RFC 8693 §2.1: `requested_token_type`, if sent, is an access token: the
/// only type issued here (`invalid_request` otherwise, §2.2.2).
pub fn check_requested_token_type(form: &RawParams) -> Result<(), OAuthError> {
    match form.get("requested_token_type") {
        None | Some(ACCESS_TOKEN_TYPE) => Ok(()),
        Some(other) => Err(OAuthError::invalid_request(
            "requested_token_type: only access tokens are issued by exchange",
        )
        .with_detail(format!("requested_token_type {other:?}"))),
    }
}

/// RFC 8693 §2.1: `<name>` comes with `<name>_type`, and only access tokens
/// (§3) are accepted; `None` when `<name>` is absent (and so is its type).
pub fn check_token_type<'a>(
    form: &'a RawParams,
    name: &str,
) -> Result<Option<&'a str>, OAuthError> {
    let type_name = format!("{name}_type");
    match (form.get(name), form.get(&type_name)) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(OAuthError::invalid_request(format!(
            "{type_name} is sent without {name}"
        ))),
        (Some(_), None) => Err(OAuthError::invalid_request(format!(
            "{type_name} is missing"
        ))),
        (Some(token), Some(ACCESS_TOKEN_TYPE)) => Ok(Some(token)),
        (Some(_), Some(_)) => Err(OAuthError::invalid_request(format!(
            "{type_name}: only access tokens ({ACCESS_TOKEN_TYPE}) can be exchanged"
        ))),
    }
}

/// Who may exchange a subject token (RFC 8693 §2.1 and §5 leave it to the
/// server): the client it was issued to, or a client named in its audience.
/// Any other client learns nothing more than `invalid_grant`.
pub fn check_subject_party(subject: &AccessTokenInfo, client: &Client) -> Result<(), OAuthError> {
    if subject.client_id == client.id.0 || subject.is_for(&client.id.0) {
        return Ok(());
    }
    Err(
        OAuthError::invalid_grant("the subject token is invalid, expired or revoked").with_detail(
            format!(
                "the subject token was issued to {} and is not for {}",
                subject.client_id, client.id.0
            ),
        ),
    )
}

/// RFC 9449 §6 and §7: a DPoP-bound token is presented only with a proof of
/// its key; at the token endpoint, the proof of this request (checked by
/// the pipeline: only a client with `dpop_bound_access_tokens` sends one).
pub fn check_token_key(token: &AccessTokenInfo, proof_jkt: Option<&str>) -> Result<(), OAuthError> {
    match (&token.jkt, proof_jkt) {
        (None, _) => Ok(()),
        (Some(bound), Some(presented)) if bound == presented => Ok(()),
        (Some(_), _) => Err(OAuthError::invalid_grant(
            "the token is DPoP-bound: a proof of its key is required with this request",
        )),
    }
}

/// RFC 8693 §2.1 and RFC 6749 §3.3: the scope asked for is within the
/// subject token's (none asked for: the subject token's). `admin_api` is
/// never exchanged (its audience is the admin API, not the resource); it is
/// left out of the default and refused if asked. `offline_access` means
/// nothing without a refresh token and is dropped.
pub fn check_exchange_scope(form: &RawParams, subject_scope: &str) -> Result<String, OAuthError> {
    let held = |s: &str| subject_scope.split(' ').any(|x| x == s);
    let requested = form.get("scope").unwrap_or(subject_scope);
    let mut out: Vec<&str> = Vec::new();
    for s in requested.split(' ').filter(|s| !s.is_empty()) {
        if s == OFFLINE_ACCESS || (s == ADMIN_API_SCOPE && form.get("scope").is_none()) {
            continue;
        }
        if !held(s) || s == ADMIN_API_SCOPE {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                "scope exceeds the subject token's",
            ));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out.join(" "))
}

/// RFC 8693 §4.1: `{"sub": actor}`, nesting the subject token's own `act`
/// (the previous actors) when it has one.
pub fn act_claim(actor: &str, previous: Option<&Value>) -> Value {
    let mut act = json!({ "sub": actor });
    if let Some(p) = previous {
        act["act"] = p.clone();
    }
    act
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> RawParams {
        RawParams::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    fn info(client_id: &str, aud: &[&str], jkt: Option<&str>) -> AccessTokenInfo {
        AccessTokenInfo {
            client_id: client_id.into(),
            sub: "u".into(),
            user_id: None,
            scope: "openid email".into(),
            iat: 0,
            exp: 1,
            jti: "j".into(),
            family_id: None,
            aud: aud.iter().map(|a| (*a).to_owned()).collect(),
            amr: vec![],
            userinfo_claims: vec![],
            jkt: jkt.map(str::to_owned),
            act: None,
        }
    }

    #[test]
    fn token_types_are_access_tokens() {
        assert!(check_requested_token_type(&params(&[])).is_ok());
        assert!(
            check_requested_token_type(&params(&[("requested_token_type", ACCESS_TOKEN_TYPE)]))
                .is_ok()
        );
        let e = check_requested_token_type(&params(&[(
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:id_token",
        )]))
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let ok = params(&[
            ("subject_token", "t"),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
        ]);
        assert_eq!(check_token_type(&ok, "subject_token").unwrap(), Some("t"));
        assert_eq!(check_token_type(&ok, "actor_token").unwrap(), None);
        for bad in [
            params(&[("subject_token", "t")]),
            params(&[("subject_token_type", ACCESS_TOKEN_TYPE)]),
            params(&[
                ("subject_token", "t"),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:refresh_token",
                ),
            ]),
        ] {
            assert_eq!(
                check_token_type(&bad, "subject_token").unwrap_err().code,
                ErrorCode::InvalidRequest
            );
        }
    }

    #[test]
    fn only_the_tokens_client_or_audience_exchanges_it() {
        let mut c = crate::oidc::authorize::tests::client(false);
        c.id = crate::domain::ClientId("portal".into());
        assert!(check_subject_party(&info("portal", &["portal"], None), &c).is_ok());
        assert!(check_subject_party(&info("spa", &["spa", "portal"], None), &c).is_ok());
        assert_eq!(
            check_subject_party(&info("spa", &["spa"], None), &c)
                .unwrap_err()
                .code,
            ErrorCode::InvalidGrant
        );
    }

    #[test]
    fn bound_tokens_need_their_key() {
        assert!(check_token_key(&info("c", &[], None), None).is_ok());
        assert!(check_token_key(&info("c", &[], Some("k")), Some("k")).is_ok());
        for presented in [None, Some("other")] {
            assert_eq!(
                check_token_key(&info("c", &[], Some("k")), presented)
                    .unwrap_err()
                    .code,
                ErrorCode::InvalidGrant
            );
        }
    }

    #[test]
    fn scopes_stay_within_the_subject_token() {
        let held = "openid email admin_api offline_access";
        assert_eq!(
            check_exchange_scope(&params(&[]), held).unwrap(),
            "openid email"
        );
        assert_eq!(
            check_exchange_scope(&params(&[("scope", "email")]), held).unwrap(),
            "email"
        );
        for beyond in ["email profile", "admin_api"] {
            assert_eq!(
                check_exchange_scope(&params(&[("scope", beyond)]), held)
                    .unwrap_err()
                    .code,
                ErrorCode::InvalidScope
            );
        }
    }

    #[test]
    fn actors_nest() {
        let first = act_claim("portal", None);
        assert_eq!(first, json!({"sub": "portal"}));
        assert_eq!(
            act_claim("gateway", Some(&first)),
            json!({"sub": "gateway", "act": {"sub": "portal"}})
        );
    }
}
