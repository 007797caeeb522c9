//! The admin API (`/admin/api/...`): JSON over HTTP, authenticated by an
//! access token this provider issued (`Authorization: Bearer ...`).
//!
//! Two kinds of callers:
//! - the platform operator: a `client_credentials` token of a client with
//!   `[account] platform_admin = true`; lists, validates and rejects
//!   organizations;
//!   links or unlinks accounts to upstream identities; and ends a user's
//!   sessions (their portals hear of it by back-channel logout);
//! - members of an organization, with a token obtained by signing in; what
//!   they may do is decided by the core from their roles in *that*
//!   organization (see `idp_core::accounts::orgs::OrgAction`).
//!
//! Errors are `{"error", "error_description"}` with 400, 401, 403, 404 or 409.

use super::{Peer, peer_addr, request_meta};
use crate::app::AppState;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use idp_core::accounts::orgs::{
    MAX_AUDIT_EVENTS, MemberManager, MemberView, OrgAction, OrgActor, OrgError, PlatformOperator,
    SecuritySettings, parse_roles,
};
use idp_core::domain::RequestMeta;
use idp_core::domain::{
    AuditEvent, ClientId, Email, Membership, OrgId, OrgStatus, Organization, UserId, UserStatus,
};
use serde::Deserialize;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/api/organizations", get(list_orgs))
        .route("/admin/api/organizations/{id}", get(get_org))
        .route("/admin/api/organizations/{id}/validate", post(validate))
        .route("/admin/api/organizations/{id}/reject", post(reject))
        .route(
            "/admin/api/organizations/{id}/members",
            get(list_members).post(add_member),
        )
        .route(
            "/admin/api/organizations/{id}/members/{user_id}",
            axum::routing::delete(remove_member),
        )
        .route(
            "/admin/api/organizations/{id}/members/{user_id}/roles",
            put(set_roles),
        )
        .route(
            "/admin/api/organizations/{id}/security",
            get(get_security).put(put_security),
        )
        .route("/admin/api/organizations/{id}/audit", get(audit))
        .route("/admin/api/webhooks/deliveries", get(list_deliveries))
        .route(
            "/admin/api/users/{user_id}/identities",
            get(list_identities).post(link_identity),
        )
        .route(
            "/admin/api/users/{user_id}/identities/{upstream}",
            axum::routing::delete(unlink_identity),
        )
        .route(
            "/admin/api/users/{user_id}/sessions/revoke",
            post(revoke_sessions),
        )
}

/// An API error.
struct ApiError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// More fields of the body (boxed: errors stay small).
    extra: Option<Box<(&'static str, Value)>>,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            extra: None,
        }
    }

    fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "a valid access token issued by this provider is required (Authorization: Bearer ...)",
        )
    }

    /// A valid token of this provider, but not issued for the admin API.
    fn not_for_this_api() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            format!(
                "this access token was not issued for the admin API (request the {} scope)",
                idp_core::access_token::ADMIN_API_SCOPE
            ),
        )
    }

    fn bad_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.error, "error_description": self.description});
        if let Some((k, v)) = self.extra.map(|b| *b) {
            body[k] = v;
        }
        let challenge = match (self.status, self.error) {
            // RFC 9470 §3: the client sends the user back for a stronger sign-in.
            (_, "insufficient_user_authentication") => Some(
                r#"Bearer error="insufficient_user_authentication", error_description="a sign-in with a second factor is required""#,
            ),
            (StatusCode::UNAUTHORIZED, _) => Some(r#"Bearer error="invalid_token""#),
            _ => None,
        };
        let mut res = (self.status, axum::Json(body)).into_response();
        if let Some(c) = challenge {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        res
    }
}

