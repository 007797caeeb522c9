//! `OidcUpstreams` against a scripted upstream (`scripted/mod.rs`): the
//! authorization request, the checks of the answer and of the ID token
//! (each forgery gives its own `UpstreamError`), the claim mapping, and what
//! is cached (discovery and JWKS for an hour, JWKS fetched again once for an
//! unknown `kid`). Time is the injected settable clock, shared with the
//! upstream: tests advance it instead of sleeping.

mod scripted;

use base64::Engine;
use idp_core::clock::SettableClock;
use idp_core::federation::{
    UpstreamCallback, UpstreamError, UpstreamIdentity, UpstreamRequest, Upstreams,
};
use idp_core::secret::Secret;
use idp_upstream::{ClaimMapping, OidcUpstreams, UpstreamSettings};
use scripted::{Hits, IssParam, Mode, Registration, SUBJECT, ScriptedUpstream, Signing, UserInfo};
use serde_json::json;
use sha2::Digest;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const NAME: &str = "scripted";
/// The downstream provider (the one under test) only names its redirect URI:
/// nothing needs to listen there.
const OUR_ISSUER: &str = "http://localhost:8443";
const CLIENT_ID: &str = "downstream-idp";
const SECRET: &str = "scripted-client-secret-0123456789abcdef";

struct Rig {
    up: ScriptedUpstream,
    upstreams: OidcUpstreams,
    clock: SettableClock,
    /// The browser: no redirects followed.
    http: reqwest::Client,
}

fn redirect_uri() -> String {
    format!("{OUR_ISSUER}/login/upstream/{NAME}/callback")
}

async fn rig_with(public: bool, adjust: impl FnOnce(&mut UpstreamSettings)) -> Rig {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = ScriptedUpstream::start(
        listener,
        Registration {
            client_id: CLIENT_ID.into(),
            client_secret: (!public).then(|| SECRET.into()),
            redirect_uri: redirect_uri(),
        },
    )
    .await;
    let clock = SettableClock::starting_now();
    up.use_clock(Arc::new(clock.clone()));
    let mut settings = UpstreamSettings {
        name: NAME.into(),
        display_name: "Scripted SSO".into(),
        issuer: up.issuer.clone(),
        client_id: CLIENT_ID.into(),
        client_secret: (!public).then(|| Secret::new(SECRET)),
        scopes: vec!["openid".into(), "email".into(), "profile".into()],
        clients: vec!["portal".into()],
        policy: Default::default(),
        claims: ClaimMapping::default(),
    };
    adjust(&mut settings);
    let upstreams = OidcUpstreams::new(
        OUR_ISSUER,
        vec![settings],
        Arc::new(clock.clone()),
        Duration::from_secs(10),
    )
    .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Rig {
        up,
        upstreams,
        clock,
        http,
    }
}

async fn rig() -> Rig {
    rig_with(false, |_| {}).await
}

fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

impl Rig {
    /// A new request and the upstream's answer to it (it answers at once).
    async fn answer(&self) -> Result<(UpstreamRequest, UpstreamCallback), UpstreamError> {
        let req = UpstreamRequest::new(NAME);
        let url = self.upstreams.authorization_url(&req).await?;
        let res = self.http.get(&url).send().await.unwrap();
        assert_eq!(res.status(), 303, "{:?}", res.text().await);
        let to = res.headers()["location"].to_str().unwrap().to_owned();
        assert!(to.starts_with(&redirect_uri()), "{to}");
        let q = query(&to);
        assert_eq!(q["state"], req.state);
        let cb = UpstreamCallback {
            code: Secret::new(q["code"].clone()),
            iss: q.get("iss").cloned(),
        };
        Ok((req, cb))
    }

    /// A whole sign-in at the upstream.
    async fn sign_in(&self) -> Result<UpstreamIdentity, UpstreamError> {
        let (req, cb) = self.answer().await?;
        self.upstreams.finish(&req, &cb).await
    }

    fn mode(&self, change: impl FnOnce(&mut Mode)) {
        self.up.set_mode(change);
    }

    fn now(&self) -> i64 {
        use idp_core::clock::Clock;
        self.clock.now().unix_timestamp()
    }
}

