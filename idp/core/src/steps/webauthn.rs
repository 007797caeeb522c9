//! WebAuthn as a second factor: security keys and passkeys, platform or
//! roaming, several per user, each named by the user. Verification is
//! webauthn-rs's; this module owns the ceremony state (kept in the step's
//! scratch, so in the short-lived store), the stored credentials (kind
//! `webauthn`, the secret being the webauthn-rs credential as JSON: public
//! data, never sent back to the browser), the signature counter and the
//! enrollment during login.
//!
//! Every credential is registered as a client-side discoverable one when the
//! authenticator can (`residentKey: "preferred"`), with the user's id as the
//! user handle, so any enrolled key also works for passwordless login (see
//! [`passkey`](super::passkey)).
//!
//! User verification follows `login_methods.webauthn_user_verification`:
//! `required` uses webauthn-rs's passkey ceremonies (UV at registration and at
//! every use), `preferred` its security-key ceremonies (UV when the
//! authenticator can; a key registered with UV must keep using it), and
//! `discouraged` its user-presence-only security keys.

use crate::domain::{StoredCredential, User, UserId};
use crate::error::CoreError;
use crate::flow::{
    Applicability, Challenge, Proven, Step, StepCx, StepInput, StepOutcome, StepPorts,
    WebauthnSettings,
};
use crate::method::{Assurance, Factor, MethodId, StepTraits};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use webauthn_rs::prelude::{
    AuthenticationResult, CredentialID, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, SecurityKey, SecurityKeyAuthentication,
    SecurityKeyRegistration, Url, Webauthn, WebauthnBuilder, WebauthnError,
};

/// The credential kind in storage.
pub const KIND: &str = "webauthn";
/// The name a key gets when the user leaves the field empty.
pub const DEFAULT_KEY_NAME: &str = "Security key";
/// Longest key name, in characters.
pub const MAX_KEY_NAME_CHARS: usize = 64;

/// `login_methods.webauthn_user_verification`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserVerification {
    Required,
    Preferred,
    Discouraged,
}

impl UserVerification {
    /// The setting's value; `None` for anything else (a config error).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "required" => Some(Self::Required),
            "preferred" => Some(Self::Preferred),
            "discouraged" => Some(Self::Discouraged),
            _ => None,
        }
    }

    /// The flow's setting, else the provider-wide one.
    fn of(cx: &StepCx<'_>) -> Result<Self, CoreError> {
        let s = cx
            .flow
            .and_then(|f| f.webauthn_user_verification.as_deref())
            .unwrap_or(&cx.ports.settings.webauthn_user_verification);
        Self::setting(s)
    }

    /// The provider-wide setting (outside login flows: the account page).
    fn provider_wide(ports: &StepPorts) -> Result<Self, CoreError> {
        Self::setting(&ports.settings.webauthn_user_verification)
    }

    fn setting(s: &str) -> Result<Self, CoreError> {
        Self::parse(s).ok_or_else(|| {
            CoreError::Internal(format!(
                "login_methods.webauthn_user_verification = {s:?}: expected required, preferred or discouraged"
            ))
        })
    }
}

/// The relying party of this issuer (cheap to build: one hash of the RP id).
pub(crate) fn relying_party(
    settings: &WebauthnSettings,
    uv: UserVerification,
) -> Result<Webauthn, CoreError> {
    let s = settings;
    let origin = Url::parse(&s.origin)
        .map_err(|e| CoreError::Internal(format!("WebAuthn origin {:?}: {e}", s.origin)))?;
    let builder = WebauthnBuilder::new(&s.rp_id, &origin).map_err(|e| {
        CoreError::Internal(format!(
            "WebAuthn needs an issuer with a host name (not an IP address): RP id {:?}, origin {:?}: {e}",
            s.rp_id, s.origin
        ))
    })?;
    builder
        .rp_name(&s.rp_name)
        .danger_set_user_presence_only_security_keys(uv == UserVerification::Discouraged)
        .build()
        .map_err(|e| CoreError::Internal(format!("WebAuthn relying party: {e}")))
}

/// Creation options for the browser, and the state to keep. `required`
/// makes a webauthn-rs passkey (UV at registration and every use), else a
/// security key (UV as the setting says).
fn start_registration(
    rp: &Webauthn,
    uv: UserVerification,
    user: &User,
    exclude: Vec<CredentialID>,
) -> Result<(serde_json::Value, RegistrationState), CoreError> {
    let display_name = user
        .name
        .clone()
        .unwrap_or_else(|| user.email.as_str().to_owned());
    let (mut options, state) = if uv == UserVerification::Required {
        let (ccr, st) = rp
            .start_passkey_registration(
                user.id.0,
                user.email.as_str(),
                &display_name,
                Some(exclude),
            )
            .map_err(webauthn_error)?;
        (browser_options(&ccr)?, RegistrationState::Passkey(st))
    } else {
        let (ccr, st) = rp
            .start_securitykey_registration(
                user.id.0,
                user.email.as_str(),
                &display_name,
                Some(exclude),
                None,
                None,
            )
            .map_err(webauthn_error)?;
        (browser_options(&ccr)?, RegistrationState::SecurityKey(st))
    };
    // Discoverable when the authenticator can, so the key also signs in
    // without a password; not required, so keys without storage for
    // resident credentials still enroll. (Only the browser's options change:
    // webauthn-rs checks nothing about residency.)
    if let Some(sel) = options
        .pointer_mut("/publicKey/authenticatorSelection")
        .and_then(|s| s.as_object_mut())
    {
        sel.insert("residentKey".into(), "preferred".into());
        sel.insert("requireResidentKey".into(), false.into());
    }
    Ok((options, state))
}

