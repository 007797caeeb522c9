//! Time-based one-time passwords (RFC 6238) from an authenticator app:
//! SHA-1, 6 digits, 30-second steps, one step of clock drift either way.
//!
//! A user may have several TOTP devices, each named by the user. A device's
//! stored `secret` is [`StoredTotp`] as JSON: the seed sealed with the
//! key-encryption key (compact JWE), never in clear, and the last time step a
//! code was accepted for. A code is accepted only for a later step than that
//! one (no reuse, even within the drift window), and the step is recorded
//! with a compare-and-swap, so of two concurrent submits of one code exactly
//! one passes. Time comes from the injected clock, never the system's.
//!
//! Enrollment during login: a fresh seed, kept sealed in the step's scratch
//! state, is shown as a QR code and as a key to type; the first valid code
//! confirms it and creates the device. A user's first second factor also
//! brings their recovery codes, shown once on a page the user acknowledges
//! before the flow goes on. Nothing is stored until the code confirms, so an
//! abandoned enrollment leaves nothing behind.

use crate::domain::{StoredCredential, User};
use crate::error::CoreError;
use crate::flow::{
    Applicability, Challenge, Proven, Step, StepCx, StepInput, StepOutcome, StepPorts,
};
use crate::method::{Assurance, Factor, MethodId, StepTraits};
use crate::ports::RepoError;
use crate::secret::KeyEncryptionKey;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// The credential kind of a TOTP device.
pub const KIND: &str = "totp";
/// Seconds per time step (RFC 6238 §5.2 recommends 30).
const STEP_SECS: u64 = 30;
const DIGITS: usize = 6;
/// Name of a device when the user gives none.
pub const DEFAULT_DEVICE_NAME: &str = "Authenticator app";
/// Longest device name, in characters.
pub const MAX_DEVICE_NAME_CHARS: usize = 64;

/// The method's id in client files, templates and URLs.
pub static ID: MethodId = MethodId::new(NAME);
const NAME: &str = "totp";

static TRAITS: StepTraits = StepTraits {
    amr: &["otp"],
    enrollable: true,
    second_factor: true,
    creates_recovery_codes: true,
    ..StepTraits::new(
        NAME,
        Assurance::single(&[Factor::Possession]),
        &["code", "totp_enroll"],
    )
};

/// An authenticator app's code: possession of the device.
fn proven() -> Proven {
    Proven::new(&["otp"], &[Factor::Possession])
}

pub struct TotpStep;

/// What a TOTP credential's `secret` column holds (as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTotp {
    /// The base32 seed, sealed with the key-encryption key (compact JWE).
    pub seed: String,
    /// The last time step a code was accepted for: codes of this step and
    /// earlier ones are refused.
    pub last_step: Option<u64>,
}

impl StoredTotp {
    /// Seals `seed` for storage.
    fn seal(
        kek: &KeyEncryptionKey,
        seed: &totp_rs::Secret,
        last_step: Option<u64>,
    ) -> Result<Self, CoreError> {
        Ok(Self {
            seed: kek.seal(seed.to_base32().as_bytes())?,
            last_step,
        })
    }

    fn encode(&self) -> Result<String, CoreError> {
        serde_json::to_string(self).map_err(|e| CoreError::Internal(e.to_string()))
    }

    fn decode(stored: &str) -> Result<Self, CoreError> {
        serde_json::from_str(stored)
            .map_err(|e| CoreError::Internal(format!("a stored TOTP credential is malformed: {e}")))
    }
}

/// Opens a sealed base32 seed.
fn open_seed(kek: &KeyEncryptionKey, sealed: &str) -> Result<totp_rs::Secret, CoreError> {
    let base32 = kek.open(sealed)?;
    let base32 = std::str::from_utf8(&base32)
        .map_err(|_| CoreError::Crypto("a sealed TOTP seed is not text".into()))?;
    totp_rs::Secret::try_from_base32(base32)
        .map_err(|_| CoreError::Crypto("a sealed TOTP seed is not base32".into()))
}