#[tokio::test]
async fn the_request_and_a_valid_answer() {
    let r = rig().await;
    let req = UpstreamRequest::new(NAME);
    let url = r.upstreams.authorization_url(&req).await.unwrap();
    assert!(
        url.starts_with(&format!("{}/authorize?", r.up.issuer)),
        "{url}"
    );
    let q = query(&url);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], redirect_uri());
    let mut scopes: Vec<&str> = q["scope"].split(' ').collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["email", "openid", "profile"]);
    assert_eq!(q["state"], req.state);
    assert_eq!(q["nonce"], req.nonce);
    assert_eq!(q["code_challenge_method"], "S256");
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(req.pkce_verifier.as_bytes()));
    assert_eq!(q["code_challenge"], challenge);
    assert!(!url.contains(&req.pkce_verifier), "the verifier stays here");

    let id = r.sign_in().await.unwrap();
    assert_eq!(id.upstream, NAME);
    assert_eq!(id.issuer, r.up.issuer);
    assert_eq!(id.subject, SUBJECT);
    assert_eq!(id.email.as_deref(), Some("bob@partner.example"));
    assert!(id.email_verified);
    assert_eq!(id.name.as_deref(), Some("Bob Partner"));
    assert_eq!(id.amr, ["pwd"]);
    assert!(
        r.up.token_refusals().is_empty(),
        "client_secret_basic, code, redirect_uri and PKCE verifier accepted: {:?}",
        r.up.token_refusals()
    );
    assert_eq!(
        r.up.hits(),
        Hits {
            discovery: 1,
            jwks: 1,
            // The first URL was only looked at, not followed.
            authorize: 1,
            token: 1,
            userinfo: 1
        }
    );
}

#[tokio::test]
async fn a_public_registration_sends_its_client_id_alone() {
    let r = rig_with(true, |_| {}).await;
    let id = r.sign_in().await.unwrap();
    assert_eq!(id.subject, SUBJECT);
    assert!(
        r.up.token_refusals().is_empty(),
        "{:?}",
        r.up.token_refusals()
    );
}

/// The configured mapping reads the upstream's own claim names, from the ID
/// token then UserInfo (whose `sub`, `iss`, `aud` and `amr` never override
/// the ID token's); `email_verified` may be the string "true"; junk `amr`
/// values are dropped.
#[tokio::test]
async fn claims_are_mapped_from_the_id_token_and_userinfo() {
    let r = rig_with(false, |s| {
        s.claims = ClaimMapping {
            email: "mail".into(),
            email_verified: "mail_verified".into(),
            name: "display_name".into(),
            username: Some("uid".into()),
        };
    })
    .await;
    r.mode(|m| {
        m.profile = json!({
            "mail": "bob@partner.example",
            "mail_verified": "true",
            "email": "decoy@partner.example",
            "email_verified": false,
            "name": "Not This Name",
            "amr": ["pwd", "otp", "Not Valid!", "x".repeat(40)],
        })
        .as_object()
        .cloned()
        .unwrap();
        m.userinfo_claims = json!({
            "display_name": "Bob Partner",
            "uid": "ab12345-idp",
            "amr": ["hwk"],
            "iss": "https://evil.example",
        })
        .as_object()
        .cloned()
        .unwrap();
    });
    let id = r.sign_in().await.unwrap();
    assert_eq!(id.email.as_deref(), Some("bob@partner.example"));
    assert!(id.email_verified);
    assert_eq!(id.name.as_deref(), Some("Bob Partner"));
    assert_eq!(id.username.as_deref(), Some("ab12345-idp"));
    assert_eq!(id.amr, ["pwd", "otp"]);
    assert_eq!(id.issuer, r.up.issuer);
}

/// Discovery and the JWKS are fetched once an hour, not per sign-in.
#[tokio::test]
async fn discovery_and_keys_are_cached_for_an_hour() {
    let r = rig().await;
    for _ in 0..3 {
        r.sign_in().await.unwrap();
    }
    let h = r.up.hits();
    assert_eq!((h.discovery, h.jwks), (1, 1), "{h:?}");
    r.clock.advance(time::Duration::minutes(59));
    r.sign_in().await.unwrap();
    let h = r.up.hits();
    assert_eq!((h.discovery, h.jwks), (1, 1), "still fresh: {h:?}");
    r.clock.advance(time::Duration::minutes(2));
    r.sign_in().await.unwrap();
    let h = r.up.hits();
    assert_eq!(
        (h.discovery, h.jwks),
        (2, 2),
        "an hour old: fetched again {h:?}"
    );
}