/// Checks a registration; the new credential's id and its JSON to store.
fn finish_registration(
    rp: &Webauthn,
    state: &RegistrationState,
    posted: &RegisterPublicKeyCredential,
) -> Result<Result<(CredentialID, String), WebauthnError>, CoreError> {
    let registered = match state {
        RegistrationState::Passkey(st) => rp
            .finish_passkey_registration(posted, st)
            .map(|k| (k.cred_id().clone(), serde_json::to_string(&k))),
        RegistrationState::SecurityKey(st) => rp
            .finish_securitykey_registration(posted, st)
            .map(|k| (k.cred_id().clone(), serde_json::to_string(&k))),
    };
    match registered {
        Ok((id, Ok(json))) => Ok(Ok((id, json))),
        Ok((_, Err(e))) => Err(CoreError::Internal(format!("WebAuthn credential: {e}"))),
        Err(e) => Ok(Err(e)),
    }
}

/// Request options for the browser listing `keys`, and the state to keep.
fn start_authentication(
    rp: &Webauthn,
    uv: UserVerification,
    keys: &[EnrolledKey],
) -> Result<(serde_json::Value, AuthenticationState), CoreError> {
    if uv == UserVerification::Required {
        let passkeys: Vec<Passkey> = keys.iter().map(|k| k.passkey.clone()).collect();
        let (rcr, st) = rp
            .start_passkey_authentication(&passkeys)
            .map_err(webauthn_error)?;
        Ok((browser_options(&rcr)?, AuthenticationState::Passkey(st)))
    } else {
        let security_keys = keys
            .iter()
            .map(EnrolledKey::security_key)
            .collect::<Result<Vec<_>, _>>()?;
        let (rcr, st) = rp
            .start_securitykey_authentication(&security_keys)
            .map_err(webauthn_error)?;
        Ok((browser_options(&rcr)?, AuthenticationState::SecurityKey(st)))
    }
}

/// Checks an assertion (challenge, origin, RP id, signature, UV) against
/// the state.
fn finish_authentication(
    rp: &Webauthn,
    state: &AuthenticationState,
    posted: &PublicKeyCredential,
) -> Result<AuthenticationResult, WebauthnError> {
    match state {
        AuthenticationState::Passkey(st) => rp.finish_passkey_authentication(posted, st),
        AuthenticationState::SecurityKey(st) => rp.finish_securitykey_authentication(posted, st),
    }
}

/// A stored credential and its webauthn-rs form. [`Passkey`] and
/// [`SecurityKey`] serialize alike (`{"cred": ...}`), so one stored JSON
/// serves either ceremony; the policy it was registered with stays inside.
pub(crate) struct EnrolledKey {
    pub(crate) stored: StoredCredential,
    pub(crate) passkey: Passkey,
}

impl EnrolledKey {
    fn security_key(&self) -> Result<SecurityKey, CoreError> {
        serde_json::from_str(&self.stored.secret)
            .map_err(|e| CoreError::Internal(format!("stored WebAuthn credential: {e}")))
    }
}

/// A user's WebAuthn credentials; unreadable ones are logged and left out.
pub(crate) async fn enrolled_keys(
    ports: &StepPorts,
    user: UserId,
) -> Result<Vec<EnrolledKey>, CoreError> {
    let stored = ports.credentials.list_credentials(user, KIND).await?;
    Ok(stored
        .into_iter()
        .filter_map(|c| match serde_json::from_str::<Passkey>(&c.secret) {
            Ok(passkey) => Some(EnrolledKey { stored: c, passkey }),
            Err(e) => {
                tracing::error!(credential = %c.id, error = %e, "unreadable WebAuthn credential skipped");
                None
            }
        })
        .collect())
}

/// The enrolled key an assertion was made with.
pub(crate) fn key_for(keys: Vec<EnrolledKey>, credential_id: &[u8]) -> Option<EnrolledKey> {
    keys.into_iter()
        .find(|k| k.passkey.cred_id().as_slice() == credential_id)
}