/// The generator of a seed; `label` (issuer, account) only matters for the QR code.
fn generator(
    seed: totp_rs::Secret,
    label: Option<(&str, &str)>,
) -> Result<totp_rs::Totp, CoreError> {
    let mut b = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(DIGITS as u8)
        .with_skew(1)
        .with_step_duration(STEP_SECS)
        .with_secret(seed);
    if let Some((issuer, account)) = label {
        // `:` separates issuer and account in the otpauth label.
        b = b
            .with_issuer(Some(issuer.replace(':', " ").trim().to_owned()))
            .with_account_name(account.replace(':', " "));
    }
    b.build()
        .map_err(|e| CoreError::Crypto(format!("TOTP: {e}")))
}

/// Unix seconds of the injected clock (0 before 1970, which never happens).
fn unix_now(ports: &StepPorts) -> u64 {
    u64::try_from(ports.clock.now().unix_timestamp()).unwrap_or(0)
}

/// What the user typed, without spaces (apps show `123 456`).
fn normalize_code(input: Option<&str>) -> String {
    input
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// The time step `code` belongs to, if it is valid at `now` (±1 step) for a
/// step after `last_step`. Every candidate step is compared, in constant time.
fn matching_step(
    totp: &totp_rs::Totp,
    code: &str,
    now: u64,
    last_step: Option<u64>,
) -> Option<u64> {
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = now / STEP_SECS;
    let mut found = None;
    for step in current.saturating_sub(1)..=current + 1 {
        let expected = totp.generate(step * STEP_SECS).to_string();
        let equal: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
        if equal && found.is_none() && last_step.is_none_or(|last| step > last) {
            found = Some(step);
        }
    }
    found
}

/// The key as typed into an app: base32 in groups of four.
fn grouped(base32: &str) -> String {
    base32
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The device name typed at enrollment, or why it is refused.
fn device_name(input: Option<&str>) -> Result<String, &'static str> {
    let name: String = input
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
    if name.is_empty() {
        Ok(DEFAULT_DEVICE_NAME.to_owned())
    } else if name.chars().count() > MAX_DEVICE_NAME_CHARS {
        Err("login.totp.enroll.name_too_long")
    } else {
        Ok(name)
    }
}

/// The id of the device a flow enrolls for a user: derived, not random, so
/// that two concurrent confirmations of one enrollment create one device
/// (the second insert is a conflict).
fn enrolled_credential_id(flow_id: &str, user: &User) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"totp-enrollment\0")
        .chain_update(flow_id.as_bytes())
        .chain_update(b"\0")
        .chain_update(user.id.to_string().as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// This step's state between requests of one flow.
#[derive(Debug, Default, Serialize, Deserialize)]
struct TotpScratch {
    /// Enrollment: the new seed, sealed, until a code confirms it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_seed: Option<String>,
    /// Enrolled, and the new recovery codes were shown: the next submit
    /// (`acknowledge=1`) passes the step.
    #[serde(default)]
    recovery_codes_shown: bool,
}

fn code_challenge() -> Challenge {
    Challenge::new("code")
        .with("method", ID.as_str())
        .with("autocomplete", "one-time-code")
        .with("inputmode", "numeric")
}

/// The recovery codes page; `codes` only right after they were made (they
/// are never shown again).
fn recovery_codes_challenge(codes: Option<Vec<String>>) -> Challenge {
    let c = Challenge::new("recovery_codes");
    match codes {
        Some(codes) => c.with("codes", codes),
        None => c.with("already_shown", true),
    }
}

/// What an enrollment page shows for a pending seed. The seed itself stays
/// sealed server-side (in a flow's scratch, or the short-lived store for the
/// account page) until a code confirms it.
#[derive(Clone)]
pub struct TotpSetup {
    /// The seed sealed with the key-encryption key (compact JWE).
    pub sealed_seed: String,
    /// The otpauth URL as a QR code (PNG data URI).
    pub qr: String,
    /// The base32 key in groups of four, for typing into an app.
    pub key: String,
    pub issuer: String,
    pub account: String,
}

/// A fresh seed for `user`, sealed, with its QR code and key.
pub fn begin_enrollment(ports: &StepPorts, user: &User) -> Result<TotpSetup, CoreError> {
    let sealed = ports
        .kek
        .seal(totp_rs::Secret::generate().to_base32().as_bytes())?;
    enrollment_setup(ports, user, &sealed)
}

/// The QR code and key of a sealed pending seed (the same on every display).
pub fn enrollment_setup(
    ports: &StepPorts,
    user: &User,
    sealed_seed: &str,
) -> Result<TotpSetup, CoreError> {
    let seed = open_seed(&ports.kek, sealed_seed)?;
    let key = grouped(&seed.to_base32());
    let issuer = ports.settings.totp_issuer.as_str();
    let totp = generator(seed, Some((issuer, user.email.as_str())))?;
    // Not `{e}`: the error of a URL too long to draw carries the URL, seed included.
    let qr = totp.to_qr_base64().map_err(|_| {
        CoreError::Internal("TOTP QR code: the otpauth URL (issuer, account) is too long".into())
    })?;
    Ok(TotpSetup {
        sealed_seed: sealed_seed.to_owned(),
        qr: format!("data:image/png;base64,{qr}"),
        key,
        issuer: totp.issuer().unwrap_or_default().to_owned(),
        account: totp.account_name().to_owned(),
    })
}

/// Confirms a pending seed with the first code the app shows and stores the
/// device under `id` with `name` (already checked by the caller). The inner
/// `Err` is the message id shown to the user: a wrong code, or a concurrent
/// confirmation of the same enrollment (the insert under `id` conflicts).
pub async fn finish_enrollment(
    ports: &StepPorts,
    user: &User,
    sealed_seed: &str,
    name: String,
    code: &str,
    id: Uuid,
) -> Result<Result<StoredCredential, &'static str>, CoreError> {
    let seed = open_seed(&ports.kek, sealed_seed)?;
    let totp = generator(seed.clone(), None)?;
    let Some(step) = matching_step(&totp, &normalize_code(Some(code)), unix_now(ports), None)
    else {
        return Ok(Err("login.totp.invalid"));
    };
    let now = ports.clock.now();
    let device = StoredCredential {
        id,
        user_id: user.id,
        kind: KIND.into(),
        label: Some(name),
        secret: StoredTotp::seal(&ports.kek, &seed, Some(step))?.encode()?,
        created_at: now,
        last_used_at: Some(now),
    };
    match ports.credentials.create_credential(&device).await {
        Ok(()) => Ok(Ok(device)),
        Err(RepoError::Conflict(_)) => Ok(Err("login.totp.invalid")),
        Err(e) => Err(e.into()),
    }
}