impl From<OrgError> for ApiError {
    fn from(e: OrgError) -> Self {
        let d = e.to_string();
        match e {
            OrgError::Forbidden => Self::new(StatusCode::FORBIDDEN, "forbidden", d),
            OrgError::MfaRequired => {
                // RFC 9470 §3 answers 401 with the challenge.
                Self::new(
                    StatusCode::UNAUTHORIZED,
                    "insufficient_user_authentication",
                    d,
                )
            }
            OrgError::NotFound | OrgError::MemberNotFound => {
                Self::new(StatusCode::NOT_FOUND, "not_found", d)
            }
            OrgError::AlreadyDecided(_) | OrgError::AlreadyMember | OrgError::LastAdministrator => {
                Self::new(StatusCode::CONFLICT, "conflict", d)
            }
            OrgError::Invalid(_) => Self::bad_request(d),
            OrgError::InvalidSettings(problems) => Self {
                extra: Some(Box::new(("rules", json!(problems)))),
                ..Self::bad_request(
                    problems
                        .iter()
                        .map(|p| format!("{}: {}", p.field, p.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            },
            OrgError::Core(e) => internal(&e),
        }
    }
}

fn internal(e: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "admin API request failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "internal error",
    )
}

type ApiResult = Result<Response, ApiError>;

/// Who called, from the bearer token.
enum Caller {
    /// A signed-in user, through a client; `multi_factor` when the sign-in
    /// behind the token used two kinds of factor.
    User {
        user: UserId,
        client: ClientId,
        multi_factor: bool,
    },
    /// A client on its own behalf (`client_credentials`).
    Client(Box<idp_core::access_token::AccessTokenInfo>),
}

async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(ApiError::unauthorized)?;
    let info = state
        .provider
        .tokens
        .validate_access_token(token)
        .await
        .map_err(|e| internal(&e))?
        .ok_or_else(ApiError::unauthorized)?;
    // Only tokens issued for the admin API: a portal's token is for the
    // portal.
    let audience = idp_core::access_token::admin_api_audience(&state.provider.settings.issuer);
    if !info.is_for(&audience) {
        return Err(ApiError::not_for_this_api());
    }
    // A DPoP-bound token is no bearer token (RFC 9449 §7.1); the admin API
    // takes bearer tokens only.
    if info.jkt.is_some() {
        return Err(ApiError::unauthorized());
    }
    match info.user_id {
        Some(user) => {
            let active = state
                .provider
                .ports
                .users
                .find_by_id(user)
                .await
                .map_err(|e| internal(&e))?
                .is_some_and(|u| u.status == UserStatus::Active);
            if !active {
                return Err(ApiError::unauthorized());
            }
            Ok(Caller::User {
                user,
                multi_factor: info.is_multi_factor(),
                client: ClientId(info.client_id),
            })
        }
        None => Ok(Caller::Client(Box::new(info))),
    }
}

async fn operator(state: &AppState, headers: &HeaderMap) -> Result<PlatformOperator, ApiError> {
    match caller(state, headers).await? {
        Caller::Client(info) => Ok(state.provider.organizations.platform_operator(&info)?),
        Caller::User { .. } => Err(OrgError::Forbidden.into()),
    }
}

/// A member of organization `org` allowed to do `action` there.
async fn actor(
    state: &AppState,
    headers: &HeaderMap,
    org: &str,
    action: OrgAction,
) -> Result<OrgActor, ApiError> {
    let caller = caller(state, headers).await?;
    let Caller::User {
        user,
        client,
        multi_factor,
    } = caller
    else {
        return Err(OrgError::Forbidden.into());
    };
    let org = parse_org_id(org).ok_or(OrgError::Forbidden)?;
    Ok(state
        .provider
        .organizations
        .org_actor(user, Some(&client), org, action, multi_factor)
        .await?)
}

fn parse_org_id(s: &str) -> Option<OrgId> {
    uuid::Uuid::parse_str(s).ok().map(OrgId)
}

fn parse_user_id(s: &str) -> Result<UserId, ApiError> {
    uuid::Uuid::parse_str(s)
        .map(UserId)
        .map_err(|_| OrgError::MemberNotFound.into())
}

fn meta(state: &AppState, headers: &HeaderMap, peer: &Peer) -> RequestMeta {
    request_meta(state, headers, peer_addr(peer))
}

fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::bad_request(
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

fn query<T: serde::de::DeserializeOwned>(raw: Option<String>) -> Result<T, ApiError> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("query: {e}")))
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn org_json(o: &Organization) -> Value {
    json!({
        "id": o.id,
        "name": o.name,
        "siret": o.siret,
        "country": o.country,
        "status": o.status.as_str(),
        "created_by": o.created_by,
        "created_at": rfc3339(o.created_at),
        "decided_at": o.decided_at.map(rfc3339),
        "mfa_required_for": o.mfa_required_for,
        "password_policy": o.password_policy,
    })
}