/// RFC 8176 `amr` of a WebAuthn assertion or registration.
///
/// - `hwk` (proof of possession of a hardware-secured key) when the
///   authenticator declares the credential device-bound (flag BE = 0), `swk`
///   (software-secured key) when it declares it backup-eligible: a synced
///   passkey's private key leaves the device inside a cloud keychain.
///   Without attestation both are the authenticator's word.
/// - `mfa` when the authenticator verified the user (flag UV: PIN or
///   biometrics on the device): possession plus knowledge or inherence.
///   The modality is not known (browsers do not return `uvm`), so no `pin`
///   or `fpt` is claimed.
/// - never `user`: RFC 8176 means a presence test by it, which every
///   assertion carries (flag UP) and which is not an authentication factor.
pub(crate) fn amr(backup_eligible: bool, user_verified: bool) -> Vec<String> {
    let mut amr = vec![if backup_eligible { "swk" } else { "hwk" }.to_owned()];
    if user_verified {
        amr.push("mfa".into());
    }
    amr
}

/// What an assertion with these `amr` values proved: possession of the key,
/// and with user verification (`mfa`) a PIN or biometrics checked by the
/// authenticator (a multi-factor authenticator, NIST SP 800-63B §5.1.9).
pub(crate) fn proven(amr: Vec<String>, credential: Option<Uuid>) -> Proven {
    let factors = if amr.iter().any(|a| a == "mfa") {
        vec![Factor::Possession, Factor::Verified]
    } else {
        vec![Factor::Possession]
    };
    Proven {
        amr,
        factors,
        credential,
    }
}

/// What became of a verified assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyUse {
    /// Counter and flags stored: the step passes.
    Recorded,
    /// The signature counter did not increase over the stored one: refused.
    PossibleClone,
    /// The key was used elsewhere meanwhile (the compare-and-swap lost): refused.
    Concurrent,
}

/// The signature counter stored with a key (0: the authenticator keeps none).
fn stored_counter(secret: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(secret)
        .ok()
        .and_then(|v| v["cred"]["counter"].as_u64())
        .unwrap_or(0)
}

/// After a verified assertion: checks the signature counter against the
/// one stored now (W3C WebAuthn §7.2 step 22) and stores the new counter
/// and flags with a compare-and-swap on the stored JSON (setting
/// `last_used_at`).
///
/// The check is needed here although webauthn-rs makes it: its
/// second-factor ceremonies compare with the copy of the credential taken
/// into the challenge state when the page was shown, which an assertion
/// made meanwhile by a clone has moved past.
pub(crate) async fn record_use(
    ports: &StepPorts,
    method: &MethodId,
    key: &EnrolledKey,
    result: &AuthenticationResult,
) -> Result<KeyUse, CoreError> {
    let stored = stored_counter(&key.stored.secret);
    let counter = u64::from(result.counter());
    if (counter > 0 || stored > 0) && counter <= stored {
        log_refusal(
            method,
            key.stored.user_id,
            key.stored.id,
            &WebauthnError::CredentialPossibleCompromise,
        );
        return Ok(KeyUse::PossibleClone);
    }
    let mut passkey = key.passkey.clone();
    let secret = match passkey.update_credential(result) {
        Some(true) => serde_json::to_string(&passkey)
            .map_err(|e| CoreError::Internal(format!("WebAuthn credential: {e}")))?,
        _ => key.stored.secret.clone(),
    };
    let swapped = ports
        .credentials
        .update_credential_secret(
            key.stored.id,
            &key.stored.secret,
            &secret,
            ports.clock.now(),
        )
        .await?;
    Ok(if swapped {
        KeyUse::Recorded
    } else {
        KeyUse::Concurrent
    })
}

/// Logs a refused assertion; a signature counter that did not increase is a
/// sign of a cloned authenticator (W3C WebAuthn §7.2 step 22) and is a
/// warning.
pub(crate) fn log_refusal(method: &MethodId, user: UserId, credential: Uuid, e: &WebauthnError) {
    if matches!(e, WebauthnError::CredentialPossibleCompromise) {
        tracing::warn!(
            method = method.as_str(),
            user = %user,
            credential = %credential,
            "WebAuthn signature counter did not increase: possibly a cloned authenticator; assertion refused"
        );
    } else {
        tracing::info!(method = method.as_str(), user = %user, credential = %credential, error = %e, "WebAuthn assertion refused");
    }
}

/// The browser's credential JSON, as `webauthn.js` posts it.
pub(crate) fn posted<T: serde::de::DeserializeOwned>(input: &StepInput) -> Option<T> {
    let raw = input.get("credential")?.trim();
    if raw.is_empty() {
        return None;
    }
    serde_json::from_str(raw).ok()
}

/// Options as the browser gets them: webauthn-rs's JSON, less the hints
/// meant for its own clients (`security-key` would hide platform
/// authenticators) and any mediation (the page asks on a button press).
pub(crate) fn browser_options<T: Serialize>(options: &T) -> Result<serde_json::Value, CoreError> {
    let mut v = serde_json::to_value(options)
        .map_err(|e| CoreError::Internal(format!("WebAuthn options: {e}")))?;
    if let Some(o) = v.as_object_mut() {
        o.remove("mediation");
    }
    if let Some(pk) = v.get_mut("publicKey").and_then(|p| p.as_object_mut()) {
        pk.remove("hints");
    }
    Ok(v)
}