/// The enrollment page for the sealed seed: QR code and key to type.
fn enrollment_challenge(
    cx: &StepCx<'_>,
    user: &User,
    sealed_seed: &str,
    name: &str,
) -> Result<Challenge, CoreError> {
    let setup = enrollment_setup(cx.ports, user, sealed_seed)?;
    Ok(Challenge::new("totp_enroll")
        .with("qr", setup.qr)
        .with("key", setup.key)
        .with("issuer", setup.issuer)
        .with("account", setup.account)
        .with("name", name)
        .with("name_max", MAX_DEVICE_NAME_CHARS))
}

/// The acknowledgment of the recovery codes page.
fn acknowledge(input: &StepInput) -> StepOutcome {
    if input.get("acknowledge") == Some("1") {
        StepOutcome::Passed(proven())
    } else {
        StepOutcome::Again(recovery_codes_challenge(None))
    }
}

#[async_trait]
impl Step for TotpStep {
    fn traits(&self) -> &StepTraits {
        &TRAITS
    }

    fn template(&self, enrolling: bool) -> &'static str {
        if enrolling { "totp_enroll" } else { "code" }
    }

    async fn applies(&self, cx: &StepCx<'_>) -> Result<Applicability, CoreError> {
        super::enrolled_or_enroll(cx, KIND).await
    }

    async fn present(&self, cx: &mut StepCx<'_>) -> Result<Challenge, CoreError> {
        // Right after enrollment the user has a device, so the runner calls
        // `present`/`submit` again rather than their enrollment versions.
        let scratch: TotpScratch = cx.scratch();
        if scratch.recovery_codes_shown {
            return Ok(recovery_codes_challenge(None));
        }
        Ok(code_challenge())
    }

    async fn submit(
        &self,
        cx: &mut StepCx<'_>,
        input: &StepInput,
    ) -> Result<StepOutcome, CoreError> {
        let scratch: TotpScratch = cx.scratch();
        if scratch.recovery_codes_shown {
            return Ok(acknowledge(input));
        }
        let rejected = || StepOutcome::Rejected {
            challenge: code_challenge().with_error("login.totp.invalid"),
            count_failure: true,
        };
        let Some(user) = cx.subject() else {
            return Ok(rejected());
        };
        let code = normalize_code(input.get("code"));
        let now = unix_now(cx.ports);
        let kek = &cx.ports.kek;
        for device in cx.ports.credentials.list_credentials(user.id, KIND).await? {
            // A device that cannot be read (corrupt, or sealed with another
            // key) must not keep the user's other devices from working.
            let opened = StoredTotp::decode(&device.secret).and_then(|stored| {
                let totp = generator(open_seed(kek, &stored.seed)?, None)?;
                Ok((stored, totp))
            });
            let (stored, totp) = match opened {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::error!(credential = %device.id, error = %e, "unreadable TOTP device skipped");
                    continue;
                }
            };
            let Some(step) = matching_step(&totp, &code, now, stored.last_step) else {
                continue;
            };
            let updated = StoredTotp {
                last_step: Some(step),
                ..stored
            }
            .encode()?;
            // Of concurrent submits of this code, only one swaps.
            let swapped = cx
                .ports
                .credentials
                .update_credential_secret(device.id, &device.secret, &updated, cx.ports.clock.now())
                .await?;
            return Ok(if swapped {
                StepOutcome::Passed(proven().with_credential(device.id))
            } else {
                rejected()
            });
        }
        Ok(rejected())
    }

    async fn present_enrollment(&self, cx: &mut StepCx<'_>) -> Result<Challenge, CoreError> {
        let user = cx
            .subject()
            .ok_or_else(|| CoreError::Internal("TOTP enrollment without a user".into()))?;
        let mut scratch: TotpScratch = cx.scratch();
        if scratch.recovery_codes_shown {
            return Ok(recovery_codes_challenge(None));
        }
        // The same seed on every display of the page (the user may have
        // scanned it already); a new one only in a new flow.
        let sealed = match scratch.pending_seed.clone() {
            Some(s) => s,
            None => {
                let s = cx
                    .ports
                    .kek
                    .seal(totp_rs::Secret::generate().to_base32().as_bytes())?;
                scratch.pending_seed = Some(s.clone());
                cx.set_scratch(&scratch)?;
                s
            }
        };
        // No name yet: the page proposes a default in the user's language.
        enrollment_challenge(cx, user, &sealed, "")
    }

    async fn submit_enrollment(
        &self,
        cx: &mut StepCx<'_>,
        input: &StepInput,
    ) -> Result<StepOutcome, CoreError> {
        let user = cx
            .subject()
            .ok_or_else(|| CoreError::Internal("TOTP enrollment without a user".into()))?;
        let mut scratch: TotpScratch = cx.scratch();
        if scratch.recovery_codes_shown {
            return Ok(acknowledge(input));
        }
        let Some(sealed) = scratch.pending_seed.clone() else {
            // No page was shown in this flow: show one.
            return Ok(StepOutcome::Again(self.present_enrollment(cx).await?));
        };
        let typed_name = input.get("name").unwrap_or_default();
        // A wrong code here guesses nothing (the seed is on the user's
        // screen), so it does not count towards the lock.
        let refuse = |cx: &StepCx<'_>, error: &'static str| -> Result<StepOutcome, CoreError> {
            Ok(StepOutcome::Rejected {
                challenge: enrollment_challenge(cx, user, &sealed, typed_name)?.with_error(error),
                count_failure: false,
            })
        };
        let name = match device_name(Some(typed_name)) {
            Ok(n) => n,
            Err(e) => return refuse(cx, e),
        };
        // A concurrent submit of this same enrollment creates the device
        // under the same derived id: the second one is refused.
        if let Err(error) = finish_enrollment(
            cx.ports,
            user,
            &sealed,
            name,
            input.get("code").unwrap_or_default(),
            enrolled_credential_id(cx.flow_id, user),
        )
        .await?
        {
            return refuse(cx, error);
        }
        scratch.pending_seed = None;
        match crate::steps::recovery_code::issue_if_first(cx, user).await? {
            Some(codes) => {
                scratch.recovery_codes_shown = true;
                cx.set_scratch(&scratch)?;
                Ok(StepOutcome::Again(recovery_codes_challenge(Some(codes))))
            }
            None => Ok(StepOutcome::Passed(proven())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SEED: &[u8] = b"12345678901234567890";

    fn totp() -> totp_rs::Totp {
        generator(totp_rs::Secret::from(RFC_SEED.to_vec()), None).unwrap()
    }

    fn code_at(t: &totp_rs::Totp, step: u64) -> String {
        t.generate(step * STEP_SECS).to_string()
    }

    #[test]
    fn matches_the_rfc_6238_sha1_vector() {
        // RFC 6238 Appendix B, T = 59: 94287082 (8 digits); 6 digits: 287082.
        assert_eq!(totp().generate(59).to_string(), "287082");
        assert_eq!(matching_step(&totp(), "287082", 59, None), Some(1));
    }

    #[test]
    fn the_window_is_one_step_either_way() {
        let t = totp();
        let now = 1_700_000_015;
        let current = now / STEP_SECS;
        for delta in [-1i64, 0, 1] {
            let step = current.checked_add_signed(delta).unwrap();
            assert_eq!(
                matching_step(&t, &code_at(&t, step), now, None),
                Some(step),
                "step {delta:+}"
            );
        }
        for delta in [-3i64, -2, 2, 3] {
            let step = current.checked_add_signed(delta).unwrap();
            assert_eq!(
                matching_step(&t, &code_at(&t, step), now, None),
                None,
                "step {delta:+}"
            );
        }
    }

    #[test]
    fn a_step_is_accepted_once() {
        let t = totp();
        let now = 1_700_000_015;
        let current = now / STEP_SECS;
        let code = code_at(&t, current);
        assert_eq!(
            matching_step(&t, &code, now, Some(current - 1)),
            Some(current)
        );
        // The same code again, even within its window: refused.
        assert_eq!(matching_step(&t, &code, now, Some(current)), None);
        assert_eq!(
            matching_step(&t, &code, now + STEP_SECS, Some(current)),
            None
        );
        // An earlier step after a later one was used: refused.
        assert_eq!(
            matching_step(&t, &code_at(&t, current - 1), now, Some(current)),
            None
        );
        // The next step's code: accepted.
        assert_eq!(
            matching_step(&t, &code_at(&t, current + 1), now, Some(current)),
            Some(current + 1)
        );
    }

    #[test]
    fn malformed_codes_are_refused() {
        let t = totp();
        let now = 1_700_000_015;
        let code = code_at(&t, now / STEP_SECS);
        for bad in [
            "",
            "12345",
            "1234567",
            "abcdef",
            "+12345",
            &format!("{code}0"),
        ] {
            assert_eq!(matching_step(&t, bad, now, None), None, "{bad:?}");
        }
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(
            matching_step(&t, &normalize_code(Some(&spaced)), now, None),
            Some(now / STEP_SECS)
        );
    }

    #[test]
    fn the_stored_json_roundtrips_and_never_holds_the_seed_in_clear() {
        let kek = KeyEncryptionKey::generate();
        let seed = totp_rs::Secret::generate();
        let base32 = seed.to_base32();
        let stored = StoredTotp::seal(&kek, &seed, Some(42))
            .unwrap()
            .encode()
            .unwrap();
        assert!(!stored.contains(&base32), "{stored}");
        let json: serde_json::Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(json["last_step"], 42);
        assert_eq!(
            json["seed"].as_str().unwrap().split('.').count(),
            5,
            "compact JWE"
        );
        let decoded = StoredTotp::decode(&stored).unwrap();
        assert_eq!(decoded.last_step, Some(42));
        assert_eq!(open_seed(&kek, &decoded.seed).unwrap().to_base32(), base32);
        // Another key opens nothing.
        assert!(open_seed(&KeyEncryptionKey::generate(), &decoded.seed).is_err());
        let fresh = StoredTotp::seal(&kek, &seed, None)
            .unwrap()
            .encode()
            .unwrap();
        assert_eq!(StoredTotp::decode(&fresh).unwrap().last_step, None);
        assert!(fresh.contains("\"last_step\":null"));
    }

    #[test]
    fn the_key_is_shown_in_groups_of_four() {
        assert_eq!(grouped("ABCDEFGHIJ"), "ABCD EFGH IJ");
        let key = grouped(&totp_rs::Secret::generate().to_base32());
        assert_eq!(key.len(), 32 + 7);
        assert_eq!(
            totp_rs::Secret::try_from_base32(key.replace(' ', ""))
                .unwrap()
                .as_bytes()
                .len(),
            20
        );
    }

    #[test]
    fn device_names_are_trimmed_defaulted_and_bounded() {
        assert_eq!(device_name(None).unwrap(), DEFAULT_DEVICE_NAME);
        assert_eq!(device_name(Some("  ")).unwrap(), DEFAULT_DEVICE_NAME);
        assert_eq!(device_name(Some(" My\tphone \n")).unwrap(), "My phone");
        let long = "é".repeat(MAX_DEVICE_NAME_CHARS);
        assert_eq!(device_name(Some(&long)).unwrap(), long);
        assert_eq!(
            device_name(Some(&format!("{long}x"))),
            Err("login.totp.enroll.name_too_long")
        );
    }

    #[test]
    fn the_qr_code_names_issuer_and_account() {
        let t = generator(
            totp_rs::Secret::generate(),
            Some(("Acme: login", "alice@example.com")),
        )
        .unwrap();
        assert_eq!(t.issuer(), Some("Acme  login"));
        let url = t.to_url().unwrap();
        assert!(url.starts_with("otpauth://totp/"), "{url}");
        assert!(url.contains("alice%40example.com"), "{url}");
        assert!(t.to_qr_base64().unwrap().len() > 100);
    }

    #[test]
    fn scratch_defaults_and_roundtrips() {
        let s: TotpScratch = serde_json::from_value(serde_json::Value::Null).unwrap_or_default();
        assert!(s.pending_seed.is_none() && !s.recovery_codes_shown);
        let v = serde_json::to_value(TotpScratch {
            pending_seed: Some("jwe".into()),
            recovery_codes_shown: true,
        })
        .unwrap();
        let back: TotpScratch = serde_json::from_value(v).unwrap();
        assert_eq!(back.pending_seed.as_deref(), Some("jwe"));
        assert!(back.recovery_codes_shown);
    }
}
