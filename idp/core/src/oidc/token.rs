//! The token endpoint (RFC 6749 §3.2, §4.1.3, §6, §4.4; token exchange,
//! RFC 8693, in the `exchange` module), token minting (ID token per OIDC Core §2,
//! access token per RFC 9068 or opaque; `sub` per OIDC Core §8, see
//! [`super::subjects`]), and the
//! endpoints that read tokens back: userinfo, introspection (RFC 7662),
//! revocation (RFC 7009).

use super::access_tokens::AccessTokenStore;
use super::announced::Announcer;
use super::authorize::{OFFLINE_ACCESS, RawParams};
use super::codes::{CodeRecord, CodeStore};
use super::error::{ErrorCode, OAuthError};
use super::resources::ResourceServers;
use super::subjects::Subjects;
use super::verified_tokens::{LiveToken, Verified, VerifiedTokens};
use crate::access_token::{ADMIN_API_SCOPE, AccessTokenInfo, admin_api_audience};
use crate::audit::Audit;
use crate::changes::{Change, ChangeLog};
use crate::client::Client;
use crate::clock::SharedClock;
use crate::domain::RequestMeta;
use crate::domain::{
    ClientId, Organization, RefreshTokenRecord, RequestedClaims, Role, TokenFamily, TokenHash,
    User, UserId, UserStatus,
};
use crate::error::CoreError;
use crate::keys::KeyRing;
use crate::ports::RotationWithUser;
use crate::ports::{ClientStateRepo, TokenFamilyRepo};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    pub scope: String,
    /// RFC 8693 §2.2.1: the type of a token obtained by token exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
}

/// The `organizations` claim (with the `profile` scope, for users who
/// belong to at least one): `[{id, name, status, roles}]`, so relying
/// parties can restrict members of a pending organization.
fn organizations_value(orgs: &[(Organization, Vec<Role>)]) -> Option<Value> {
    if orgs.is_empty() {
        return None;
    }
    Some(Value::Array(
        orgs.iter()
            .map(|(o, roles)| {
                json!({
                    "id": o.id,
                    "name": o.name,
                    "status": o.status.as_str(),
                    "roles": roles,
                })
            })
            .collect(),
    ))
}

/// Everything a minted grant needs.
struct GrantFacts<'a> {
    client: &'a Client,
    user: &'a User,
    /// The user's organizations when the ID token carries them (`profile`).
    organizations: Option<&'a [(Organization, Vec<Role>)]>,
    scope: &'a str,
    sid: Option<&'a str>,
    auth_time: i64,
    acr: Option<&'a str>,
    amr: &'a [String],
    family_id: Option<Uuid>,
    nonce: Option<&'a str>,
    /// Named by the `claims` request parameter.
    claims: &'a RequestedClaims,
    /// The DPoP key the access token is bound to.
    jkt: Option<&'a str>,
    /// The resources the access token is for (RFC 8707).
    resources: &'a [String],
}

/// RFC 9449 §5: `DPoP` for a bound token, else `Bearer` (RFC 6750).
fn token_type(jkt: Option<&str>) -> &'static str {
    if jkt.is_some() { "DPoP" } else { "Bearer" }
}

/// What an access token stands for.
#[derive(Clone, Copy)]
struct AccessGrant<'a> {
    client: &'a Client,
    /// The user's id, or the client's for client credentials.
    sub: &'a str,
    user_id: Option<UserId>,
    scope: &'a str,
    sid: Option<&'a str>,
    auth_time: Option<i64>,
    acr: Option<&'a str>,
    amr: &'a [String],
    family_id: Option<Uuid>,
    /// Claims userinfo returns besides those of the scope.
    userinfo_claims: &'a [String],
    /// The DPoP key it is bound to (RFC 9449 §6).
    jkt: Option<&'a str>,
    /// The resources it is for, its audience (RFC 8707 §2).
    resources: &'a [String],
    /// At most this long, whatever its client and resources allow (token
    /// exchange, RFC 8693).
    max_lifetime: Option<u32>,
    /// The actor of an exchanged token (RFC 8693 §4.1).
    act: Option<&'a Value>,
}

mod exchange;
pub use exchange::{
    ACCESS_TOKEN_TYPE, GRANT_TYPE as TOKEN_EXCHANGE, act_claim, check_exchange_scope,
    check_requested_token_type, check_subject_party, check_token_key, check_token_type,
};

/// A written grant: its user, their organizations (when the ID token
/// carries them) and the first refresh token.
type OpenedFamily = (User, Option<Vec<(Organization, Vec<Role>)>>, Option<String>);

