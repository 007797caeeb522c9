//! Resource indicators (RFC 8707): the resource servers declared in
//! `idp.toml` (`[[resource_servers]]`) plus this provider's own admin API,
//! which clients name with the `resource` parameter at the authorization
//! and token endpoints. A token asked for with resources has them, and only
//! them, as its audience (RFC 8707 §2), lives no longer than the shortest
//! of their `access_token_secs`, and is described by introspection only to
//! the clients of those resource servers (and its own client).

use super::error::{ErrorCode, OAuthError};
use crate::access_token::{ADMIN_API_SCOPE, admin_api_audience};
use crate::client::Client;
use crate::domain::ClientId;

/// Most `resource` values one request may name (bounds hostile input).
pub const MAX_RESOURCES: usize = 8;

/// One resource server (`[[resource_servers]]` in `idp.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceServer {
    /// Its resource indicator: an absolute URI without a fragment (RFC 8707
    /// §2), the `aud` of the tokens issued for it.
    pub identifier: String,
    pub name: String,
    /// Tokens for it live at most this long (the client's lifetime
    /// otherwise).
    pub access_token_secs: Option<u32>,
    /// The clients that may ask for tokens for it.
    pub clients: Vec<ClientId>,
    /// The clients it authenticates as at the introspection endpoint: they
    /// are told about tokens whose audience holds it, and no other.
    pub introspection_clients: Vec<ClientId>,
    /// The clients that may obtain tokens for it by token exchange (RFC
    /// 8693), on behalf of their users.
    pub exchange_clients: Vec<ClientId>,
}

/// Whether `uri` may be a resource indicator: an absolute URI with a scheme
/// and a host, without a fragment (RFC 8707 §2). Returns why not.
pub fn check_identifier(uri: &str) -> Result<(), &'static str> {
    let parsed = url::Url::parse(uri).map_err(|_| "not an absolute URI")?;
    if parsed.fragment().is_some() || uri.contains('#') {
        return Err("must not contain a fragment (RFC 8707 §2)");
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("must name a host");
    }
    if uri.len() > 512 {
        return Err("longer than 512 characters");
    }
    Ok(())
}

/// Every resource server this provider issues tokens for.
#[derive(Debug, Clone, Default)]
pub struct ResourceServers {
    servers: Vec<ResourceServer>,
    /// The admin API's identifier (`<issuer>/admin/api`), a resource of its
    /// own: clients whose `scopes` list `admin_api` may ask for it.
    admin_api: String,
}

impl ResourceServers {
    pub fn new(issuer: &str, servers: Vec<ResourceServer>) -> Self {
        Self {
            servers,
            admin_api: admin_api_audience(issuer),
        }
    }

    /// The declared resource servers (not the admin API).
    pub fn declared(&self) -> &[ResourceServer] {
        &self.servers
    }

    fn find(&self, identifier: &str) -> Option<&ResourceServer> {
        self.servers.iter().find(|s| s.identifier == identifier)
    }

    /// Whether `client` may ask for tokens for `identifier`.
    fn allows(&self, client: &Client, identifier: &str) -> bool {
        if identifier == self.admin_api {
            return client.scopes.contains(ADMIN_API_SCOPE);
        }
        self.find(identifier)
            .is_some_and(|s| s.clients.contains(&client.id))
    }