fn member_json(m: &MemberView) -> Value {
    json!({
        "user_id": m.user_id,
        "email": m.email,
        "name": m.name,
        "customer_id": m.customer_id,
        "roles": m.roles,
        "invitation_pending": m.invitation_pending,
        "joined_at": rfc3339(m.joined_at),
    })
}

fn event_json(e: &AuditEvent) -> Value {
    json!({
        "id": e.id,
        "at": rfc3339(e.at),
        "kind": e.kind,
        "user_id": e.user_id,
        "client_id": e.client_id,
        "org_id": e.org_id,
        "ip": e.ip,
        "user_agent": e.user_agent,
        "detail": e.detail,
    })
}

fn ok(v: Value) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<u64>,
    offset: Option<u64>,
}

async fn list_orgs(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q: ListQuery = query(q)?;
    let op = operator(&state, &headers).await?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(OrgStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request("status: expected pending, validated or rejected")
        })?),
    };
    let orgs = state
        .provider
        .organizations
        .list_organizations(
            &op,
            status,
            q.limit.unwrap_or(100).clamp(1, 1000),
            q.offset.unwrap_or(0),
        )
        .await?;
    ok(json!({"organizations": orgs.iter().map(org_json).collect::<Vec<_>>()}))
}

async fn get_org(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    // The operator sees every organization; a member only their own.
    if let Caller::Client(info) = caller(&state, &headers).await? {
        let op = state.provider.organizations.platform_operator(&info)?;
        let id = parse_org_id(&id).ok_or(OrgError::NotFound)?;
        let org = state
            .provider
            .organizations
            .operator_find_org(&op, id)
            .await?;
        return ok(org_json(&org));
    }
    let a = actor(&state, &headers, &id, OrgAction::View).await?;
    let mut v = org_json(&a.org);
    v["your_roles"] = json!(a.roles);
    ok(v)
}

async fn decide(
    state: AppState,
    headers: HeaderMap,
    peer: Peer,
    id: String,
    approve: bool,
) -> ApiResult {
    let op = operator(&state, &headers).await?;
    let id = parse_org_id(&id).ok_or(OrgError::NotFound)?;
    let org = state
        .provider
        .organizations
        .decide_organization(&op, id, approve, &meta(&state, &headers, &peer))
        .await?;
    ok(org_json(&org))
}

async fn validate(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Peer,
    Path(id): Path<String>,
) -> ApiResult {
    decide(state, headers, peer, id, true).await
}

async fn reject(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Peer,
    Path(id): Path<String>,
) -> ApiResult {
    decide(state, headers, peer, id, false).await
}