/// The grant a code starts, derived from the code so that a replay can
/// revoke it without the (already consumed) code record.
fn family_id_for_code(code: &str) -> Uuid {
    let digest = Sha256::digest(format!("grant:{code}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn s256(v: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()))
}

/// Left half of SHA-256 of the access token (OIDC Core §3.1.3.6; ES256 and RS256 both use SHA-256).
fn at_hash(access_token: &str) -> String {
    let d = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&d[..16])
}

fn has_scope(scope: &str, s: &str) -> bool {
    scope.split(' ').any(|x| x == s)
}

/// The token endpoint and the endpoints that read tokens back.
pub struct Tokens {
    /// The resource servers tokens may be for (RFC 8707).
    resources: Arc<ResourceServers>,
    issuer: String,
    keys: Arc<KeyRing>,
    codes: Arc<dyn CodeStore>,
    access: Arc<dyn AccessTokenStore>,
    families: Arc<dyn TokenFamilyRepo>,
    client_states: Arc<dyn ClientStateRepo>,
    audit_log: Audit,
    clock: SharedClock,
    /// Access tokens whose signature verified (see its module).
    verified_tokens: VerifiedTokens,
    /// The changes this node has heard of (see [`crate::changes`]).
    change_log: Arc<ChangeLog>,
    /// Announces changes (the repositories do it on their own).
    announcer: Arc<Announcer>,
    /// When each client was last recorded as used (see `touch_client`).
    client_touched: std::sync::Mutex<std::collections::HashMap<ClientId, i64>>,
    /// The `sub` each client sees (OIDC Core §8).
    subjects: Arc<Subjects>,
    /// Tokens obtained by token exchange live at most this long (RFC 8693).
    exchange_max_secs: u32,
}

impl Tokens {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        resources: Arc<ResourceServers>,
        issuer: String,
        keys: Arc<KeyRing>,
        codes: Arc<dyn CodeStore>,
        access: Arc<dyn AccessTokenStore>,
        families: Arc<dyn TokenFamilyRepo>,
        client_states: Arc<dyn ClientStateRepo>,
        audit_log: Audit,
        clock: SharedClock,
        change_log: Arc<ChangeLog>,
        announcer: Arc<Announcer>,
        subjects: Arc<Subjects>,
        exchange_max_secs: u32,
    ) -> Self {
        Self {
            resources,
            issuer,
            keys,
            codes,
            access,
            families,
            client_states,
            audit_log,
            clock,
            verified_tokens: Default::default(),
            change_log,
            announcer,
            client_touched: Default::default(),
            subjects,
            exchange_max_secs,
        }
    }

    /// Records that `client` obtained tokens, at most once a minute per
    /// client and node: the token endpoint is a hot path, and "last used" does
    /// not need more precision than that.
    async fn touch_client(&self, client: &ClientId, at: OffsetDateTime) -> Result<(), CoreError> {
        let now = at.unix_timestamp();
        {
            let mut seen = self
                .client_touched
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match seen.get(client) {
                Some(last) if now - *last < 60 => return Ok(()),
                _ => {
                    seen.insert(client.clone(), now);
                }
            }
        }
        Ok(self.client_states.touch(client, at).await?)
    }

    /// The `authorization_code` grant (RFC 6749 §4.1.3), for a client the
    /// pipeline authenticated and allowed this grant (see
    /// [`super::token_endpoint`]), with its checked DPoP key: the code's
    /// binding (§4.1.3), PKCE (RFC 7636 §4.6) and resources (RFC 8707 §2.2),
    /// then the code's single use (§4.1.2).
    pub(crate) async fn grant_authorization_code(
        &self,
        client: &Client,
        form: &RawParams,
        meta: &RequestMeta,
        jkt: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let code = form
            .get("code")
            .ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
        // RFC 6749 §4.1.2: a code is single use, and a second use revokes what
        // the first issued. The first redemption claims the code's "used"
        // marker before taking it; any later (or concurrent) one finds the
        // marker, flags the replay and revokes the grant. The winner checks
        // the flag after creating the grant, so whichever order the two run
        // in, a replayed code never leaves live tokens behind.
        let family_id = family_id_for_code(code);
        let invalid = || OAuthError::invalid_grant("the code is invalid, expired or already used");
        // Checks first, on a read: a request that fails them (wrong client,
        // redirect URI or verifier) leaves the code as it was.
        let Some(record) = self.codes.peek(code).await.map_err(CoreError::from)? else {
            let was_used = self
                .codes
                .was_redeemed(code)
                .await
                .map_err(CoreError::from)?;
            if was_used {
                self.revoke_replayed_code(code, family_id, client, meta)
                    .await?;
            }
            return Err(invalid());
        };
        let now = self.clock.now();
        check_code_binding(&record, client, form, now)?;
        check_code_verifier(record.code_challenge.as_deref(), form.get("code_verifier"))?;
        check_code_key(&record, jkt)?;
        let resources = self
            .resources
            .narrow(client, &record.resources, form.resources())?;
        // Then the single use: the first redemption claims the "used" marker;
        // a concurrent one finds it and is a replay.
        let first_use = self
            .codes
            .mark_redeemed(code)
            .await
            .map_err(CoreError::from)?;
        if !first_use {
            self.revoke_replayed_code(code, family_id, client, meta)
                .await?;
            return Err(invalid());
        }
        if self
            .codes
            .take(code)
            .await
            .map_err(CoreError::from)?
            .is_none()
        {
            // Expired between the read and now.
            return Err(invalid());
        }
        let (user, organizations, refresh) = self
            .open_family(client, &record, family_id, jkt, now)
            .await?;
        let facts = GrantFacts {
            client,
            user: &user,
            organizations: organizations.as_deref(),
            scope: &record.scope,
            sid: Some(&record.sid),
            auth_time: record.auth_time,
            acr: Some(&record.acr),
            amr: &record.amr,
            family_id: Some(family_id),
            nonce: record.nonce.as_deref(),
            claims: &record.claims,
            jkt,
            resources: &resources,
        };
        let replayed = self
            .codes
            .is_replayed(code)
            .await
            .map_err(CoreError::from)?;
        if replayed {
            self.families
                .revoke_family(family_id, now, "code_reuse")
                .await
                .map_err(CoreError::from)?;
        }
        let response = self.mint(&facts, refresh).await?;
        self.touch_client(&client.id, now).await?;
        Ok(response)
    }

    /// A user's grant written from what a code (or an approved device
    /// authorization) stands for: its family, the first refresh token when
    /// the client may have them, and the user read in the same transaction
    /// (refused when no longer active).
    async fn open_family(
        &self,
        client: &Client,
        record: &CodeRecord,
        family_id: Uuid,
        jkt: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<OpenedFamily, OAuthError> {
        let refresh = if client.allow_refresh_token {
            Some(crate::random::token())
        } else {
            None
        };
        let family = TokenFamily {
            claims: record.claims.clone(),
            id: family_id,
            user_id: record.user_id,
            client_id: client.id.clone(),
            scope: record.scope.clone(),
            sid: Some(record.sid.clone()),
            auth_time: OffsetDateTime::from_unix_timestamp(record.auth_time)
                .map_err(|e| CoreError::Internal(e.to_string()))?,
            acr: Some(record.acr.clone()),
            amr: record.amr.clone(),
            created_at: now,
            expires_at: now + time::Duration::seconds(i64::from(client.lifetimes.refresh_token)),
            revoked_at: None,
            revoked_reason: None,
            resources: record.resources.clone(),
            // RFC 9449 §5: a public client's refresh tokens are bound to the
            // key of the proof they were first issued with.
            dpop_jkt: if client.is_public() {
                jkt.map(str::to_owned)
            } else {
                None
            },
        };
        let first = refresh.as_ref().map(|r| RefreshTokenRecord {
            id: Uuid::now_v7(),
            family_id: family.id,
            token_hash: TokenHash::of(r),
            created_at: now,
            expires_at: family.expires_at,
            used_at: None,
        });
        // The grant is written only if its user is still active, as read in
        // the same transaction (with their organizations when the ID token
        // carries them): no second read, and no moment between the check
        // and the write.
        let (user, organizations) = self
            .families
            .create_family_of_active_user(
                &family,
                first.as_ref(),
                wants_organizations(&record.scope),
            )
            .await
            .map_err(CoreError::from)?
            .ok_or_else(|| OAuthError::invalid_grant("the account is not active"))?;
        Ok((user, organizations, refresh))
    }

    /// The device code grant (RFC 8628 §3.4, §3.5), for a client the
    /// pipeline authenticated and allowed this grant: the poll's checks
    /// are [`super::device::DeviceAuthorizations::poll`]'s; an approved
    /// authorization is used up there, and its tokens are issued as for a
    /// code (ID token with `sid`, `acr`, `amr`, `auth_time`; a refresh
    /// token when the client may have them), for the resources it was for
    /// (RFC 8707 §2.2).
    pub(crate) async fn grant_device_code(
        &self,
        client: &Client,
        device_code: &str,
        record: &CodeRecord,
        form: &RawParams,
        jkt: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let now = self.clock.now();
        let resources = self
            .resources
            .narrow(client, &record.resources, form.resources())?;
        let family_id = family_id_for_code(device_code);
        let (user, organizations, refresh) = self
            .open_family(client, record, family_id, jkt, now)
            .await?;
        let facts = GrantFacts {
            client,
            user: &user,
            organizations: organizations.as_deref(),
            scope: &record.scope,
            sid: Some(&record.sid),
            auth_time: record.auth_time,
            acr: Some(&record.acr),
            amr: &record.amr,
            family_id: Some(family_id),
            nonce: None,
            claims: &record.claims,
            jkt,
            resources: &resources,
        };
        let response = self.mint(&facts, refresh).await?;
        self.touch_client(&client.id, now).await?;
        Ok(response)
    }

    /// A code presented again (RFC 6749 §4.1.2): flag the replay, so that a
    /// first redemption still running revokes its own grant once created, and
    /// revoke the grant if it already exists.
    async fn revoke_replayed_code(
        &self,
        code: &str,
        family_id: Uuid,
        client: &Client,
        meta: &RequestMeta,
    ) -> Result<(), OAuthError> {
        self.codes
            .flag_replay(code)
            .await
            .map_err(CoreError::from)?;
        self.families
            .revoke_family(family_id, self.clock.now(), "code_reuse")
            .await
            .map_err(CoreError::from)?;
        self.audit_log
            .record(
                "token.code_reuse",
                None,
                Some(&client.id),
                meta,
                json!({"family": family_id}),
            )
            .await;
        Ok(())
    }

    /// The `refresh_token` grant (RFC 6749 §6), for a client the pipeline
    /// authenticated and allowed this grant: the token's binding to the
    /// client and, for a public client, to its DPoP key (RFC 9449 §5), the
    /// scope (§6) and resources (RFC 8707 §2.2), then the rotation (RFC
    /// 9700 §4.14.2), whose loser is a reuse that revokes the grant.
    pub(crate) async fn grant_refresh_token(
        &self,
        client: &Client,
        form: &RawParams,
        meta: &RequestMeta,
        jkt: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let presented = form
            .get("refresh_token")
            .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
        let (token, family, user) = self
            .families
            .find_refresh_token_grant(&TokenHash::of(presented))
            .await
            .map_err(CoreError::from)?
            .ok_or_else(invalid_refresh_token)?;
        let now = self.clock.now();
        check_refresh_binding(&family, &token, client, now)?;
        if token.used_at.is_some() {
            self.revoke_for_reuse(&family, meta).await?;
            return Err(invalid_refresh_token().with_detail("refresh token reuse"));
        }
        check_refresh_key(&family, jkt)?;
        let scope = check_refresh_scope(form, &family)?;
        let resources = self
            .resources
            .narrow(client, &family.resources, form.resources())?;
        let new_token = crate::random::token();
        let next = RefreshTokenRecord {
            id: Uuid::now_v7(),
            family_id: family.id,
            token_hash: TokenHash::of(&new_token),
            created_at: now,
            expires_at: family.expires_at,
            used_at: None,
        };
        // The account as read with the token, a moment ago, unless the ID
        // token needs its organizations too: then both, read again in the
        // rotation's transaction.
        let families = &self.families;
        let (rotated, reread) = if wants_organizations(&scope) {
            match families
                .rotate_refresh_token_reading_user(token.id, now, &next, user.id)
                .await
                .map_err(CoreError::from)?
            {
                RotationWithUser::Lost => (false, None),
                RotationWithUser::Won(found) => (true, Some(found)),
            }
        } else {
            let rotated = families
                .rotate_refresh_token(token.id, now, &next)
                .await
                .map_err(CoreError::from)?;
            (rotated, None)
        };
        if !rotated {
            self.revoke_for_reuse(&family, meta).await?;
            return Err(invalid_refresh_token().with_detail("concurrent refresh token reuse"));
        }
        let inactive = || OAuthError::invalid_grant("the account is not active");
        if user.status != UserStatus::Active {
            return Err(inactive());
        }
        let (user, organizations) = match reread {
            None => (user, None),
            Some(None) => return Err(inactive()),
            Some(Some(found)) => {
                let (user, orgs) = *found;
                (user, Some(orgs))
            }
        };
        let facts = GrantFacts {
            client,
            user: &user,
            organizations: organizations.as_deref(),
            scope: &scope,
            sid: family.sid.as_deref(),
            auth_time: family.auth_time.unix_timestamp(),
            acr: family.acr.as_deref(),
            amr: &family.amr,
            family_id: Some(family.id),
            nonce: None,
            claims: &family.claims,
            jkt,
            resources: &resources,
        };
        let response = self.mint(&facts, Some(new_token)).await?;
        self.touch_client(&client.id, now).await?;
        Ok(response)
    }

    async fn revoke_for_reuse(
        &self,
        family: &TokenFamily,
        meta: &RequestMeta,
    ) -> Result<(), OAuthError> {
        self.families
            .revoke_family(family.id, self.clock.now(), "refresh_token_reuse")
            .await
            .map_err(CoreError::from)?;
        self.audit_log
            .record(
                "token.refresh_reuse",
                Some(family.user_id),
                Some(&family.client_id),
                meta,
                json!({"family": family.id}),
            )
            .await;
        Ok(())
    }

    /// The `client_credentials` grant (RFC 6749 §4.4), for a confidential
    /// client the pipeline authenticated and allowed this grant: the scope
    /// (§4.4.2, §3.3) and resources (RFC 8707 §2).
    pub(crate) async fn grant_client_credentials(
        &self,
        client: &Client,
        form: &RawParams,
        jkt: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let scope = check_client_credentials_scope(form, client)?;
        let resources = self.resources.check_requested(client, form.resources())?;
        let now = self.clock.now();
        let (access_token, info) = self
            .mint_access_token(&AccessGrant {
                client,
                sub: &client.id.0,
                user_id: None,
                scope: &scope,
                sid: None,
                auth_time: None,
                acr: None,
                amr: &[],
                family_id: None,
                userinfo_claims: &[],
                jkt,
                resources: &resources,
                max_lifetime: None,
                act: None,
            })
            .await?;
        self.touch_client(&client.id, now).await?;
        Ok(TokenResponse {
            access_token,
            token_type: token_type(jkt),
            expires_in: info.lifetime_secs(),
            refresh_token: None,
            id_token: None,
            scope,
            issued_token_type: None,
        })
    }

    async fn mint(
        &self,
        f: &GrantFacts<'_>,
        refresh_token: Option<String>,
    ) -> Result<TokenResponse, OAuthError> {
        let sub = self.subjects.sub(f.client, f.user.id);
        let (access_token, info) = self
            .mint_access_token(&AccessGrant {
                client: f.client,
                sub: &sub,
                user_id: Some(f.user.id),
                scope: f.scope,
                sid: f.sid,
                auth_time: Some(f.auth_time),
                acr: f.acr,
                amr: f.amr,
                family_id: f.family_id,
                userinfo_claims: &f.claims.userinfo,
                jkt: f.jkt,
                resources: f.resources,
                max_lifetime: None,
                act: None,
            })
            .await?;
        let id_token = if has_scope(f.scope, "openid") {
            let orgs = f.organizations.and_then(organizations_value);
            Some(self.mint_id_token(f, &access_token, orgs)?)
        } else {
            None
        };
        Ok(TokenResponse {
            access_token,
            token_type: token_type(f.jkt),
            expires_in: info.lifetime_secs(),
            refresh_token,
            id_token,
            scope: f.scope.to_owned(),
            issued_token_type: None,
        })
    }

    fn mint_id_token(
        &self,
        f: &GrantFacts<'_>,
        access_token: &str,
        organizations: Option<Value>,
    ) -> Result<String, OAuthError> {
        let now = self.clock.now().unix_timestamp();
        let mut c = Map::new();
        c.insert("iss".into(), self.issuer.clone().into());
        c.insert("sub".into(), self.subjects.sub(f.client, f.user.id).into());
        c.insert("aud".into(), f.client.id.0.clone().into());
        c.insert("azp".into(), f.client.id.0.clone().into());
        c.insert("iat".into(), now.into());
        c.insert(
            "exp".into(),
            (now + i64::from(f.client.lifetimes.id_token)).into(),
        );
        c.insert("auth_time".into(), f.auth_time.into());
        if let Some(n) = f.nonce {
            c.insert("nonce".into(), n.into());
        }
        if let Some(acr) = f.acr {
            c.insert("acr".into(), acr.into());
        }
        c.insert("amr".into(), json!(f.amr));
        if let Some(sid) = f.sid {
            c.insert("sid".into(), sid.into());
        }
        c.insert("at_hash".into(), at_hash(access_token).into());
        user_claims(f.user, f.scope, &f.claims.id_token, &mut c);
        if let Some(o) = organizations {
            c.insert("organizations".into(), o);
        }
        Ok(self.keys.current().sign(f.client.id_token_alg, "JWT", c)?)
    }

    async fn mint_access_token(
        &self,
        g: &AccessGrant<'_>,
    ) -> Result<(String, AccessTokenInfo), OAuthError> {
        let AccessGrant {
            client,
            sub,
            user_id,
            scope,
            sid,
            auth_time,
            acr,
            amr,
            family_id,
            userinfo_claims,
            jkt,
            resources,
            max_lifetime,
            act,
        } = *g;
        let now = self.clock.now().unix_timestamp();
        // RFC 8707 §2: a token asked for with resources is for them alone;
        // otherwise for its client.
        let mut aud = if resources.is_empty() {
            vec![client.id.0.clone()]
        } else {
            resources.to_vec()
        };
        let admin_api = admin_api_audience(&self.issuer);
        if has_scope(scope, ADMIN_API_SCOPE) && !aud.contains(&admin_api) {
            aud.push(admin_api);
        }
        let lifetime = self
            .resources
            .access_token_secs(client, resources)
            .min(max_lifetime.unwrap_or(u32::MAX));
        let info = AccessTokenInfo {
            client_id: client.id.0.clone(),
            sub: sub.to_owned(),
            user_id,
            scope: scope.to_owned(),
            iat: now,
            exp: now + i64::from(lifetime),
            jti: Uuid::new_v4().to_string(),
            family_id,
            aud,
            amr: amr.to_vec(),
            userinfo_claims: userinfo_claims.to_vec(),
            jkt: jkt.map(str::to_owned),
            act: act.cloned(),
        };
        let token = match client.access_token_format {
            crate::client::AccessTokenFormat::Jwt => {
                let mut c = Map::new();
                c.insert("iss".into(), self.issuer.clone().into());
                c.insert("sub".into(), sub.into());
                c.insert(
                    "aud".into(),
                    match info.aud.as_slice() {
                        [one] => one.clone().into(),
                        many => json!(many),
                    },
                );
                c.insert("client_id".into(), client.id.0.clone().into());
                c.insert("iat".into(), now.into());
                c.insert("exp".into(), info.exp.into());
                c.insert("jti".into(), info.jti.clone().into());
                c.insert("scope".into(), scope.into());
                if let Some(t) = auth_time {
                    c.insert("auth_time".into(), t.into());
                }
                if let Some(a) = acr {
                    c.insert("acr".into(), a.into());
                }
                if !amr.is_empty() {
                    c.insert("amr".into(), json!(amr));
                }
                if let Some(s) = sid {
                    c.insert("sid".into(), s.into());
                }
                if let Some(f) = family_id {
                    c.insert("grant_id".into(), f.to_string().into());
                }
                if !userinfo_claims.is_empty() {
                    c.insert("userinfo_claims".into(), json!(userinfo_claims));
                }
                if let Some(jkt) = jkt {
                    // RFC 9449 §6.1.
                    c.insert("cnf".into(), json!({ "jkt": jkt }));
                }
                if let Some(act) = act {
                    // RFC 8693 §4.1.
                    c.insert("act".into(), act.clone());
                }
                self.keys
                    .current()
                    .sign(client.access_token_alg, "at+jwt", c)?
            }
            crate::client::AccessTokenFormat::Opaque => {
                let t = crate::random::token();
                self.access
                    .put_opaque(&t, &info, Duration::from_secs(u64::from(lifetime)))
                    .await
                    .map_err(CoreError::from)?;
                t
            }
        };
        Ok((token, info))
    }

    /// Validates an access token we issued: signature or handle, expiry,
    /// revocation of the token itself and of its grant.
    pub async fn validate_access_token(
        &self,
        token: &str,
    ) -> Result<Option<AccessTokenInfo>, CoreError> {
        let Some(decoded) = self.decode_access_token(token).await? else {
            return Ok(None);
        };
        let Some(live) = self.check_live(&decoded, false).await? else {
            return Ok(None);
        };
        let mut info = decoded.info.clone();
        // A pairwise `sub` is not the user id: the grant's user is.
        if info.user_id.is_none() {
            info.user_id = live.user.as_ref().map(|u| u.id);
        }
        Ok(Some(info))
    }

    /// What an access token says of itself, if it is one we issued and it
    /// has not expired: a JWT's verified claims, or an opaque handle's record.
    /// Revocation is not checked here (see [`Self::check_live`]).
    async fn decode_access_token(&self, token: &str) -> Result<Option<Arc<Verified>>, CoreError> {
        let decoded = if token.split('.').count() == 3 {
            match self.verified_jwt(token) {
                Some(v) => v,
                None => return Ok(None),
            }
        } else {
            match self.access.find_opaque(token).await? {
                // Read anew each time, so nothing is kept with it.
                Some(i) => Arc::new(Verified::new(String::new(), i)),
                None => return Ok(None),
            }
        };
        if decoded.info.exp <= self.clock.now().unix_timestamp() {
            return Ok(None);
        }
        Ok(Some(decoded))
    }

    /// The claims of an access token JWT signed by one of our published keys,
    /// with our issuer and `typ` `at+jwt`. A token verified before is not
    /// verified again (see [`super::verified_tokens`]): its claims are what
    /// that verification proved, and its key must still be published.
    fn verified_jwt(&self, token: &str) -> Option<Arc<Verified>> {
        let keys = self.keys.current();
        let digest = super::verified_tokens::digest(token);
        if let Some(seen) = self.verified_tokens.get(&digest) {
            return keys.publishes(&seen.kid).then_some(seen);
        }
        let verified = keys.verify_with_kid(token).ok()?;
        let c = &verified.claims;
        if verified.typ.as_deref() != Some("at+jwt")
            || c.get("iss").and_then(Value::as_str) != Some(&self.issuer)
        {
            return None;
        }
        let s = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_owned);
        let i = |k: &str| c.get(k).and_then(Value::as_i64);
        let (Some(client_id), Some(sub), Some(jti), Some(iat), Some(exp)) =
            (s("client_id"), s("sub"), s("jti"), i("iat"), i("exp"))
        else {
            return None;
        };
        let family_id = s("grant_id").and_then(|g| Uuid::parse_str(&g).ok());
        let strings = |k: &str| match c.get(k) {
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Array(many)) => many
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let info = AccessTokenInfo {
            user_id: family_id.and_then(|_| Uuid::parse_str(&sub).ok().map(UserId)),
            client_id,
            sub,
            scope: s("scope").unwrap_or_default(),
            iat,
            exp,
            jti,
            family_id,
            aud: strings("aud"),
            amr: strings("amr"),
            userinfo_claims: strings("userinfo_claims"),
            jkt: c
                .get("cnf")
                .and_then(|cnf| cnf.get("jkt"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            act: c.get("act").filter(|a| a.is_object()).cloned(),
        };
        let entry = Arc::new(Verified::new(verified.kid, info));
        self.verified_tokens.insert(digest, entry.clone());
        Some(entry)
    }

    /// The checks of a decoded access token that can change from one call to
    /// the next: the token is not revoked (short-lived store) and its grant,
    /// if it has one, exists and is not revoked (database). `Some` when the
    /// token is live, with the grant's user (read in the same query as the
    /// grant, and with their organizations when `with_organizations`); no
    /// user for a token without a grant (client credentials).
    ///
    /// The answer that a token is live is kept with it and given again
    /// without reading anything while the change log says nothing it rests
    /// on has changed (see [`crate::changes`]): a revocation or a change of
    /// the user's claims on any node takes effect at once on every node
    /// connected to the change feed; answers are never kept while this node
    /// is not.
    async fn check_live(
        &self,
        token: &Verified,
        with_organizations: bool,
    ) -> Result<Option<Arc<LiveToken>>, CoreError> {
        if let Some(kept) = token.kept_live()
            && (kept.organizations.is_some() || !with_organizations)
            && let Some(stamp) = &kept.stamp
            && self.change_log.still_holds(stamp, &kept.resting_on)
        {
            return Ok(Some(kept));
        }
        // Taken before the reads begin (see `crate::changes`).
        let stamp = self.change_log.stamp();
        let info = &token.info;
        let revoked = self.access.is_revoked(&info.jti);
        let families = &self.families;
        let grant = async {
            match info.family_id {
                None => Ok(None),
                Some(f) if with_organizations => families
                    .find_user_and_organizations_of_unrevoked_family(f)
                    .await
                    .map(|found| Some(found.map(|(user, orgs)| (user, Some(orgs))))),
                Some(f) => families
                    .find_user_of_unrevoked_family(f)
                    .await
                    .map(|found| Some(found.map(|user| (user, None)))),
            }
        };
        let (revoked, grant) = tokio::join!(revoked, grant);
        if revoked? {
            return Ok(None);
        }
        let mut resting_on = vec![Change::AccessToken(info.jti.clone())];
        let (user, organizations) = match grant? {
            None => (None, None),
            // The grant's user is the token's subject, by construction: its
            // id, or (no id in a pairwise `sub`, OIDC Core §8.1) derived
            // from it when the token was signed.
            Some(Some((user, organizations))) if info.user_id.is_none_or(|id| id == user.id) => {
                resting_on.extend(info.family_id.map(Change::Grant));
                resting_on.push(Change::User(user.id));
                resting_on.extend(
                    organizations
                        .iter()
                        .flatten()
                        .map(|(o, _)| Change::Organization(o.id)),
                );
                (Some(user), organizations)
            }
            // Unknown or revoked grant.
            Some(_) => return Ok(None),
        };
        let live = Arc::new(LiveToken {
            stamp,
            resting_on,
            user,
            organizations,
        });
        if live.stamp.is_some() {
            token.keep_live(live.clone());
        }
        Ok(Some(live))
    }

    /// Userinfo (OIDC Core §5.3): claims of the token's user, by scope.
    /// `proof_jkt`: the key of the checked DPoP proof sent with a token in
    /// the `DPoP` scheme (RFC 9449 §7.1); `None` for the `Bearer` scheme.
    pub async fn userinfo(
        &self,
        token: &str,
        proof_jkt: Option<&str>,
    ) -> Result<Map<String, Value>, OAuthError> {
        let invalid = || {
            OAuthError::new(
                ErrorCode::InvalidToken,
                "the access token is invalid or expired",
            )
        };
        let decoded = self.decode_access_token(token).await?.ok_or_else(invalid)?;
        let info = &decoded.info;
        // RFC 9449 §7: a bound token only with a proof of its key, and the
        // DPoP scheme only for a bound token.
        if info.jkt.as_deref() != proof_jkt {
            return Err(invalid().with_detail(match proof_jkt {
                None => "a DPoP-bound token presented as a bearer token",
                Some(_) => "the DPoP proof is not of the token's key, or the token is not bound",
            }));
        }
        // The `organizations` claim comes with `profile`: read with the grant.
        let with_organizations = has_scope(&info.scope, "profile");
        let live = self
            .check_live(&decoded, with_organizations)
            .await?
            .ok_or_else(invalid)?;
        if !has_scope(&info.scope, "openid") {
            return Err(OAuthError::new(
                ErrorCode::InvalidToken,
                "the access token lacks the openid scope",
            ));
        }
        let user = live
            .user
            .as_ref()
            .filter(|u| u.status == UserStatus::Active)
            .ok_or_else(invalid)?;
        let mut c = Map::new();
        // The token's own `sub`: pairwise for a pairwise client (§8).
        c.insert("sub".into(), info.sub.clone().into());
        user_claims(user, &info.scope, &info.userinfo_claims, &mut c);
        if with_organizations
            && let Some(o) = live.organizations.as_deref().and_then(organizations_value)
        {
            c.insert("organizations".into(), o);
        }
        Ok(c)
    }

    /// Introspection (RFC 7662). Only confidential clients may ask; an
    /// access token for resource servers is described only to its own client
    /// and to their introspection clients, who see no other token (see
    /// [`ResourceServers::may_introspect`]); a refresh token only to the
    /// client it belongs to. To anyone else the token is inactive.
    pub async fn introspect(&self, client: &Client, form: &RawParams) -> Result<Value, OAuthError> {
        if client.is_public() {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "public clients may not introspect tokens",
            ));
        }
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
        // RFC 7662 §4 leaves who may learn what to the server: a resource
        // server learns nothing of tokens meant for others (RFC 8707).
        if let Some(decoded) = self.decode_access_token(token).await?
            && self
                .resources
                .may_introspect(&client.id, &decoded.info.client_id, &decoded.info.aud)
            && let Some(live) = self.check_live(&decoded, false).await?
        {
            let info = &decoded.info;
            let mut v = json!({
                "active": true,
                "token_type": token_type(info.jkt.as_deref()),
                "client_id": info.client_id,
                "sub": info.sub,
                "scope": info.scope,
                "iat": info.iat,
                "exp": info.exp,
                "iss": self.issuer,
                "aud": match info.aud.as_slice() {
                    [one] => json!(one),
                    many => json!(many),
                },
                "jti": info.jti,
            });
            if let Some(user) = &live.user {
                v["username"] = user.customer_id.as_str().into();
            }
            if let Some(jkt) = &info.jkt {
                // RFC 9449 §6.2: the resource server checks the proof's key.
                v["cnf"] = json!({ "jkt": jkt });
            }
            if let Some(act) = &info.act {
                // RFC 8693 §4.1, §2.2.
                v["act"] = act.clone();
            }
            return Ok(v);
        }
        if let Some((family, rt)) = self.live_refresh_token(token).await?
            && family.client_id == client.id
        {
            return Ok(json!({
                "active": true,
                "token_type": "refresh_token",
                "client_id": family.client_id.0,
                "sub": self.subjects.sub(client, family.user_id),
                "scope": family.scope,
                "iat": rt.created_at.unix_timestamp(),
                "exp": rt.expires_at.unix_timestamp(),
                "iss": self.issuer,
            }));
        }
        Ok(json!({"active": false}))
    }

    async fn live_refresh_token(
        &self,
        token: &str,
    ) -> Result<Option<(TokenFamily, RefreshTokenRecord)>, CoreError> {
        let Some((rt, family, _)) = self
            .families
            .find_refresh_token_grant(&TokenHash::of(token))
            .await?
        else {
            return Ok(None);
        };
        let now = self.clock.now();
        let live = rt.used_at.is_none()
            && rt.expires_at > now
            && family.revoked_at.is_none()
            && family.expires_at > now;
        Ok(live.then_some((family, rt)))
    }

    /// Revocation (RFC 7009). Unknown tokens and tokens of other clients are
    /// answered with success and left alone. Revoking a refresh token revokes
    /// its whole grant, access tokens included.
    pub async fn revoke(
        &self,
        client: &Client,
        form: &RawParams,
        meta: &RequestMeta,
    ) -> Result<(), OAuthError> {
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
        if let Some(info) = self.validate_access_token(token).await? {
            if info.client_id == client.id.0 {
                let left = (info.exp - self.clock.now().unix_timestamp()).max(1) as u64;
                self.access
                    .revoke(&info.jti, Duration::from_secs(left))
                    .await
                    .map_err(CoreError::from)?;
                self.announcer
                    .announce(&[Change::AccessToken(info.jti.clone())])
                    .await;
                self.access
                    .delete_opaque(token)
                    .await
                    .map_err(CoreError::from)?;
                self.audit_log
                    .record(
                        "token.revoked",
                        info.user_id,
                        Some(&client.id),
                        meta,
                        json!({"type": "access_token"}),
                    )
                    .await;
            }
            return Ok(());
        }
        if let Some((_, family, _)) = self
            .families
            .find_refresh_token_grant(&TokenHash::of(token))
            .await
            .map_err(CoreError::from)?
            && family.client_id == client.id
        {
            self.families
                .revoke_family(family.id, self.clock.now(), "revoked")
                .await
                .map_err(CoreError::from)?;
            self.audit_log
                .record(
                    "token.revoked",
                    Some(family.user_id),
                    Some(&ClientId(client.id.0.clone())),
                    meta,
                    json!({"type": "refresh_token"}),
                )
                .await;
        }
        Ok(())
    }
}