/// Ceremony state between the page and its submission.
#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WebauthnScratch {
    #[default]
    Idle,
    /// Authentication options were sent; single use.
    Authenticating(AuthenticationState),
    /// Creation options were sent; single use.
    Registering(RegistrationState),
    /// Enrolled and the new recovery codes were shown: the next submit
    /// (`acknowledge=1`) passes the step with these `amr`.
    RecoveryCodesShown { amr: Vec<String> },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AuthenticationState {
    Passkey(PasskeyAuthentication),
    SecurityKey(SecurityKeyAuthentication),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RegistrationState {
    Passkey(PasskeyRegistration),
    SecurityKey(SecurityKeyRegistration),
}

fn webauthn_error(e: WebauthnError) -> CoreError {
    CoreError::Internal(format!("WebAuthn: {e}"))
}

/// The recovery codes page; `codes` only right after they were made.
fn recovery_codes_challenge(codes: Option<Vec<String>>) -> Challenge {
    let c = Challenge::new("recovery_codes");
    match codes {
        Some(codes) => c.with("codes", codes),
        None => c.with("already_shown", true),
    }
}

fn acknowledge(input: &StepInput, amr: Vec<String>) -> StepOutcome {
    if input.get("acknowledge") == Some("1") {
        StepOutcome::Passed(proven(amr, None))
    } else {
        StepOutcome::Again(recovery_codes_challenge(None))
    }
}

/// A key name as typed: trimmed, the default when empty; `None` when too
/// long or holding control characters.
fn key_name(raw: Option<&str>) -> Option<String> {
    let name = raw.unwrap_or_default().trim();
    if name.is_empty() {
        return Some(DEFAULT_KEY_NAME.to_owned());
    }
    (name.chars().count() <= MAX_KEY_NAME_CHARS && !name.chars().any(char::is_control))
        .then(|| name.to_owned())
}

/// Flags of a freshly registered credential, read from its JSON.
fn registered_flags(secret: &str) -> (bool, bool) {
    let v: serde_json::Value = serde_json::from_str(secret).unwrap_or_default();
    let flag = |name: &str| v["cred"][name].as_bool().unwrap_or(false);
    (flag("backup_eligible"), flag("user_verified"))
}

/// The method's id in client files, templates and URLs.
pub static ID: MethodId = MethodId::new(NAME);
const NAME: &str = "webauthn";

static TRAITS: StepTraits = StepTraits {
    amr: &["hwk", "swk", "mfa"],
    enrollable: true,
    second_factor: true,
    creates_recovery_codes: true,
    needs_host_name: true,
    ..StepTraits::new(
        NAME,
        Assurance {
            phishing_resistant: true,
            ..Assurance::single(&[Factor::Possession])
        },
        &["webauthn", "webauthn_enroll"],
    )
};

pub struct WebauthnStep;

impl WebauthnStep {
    /// Starts an authentication for the user's keys; the state goes to the
    /// scratch, the options to the page.
    async fn authentication_page(&self, cx: &mut StepCx<'_>) -> Result<Challenge, CoreError> {
        let uv = UserVerification::of(cx)?;
        let Some(user) = cx.subject() else {
            // An unknown identifier gets a page like anyone's, with a stable
            // made-up credential, and fails like a wrong key.
            cx.set_scratch(&WebauthnScratch::Idle)?;
            return Ok(challenge(decoy_options(cx, uv)));
        };
        let keys = enrolled_keys(cx.ports, user.id).await?;
        let rp = relying_party(&cx.ports.webauthn, uv)?;
        let (options, state) = start_authentication(&rp, uv, &keys)?;
        cx.set_scratch(&WebauthnScratch::Authenticating(state))?;
        Ok(challenge(options))
    }

    /// A refusal: the page again with fresh options (the old challenge is spent).
    async fn rejected(
        &self,
        cx: &mut StepCx<'_>,
        error: &'static str,
        count_failure: bool,
    ) -> Result<StepOutcome, CoreError> {
        let challenge = self.authentication_page(cx).await?.with_error(error);
        Ok(StepOutcome::Rejected {
            challenge,
            count_failure,
        })
    }

    /// An enrollment refusal: the enrollment page again with fresh options.
    async fn enrollment_rejected(
        &self,
        cx: &mut StepCx<'_>,
        error: &'static str,
        name: &str,
    ) -> Result<StepOutcome, CoreError> {
        let challenge = self
            .present_enrollment(cx)
            .await?
            .with("name", name)
            .with_error(error);
        Ok(StepOutcome::Rejected {
            challenge,
            count_failure: false,
        })
    }
}

fn challenge(options: serde_json::Value) -> Challenge {
    Challenge::new("webauthn")
        .with("method", ID.as_str())
        .with("options", options)
}

/// Request options for an unknown identifier: a fresh challenge and one
/// credential id derived from the identifier (the same on every attempt, as
/// a real user's would be).
fn decoy_options(cx: &StepCx<'_>, uv: UserVerification) -> serde_json::Value {
    let mac = cx.ports.kek.mac(
        "webauthn-decoy-credential",
        cx.identifier
            .unwrap_or_default()
            .trim()
            .to_lowercase()
            .as_bytes(),
    );
    let id: Vec<u8> = (0..mac.len() / 2)
        .filter_map(|i| u8::from_str_radix(&mac[2 * i..2 * i + 2], 16).ok())
        .collect();
    serde_json::json!({
        "publicKey": {
            "challenge": crate::random::token(),
            "timeout": 300_000,
            "rpId": cx.ports.webauthn.rp_id,
            "allowCredentials": [{"type": "public-key", "id": URL_SAFE_NO_PAD.encode(id)}],
            "userVerification": match uv {
                UserVerification::Required => "required",
                UserVerification::Preferred => "preferred",
                UserVerification::Discouraged => "discouraged",
            },
        }
    })
}

#[async_trait]
impl Step for WebauthnStep {
    fn traits(&self) -> &StepTraits {
        &TRAITS
    }

    fn template(&self, enrolling: bool) -> &'static str {
        if enrolling {
            "webauthn_enroll"
        } else {
            "webauthn"
        }
    }

    async fn applies(&self, cx: &StepCx<'_>) -> Result<Applicability, CoreError> {
        super::enrolled_or_enroll(cx, KIND).await
    }

    async fn present(&self, cx: &mut StepCx<'_>) -> Result<Challenge, CoreError> {
        // Right after enrollment the user has a key, so the runner calls
        // `present`/`submit` rather than their enrollment versions.
        if let WebauthnScratch::RecoveryCodesShown { .. } = cx.scratch() {
            return Ok(recovery_codes_challenge(None));
        }
        self.authentication_page(cx).await
    }

    async fn submit(
        &self,
        cx: &mut StepCx<'_>,
        input: &StepInput,
    ) -> Result<StepOutcome, CoreError> {
        let state = match cx.scratch() {
            WebauthnScratch::RecoveryCodesShown { amr } => return Ok(acknowledge(input, amr)),
            WebauthnScratch::Authenticating(state) => Some(state),
            WebauthnScratch::Idle | WebauthnScratch::Registering(_) => None,
        };
        // Single use: whatever follows, this challenge is spent.
        cx.set_scratch(&WebauthnScratch::Idle)?;
        let Some(posted) = posted::<PublicKeyCredential>(input) else {
            return self
                .rejected(cx, "login.webauthn.no_credential", false)
                .await;
        };
        let (Some(user), Some(state)) = (cx.subject(), state) else {
            return self.rejected(cx, "login.webauthn.failed", true).await;
        };
        let keys = enrolled_keys(cx.ports, user.id).await?;
        // Only this user's keys: an assertion by another account's key fails here.
        let Some(key) = key_for(keys, posted.raw_id.as_slice()) else {
            tracing::info!(user = %user.id, "WebAuthn assertion by a credential this user does not have");
            return self.rejected(cx, "login.webauthn.failed", true).await;
        };
        let uv = UserVerification::of(cx)?;
        let rp = relying_party(&cx.ports.webauthn, uv)?;
        let result = match finish_authentication(&rp, &state, &posted) {
            Ok(r) => r,
            Err(e) => {
                log_refusal(&ID, user.id, key.stored.id, &e);
                return self.rejected(cx, "login.webauthn.failed", true).await;
            }
        };
        match record_use(cx.ports, &ID, &key, &result).await? {
            KeyUse::Recorded => {}
            KeyUse::PossibleClone => return self.rejected(cx, "login.webauthn.failed", true).await,
            KeyUse::Concurrent => return self.rejected(cx, "login.webauthn.retry", false).await,
        }
        Ok(StepOutcome::Passed(proven(
            amr(result.backup_eligible(), result.user_verified()),
            Some(key.stored.id),
        )))
    }

    async fn present_enrollment(&self, cx: &mut StepCx<'_>) -> Result<Challenge, CoreError> {
        if let WebauthnScratch::RecoveryCodesShown { .. } = cx.scratch() {
            return Ok(recovery_codes_challenge(None));
        }
        let Some(user) = cx.subject() else {
            return Err(CoreError::Internal(
                "WebAuthn enrollment needs a known user".into(),
            ));
        };
        let uv = UserVerification::of(cx)?;
        let rp = relying_party(&cx.ports.webauthn, uv)?;
        // The authenticator refuses to make a second credential for an
        // account it already holds one for.
        let exclude: Vec<CredentialID> = enrolled_keys(cx.ports, user.id)
            .await?
            .iter()
            .map(|k| k.passkey.cred_id().clone())
            .collect();
        let (options, state) = start_registration(&rp, uv, user, exclude)?;
        cx.set_scratch(&WebauthnScratch::Registering(state))?;
        Ok(Challenge::new("webauthn_enroll")
            .with("method", ID.as_str())
            .with("options", options)
            .with("name_max", MAX_KEY_NAME_CHARS))
    }

    async fn submit_enrollment(
        &self,
        cx: &mut StepCx<'_>,
        input: &StepInput,
    ) -> Result<StepOutcome, CoreError> {
        let state = match cx.scratch() {
            WebauthnScratch::RecoveryCodesShown { amr } => return Ok(acknowledge(input, amr)),
            WebauthnScratch::Registering(state) => Some(state),
            WebauthnScratch::Idle | WebauthnScratch::Authenticating(_) => None,
        };
        cx.set_scratch(&WebauthnScratch::Idle)?;
        let typed_name = input.get("name").unwrap_or_default().to_owned();
        let Some(name) = key_name(Some(&typed_name)) else {
            return self
                .enrollment_rejected(cx, "login.webauthn.name_invalid", &typed_name)
                .await;
        };
        let (Some(user), Some(state)) = (cx.subject(), state) else {
            return self
                .enrollment_rejected(cx, "login.webauthn.enroll_failed", &name)
                .await;
        };
        let Some(posted) = posted::<RegisterPublicKeyCredential>(input) else {
            return self
                .enrollment_rejected(cx, "login.webauthn.no_credential", &name)
                .await;
        };
        let uv = UserVerification::of(cx)?;
        let rp = relying_party(&cx.ports.webauthn, uv)?;
        let stored =
            match store_registration(cx.ports, &rp, user, &state, &posted, name.clone()).await? {
                Ok(stored) => stored,
                Err(error) => return self.enrollment_rejected(cx, error, &name).await,
            };
        let (backup_eligible, user_verified) = registered_flags(&stored.secret);
        let amr = amr(backup_eligible, user_verified);
        finish_enrollment(cx, user, amr).await
    }
}