    /// RFC 8707 §2: the `resource` values of a request, checked: each an
    /// absolute URI without fragment that this provider serves and `client`
    /// may ask for, else `invalid_target`. Duplicates are dropped; order is
    /// kept.
    pub fn check_requested(
        &self,
        client: &Client,
        requested: &[String],
    ) -> Result<Vec<String>, OAuthError> {
        if requested.len() > MAX_RESOURCES {
            return Err(invalid_target(format!(
                "at most {MAX_RESOURCES} resource values"
            )));
        }
        let mut out: Vec<String> = Vec::new();
        for r in requested {
            if let Err(why) = check_identifier(r) {
                return Err(OAuthError::new(
                    ErrorCode::InvalidTarget,
                    "a resource is not an absolute URI without a fragment",
                )
                .with_detail(format!("resource {r:?}: {why}")));
            }
            if !self.allows(client, r) {
                return Err(invalid_target(format!(
                    "resource {r:?} is not declared, or not for client {}",
                    client.id.0
                )));
            }
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        Ok(out)
    }

    /// RFC 8707 §2.2: at the token endpoint, `requested` must be among the
    /// resources the grant holds (`granted`); none requested means all of
    /// them.
    pub fn narrow(
        &self,
        client: &Client,
        granted: &[String],
        requested: &[String],
    ) -> Result<Vec<String>, OAuthError> {
        let requested = self.check_requested(client, requested)?;
        if requested.is_empty() {
            return Ok(granted.to_vec());
        }
        if let Some(extra) = requested.iter().find(|r| !granted.contains(r)) {
            return Err(invalid_target(format!(
                "resource {extra:?} was not part of the authorization"
            )));
        }
        Ok(requested)
    }

    /// The lifetime of an access token for `resources`: the client's, or
    /// the shortest a resource server sets.
    pub fn access_token_secs(&self, client: &Client, resources: &[String]) -> u32 {
        resources
            .iter()
            .filter_map(|r| self.find(r).and_then(|s| s.access_token_secs))
            .fold(client.lifetimes.access_token, u32::min)
    }

    /// RFC 8693 §2.1 (`resource`, `audience`) and §2.2.2: the target of a
    /// token exchange, one declared resource server named by its identifier
    /// (`resource` or `audience`) or its name (`audience`), whose
    /// `exchange_clients` list `client`; else `invalid_target`. Neither
    /// parameter: `invalid_request`.
    pub fn check_exchange_target(
        &self,
        client: &Client,
        resources: &[String],
        audience: Option<&str>,
    ) -> Result<&ResourceServer, OAuthError> {
        if resources.len() > MAX_RESOURCES {
            return Err(invalid_target(format!(
                "at most {MAX_RESOURCES} resource values"
            )));
        }
        let mut target: Option<&ResourceServer> = None;
        let named = resources
            .iter()
            .map(|r| (r.as_str(), self.find(r)))
            .chain(audience.map(|a| {
                let by_name = || self.servers.iter().find(|s| s.name == a);
                (a, self.find(a).or_else(by_name))
            }));
        for (value, server) in named {
            let server = server.ok_or_else(|| {
                invalid_target(format!("{value:?} is not a declared resource server"))
            })?;
            match target {
                Some(t) if t.identifier != server.identifier => {
                    return Err(invalid_target(
                        "a token exchange is for one resource server".into(),
                    ));
                }
                _ => target = Some(server),
            }
        }
        let target = target.ok_or_else(|| {
            OAuthError::invalid_request("resource or audience is required for a token exchange")
        })?;
        if !target.exchange_clients.contains(&client.id) {
            return Err(invalid_target(format!(
                "client {} may not obtain tokens for {} by exchange",
                client.id.0, target.identifier
            )));
        }
        Ok(target)
    }

    /// Whether any client may exchange tokens (discovery).
    pub fn any_exchange(&self) -> bool {
        self.servers.iter().any(|s| !s.exchange_clients.is_empty())
    }

    /// Whether `client`, at the introspection endpoint, may be told about
    /// the access token `issued_to` got for audience `aud`:
    /// - the client the token was issued to, always;
    /// - an introspection client of resource servers: only tokens for one of
    ///   them (a resource server learns nothing of tokens meant for others);
    /// - any other confidential client: tokens for no declared resource
    ///   server (the portals' own tokens, as before resource servers).
    pub fn may_introspect(&self, client: &ClientId, issued_to: &str, aud: &[String]) -> bool {
        if client.0 == issued_to {
            return true;
        }
        let serves = |s: &&ResourceServer| s.introspection_clients.contains(client);
        if self.servers.iter().any(|s| serves(&s)) {
            return aud.iter().any(|a| self.find(a).is_some_and(|s| serves(&s)));
        }
        !aud.iter().any(|a| self.find(a).is_some())
    }
}

fn invalid_target(detail: String) -> OAuthError {
    OAuthError::new(
        ErrorCode::InvalidTarget,
        "the requested resource is not available to this client",
    )
    .with_detail(detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str, scopes: &[&str]) -> Client {
        let mut c = crate::oidc::authorize::tests::client(false);
        c.id = ClientId(id.into());
        c.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        c
    }

    fn servers() -> ResourceServers {
        ResourceServers::new(
            "https://idp.example",
            vec![ResourceServer {
                identifier: "https://billing.example/api".into(),
                name: "Billing".into(),
                access_token_secs: Some(120),
                clients: vec![ClientId("console".into())],
                introspection_clients: vec![ClientId("billing".into())],
                exchange_clients: vec![ClientId("portal".into())],
            }],
        )
    }

    #[test]
    fn identifiers_are_absolute_uris_without_fragment() {
        assert!(check_identifier("https://api.example/v1").is_ok());
        assert!(check_identifier("urn:example:api").is_err());
        assert!(check_identifier("/relative").is_err());
        assert!(check_identifier("https://api.example/#frag").is_err());
        assert!(check_identifier("https://api.example/#").is_err());
    }

    #[test]
    fn only_declared_resources_of_the_client_are_granted() {
        let s = servers();
        let console = client("console", &["openid"]);
        let other = client("other", &["openid"]);
        let want = vec!["https://billing.example/api".to_owned()];
        assert_eq!(s.check_requested(&console, &want).unwrap(), want);
        let e = s.check_requested(&other, &want).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTarget);
        let e = s
            .check_requested(&console, &["https://undeclared.example/".into()])
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTarget);
        let e = s
            .check_requested(&console, &["https://billing.example/api#x".into()])
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTarget);
        let twice = vec![want[0].clone(), want[0].clone()];
        assert_eq!(s.check_requested(&console, &twice).unwrap(), want);
    }

    #[test]
    fn the_admin_api_is_a_resource_for_clients_with_its_scope() {
        let s = servers();
        let admin = vec!["https://idp.example/admin/api".to_owned()];
        assert!(
            s.check_requested(&client("ops", &["admin_api"]), &admin)
                .is_ok()
        );
        assert!(
            s.check_requested(&client("ops", &["openid"]), &admin)
                .is_err()
        );
    }

    #[test]
    fn token_requests_narrow_the_granted_resources() {
        let s = servers();
        let console = client("console", &["openid", "admin_api"]);
        let granted = vec![
            "https://billing.example/api".to_owned(),
            "https://idp.example/admin/api".to_owned(),
        ];
        assert_eq!(s.narrow(&console, &granted, &[]).unwrap(), granted);
        assert_eq!(
            s.narrow(&console, &granted, &granted[1..]).unwrap(),
            granted[1..].to_vec()
        );
        let e = s
            .narrow(&console, &granted[..1], &granted[1..])
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTarget);
    }

    #[test]
    fn exchanges_target_one_declared_resource_of_the_client() {
        let s = servers();
        let portal = client("portal", &["openid"]);
        let billing = "https://billing.example/api".to_owned();
        let got = |r: &[String], a: Option<&str>| {
            s.check_exchange_target(&portal, r, a)
                .map(|t| t.identifier.clone())
                .map_err(|e| e.code)
        };
        assert_eq!(
            got(std::slice::from_ref(&billing), None),
            Ok(billing.clone())
        );
        assert_eq!(got(&[], Some(&billing)), Ok(billing.clone()));
        assert_eq!(got(&[], Some("Billing")), Ok(billing.clone()));
        assert_eq!(
            got(std::slice::from_ref(&billing), Some("Billing")),
            Ok(billing.clone())
        );
        assert_eq!(got(&[], None), Err(ErrorCode::InvalidRequest));
        assert_eq!(got(&[], Some("Storage")), Err(ErrorCode::InvalidTarget));
        assert_eq!(
            got(&["https://idp.example/admin/api".into()], None),
            Err(ErrorCode::InvalidTarget)
        );
        // Not an exchange client of billing.
        let console = client("console", &["openid"]);
        assert_eq!(
            s.check_exchange_target(&console, &[billing], None)
                .unwrap_err()
                .code,
            ErrorCode::InvalidTarget
        );
    }

    #[test]
    fn lifetimes_and_introspection_follow_the_resource() {
        let s = servers();
        let console = client("console", &["openid"]);
        let billing = vec!["https://billing.example/api".to_owned()];
        assert_eq!(s.access_token_secs(&console, &billing), 120);
        assert_eq!(
            s.access_token_secs(&console, &[]),
            console.lifetimes.access_token
        );
        let id = |s: &str| ClientId(s.into());
        // The resource server sees tokens for it, not the portals' own.
        assert!(s.may_introspect(&id("billing"), "console", &billing));
        assert!(!s.may_introspect(&id("billing"), "console", &["console".into()]));
        // The client a token was issued to sees it; others not, when it is
        // for a resource server.
        assert!(s.may_introspect(&id("console"), "console", &billing));
        assert!(!s.may_introspect(&id("portal"), "console", &billing));
        // Tokens for no resource server: any confidential client.
        assert!(s.may_introspect(&id("portal"), "console", &["console".into()]));
    }
}