fn invalid_refresh_token() -> OAuthError {
    OAuthError::invalid_grant("the refresh token is invalid, expired or revoked")
}

/// RFC 6749 §4.1.3: the code was issued to the authenticated client, has
/// not expired (§4.1.2), and `redirect_uri` is identical to the one of its
/// authorization request.
pub fn check_code_binding(
    record: &CodeRecord,
    client: &Client,
    form: &RawParams,
    now: OffsetDateTime,
) -> Result<(), OAuthError> {
    if record.client_id != client.id.0 {
        return Err(OAuthError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    if record.expires_at <= now.unix_timestamp() {
        return Err(OAuthError::invalid_grant(
            "the code is invalid, expired or already used",
        ));
    }
    if form.get("redirect_uri") != Some(record.redirect_uri.as_str()) {
        return Err(OAuthError::invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    Ok(())
}

/// RFC 9449 §10: a code whose authorization named a DPoP key (`dpop_jkt`,
/// or a proof sent to the PAR endpoint, §10.1) is redeemed only with a
/// proof of that key.
pub fn check_code_key(record: &CodeRecord, jkt: Option<&str>) -> Result<(), OAuthError> {
    match (&record.dpop_jkt, jkt) {
        (None, _) => Ok(()),
        (Some(bound), Some(presented)) if bound == presented => Ok(()),
        (Some(_), _) => Err(OAuthError::invalid_grant(
            "the code is bound to another DPoP key (dpop_jkt)",
        )),
    }
}

/// RFC 6749 §6 and §10.4: the refresh token was issued to the authenticated
/// client, and neither it nor its grant has expired or been revoked.
pub fn check_refresh_binding(
    family: &TokenFamily,
    token: &RefreshTokenRecord,
    client: &Client,
    now: OffsetDateTime,
) -> Result<(), OAuthError> {
    if family.client_id != client.id {
        return Err(invalid_refresh_token().with_detail("refresh token of another client"));
    }
    if family.revoked_at.is_some() || family.expires_at <= now || token.expires_at <= now {
        return Err(invalid_refresh_token());
    }
    Ok(())
}

/// RFC 9449 §5: a refresh token bound to a DPoP key (a public client's) is
/// used only with a proof of that key.
pub fn check_refresh_key(family: &TokenFamily, jkt: Option<&str>) -> Result<(), OAuthError> {
    match (&family.dpop_jkt, jkt) {
        (None, _) => Ok(()),
        (Some(bound), Some(presented)) if bound == presented => Ok(()),
        (Some(_), None) => Err(invalid_refresh_token()
            .with_detail("the refresh token is DPoP-bound: a proof of its key is required")),
        (Some(_), Some(_)) => Err(invalid_refresh_token()
            .with_detail("the DPoP proof is not of the key the refresh token is bound to")),
    }
}

/// RFC 6749 §6: the scope asked for at a refresh is within the grant's
/// (none asked for: the grant's). `offline_access` not granted is ignored,
/// as at the authorization (OpenID Connect Core §11).
pub fn check_refresh_scope(form: &RawParams, family: &TokenFamily) -> Result<String, OAuthError> {
    let Some(requested) = form.get("scope") else {
        return Ok(family.scope.clone());
    };
    let mut out: Vec<&str> = Vec::new();
    for s in requested.split(' ').filter(|s| !s.is_empty()) {
        if s == OFFLINE_ACCESS && !has_scope(&family.scope, s) {
            continue;
        }
        if !has_scope(&family.scope, s) {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                "scope exceeds the original grant",
            ));
        }
        out.push(s);
    }
    Ok(out.join(" "))
}

/// RFC 6749 §4.4.2 and §3.3: the scope of a client credentials request,
/// among the client's `scopes` (never `openid`: there is no user);
/// `offline_access` means nothing without a user and is ignored.
pub fn check_client_credentials_scope(
    form: &RawParams,
    client: &Client,
) -> Result<String, OAuthError> {
    let Some(requested) = form.get("scope") else {
        return Ok(String::new());
    };
    let mut out: Vec<&str> = Vec::new();
    for s in requested
        .split(' ')
        .filter(|s| !s.is_empty() && *s != OFFLINE_ACCESS)
    {
        if s == "openid" || !client.scopes.contains(s) {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                "a requested scope is not allowed for this client",
            ));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out.join(" "))
}

/// RFC 7636 §4.6 and RFC 9700 §2.1.1 (no downgrade: a verifier without a
/// challenge is refused).
pub fn check_code_verifier(
    challenge: Option<&str>,
    verifier: Option<&str>,
) -> Result<(), OAuthError> {
    match (challenge, verifier) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(OAuthError::invalid_grant(
            "code_verifier sent but no code_challenge was",
        )),
        (Some(_), None) => Err(OAuthError::invalid_grant("code_verifier is missing")),
        (Some(c), Some(v)) => {
            let well_formed = (43..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            if well_formed && s256(v) == c {
                Ok(())
            } else {
                Err(OAuthError::invalid_grant(
                    "code_verifier does not match the code_challenge",
                ))
            }
        }
    }
}

/// Whether an ID token of `scope` carries the `organizations` claim: with
/// `openid` and `profile`.
fn wants_organizations(scope: &str) -> bool {
    has_scope(scope, "openid") && has_scope(scope, "profile")
}

/// The claims each scope value grants (OIDC Core §5.4).
const SCOPE_CLAIMS: [(&str, &[&str]); 2] = [
    ("email", &["email", "email_verified"]),
    (
        "profile",
        &[
            "name",
            "preferred_username",
            "customer_id",
            "locale",
            "updated_at",
        ],
    ),
];

/// Claims about the user allowed by `scope` (OIDC Core §5.4), and those
/// `requested` by name (§5.5); a claim the account lacks is left out.
fn user_claims(user: &User, scope: &str, requested: &[String], c: &mut Map<String, Value>) {
    let by_scope = SCOPE_CLAIMS
        .iter()
        .filter(|(s, _)| has_scope(scope, s))
        .flat_map(|(_, names)| names.iter().copied());
    for name in by_scope.chain(requested.iter().map(String::as_str)) {
        if c.contains_key(name) {
            continue;
        }
        if let Some(v) = user_claim(user, name) {
            c.insert(name.to_owned(), v);
        }
    }
}

/// One claim about the user, if the account has it.
fn user_claim(user: &User, name: &str) -> Option<Value> {
    Some(match name {
        "email" => user.email.as_str().into(),
        "email_verified" => user.email_verified.into(),
        "name" => user.name.clone()?.into(),
        "preferred_username" | "customer_id" => user.customer_id.as_str().into(),
        "locale" => user.locale.clone()?.into(),
        "updated_at" => user.updated_at.unix_timestamp().into(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_verifier_rules() {
        // RFC 7636 appendix B.
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let c = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(check_code_verifier(Some(c), Some(v)).is_ok());
        assert!(check_code_verifier(None, None).is_ok());
        for (ch, ve) in [
            (Some(c), None),
            (None, Some(v)),
            (Some(c), Some("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK")),
            (Some(c), Some("short")),
        ] {
            assert_eq!(
                check_code_verifier(ch, ve).unwrap_err().code,
                ErrorCode::InvalidGrant
            );
        }
    }

    fn family(scope: &str, jkt: Option<&str>) -> TokenFamily {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        TokenFamily {
            claims: Default::default(),
            id: Uuid::now_v7(),
            user_id: UserId(Uuid::now_v7()),
            client_id: ClientId("portal".into()),
            scope: scope.into(),
            sid: None,
            auth_time: now,
            acr: None,
            amr: vec![],
            created_at: now,
            expires_at: now + time::Duration::hours(1),
            revoked_at: None,
            revoked_reason: None,
            resources: vec![],
            dpop_jkt: jkt.map(str::to_owned),
        }
    }

    #[test]
    fn refresh_tokens_keep_their_key_and_scope() {
        let bound = family("openid email", Some("key-a"));
        assert!(check_refresh_key(&bound, Some("key-a")).is_ok());
        for presented in [None, Some("key-b")] {
            assert_eq!(
                check_refresh_key(&bound, presented).unwrap_err().code,
                ErrorCode::InvalidGrant
            );
        }
        let unbound = family("openid email", None);
        assert!(check_refresh_key(&unbound, Some("key-b")).is_ok());
        assert!(check_refresh_key(&unbound, None).is_ok());

        let params = |scope: &str| RawParams::new([("scope".to_owned(), scope.to_owned())]);
        assert_eq!(
            check_refresh_scope(&RawParams::new([]), &unbound).unwrap(),
            "openid email"
        );
        assert_eq!(
            check_refresh_scope(&params("email"), &unbound).unwrap(),
            "email"
        );
        assert_eq!(
            check_refresh_scope(&params("openid offline_access"), &unbound).unwrap(),
            "openid",
            "offline_access not granted is dropped"
        );
        assert_eq!(
            check_refresh_scope(&params("openid profile"), &unbound)
                .unwrap_err()
                .code,
            ErrorCode::InvalidScope
        );
    }

    #[test]
    fn codes_bound_to_a_key_need_it() {
        let record = |jkt: Option<&str>| CodeRecord {
            client_id: "portal".into(),
            redirect_uri: "https://rp.example/cb".into(),
            scope: "openid".into(),
            nonce: None,
            code_challenge: None,
            user_id: UserId(Uuid::now_v7()),
            sid: "s".into(),
            auth_time: 0,
            acr: "1".into(),
            amr: vec![],
            expires_at: i64::MAX,
            claims: Default::default(),
            resources: vec![],
            dpop_jkt: jkt.map(str::to_owned),
        };
        assert!(check_code_key(&record(None), None).is_ok());
        assert!(check_code_key(&record(Some("k")), Some("k")).is_ok());
        for presented in [None, Some("other")] {
            assert_eq!(
                check_code_key(&record(Some("k")), presented)
                    .unwrap_err()
                    .code,
                ErrorCode::InvalidGrant
            );
        }
    }

    #[test]
    fn at_hash_is_left_half_of_sha256() {
        // OIDC Core example value for "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y".
        assert_eq!(
            at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }
}