/// Checks a registration and stores the new key under `name`; the inner
/// `Err` is the message id shown to the user.
async fn store_registration(
    ports: &StepPorts,
    rp: &Webauthn,
    user: &User,
    state: &RegistrationState,
    posted: &RegisterPublicKeyCredential,
    name: String,
) -> Result<Result<StoredCredential, &'static str>, CoreError> {
    let (credential_id, secret) = match finish_registration(rp, state, posted)? {
        Ok(registered) => registered,
        Err(e) => {
            tracing::info!(user = %user.id, error = %e, "WebAuthn registration refused");
            return Ok(Err("login.webauthn.enroll_failed"));
        }
    };
    let keys = enrolled_keys(ports, user.id).await?;
    if key_for(keys, credential_id.as_slice()).is_some() {
        return Ok(Err("login.webauthn.already_registered"));
    }
    let stored = StoredCredential {
        id: Uuid::now_v7(),
        user_id: user.id,
        kind: KIND.into(),
        label: Some(name),
        secret,
        created_at: ports.clock.now(),
        last_used_at: None,
    };
    ports.credentials.create_credential(&stored).await?;
    tracing::info!(user = %user.id, "WebAuthn key enrolled");
    Ok(Ok(stored))
}

/// Starts registering a key outside a login flow (the account page), under
/// the provider-wide user verification setting: the creation options for
/// the browser (as `webauthn.js` reads them) and the ceremony state to keep
/// server-side until the browser answers (opaque JSON, single use).
pub async fn begin_registration(
    ports: &StepPorts,
    user: &User,
) -> Result<(serde_json::Value, String), CoreError> {
    let uv = UserVerification::provider_wide(ports)?;
    let rp = relying_party(&ports.webauthn, uv)?;
    let exclude: Vec<CredentialID> = enrolled_keys(ports, user.id)
        .await?
        .iter()
        .map(|k| k.passkey.cred_id().clone())
        .collect();
    let (options, state) = start_registration(&rp, uv, user, exclude)?;
    let state = serde_json::to_string(&state)
        .map_err(|e| CoreError::Internal(format!("WebAuthn registration state: {e}")))?;
    Ok((options, state))
}