async fn list_members(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let a = actor(&state, &headers, &id, OrgAction::ListMembers).await?;
    let members = state.provider.organizations.list_org_members(&a).await?;
    ok(json!({"members": members.iter().map(member_json).collect::<Vec<_>>()}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    email: String,
    name: Option<String>,
    roles: Vec<String>,
}

async fn add_member(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Peer,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let a = actor(&state, &headers, &id, OrgAction::ManageMembers).await?;
    let input: NewMember = json_body(&headers, &body)?;
    let email = Email::parse(&input.email)
        .map_err(|_| ApiError::bad_request("email: not a valid email address"))?;
    let roles =
        parse_roles(&input.roles).map_err(|e| ApiError::bad_request(format!("roles: {e}")))?;
    let added = state
        .provider
        .organizations
        .add_org_member(
            &MemberManager::Member(a),
            &email,
            input.name,
            &roles,
            &meta(&state, &headers, &peer),
        )
        .await?;
    let v = json!({
        "user_id": added.user.id,
        "email": added.user.email.as_str(),
        "customer_id": added.user.customer_id.as_str(),
        "roles": roles,
        "created": added.created,
        "invitation_sent": added.created,
        "message": if added.created {
            "a new account was created and emailed a link to define its password"
        } else {
            "an existing account was added to the organization"
        },
    });
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Roles {
    roles: Vec<String>,
}

async fn set_roles(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Peer,
    Path((id, user_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let a = actor(&state, &headers, &id, OrgAction::ManageMembers).await?;
    let member = parse_user_id(&user_id)?;
    let input: Roles = json_body(&headers, &body)?;
    let roles =
        parse_roles(&input.roles).map_err(|e| ApiError::bad_request(format!("roles: {e}")))?;
    let m: Membership = state
        .provider
        .organizations
        .set_org_member_roles(&a, member, &roles, &meta(&state, &headers, &peer))
        .await?;
    ok(json!({"user_id": m.user_id, "roles": m.roles}))
}

async fn remove_member(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Peer,
    Path((id, user_id)): Path<(String, String)>,
) -> ApiResult {
    let a = actor(&state, &headers, &id, OrgAction::ManageMembers).await?;
    let member = parse_user_id(&user_id)?;
    state
        .provider
        .organizations
        .remove_org_member(&a, member, &meta(&state, &headers, &peer))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn security_json(o: &Organization) -> Value {
    json!({
        "mfa_required_for": o.mfa_required_for,
        "password_policy": o.password_policy,
    })
}

async fn get_security(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let a = actor(&state, &headers, &id, OrgAction::ManageSecurity).await?;
    ok(security_json(&a.org))
}

async fn put_security(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Peer,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let a = actor(&state, &headers, &id, OrgAction::ManageSecurity).await?;
    let input: SecuritySettings = json_body(&headers, &body)?;
    let org = state
        .provider
        .organizations
        .update_org_security(&a, input, &meta(&state, &headers, &peer))
        .await?;
    ok(security_json(&org))
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<u64>,
}

async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q: AuditQuery = query(q)?;
    let a = actor(&state, &headers, &id, OrgAction::ReadAudit).await?;
    let events = state
        .provider
        .organizations
        .org_audit(&a, q.limit.unwrap_or(100).min(MAX_AUDIT_EVENTS))
        .await?;
    ok(json!({"events": events.iter().map(event_json).collect::<Vec<_>>()}))
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    status: Option<String>,
    limit: Option<u64>,
}

/// The webhook outbox, newest first (platform operator).
async fn list_deliveries(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    use idp_core::webhooks::DeliveryStatus;
    let q: DeliveriesQuery = query(q)?;
    let op = operator(&state, &headers).await?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request("status: expected pending, delivered or failed")
        })?),
    };
    let deliveries = state
        .provider
        .organizations
        .list_webhook_deliveries(&op, status, q.limit.unwrap_or(100).clamp(1, 1000))
        .await
        .map_err(|e| internal(&e))?;
    let time = |t: time::OffsetDateTime| t.format(&Rfc3339).ok();
    ok(json!({"deliveries": deliveries.iter().map(|d| json!({
        "id": d.id,
        "event_id": d.event_id,
        "event_type": d.event_type.as_str(),
        "client_id": d.client_id.0,
        "url": d.url,
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "next_attempt_at": time(d.next_attempt_at),
        "last_error": d.last_error,
        "created_at": time(d.created_at),
        "delivered_at": d.delivered_at.and_then(time),
    })).collect::<Vec<_>>()}))
}

// ---- Links to upstream identities (platform operator) ----------------------

async fn account_of(state: &AppState, id: &str) -> Result<idp_core::domain::User, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such user");
    let id = uuid::Uuid::parse_str(id).map_err(|_| not_found())?;
    state
        .provider
        .ports
        .users
        .find_by_id(UserId(id))
        .await
        .map_err(|e| internal(&e))?
        .ok_or_else(not_found)
}