/// Key rotation: a token under a `kid` the cache does not hold makes the
/// adapter fetch the keys again, once; the new key is then cached.
#[tokio::test]
async fn a_new_kid_fetches_the_keys_again_once() {
    let r = rig().await;
    r.sign_in().await.unwrap();
    let old = r.up.kid();
    let new = r.up.rotate_key();
    assert_ne!(old, new);
    r.sign_in().await.unwrap();
    assert_eq!(r.up.hits().jwks, 2);
    r.sign_in().await.unwrap();
    assert_eq!(r.up.hits().jwks, 2, "the new key is cached");
}

/// A key the JWKS does not hold, even after fetching it again: refused,
/// after exactly one more fetch.
#[tokio::test]
async fn an_unknown_key_is_refused_after_one_refetch() {
    let r = rig().await;
    r.mode(|m| m.signing = Signing::UnpublishedKey);
    let e = r.sign_in().await.unwrap_err();
    assert!(matches!(e, UpstreamError::Invalid(_)), "{e:?}");
    assert_eq!(r.up.hits().jwks, 2, "one refetch, not more");
    let e = r.sign_in().await.unwrap_err();
    assert!(matches!(e, UpstreamError::Invalid(_)), "{e:?}");
    assert_eq!(r.up.hits().jwks, 3, "one refetch per token");
}

/// Another key under the published `kid`: a bad signature (no refetch: the
/// key is known).
#[tokio::test]
async fn another_key_under_the_published_kid_is_refused() {
    let r = rig().await;
    r.mode(|m| m.signing = Signing::UnpublishedKeySameKid);
    let e = r.sign_in().await.unwrap_err();
    assert!(matches!(e, UpstreamError::Invalid(_)), "{e:?}");
    assert_eq!(r.up.hits().jwks, 1);
}

/// The ID token expires on the injected clock: minted when the user signed
/// in at the upstream (valid 5 minutes), exchanged 6 minutes later.
#[tokio::test]
async fn an_id_token_expired_on_the_injected_clock_is_refused() {
    let r = rig().await;
    let (req, cb) = r.answer().await.unwrap();
    r.clock.advance(time::Duration::minutes(6));
    let e = r.upstreams.finish(&req, &cb).await.unwrap_err();
    assert!(
        matches!(e, UpstreamError::Invalid(ref m) if m.contains("expired")),
        "{e:?}"
    );
    // 4 minutes later: still valid.
    let (req, cb) = r.answer().await.unwrap();
    r.clock.advance(time::Duration::minutes(4));
    r.upstreams.finish(&req, &cb).await.unwrap();
}

/// The discovery document names another issuer: nothing starts, and the
/// document is not cached (the next attempt fetches it again).
#[tokio::test]
async fn discovery_of_another_issuer_is_refused() {
    let r = rig().await;
    r.mode(|m| m.discovery_issuer = Some("https://evil.example".into()));
    let e = r
        .upstreams
        .authorization_url(&UpstreamRequest::new(NAME))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, UpstreamError::Unavailable(m) if m.contains("https://evil.example")),
        "a misconfigured upstream cannot be used: {e:?}"
    );
    let e = r
        .upstreams
        .authorization_url(&UpstreamRequest::new(NAME))
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::Unavailable(_)), "{e:?}");
    assert_eq!(r.up.hits().discovery, 2, "a wrong document is not cached");
    assert_eq!(r.up.hits().jwks, 0);
    r.mode(|m| m.discovery_issuer = None);
    r.sign_in().await.unwrap();
}

/// An upstream without RFC 9207 support may leave `iss` out.
#[tokio::test]
async fn no_iss_parameter_when_the_upstream_does_not_advertise_it() {
    let r = rig().await;
    r.mode(|m| {
        m.advertise_iss = false;
        m.iss_param = IssParam::Missing;
    });
    r.sign_in().await.unwrap();
}

/// An upstream without UserInfo: the ID token's claims alone.
#[tokio::test]
async fn no_userinfo_endpoint() {
    let r = rig().await;
    r.mode(|m| m.userinfo = UserInfo::NotOffered);
    let id = r.sign_in().await.unwrap();
    assert_eq!(id.email.as_deref(), Some("bob@partner.example"));
    assert_eq!(r.up.hits().userinfo, 0);
}