/// Finishes a registration begun by [`begin_registration`]: `credential` is
/// the JSON `webauthn.js` posts. Stores the key under `name` (checked by the
/// caller); the inner `Err` is the message id shown to the user.
pub async fn finish_registration_for(
    ports: &StepPorts,
    user: &User,
    state: &str,
    credential: &str,
    name: String,
) -> Result<Result<StoredCredential, &'static str>, CoreError> {
    let Ok(state) = serde_json::from_str::<RegistrationState>(state) else {
        return Ok(Err("login.webauthn.enroll_failed"));
    };
    let credential = credential.trim();
    let Some(posted) = (!credential.is_empty())
        .then(|| serde_json::from_str::<RegisterPublicKeyCredential>(credential).ok())
        .flatten()
    else {
        return Ok(Err("login.webauthn.no_credential"));
    };
    let uv = UserVerification::provider_wide(ports)?;
    let rp = relying_party(&ports.webauthn, uv)?;
    store_registration(ports, &rp, user, &state, &posted, name).await
}

/// After a key is stored: the first second factor brings recovery codes,
/// shown once and acknowledged before the step passes.
async fn finish_enrollment(
    cx: &mut StepCx<'_>,
    user: &User,
    amr: Vec<String>,
) -> Result<StepOutcome, CoreError> {
    match crate::steps::recovery_code::issue_if_first(cx, user).await? {
        Some(codes) => {
            cx.set_scratch(&WebauthnScratch::RecoveryCodesShown { amr })?;
            Ok(StepOutcome::Again(recovery_codes_challenge(Some(codes))))
        }
        None => Ok(StepOutcome::Passed(proven(amr, None))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::{CustomerId, Email, UserStatus};
    use webauthn_authenticator_rs::WebauthnAuthenticator;
    use webauthn_authenticator_rs::softpasskey::SoftPasskey;

    const ORIGIN: &str = "https://login.example.com";

    fn settings() -> WebauthnSettings {
        WebauthnSettings {
            rp_id: "login.example.com".into(),
            origin: ORIGIN.into(),
            rp_name: "Example".into(),
        }
    }

    fn user() -> User {
        let now = time::OffsetDateTime::UNIX_EPOCH;
        User {
            id: UserId::new_v7(),
            customer_id: CustomerId::parse("ab12345-idp").unwrap(),
            email: Email::parse("alice@example.com").unwrap(),
            email_verified: true,
            name: Some("Alice".into()),
            locale: None,
            status: UserStatus::Active,
            phone: None,
            phone_verified: false,
            mfa_required: false,
            last_method: None,
            backup_email: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The options round trip as the page and `webauthn.js` carry them.
    fn via_json<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> T {
        serde_json::from_value(v.clone()).unwrap()
    }

    /// Enrolls a SoftPasskey under `uv`, the state going through its JSON
    /// form as in the scratch; `Err` when the registration is refused.
    fn enroll(
        uv: UserVerification,
        authenticator: &mut SoftPasskey,
        user: &User,
    ) -> Result<EnrolledKey, WebauthnError> {
        let rp = relying_party(&settings(), uv).unwrap();
        let (options, state) = start_registration(&rp, uv, user, vec![]).unwrap();
        let selection = &options["publicKey"]["authenticatorSelection"];
        assert_eq!(selection["residentKey"], "preferred");
        assert!(options["publicKey"].get("hints").is_none());
        let state: RegistrationState = via_json(&serde_json::to_value(&state).unwrap());
        let posted = authenticator
            .do_registration(Url::parse(ORIGIN).unwrap(), via_json(&options))
            .expect("the authenticator registers");
        let (id, secret) = finish_registration(
            &rp,
            &state,
            &via_json(&serde_json::to_value(&posted).unwrap()),
        )
        .unwrap()?;
        let passkey: Passkey = serde_json::from_str(&secret).unwrap();
        assert_eq!(passkey.cred_id(), &id);
        Ok(EnrolledKey {
            stored: StoredCredential {
                id: Uuid::now_v7(),
                user_id: user.id,
                kind: KIND.into(),
                label: None,
                secret,
                created_at: time::OffsetDateTime::UNIX_EPOCH,
                last_used_at: None,
            },
            passkey,
        })
    }

    fn sign_in(
        uv: UserVerification,
        authenticator: &mut SoftPasskey,
        keys: &[EnrolledKey],
    ) -> Result<AuthenticationResult, WebauthnError> {
        let rp = relying_party(&settings(), uv).unwrap();
        let (options, state) = start_authentication(&rp, uv, keys).unwrap();
        assert_eq!(
            options["publicKey"]["userVerification"],
            match uv {
                UserVerification::Required => "required",
                UserVerification::Preferred => "preferred",
                UserVerification::Discouraged => "discouraged",
            }
        );
        let state: AuthenticationState = via_json(&serde_json::to_value(&state).unwrap());
        let posted = authenticator
            .do_authentication(Url::parse(ORIGIN).unwrap(), via_json(&options))
            .expect("the authenticator signs");
        finish_authentication(
            &rp,
            &state,
            &via_json(&serde_json::to_value(&posted).unwrap()),
        )
    }

    #[test]
    fn required_user_verification_is_enforced_at_registration() {
        // `false`: this authenticator cannot verify its user (presence only).
        let mut presence_only = SoftPasskey::new(false);
        let user = user();
        let rp = relying_party(&settings(), UserVerification::Required).unwrap();
        let (options, _) =
            start_registration(&rp, UserVerification::Required, &user, vec![]).unwrap();
        assert_eq!(
            options["publicKey"]["authenticatorSelection"]["userVerification"],
            "required"
        );
        assert!(
            presence_only
                .do_registration(Url::parse(ORIGIN).unwrap(), via_json(&options))
                .is_err(),
            "an authenticator without UV cannot answer"
        );
        let mut verifying = SoftPasskey::new(true);
        let key = enroll(UserVerification::Required, &mut verifying, &user).unwrap();
        let (backup_eligible, user_verified) = registered_flags(&key.stored.secret);
        assert!(!backup_eligible && user_verified);
        let result = sign_in(UserVerification::Required, &mut verifying, &[key]).unwrap();
        assert!(result.user_verified());
        assert_eq!(
            amr(result.backup_eligible(), result.user_verified()),
            ["hwk", "mfa"]
        );
    }

    #[test]
    fn preferred_and_discouraged_accept_keys_without_user_verification() {
        let user = user();
        for uv in [UserVerification::Preferred, UserVerification::Discouraged] {
            let mut presence_only = SoftPasskey::new(false);
            let key = enroll(uv, &mut presence_only, &user).unwrap();
            let result = sign_in(uv, &mut presence_only, &[key]).unwrap();
            assert!(!result.user_verified(), "{uv:?}");
            assert_eq!(
                amr(result.backup_eligible(), result.user_verified()),
                ["hwk"]
            );
        }
    }

    #[test]
    fn a_key_registered_with_verification_keeps_needing_it() {
        // Registered under `required`: webauthn-rs remembers the policy, so
        // a later `preferred` setting cannot drop the verification.
        let user = user();
        let mut verifying = SoftPasskey::new(true);
        let key = enroll(UserVerification::Required, &mut verifying, &user).unwrap();
        let err = sign_in(UserVerification::Preferred, &mut verifying, &[key]).unwrap_err();
        assert!(matches!(err, WebauthnError::UserNotVerified), "{err:?}");
    }

    #[test]
    fn stored_counters_are_read_from_the_credential() {
        let user = user();
        let mut device = SoftPasskey::new(true);
        let key = enroll(UserVerification::Preferred, &mut device, &user).unwrap();
        assert_eq!(stored_counter(&key.stored.secret), 0);
        let result = sign_in(
            UserVerification::Preferred,
            &mut device,
            std::slice::from_ref(&key),
        )
        .unwrap();
        let mut updated = key.passkey.clone();
        assert_eq!(updated.update_credential(&result), Some(true));
        let json = serde_json::to_string(&updated).unwrap();
        assert_eq!(stored_counter(&json), u64::from(result.counter()));
        assert!(result.counter() > 0);
        assert_eq!(stored_counter("not json"), 0);
    }

    #[test]
    fn user_verification_setting_values() {
        assert_eq!(
            UserVerification::parse("required"),
            Some(UserVerification::Required)
        );
        assert_eq!(
            UserVerification::parse("preferred"),
            Some(UserVerification::Preferred)
        );
        assert_eq!(
            UserVerification::parse("discouraged"),
            Some(UserVerification::Discouraged)
        );
        assert_eq!(UserVerification::parse("Required"), None);
        assert_eq!(UserVerification::parse(""), None);
    }

    #[test]
    fn amr_follows_the_flags() {
        assert_eq!(amr(false, false), ["hwk"]);
        assert_eq!(amr(false, true), ["hwk", "mfa"]);
        assert_eq!(amr(true, true), ["swk", "mfa"]);
        assert_eq!(amr(true, false), ["swk"]);
    }

    #[test]
    fn key_names_are_trimmed_bounded_and_defaulted() {
        assert_eq!(key_name(Some("  YubiKey 5 ")).as_deref(), Some("YubiKey 5"));
        assert_eq!(key_name(Some("   ")).as_deref(), Some(DEFAULT_KEY_NAME));
        assert_eq!(key_name(None).as_deref(), Some(DEFAULT_KEY_NAME));
        assert_eq!(
            key_name(Some(&"é".repeat(64))).map(|n| n.chars().count()),
            Some(64)
        );
        assert_eq!(key_name(Some(&"k".repeat(65))), None);
        assert_eq!(key_name(Some("bad\u{0}name")), None);
    }

    #[test]
    fn browser_options_drop_hints_and_mediation() {
        let v = browser_options(&serde_json::json!({
            "publicKey": {"challenge": "abc", "hints": ["security-key"]},
            "mediation": "conditional"
        }))
        .unwrap();
        assert_eq!(v, serde_json::json!({"publicKey": {"challenge": "abc"}}));
    }

    #[test]
    fn scratch_survives_a_round_trip_and_garbage_is_idle() {
        let s = WebauthnScratch::RecoveryCodesShown {
            amr: vec!["hwk".into()],
        };
        let back: WebauthnScratch =
            serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert!(matches!(back, WebauthnScratch::RecoveryCodesShown { amr } if amr == ["hwk"]));
        let idle: WebauthnScratch =
            serde_json::from_value(serde_json::Value::Null).unwrap_or_default();
        assert!(matches!(idle, WebauthnScratch::Idle));
    }
}