fn identity_json(state: &AppState, l: &idp_core::federation::FederatedIdentity) -> Value {
    json!({
        "upstream": l.upstream,
        "display_name": state.provider.federated.upstream_display_name(&l.upstream),
        "subject": l.subject,
        "email": l.email,
        "created_at": rfc3339(l.created_at),
        "last_used_at": l.last_used_at.map(rfc3339),
    })
}

/// A user's links to upstream identities.
async fn list_identities(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> ApiResult {
    operator(&state, &headers).await?;
    let user = account_of(&state, &user_id).await?;
    let links = state
        .provider
        .federated
        .linked_identities(user.id)
        .await
        .map_err(|e| internal(&e))?;
    ok(json!({
        "user_id": user.id,
        "identities": links.iter().map(|l| identity_json(&state, l)).collect::<Vec<_>>(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewIdentity {
    upstream: String,
    subject: String,
}

/// Links an upstream identity (`{"upstream", "subject"}`) to a user.
async fn link_identity(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Peer,
    Path(user_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    use idp_core::accounts::federated::LinkError;
    let op = operator(&state, &headers).await?;
    let user = account_of(&state, &user_id).await?;
    let input: NewIdentity = json_body(&headers, &body)?;
    let link = state
        .provider
        .federated
        .link_identity(
            &op,
            &user,
            &input.upstream,
            &input.subject,
            &meta(&state, &headers, &peer),
        )
        .await
        .map_err(|e| match e {
            LinkError::UnknownUpstream(_) => ApiError::bad_request(format!("upstream: {e}")),
            LinkError::InvalidSubject => ApiError::bad_request(format!("subject: {e}")),
            LinkError::AlreadyLinked => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "this identity is linked already, or the user already has a link at this upstream",
            ),
            LinkError::Core(e) => internal(&e),
        })?;
    Ok((
        StatusCode::CREATED,
        axum::Json(identity_json(&state, &link)),
    )
        .into_response())
}

/// Unlinks a user's identity at an upstream.
async fn unlink_identity(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Peer,
    Path((user_id, upstream)): Path<(String, String)>,
) -> ApiResult {
    use idp_core::accounts::federated::UnlinkError;
    let op = operator(&state, &headers).await?;
    let user = account_of(&state, &user_id).await?;
    state
        .provider
        .federated
        .unlink_identity_as_operator(&op, user.id, &upstream, &meta(&state, &headers, &peer))
        .await
        .map_err(|e| match e {
            UnlinkError::NotLinked | UnlinkError::LastWayToSignIn => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "the user has no link at this upstream",
            ),
            UnlinkError::Core(e) => internal(&e),
        })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The operator ends every session of a user (a stolen laptop, a support
/// call): the grants issued from them are revoked and each portal of each
/// session gets a back-channel logout token. `{"sessions_ended": n}`.
async fn revoke_sessions(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Peer,
    Path(user_id): Path<String>,
) -> ApiResult {
    let op = operator(&state, &headers).await?;
    let user = account_of(&state, &user_id).await?;
    let by = match &op.client_id {
        Some(c) => format!("operator:{}", c.0),
        None => "operator".to_owned(),
    };
    let n = state
        .provider
        .sessions
        .end_all(user.id, &by, &meta(&state, &headers, &peer))
        .await
        .map_err(|e| internal(&e))?;
    ok(json!({"user_id": user.id, "sessions_ended": n}))
}