/// One test per forged answer: the mode, and the error it must give. The
/// code is exchanged only when the answer's `iss` is right (a code from a
/// mixed-up answer never goes to the token endpoint).
macro_rules! refused {
    ($($name:ident: $mode:expr => $pat:pat, token calls $calls:expr;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let r = rig().await;
                let now = r.now();
                #[allow(clippy::redundant_closure_call)]
                r.mode(|m| ($mode)(m, now));
                let e = r.sign_in().await.expect_err("a forged answer must be refused");
                assert!(matches!(e, $pat), "{e:?}");
                assert_eq!(r.up.hits().token, $calls, "token endpoint calls");
            }
        )*
    };
}

refused! {
    id_token_of_another_issuer:
        |m: &mut Mode, _| { m.forge("iss", json!("https://evil.example")); }
        => UpstreamError::WrongIssuer(_), token calls 1;
    iss_parameter_of_another_issuer:
        |m: &mut Mode, _| m.iss_param = IssParam::Other("https://evil.example".into())
        => UpstreamError::WrongIssuer(_), token calls 0;
    iss_parameter_missing_though_advertised:
        |m: &mut Mode, _| m.iss_param = IssParam::Missing
        => UpstreamError::WrongIssuer(_), token calls 0;
    audience_of_another_client:
        |m: &mut Mode, _| { m.forge("aud", json!("someone-else")); }
        => UpstreamError::Invalid(_), token calls 1;
    audiences_ours_and_another_without_azp:
        |m: &mut Mode, _| { m.forge("aud", json!([CLIENT_ID, "someone-else"])); }
        => UpstreamError::Invalid(_), token calls 1;
    audiences_ours_and_another_with_azp_of_the_other:
        |m: &mut Mode, _| { m.forge("aud", json!([CLIENT_ID, "someone-else"])).forge("azp", json!("someone-else")); }
        => UpstreamError::Invalid(_), token calls 1;
    // OIDC Core §3.1.3.7 step 5, and the adapter's own documentation: an
    // `azp` must be our client_id.
    azp_of_another_client:
        |m: &mut Mode, _| { m.forge("azp", json!("someone-else")); }
        => UpstreamError::Invalid(_), token calls 1;
    wrong_nonce:
        |m: &mut Mode, _| { m.forge("nonce", json!("not-the-nonce")); }
        => UpstreamError::Invalid(_), token calls 1;
    no_nonce:
        |m: &mut Mode, _| { m.drop_claim("nonce"); }
        => UpstreamError::Invalid(_), token calls 1;
    expired:
        |m: &mut Mode, now: i64| { m.forge("iat", json!(now - 600)).forge("exp", json!(now - 1)); }
        => UpstreamError::Invalid(_), token calls 1;
    // The adapter documents that it checks `iat`: a token issued an hour
    // from now is not one the upstream just issued.
    issued_in_the_future:
        |m: &mut Mode, now: i64| { m.forge("iat", json!(now + 3600)).forge("exp", json!(now + 3900)); }
        => UpstreamError::Invalid(_), token calls 1;
    unsigned:
        |m: &mut Mode, _| { m.signing = Signing::None; m.algs = vec!["RS256".into(), "none".into()]; }
        => UpstreamError::Invalid(_), token calls 1;
    mac_with_the_client_secret:
        |m: &mut Mode, _| { m.signing = Signing::Hs256(SECRET.into()); m.algs = vec!["RS256".into(), "HS256".into()]; }
        => UpstreamError::Invalid(_), token calls 1;
    no_id_token:
        |m: &mut Mode, _| m.id_token = false
        => UpstreamError::Invalid(_), token calls 1;
    no_sub:
        |m: &mut Mode, _| { m.drop_claim("sub"); }
        => UpstreamError::Invalid(_), token calls 1;
    userinfo_of_another_subject:
        |m: &mut Mode, _| m.userinfo_sub = Some("someone-else".into())
        => UpstreamError::Invalid(_), token calls 1;
    userinfo_failing:
        |m: &mut Mode, _| m.userinfo = UserInfo::Status(500)
        => UpstreamError::Unavailable(_), token calls 1;
    code_refused:
        |m: &mut Mode, _| m.token_error = Some("invalid_grant".into())
        => UpstreamError::Refused(_), token calls 1;
}
