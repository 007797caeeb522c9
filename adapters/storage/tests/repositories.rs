//! Every repository port of `idp_core::ports` on [`SeaStorage`], run against
//! both backends: an in-memory SQLite database and a fresh PostgreSQL database
//! (PostgreSQL must be running; see `idp_storage::testing`).
//!
//! Each case is written once as `async fn case(&SeaStorage)`; the
//! `on_both_backends!` list at the end turns it into `case__sqlite` and
//! `case__postgres`.

// Test names are `case__backend`.
#![allow(non_snake_case)]

use idp_core::domain::{
    AuditEvent, ClientId, Consent, CustomerId, Email, KnownDevice, Membership, OrgId, OrgStatus,
    Organization, PasswordCredential, RefreshTokenRecord, Role, StoredCredential, StoredSigningKey,
    TokenFamily, TokenHash, User, UserId, UserStatus,
};
use idp_core::password_policy::PasswordPolicy;
use idp_core::ports::{
    AuditRepo, ClientStateRepo, ConsentRepo, CredentialRepo, DeviceRepo, OrgRepo, RepoError,
    SigningKeyRepo, TokenFamilyRepo, UserRepo,
};
use idp_storage::SeaStorage;
use idp_storage::entities;
use idp_storage::stored_time;
use idp_storage::testing::{fresh_postgres, fresh_sqlite};
use serde_json::json;
use time::macros::{datetime, offset};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

// ---------------------------------------------------------------- fixtures

/// A fixed instant with microseconds, so values round-trip unchanged.
const T0: OffsetDateTime = datetime!(2026-11-22 10:00:00.123456 UTC);

fn at(seconds: f64) -> OffsetDateTime {
    T0 + Duration::seconds_f64(seconds)
}

fn user(email: &str, customer_id: &str, created_at: OffsetDateTime) -> User {
    User {
        id: UserId(Uuid::now_v7()),
        customer_id: CustomerId::parse(customer_id).unwrap(),
        email: Email::parse(email).unwrap(),
        email_verified: false,
        name: Some("Alice Martin".into()),
        locale: Some("fr".into()),
        status: UserStatus::Active,
        phone: None,
        phone_verified: false,
        mfa_required: false,
        last_method: None,
        backup_email: None,
        created_at,
        updated_at: created_at,
    }
}

async fn created_user(s: &SeaStorage, email: &str, customer_id: &str) -> User {
    let u = user(email, customer_id, T0);
    UserRepo::create(s, &u).await.unwrap();
    u
}

fn family(user: UserId, sid: Option<&str>) -> TokenFamily {
    TokenFamily {
        claims: Default::default(),
        id: Uuid::now_v7(),
        user_id: user,
        client_id: ClientId("marketplace".into()),
        scope: "openid email offline_access".into(),
        sid: sid.map(str::to_owned),
        auth_time: T0,
        acr: Some("urn:idp:acr:mfa".into()),
        amr: vec!["pwd".into(), "otp".into()],
        created_at: at(1.0),
        expires_at: at(30.0 * 86_400.0),
        revoked_at: None,
        revoked_reason: None,
        resources: Vec::new(),
        dpop_jkt: None,
    }
}

fn refresh_token(family: &TokenFamily, secret: &str) -> RefreshTokenRecord {
    RefreshTokenRecord {
        id: Uuid::now_v7(),
        family_id: family.id,
        token_hash: TokenHash::of(secret),
        created_at: at(1.0),
        expires_at: at(86_400.0),
        used_at: None,
    }
}

fn credential(
    user: UserId,
    kind: &str,
    secret: &str,
    created_at: OffsetDateTime,
) -> StoredCredential {
    StoredCredential {
        id: Uuid::now_v7(),
        user_id: user,
        kind: kind.into(),
        label: None,
        secret: secret.into(),
        created_at,
        last_used_at: None,
    }
}

fn device(user: UserId, cookie: &str, seen: OffsetDateTime) -> KnownDevice {
    KnownDevice {
        id: Uuid::now_v7(),
        user_id: user,
        token_hash: TokenHash::of(cookie),
        label: Some("Firefox on Linux".into()),
        created_at: T0,
        last_seen_at: seen,
        revoked_at: None,
    }
}

fn signing_key(kid: &str, created_at: OffsetDateTime) -> StoredSigningKey {
    StoredSigningKey {
        kid: kid.into(),
        alg: "ES256".into(),
        private_jwe: format!("eyJhbGciOiJkaXIifQ..{kid}.private.tag"),
        public_jwk: format!(r#"{{"kty":"EC","crv":"P-256","kid":"{kid}","x":"x","y":"y"}}"#),
        created_at,
        retired_at: None,
    }
}

fn audit_event(user: Option<UserId>, kind: &str, when: OffsetDateTime) -> AuditEvent {
    AuditEvent {
        id: Uuid::now_v7(),
        at: when,
        kind: kind.into(),
        user_id: user,
        client_id: Some(ClientId("console".into())),
        org_id: None,
        ip: Some("203.0.113.7".into()),
        user_agent: Some("Mozilla/5.0".into()),
        detail: json!({ "step": "password", "attempt": 2, "flags": [true, null] }),
    }
}

fn organization(
    name: &str,
    siret: Option<&str>,
    created_by: UserId,
    created_at: OffsetDateTime,
) -> Organization {
    Organization {
        id: OrgId(Uuid::now_v7()),
        name: name.into(),
        siret: siret.map(str::to_owned),
        country: "FR".into(),
        status: OrgStatus::Pending,
        created_by,
        created_at,
        decided_at: None,
        mfa_required_for: vec![],
        password_policy: PasswordPolicy::default(),
    }
}

fn membership(org: OrgId, user: UserId, roles: &[Role], joined: OffsetDateTime) -> Membership {
    Membership {
        org_id: org,
        user_id: user,
        roles: roles.to_vec(),
        created_at: joined,
    }
}

/// Creates `org` with `creator` as its administrator.
async fn created_org(s: &SeaStorage, org: &Organization) -> Membership {
    let creator = membership(
        org.id,
        org.created_by,
        &[Role::Administrator],
        org.created_at,
    );
    s.create_org(org, &creator).await.unwrap();
    creator
}

fn assert_conflict<T: std::fmt::Debug>(res: Result<T, RepoError>) {
    match res {
        Err(RepoError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
}

// ---------------------------------------------------------------- users

async fn user_create_and_find(s: &SeaStorage) {
    let u = user("Alice.Martin@Example.COM", "ab12345-xyz", T0);
    UserRepo::create(s, &u).await.unwrap();

    assert_eq!(s.find_by_id(u.id).await.unwrap(), Some(u.clone()));
    for typed in [
        "alice.martin@example.com",
        "ALICE.MARTIN@EXAMPLE.COM",
        "Alice.Martin@Example.COM",
    ] {
        let found = s
            .find_by_email(&Email::parse(typed).unwrap())
            .await
            .unwrap();
        assert_eq!(found, Some(u.clone()), "lookup by {typed}");
    }
    let typed = CustomerId::parse(" AB12345-XYZ ").unwrap();
    assert_eq!(
        s.find_by_customer_id(&typed).await.unwrap(),
        Some(u.clone())
    );
    // The address is kept as typed.
    let back = s.find_by_id(u.id).await.unwrap().unwrap();
    assert_eq!(back.email.as_str(), "Alice.Martin@Example.COM");

    assert_eq!(s.find_by_id(UserId(Uuid::now_v7())).await.unwrap(), None);
    let other = Email::parse("bob@example.com").unwrap();
    assert_eq!(s.find_by_email(&other).await.unwrap(), None);
    let other = CustomerId::parse("zz99999-xyz").unwrap();
    assert_eq!(s.find_by_customer_id(&other).await.unwrap(), None);
}

async fn user_fields_round_trip(s: &SeaStorage) {
    // Not UTC and with nanoseconds: stored in UTC, to the microsecond.
    let created = datetime!(2026-11-22 11:00:00.123456789 +01:00);
    let mut u = user("carol@example.com", "cd00001-xyz", created);
    u.email_verified = true;
    u.name = None;
    u.locale = None;
    u.status = UserStatus::Disabled;
    u.phone = Some("+33612345678".into());
    u.phone_verified = true;
    u.mfa_required = true;
    u.last_method = Some("webauthn".into());
    u.updated_at = created + Duration::days(1);
    UserRepo::create(s, &u).await.unwrap();

    let back = s.find_by_id(u.id).await.unwrap().unwrap();
    assert_eq!(back.created_at, datetime!(2026-11-22 10:00:00.123456 UTC));
    assert_eq!(back.created_at.offset(), offset!(UTC));
    assert_eq!(back.updated_at, stored_time(u.updated_at));
    let expected = User {
        created_at: stored_time(u.created_at),
        updated_at: stored_time(u.updated_at),
        ..u
    };
    assert_eq!(back, expected);
}

async fn user_duplicate_email_conflicts(s: &SeaStorage) {
    let first = created_user(s, "alice@example.com", "ab12345-xyz").await;

    // Same address in another case, other customer id.
    let dup_email = user("ALICE@example.com", "cd67890-xyz", T0);
    assert_conflict(UserRepo::create(s, &dup_email).await);
    // Same customer id, other address.
    let dup_customer = user("bob@example.com", "ab12345-xyz", T0);
    assert_conflict(UserRepo::create(s, &dup_customer).await);
    // Same id.
    let dup_id = User {
        id: first.id,
        ..user("carol@example.com", "ef11111-xyz", T0)
    };
    assert_conflict(UserRepo::create(s, &dup_id).await);

    // Nothing of the refused rows was written.
    assert_eq!(s.find_by_id(dup_email.id).await.unwrap(), None);
    assert_eq!(s.find_by_id(dup_customer.id).await.unwrap(), None);
    let bob = Email::parse("bob@example.com").unwrap();
    assert_eq!(s.find_by_email(&bob).await.unwrap(), None);
    let carol = Email::parse("carol@example.com").unwrap();
    assert_eq!(s.find_by_email(&carol).await.unwrap(), None);
    assert_eq!(UserRepo::list(s, 100, 0).await.unwrap(), vec![first]);
}

async fn user_list_order(s: &SeaStorage) {
    // Inserted out of order, with whole and fractional seconds: as RFC 3339
    // text `…:05Z` sorts after `…:05.5Z`, which must not matter.
    let whole = T0.replace_nanosecond(0).unwrap() + Duration::seconds(5);
    let times = [
        whole + Duration::milliseconds(500),
        whole,
        whole + Duration::seconds(1),
        whole - Duration::milliseconds(100),
        whole + Duration::microseconds(1),
    ];
    let mut users = Vec::new();
    for (i, t) in times.iter().enumerate() {
        let u = user(
            &format!("user{i}@example.com"),
            &format!("ab{i:05}-xyz"),
            *t,
        );
        UserRepo::create(s, &u).await.unwrap();
        users.push(u);
    }
    let mut expected = users.clone();
    expected.sort_by_key(|u| u.created_at);

    assert_eq!(UserRepo::list(s, 100, 0).await.unwrap(), expected);
    assert_eq!(UserRepo::list(s, 2, 0).await.unwrap(), expected[..2]);
    assert_eq!(UserRepo::list(s, 2, 2).await.unwrap(), expected[2..4]);
    assert_eq!(UserRepo::list(s, 10, 4).await.unwrap(), expected[4..]);
    assert_eq!(UserRepo::list(s, 10, 5).await.unwrap(), vec![]);
}

async fn user_login_settings_default_then_set(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let bob = created_user(s, "bob@example.com", "cd67890-xyz").await;

    // A user created without them has no phone, no MFA requirement, no last
    // method.
    let back = s.find_by_id(alice.id).await.unwrap().unwrap();
    assert_eq!(back.phone, None);
    assert!(!back.phone_verified);
    assert!(!back.mfa_required);
    assert_eq!(back.last_method, None);

    s.set_phone(alice.id, Some("+33612345678"), false)
        .await
        .unwrap();
    s.set_mfa_required(alice.id, true).await.unwrap();
    s.set_last_method(alice.id, "email_code").await.unwrap();
    let expected = User {
        phone: Some("+33612345678".into()),
        phone_verified: false,
        mfa_required: true,
        last_method: Some("email_code".into()),
        // No time is given to the setters: `updated_at` stays.
        ..alice.clone()
    };
    assert_eq!(
        s.find_by_id(alice.id).await.unwrap(),
        Some(expected.clone())
    );
    // The lookups see the same row.
    let by_email = s.find_by_email(&alice.email).await.unwrap();
    assert_eq!(by_email, Some(expected.clone()));

    // Each setter moves only its own columns.
    s.set_phone(alice.id, Some("+33699999999"), true)
        .await
        .unwrap();
    s.set_last_method(alice.id, "webauthn").await.unwrap();
    let expected = User {
        phone: Some("+33699999999".into()),
        phone_verified: true,
        last_method: Some("webauthn".into()),
        ..expected
    };
    assert_eq!(
        s.find_by_id(alice.id).await.unwrap(),
        Some(expected.clone())
    );

    s.set_phone(alice.id, None, false).await.unwrap();
    s.set_mfa_required(alice.id, false).await.unwrap();
    let expected = User {
        phone: None,
        phone_verified: false,
        mfa_required: false,
        ..expected
    };
    assert_eq!(s.find_by_id(alice.id).await.unwrap(), Some(expected));

    // The other user is untouched.
    assert_eq!(s.find_by_id(bob.id).await.unwrap(), Some(bob));

    // An unknown user: nothing happens, nothing is created.
    let ghost = UserId(Uuid::now_v7());
    s.set_phone(ghost, Some("+33600000000"), true)
        .await
        .unwrap();
    s.set_mfa_required(ghost, true).await.unwrap();
    s.set_last_method(ghost, "password").await.unwrap();
    assert_eq!(s.find_by_id(ghost).await.unwrap(), None);
}

async fn user_set_email_conflict_changes_nothing(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let bob = created_user(s, "bob@example.com", "cd67890-xyz").await;

    // Alice's address, in another case: refused, neither account changes.
    let taken = Email::parse("ALICE@Example.com").unwrap();
    assert_conflict(s.set_email(bob.id, &taken, true).await);
    assert_eq!(s.find_by_id(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(s.find_by_id(bob.id).await.unwrap(), Some(bob.clone()));
    assert_eq!(s.find_by_email(&taken).await.unwrap(), Some(alice.clone()));

    // A free address: kept as typed, found case-insensitively, the old one
    // is free again.
    let new = Email::parse("Alice.New@Example.com").unwrap();
    s.set_email(alice.id, &new, true).await.unwrap();
    let expected = User {
        email: new.clone(),
        email_verified: true,
        ..alice.clone()
    };
    assert_eq!(
        s.find_by_id(alice.id).await.unwrap(),
        Some(expected.clone())
    );
    let typed = Email::parse("alice.new@example.COM").unwrap();
    assert_eq!(s.find_by_email(&typed).await.unwrap(), Some(expected));
    assert_eq!(s.find_by_email(&alice.email).await.unwrap(), None);

    // Her own address in another case is not a conflict.
    let recased = Email::parse("ALICE.NEW@example.com").unwrap();
    s.set_email(alice.id, &recased, false).await.unwrap();
    let back = s.find_by_id(alice.id).await.unwrap().unwrap();
    assert_eq!(back.email.as_str(), "ALICE.NEW@example.com");
    assert!(!back.email_verified);

    // Bob may now take Alice's former address.
    s.set_email(bob.id, &alice.email, false).await.unwrap();
    let found = s.find_by_email(&alice.email).await.unwrap().unwrap();
    assert_eq!(found.id, bob.id);

    // An unknown user: nothing happens, nothing is created.
    let ghost = UserId(Uuid::now_v7());
    let free = Email::parse("ghost@example.com").unwrap();
    s.set_email(ghost, &free, true).await.unwrap();
    assert_eq!(s.find_by_email(&free).await.unwrap(), None);
}

async fn user_backup_email_and_name(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let bob = created_user(s, "bob@example.com", "cd67890-xyz").await;
    assert_eq!(alice.backup_email, None);

    let backup = Email::parse("Alice.Perso@Example.org").unwrap();
    s.set_backup_email(alice.id, Some(&backup)).await.unwrap();
    s.set_name(alice.id, Some("Alice Dupont")).await.unwrap();
    let expected = User {
        backup_email: Some(backup.clone()),
        name: Some("Alice Dupont".into()),
        ..alice.clone()
    };
    assert_eq!(
        s.find_by_id(alice.id).await.unwrap(),
        Some(expected.clone())
    );
    // The backup address is kept as typed and is not a login identifier.
    let back = s.find_by_id(alice.id).await.unwrap().unwrap();
    assert_eq!(
        back.backup_email.as_ref().map(Email::as_str),
        Some("Alice.Perso@Example.org")
    );
    assert_eq!(s.find_by_email(&backup).await.unwrap(), None);

    s.set_backup_email(alice.id, None).await.unwrap();
    s.set_name(alice.id, None).await.unwrap();
    let expected = User {
        backup_email: None,
        name: None,
        ..expected
    };
    assert_eq!(s.find_by_id(alice.id).await.unwrap(), Some(expected));

    // The other user is untouched.
    assert_eq!(s.find_by_id(bob.id).await.unwrap(), Some(bob));
}

// ---------------------------------------------------------------- credentials

async fn password_set_and_replace(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let bob = created_user(s, "bob@example.com", "cd67890-xyz").await;
    assert_eq!(s.find_password(alice.id).await.unwrap(), None);

    let first = PasswordCredential {
        user_id: alice.id,
        phc: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into(),
        updated_at: at(10.0),
    };
    s.set_password(&first).await.unwrap();
    assert_eq!(
        s.find_password(alice.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(s.find_password(bob.id).await.unwrap(), None);

    let second = PasswordCredential {
        user_id: alice.id,
        phc: "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaA".into(),
        updated_at: at(20.0),
    };
    s.set_password(&second).await.unwrap();
    assert_eq!(s.find_password(alice.id).await.unwrap(), Some(second));

    let bobs = PasswordCredential {
        user_id: bob.id,
        phc: "$argon2id$v=19$m=19456,t=2,p=1$Ym9ic2FsdA$Ym9iaGFzaA".into(),
        updated_at: at(30.0),
    };
    s.set_password(&bobs).await.unwrap();
    assert_eq!(s.find_password(bob.id).await.unwrap(), Some(bobs));
}

async fn password_of_unknown_user_is_refused(s: &SeaStorage) {
    // The foreign key holds (on SQLite too).
    let ghost = UserId(Uuid::now_v7());
    let cred = PasswordCredential {
        user_id: ghost,
        phc: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        updated_at: T0,
    };
    assert_conflict(s.set_password(&cred).await);
    assert_eq!(s.find_password(ghost).await.unwrap(), None);
}

async fn concurrent_password_sets_keep_one_row(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let cred = PasswordCredential {
                    user_id: alice.id,
                    phc: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${i}"),
                    updated_at: at(f64::from(i)),
                };
                s.set_password(&cred).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stored = s.find_password(alice.id).await.unwrap().unwrap();
    assert!(
        stored
            .phc
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$")
    );
    // The partial unique index allows one password row per user; `find`
    // would hide a second one, so set once more and check the value moved.
    let last = PasswordCredential {
        user_id: alice.id,
        phc: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$last".into(),
        updated_at: at(100.0),
    };
    s.set_password(&last).await.unwrap();
    assert_eq!(s.find_password(alice.id).await.unwrap(), Some(last));
}

async fn credentials_create_find_and_list_by_kind(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let bob = created_user(s, "bob@example.com", "cd67890-xyz").await;
    let password = PasswordCredential {
        user_id: alice.id,
        phc: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        updated_at: at(1.0),
    };
    s.set_password(&password).await.unwrap();

    // Alice's passkeys, created out of order around a whole second (the text
    // of `…:05Z` sorts after `…:05.5Z` on SQLite, which must not matter).
    let whole = T0.replace_nanosecond(0).unwrap() + Duration::seconds(5);
    let mut passkeys = Vec::new();
    for (i, t) in [
        whole + Duration::milliseconds(500),
        whole,
        whole + Duration::seconds(1),
        whole - Duration::microseconds(1),
    ]
    .into_iter()
    .enumerate()
    {
        let c = StoredCredential {
            label: Some(format!("YubiKey {i}")),
            last_used_at: (i == 0).then(|| at(60.0)),
            ..credential(alice.id, "webauthn", &format!("{{\"key\":{i}}}"), t)
        };
        s.create_credential(&c).await.unwrap();
        passkeys.push(c);
    }
    let totp = StoredCredential {
        label: Some("Phone".into()),
        ..credential(alice.id, "totp", "sealed-seed", at(2.0))
    };
    s.create_credential(&totp).await.unwrap();
    let bobs_passkey = credential(bob.id, "webauthn", "{\"key\":\"bob\"}", at(3.0));
    s.create_credential(&bobs_passkey).await.unwrap();

    passkeys.sort_by_key(|c| c.created_at);
    assert_eq!(
        s.list_credentials(alice.id, "webauthn").await.unwrap(),
        passkeys
    );
    assert_eq!(
        s.list_credentials(alice.id, "totp").await.unwrap(),
        vec![totp.clone()]
    );
    assert_eq!(
        s.list_credentials(bob.id, "webauthn").await.unwrap(),
        vec![bobs_passkey.clone()]
    );
    assert_eq!(s.list_credentials(bob.id, "totp").await.unwrap(), vec![]);
    assert_eq!(
        s.list_credentials(alice.id, "recovery_code").await.unwrap(),
        vec![]
    );
    // The password row is listed only when its kind is asked for.
    let listed = s.list_credentials(alice.id, "password").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].secret, password.phc);
    assert_eq!(listed[0].user_id, alice.id);
    assert_eq!(
        s.list_credentials(bob.id, "password").await.unwrap(),
        vec![]
    );

    for c in passkeys.iter().chain([&totp, &bobs_passkey]) {
        assert_eq!(s.find_credential(c.id).await.unwrap().as_ref(), Some(c));
    }
    assert_eq!(s.find_credential(Uuid::now_v7()).await.unwrap(), None);
    // Creating credentials leaves the password alone.
    assert_eq!(s.find_password(alice.id).await.unwrap(), Some(password));

    // Refused: an id already taken, an unknown user, a second password.
    assert_conflict(s.create_credential(&totp).await);
    let ghost = credential(UserId(Uuid::now_v7()), "totp", "seed", T0);
    assert_conflict(s.create_credential(&ghost).await);
    assert_eq!(s.find_credential(ghost.id).await.unwrap(), None);
    let second_password = credential(alice.id, "password", "$argon2id$other", T0);
    assert_conflict(s.create_credential(&second_password).await);
    // A first password through `create_credential` is found as one.
    let bobs_password = credential(bob.id, "password", "$argon2id$bob", at(4.0));
    s.create_credential(&bobs_password).await.unwrap();
    let found = s.find_password(bob.id).await.unwrap().unwrap();
    assert_eq!(found.phc, "$argon2id$bob");
    assert_eq!(found.updated_at, at(4.0));
}

async fn credential_secret_swaps_once(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let code = credential(alice.id, "webauthn", "counter=1", at(1.0));
    s.create_credential(&code).await.unwrap();

    assert!(
        s.update_credential_secret(code.id, "counter=1", "counter=2", at(10.0))
            .await
            .unwrap()
    );
    let after = StoredCredential {
        secret: "counter=2".into(),
        last_used_at: Some(at(10.0)),
        ..code.clone()
    };
    assert_eq!(
        s.find_credential(code.id).await.unwrap(),
        Some(after.clone())
    );

    // The stale expected value: refused, nothing changes.
    assert!(
        !s.update_credential_secret(code.id, "counter=1", "counter=3", at(20.0))
            .await
            .unwrap()
    );
    assert_eq!(s.find_credential(code.id).await.unwrap(), Some(after));

    // The current value swaps again.
    assert!(
        s.update_credential_secret(code.id, "counter=2", "counter=3", at(30.0))
            .await
            .unwrap()
    );
    let now = s.find_credential(code.id).await.unwrap().unwrap();
    assert_eq!(now.secret, "counter=3");
    assert_eq!(now.last_used_at, Some(at(30.0)));

    // An unknown id.
    assert!(
        !s.update_credential_secret(Uuid::now_v7(), "counter=3", "x", at(40.0))
            .await
            .unwrap()
    );
}

async fn concurrent_credential_swaps_have_one_winner(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let totp = credential(alice.id, "totp", "seed;last-step=100", at(1.0));
    s.create_credential(&totp).await.unwrap();

    // Eight uses of the same one-time value at once.
    let tasks = 8;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(tasks));
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let (s, barrier, id) = (s.clone(), barrier.clone(), totp.id);
            tokio::spawn(async move {
                barrier.wait().await;
                let new = format!("seed;last-step=101;task={i}");
                let won = s
                    .update_credential_secret(id, "seed;last-step=100", &new, at(2.0))
                    .await
                    .unwrap();
                won.then_some(new)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for h in handles {
        winners.extend(h.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "exactly one swap wins: {winners:?}");
    let now = s.find_credential(totp.id).await.unwrap().unwrap();
    assert_eq!(now.secret, winners[0]);
    assert_eq!(now.last_used_at, Some(at(2.0)));
}

async fn credentials_rename_and_delete(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let bob = created_user(s, "bob@example.com", "cd67890-xyz").await;
    let password = PasswordCredential {
        user_id: alice.id,
        phc: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        updated_at: at(1.0),
    };
    s.set_password(&password).await.unwrap();
    let passkey = credential(alice.id, "webauthn", "{}", at(1.0));
    s.create_credential(&passkey).await.unwrap();
    let mut alices_codes = Vec::new();
    for i in 0..3 {
        let c = credential(alice.id, "recovery_code", &format!("hash-{i}"), at(2.0));
        s.create_credential(&c).await.unwrap();
        alices_codes.push(c);
    }
    let bobs_code = credential(bob.id, "recovery_code", "hash-bob", at(2.0));
    s.create_credential(&bobs_code).await.unwrap();

    s.rename_credential(passkey.id, "Work laptop")
        .await
        .unwrap();
    let renamed = StoredCredential {
        label: Some("Work laptop".into()),
        ..passkey.clone()
    };
    assert_eq!(
        s.find_credential(passkey.id).await.unwrap(),
        Some(renamed.clone())
    );
    s.rename_credential(Uuid::now_v7(), "nothing")
        .await
        .unwrap();

    // Deleting one: true once, then false.
    assert!(s.delete_credential(alices_codes[0].id).await.unwrap());
    assert!(!s.delete_credential(alices_codes[0].id).await.unwrap());
    assert_eq!(s.find_credential(alices_codes[0].id).await.unwrap(), None);
    assert!(!s.delete_credential(Uuid::now_v7()).await.unwrap());

    // Deleting a kind: only that user's rows of that kind.
    assert_eq!(
        s.delete_credentials_of_kind(alice.id, "recovery_code")
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        s.delete_credentials_of_kind(alice.id, "recovery_code")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.delete_credentials_of_kind(alice.id, "totp")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.list_credentials(alice.id, "recovery_code").await.unwrap(),
        vec![]
    );
    assert_eq!(
        s.list_credentials(bob.id, "recovery_code").await.unwrap(),
        vec![bobs_code]
    );
    assert_eq!(
        s.list_credentials(alice.id, "webauthn").await.unwrap(),
        vec![renamed]
    );
    assert_eq!(s.find_password(alice.id).await.unwrap(), Some(password));
}

// ---------------------------------------------------------------- known devices

async fn devices_create_find_touch(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let laptop = device(alice.id, "cookie-laptop", at(1.0));
    s.create_device(&laptop).await.unwrap();
    let anonymous = KnownDevice {
        label: None,
        ..device(alice.id, "cookie-phone", at(2.0))
    };
    s.create_device(&anonymous).await.unwrap();

    let found = s
        .find_device(&TokenHash::of("cookie-laptop"))
        .await
        .unwrap();
    assert_eq!(found, Some(laptop.clone()));
    let found = s.find_device(&TokenHash::of("cookie-phone")).await.unwrap();
    assert_eq!(found, Some(anonymous));
    let unknown = s.find_device(&TokenHash::of("cookie-other")).await.unwrap();
    assert_eq!(unknown, None);

    s.touch_device(laptop.id, at(100.5)).await.unwrap();
    let touched = KnownDevice {
        last_seen_at: at(100.5),
        ..laptop.clone()
    };
    let found = s.find_device(&laptop.token_hash).await.unwrap();
    assert_eq!(found, Some(touched));
    s.touch_device(Uuid::now_v7(), at(200.0)).await.unwrap();

    // Refused: the same cookie hash, the same id, an unknown user.
    assert_conflict(
        s.create_device(&device(alice.id, "cookie-laptop", at(3.0)))
            .await,
    );
    let same_id = KnownDevice {
        token_hash: TokenHash::of("cookie-new"),
        ..laptop.clone()
    };
    assert_conflict(s.create_device(&same_id).await);
    let ghost = device(UserId(Uuid::now_v7()), "cookie-ghost", at(3.0));
    assert_conflict(s.create_device(&ghost).await);
    assert_eq!(s.find_device(&ghost.token_hash).await.unwrap(), None);
}

async fn device_revoke_once(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let laptop = device(alice.id, "cookie-laptop", at(1.0));
    s.create_device(&laptop).await.unwrap();

    assert!(s.revoke_device(laptop.id, at(10.0)).await.unwrap());
    let revoked = KnownDevice {
        revoked_at: Some(at(10.0)),
        ..laptop.clone()
    };
    let found = s.find_device(&laptop.token_hash).await.unwrap();
    assert_eq!(found, Some(revoked.clone()));

    // Again: false, and the first time is kept.
    assert!(!s.revoke_device(laptop.id, at(20.0)).await.unwrap());
    let found = s.find_device(&laptop.token_hash).await.unwrap();
    assert_eq!(found, Some(revoked));
    assert!(!s.revoke_device(Uuid::now_v7(), at(20.0)).await.unwrap());
}

async fn devices_list_most_recently_seen_first(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let bob = created_user(s, "bob@example.com", "cd67890-xyz").await;
    let whole = T0.replace_nanosecond(0).unwrap() + Duration::seconds(5);
    let mut alices = Vec::new();
    for (i, seen) in [
        whole + Duration::milliseconds(500),
        whole,
        whole + Duration::seconds(2),
        whole - Duration::microseconds(1),
        whole + Duration::seconds(1),
    ]
    .into_iter()
    .enumerate()
    {
        let d = device(alice.id, &format!("cookie-{i}"), seen);
        s.create_device(&d).await.unwrap();
        alices.push(d);
    }
    let bobs = device(bob.id, "cookie-bob", at(1_000.0));
    s.create_device(&bobs).await.unwrap();

    let mut newest_first = alices.clone();
    newest_first.sort_by_key(|d| std::cmp::Reverse(d.last_seen_at));
    assert_eq!(s.list_devices(alice.id).await.unwrap(), newest_first);

    // Seeing the oldest one moves it to the front; revoked ones are listed.
    let oldest = newest_first.pop().unwrap();
    s.touch_device(oldest.id, whole + Duration::seconds(3))
        .await
        .unwrap();
    assert!(s.revoke_device(newest_first[0].id, at(50.0)).await.unwrap());
    newest_first[0].revoked_at = Some(at(50.0));
    newest_first.insert(
        0,
        KnownDevice {
            last_seen_at: whole + Duration::seconds(3),
            ..oldest
        },
    );
    assert_eq!(s.list_devices(alice.id).await.unwrap(), newest_first);

    assert_eq!(s.list_devices(bob.id).await.unwrap(), vec![bobs]);
    let nobody = UserId(Uuid::now_v7());
    assert_eq!(s.list_devices(nobody).await.unwrap(), vec![]);
}

// ---------------------------------------------------------------- token families

async fn family_create_with_first_token(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let fam = family(alice.id, Some("sid-1"));
    let token = refresh_token(&fam, "refresh-secret-1");
    s.create_family(&fam, Some(&token)).await.unwrap();

    assert_eq!(s.find_family(fam.id).await.unwrap(), Some(fam.clone()));
    let hash = TokenHash::of("refresh-secret-1");
    assert_eq!(s.find_refresh_token(&hash).await.unwrap(), Some(token));
    let unknown = TokenHash::of("another secret");
    assert_eq!(s.find_refresh_token(&unknown).await.unwrap(), None);
    assert_eq!(s.find_family(Uuid::now_v7()).await.unwrap(), None);

    // A family without a refresh token (no offline_access), and without sid.
    let bare = TokenFamily {
        claims: Default::default(),
        acr: None,
        amr: vec![],
        ..family(alice.id, None)
    };
    s.create_family(&bare, None).await.unwrap();
    assert_eq!(s.find_family(bare.id).await.unwrap(), Some(bare));

    // Resources (RFC 8707) and a DPoP binding (RFC 9449 §5) come back as
    // written.
    let bound = TokenFamily {
        resources: vec![
            "https://billing.example/api".into(),
            "https://idp.example/admin/api".into(),
        ],
        dpop_jkt: Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I".into()),
        ..family(alice.id, None)
    };
    s.create_family(&bound, None).await.unwrap();
    assert_eq!(s.find_family(bound.id).await.unwrap(), Some(bound));
}

async fn family_creation_is_atomic(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let first = family(alice.id, None);
    s.create_family(&first, Some(&refresh_token(&first, "same secret")))
        .await
        .unwrap();

    // The second family's token collides: neither row is written.
    let second = family(alice.id, None);
    let colliding = refresh_token(&second, "same secret");
    assert_conflict(s.create_family(&second, Some(&colliding)).await);
    assert_eq!(s.find_family(second.id).await.unwrap(), None);

    // Same family id again.
    assert_conflict(s.create_family(&first, None).await);

    // A family of an unknown user.
    let orphan = family(UserId(Uuid::now_v7()), None);
    assert_conflict(s.create_family(&orphan, None).await);
    assert_eq!(s.find_family(orphan.id).await.unwrap(), None);
}

async fn rotate_once_then_refused(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let fam = family(alice.id, None);
    let old = refresh_token(&fam, "old");
    s.create_family(&fam, Some(&old)).await.unwrap();

    let new = refresh_token(&fam, "new");
    assert!(
        s.rotate_refresh_token(old.id, at(60.0), &new)
            .await
            .unwrap()
    );
    let old_now = s
        .find_refresh_token(&old.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old_now.used_at, Some(at(60.0)));
    let new_now = s.find_refresh_token(&new.token_hash).await.unwrap();
    assert_eq!(new_now, Some(new.clone()));

    // The same old token again: refused, nothing inserted, first use kept.
    let again = refresh_token(&fam, "again");
    assert!(
        !s.rotate_refresh_token(old.id, at(90.0), &again)
            .await
            .unwrap()
    );
    assert_eq!(s.find_refresh_token(&again.token_hash).await.unwrap(), None);
    let old_now = s
        .find_refresh_token(&old.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old_now.used_at, Some(at(60.0)));

    // The new token rotates in turn.
    let newer = refresh_token(&fam, "newer");
    assert!(
        s.rotate_refresh_token(new.id, at(120.0), &newer)
            .await
            .unwrap()
    );

    // An unknown token id.
    let stray = refresh_token(&fam, "stray");
    assert!(
        !s.rotate_refresh_token(Uuid::now_v7(), at(130.0), &stray)
            .await
            .unwrap()
    );
    assert_eq!(s.find_refresh_token(&stray.token_hash).await.unwrap(), None);
}

async fn concurrent_rotation_has_one_winner(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let fam = family(alice.id, None);
    let mut current = refresh_token(&fam, "round-0");
    s.create_family(&fam, Some(&current)).await.unwrap();

    for round in 1..=10 {
        let candidates: Vec<_> = (0..2)
            .map(|task| refresh_token(&fam, &format!("round-{round}-task-{task}")))
            .collect();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(candidates.len()));
        let handles: Vec<_> = candidates
            .iter()
            .cloned()
            .map(|candidate| {
                let (s, barrier, old) = (s.clone(), barrier.clone(), current.id);
                tokio::spawn(async move {
                    barrier.wait().await;
                    s.rotate_refresh_token(old, at(f64::from(round)), &candidate)
                        .await
                })
            })
            .collect();
        let mut won = Vec::new();
        for (h, candidate) in handles.into_iter().zip(&candidates) {
            if h.await.unwrap().unwrap() {
                won.push(candidate.clone());
            }
        }
        assert_eq!(won.len(), 1, "round {round}: exactly one rotation wins");
        for candidate in &candidates {
            let stored = s.find_refresh_token(&candidate.token_hash).await.unwrap();
            assert_eq!(stored.is_some(), *candidate == won[0], "round {round}");
        }
        current = won.remove(0);
    }
}

async fn revoke_family_once(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let fam = family(alice.id, Some("sid-1"));
    s.create_family(&fam, None).await.unwrap();

    assert!(s.revoke_family(fam.id, at(50.0), "logout").await.unwrap());
    let revoked = s.find_family(fam.id).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(at(50.0)));
    assert_eq!(revoked.revoked_reason.as_deref(), Some("logout"));

    // The first reason wins.
    assert!(
        !s.revoke_family(fam.id, at(60.0), "reuse_detected")
            .await
            .unwrap()
    );
    assert_eq!(s.find_family(fam.id).await.unwrap(), Some(revoked));

    assert!(
        !s.revoke_family(Uuid::now_v7(), at(60.0), "logout")
            .await
            .unwrap()
    );
}

async fn revoke_families_of_session(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let bob = created_user(s, "bob@example.com", "cd67890-xyz").await;
    let live_1 = family(alice.id, Some("sid-1"));
    let live_2 = family(alice.id, Some("sid-1"));
    let already = family(alice.id, Some("sid-1"));
    let other_session = family(bob.id, Some("sid-2"));
    let no_session = family(alice.id, None);
    for f in [&live_1, &live_2, &already, &other_session, &no_session] {
        s.create_family(f, None).await.unwrap();
    }
    assert!(
        s.revoke_family(already.id, at(10.0), "admin")
            .await
            .unwrap()
    );

    let mut revoked = s
        .revoke_families_of_session("sid-1", at(20.0), "logout")
        .await
        .unwrap();
    revoked.sort();
    let mut expected = vec![live_1.id, live_2.id];
    expected.sort();
    assert_eq!(revoked, expected, "the ids of the families it revoked");
    for f in [&live_1, &live_2] {
        let now = s.find_family(f.id).await.unwrap().unwrap();
        assert_eq!(now.revoked_at, Some(at(20.0)));
        assert_eq!(now.revoked_reason.as_deref(), Some("logout"));
    }
    let now = s.find_family(already.id).await.unwrap().unwrap();
    assert_eq!(now.revoked_at, Some(at(10.0)));
    assert_eq!(now.revoked_reason.as_deref(), Some("admin"));
    for f in [&other_session, &no_session] {
        assert_eq!(s.find_family(f.id).await.unwrap().as_ref(), Some(f));
    }

    let again = s.revoke_families_of_session("sid-1", at(30.0), "logout");
    assert!(again.await.unwrap().is_empty());
    let unknown = s.revoke_families_of_session("sid-9", at(30.0), "logout");
    assert!(unknown.await.unwrap().is_empty());
}

async fn grant_reads_bring_the_user_in_the_same_query(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let bob = created_user(s, "bob@example.com", "cd67890-xyz").await;
    let fam = family(alice.id, Some("sid-1"));
    let token = refresh_token(&fam, "refresh-secret-1");
    s.create_family(&fam, Some(&token)).await.unwrap();
    let bobs = family(bob.id, None);
    s.create_family(&bobs, Some(&refresh_token(&bobs, "bobs")))
        .await
        .unwrap();

    // The user of a live family; nothing for an unknown one.
    assert_eq!(
        s.find_user_of_unrevoked_family(fam.id).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        s.find_user_of_unrevoked_family(bobs.id).await.unwrap(),
        Some(bob.clone())
    );
    assert_eq!(
        s.find_user_of_unrevoked_family(Uuid::now_v7())
            .await
            .unwrap(),
        None
    );
    // The refresh token with its family and user.
    assert_eq!(
        s.find_refresh_token_grant(&TokenHash::of("refresh-secret-1"))
            .await
            .unwrap(),
        Some((token.clone(), fam.clone(), alice.clone()))
    );
    assert_eq!(
        s.find_refresh_token_grant(&TokenHash::of("unknown"))
            .await
            .unwrap(),
        None
    );

    // Revoked: no user through the family any more; the refresh token still
    // reads, with its family saying it is revoked (the caller refuses it).
    assert!(s.revoke_family(fam.id, at(50.0), "logout").await.unwrap());
    assert_eq!(s.find_user_of_unrevoked_family(fam.id).await.unwrap(), None);
    let (_, revoked, user) = s
        .find_refresh_token_grant(&TokenHash::of("refresh-secret-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(at(50.0)));
    assert_eq!(user, alice);
    // Bob's grant is untouched.
    assert_eq!(
        s.find_user_of_unrevoked_family(bobs.id).await.unwrap(),
        Some(bob)
    );
}

async fn grant_read_with_organizations_in_join_order(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let bob = created_user(s, "bob@example.com", "cd67890-xyz").await;
    let whole = T0.replace_nanosecond(0).unwrap() + Duration::seconds(5);
    let acme = organization("Acme", None, alice.id, whole - Duration::seconds(10));
    let globex = organization("Globex", None, alice.id, whole - Duration::seconds(10));
    created_org(s, &acme).await;
    created_org(s, &globex).await;
    // Joined out of insertion order, with whole and fractional seconds.
    let bob_acme = membership(
        acme.id,
        bob.id,
        &[Role::Member],
        whole + Duration::milliseconds(500),
    );
    let bob_globex = membership(globex.id, bob.id, &[Role::SecurityManager], whole);
    for m in [&bob_acme, &bob_globex] {
        s.add_member(m).await.unwrap();
    }
    let bobs = family(bob.id, None);
    s.create_family(&bobs, None).await.unwrap();
    let carol = created_user(s, "carol@example.com", "ef11111-xyz").await;
    let carols = family(carol.id, None);
    s.create_family(&carols, None).await.unwrap();

    // What memberships_of and find_org give, in one read.
    let (user, orgs) = s
        .find_user_and_organizations_of_unrevoked_family(bobs.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user, bob);
    let expected: Vec<_> = [&bob_globex, &bob_acme]
        .iter()
        .map(|m| {
            let org = if m.org_id == acme.id { &acme } else { &globex };
            (org.clone(), m.roles.clone())
        })
        .collect();
    assert_eq!(orgs.len(), 2);
    for ((o, roles), (eo, eroles)) in orgs.iter().zip(&expected) {
        assert_eq!((o.id, roles), (eo.id, eroles));
        assert_eq!(Some(o.clone()), s.find_org(o.id).await.unwrap());
    }
    // The same by the user's id (a code exchange's read).
    let (by_id, by_id_orgs) = s.find_with_organizations(bob.id).await.unwrap().unwrap();
    assert_eq!((by_id, by_id_orgs), (user.clone(), orgs.clone()));
    assert_eq!(
        s.find_with_organizations(carol.id).await.unwrap(),
        Some((carol.clone(), vec![]))
    );
    assert_eq!(
        s.find_with_organizations(UserId(Uuid::now_v7()))
            .await
            .unwrap(),
        None
    );
    // A user in no organization; an unknown or revoked family.
    assert_eq!(
        s.find_user_and_organizations_of_unrevoked_family(carols.id)
            .await
            .unwrap(),
        Some((carol, vec![]))
    );
    assert_eq!(
        s.find_user_and_organizations_of_unrevoked_family(Uuid::now_v7())
            .await
            .unwrap(),
        None
    );
    assert!(s.revoke_family(bobs.id, at(50.0), "logout").await.unwrap());
    assert_eq!(
        s.find_user_and_organizations_of_unrevoked_family(bobs.id)
            .await
            .unwrap(),
        None
    );
}

// ---------------------------------------------------------------- signing keys

async fn signing_keys_list_create_retire(s: &SeaStorage) {
    assert!(SigningKeyRepo::list(s).await.unwrap().is_empty());

    // Created out of order, around a whole second.
    let whole = T0.replace_nanosecond(0).unwrap();
    let newest = signing_key("k-newest", whole + Duration::seconds(1));
    let middle = signing_key("k-middle", whole + Duration::milliseconds(250));
    let oldest = signing_key("k-oldest", whole);
    for k in [&newest, &oldest, &middle] {
        SigningKeyRepo::create(s, k).await.unwrap();
    }
    let listed = SigningKeyRepo::list(s).await.unwrap();
    assert_eq!(listed, vec![oldest.clone(), middle.clone(), newest.clone()]);

    assert_conflict(SigningKeyRepo::create(s, &signing_key("k-oldest", at(99.0))).await);

    s.retire("k-oldest", at(100.0)).await.unwrap();
    // Retiring again keeps the first time; an unknown kid changes nothing.
    s.retire("k-oldest", at(200.0)).await.unwrap();
    s.retire("k-unknown", at(200.0)).await.unwrap();
    let listed = SigningKeyRepo::list(s).await.unwrap();
    let retired = StoredSigningKey {
        retired_at: Some(at(100.0)),
        ..oldest
    };
    assert_eq!(listed, vec![retired, middle, newest]);
}

// ---------------------------------------------------------------- consents

async fn consents_upsert_and_replace(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let marketplace = ClientId("marketplace".into());
    let console = ClientId("console".into());
    assert_eq!(
        ConsentRepo::find(s, alice.id, &marketplace).await.unwrap(),
        None
    );

    let first = Consent {
        user_id: alice.id,
        client_id: marketplace.clone(),
        scope: "openid email".into(),
        granted_at: at(1.0),
    };
    s.upsert(&first).await.unwrap();
    assert_eq!(
        ConsentRepo::find(s, alice.id, &marketplace).await.unwrap(),
        Some(first)
    );

    let widened = Consent {
        user_id: alice.id,
        client_id: marketplace.clone(),
        scope: "openid email profile".into(),
        granted_at: at(2.0),
    };
    s.upsert(&widened).await.unwrap();
    let found = ConsentRepo::find(s, alice.id, &marketplace).await.unwrap();
    assert_eq!(found, Some(widened.clone()));

    let other = Consent {
        client_id: console.clone(),
        scope: "openid".into(),
        ..widened.clone()
    };
    s.upsert(&other).await.unwrap();
    assert_eq!(
        ConsentRepo::find(s, alice.id, &console).await.unwrap(),
        Some(other)
    );
    let found = ConsentRepo::find(s, alice.id, &marketplace).await.unwrap();
    assert_eq!(found, Some(widened));

    let ghost = Consent {
        user_id: UserId(Uuid::now_v7()),
        client_id: console,
        scope: "openid".into(),
        granted_at: T0,
    };
    assert_conflict(s.upsert(&ghost).await);
}

// ---------------------------------------------------------------- organizations

async fn org_create_with_creator_membership(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    // Settings other than the defaults, and a time not in UTC with
    // nanoseconds: stored in UTC, to the microsecond.
    let created = datetime!(2026-11-22 11:00:00.123456789 +01:00);
    let org = Organization {
        mfa_required_for: vec!["console".into(), "api".into()],
        password_policy: PasswordPolicy {
            min_length: 12,
            require_digit: true,
            allowed_special: Some("!@#".into()),
            ..PasswordPolicy::default()
        },
        ..organization("Acme SAS", Some("73282932000074"), alice.id, created)
    };
    let creator = membership(org.id, alice.id, &[Role::Administrator], created);
    s.create_org(&org, &creator).await.unwrap();

    let expected = Organization {
        created_at: stored_time(created),
        ..org.clone()
    };
    assert_eq!(s.find_org(org.id).await.unwrap(), Some(expected));
    let creator = Membership {
        created_at: stored_time(created),
        ..creator
    };
    assert_eq!(
        s.find_membership(org.id, alice.id).await.unwrap(),
        Some(creator.clone())
    );
    assert_eq!(s.list_members(org.id).await.unwrap(), vec![creator.clone()]);
    assert_eq!(s.memberships_of(alice.id).await.unwrap(), vec![creator]);

    // A foreign company: no SIRET.
    let gmbh = Organization {
        country: "DE".into(),
        ..organization("Beispiel GmbH", None, alice.id, at(1.0))
    };
    created_org(s, &gmbh).await;
    assert_eq!(s.find_org(gmbh.id).await.unwrap(), Some(gmbh));

    assert_eq!(s.find_org(OrgId(Uuid::now_v7())).await.unwrap(), None);
    let nobody = UserId(Uuid::now_v7());
    assert_eq!(s.find_membership(org.id, nobody).await.unwrap(), None);
    assert_eq!(s.memberships_of(nobody).await.unwrap(), vec![]);
}

async fn org_creation_is_atomic(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    // The organization row is fine, the membership is not (unknown user):
    // neither is written.
    let org = organization("Acme SAS", Some("73282932000074"), alice.id, T0);
    let ghost = UserId(Uuid::now_v7());
    let bad_creator = membership(org.id, ghost, &[Role::Administrator], T0);
    assert_conflict(s.create_org(&org, &bad_creator).await);
    assert_eq!(s.find_org(org.id).await.unwrap(), None);
    assert_eq!(s.list_orgs(None, 100, 0).await.unwrap(), vec![]);

    // Nor does the SIRET stay taken.
    created_org(s, &org).await;
    assert_eq!(s.find_org(org.id).await.unwrap(), Some(org.clone()));

    // Same id again.
    let again = membership(org.id, alice.id, &[Role::Administrator], T0);
    let dup_id = Organization {
        siret: None,
        ..org.clone()
    };
    assert_conflict(s.create_org(&dup_id, &again).await);
}

async fn org_siret_conflict_writes_nothing(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let bob = created_user(s, "bob@example.com", "cd67890-xyz").await;
    let first = organization("Acme SAS", Some("73282932000074"), alice.id, T0);
    let alices = created_org(s, &first).await;

    // Bob registers the same company: refused while it is pending...
    let dup = organization("ACME", Some("73282932000074"), bob.id, at(1.0));
    let bobs = membership(dup.id, bob.id, &[Role::Administrator], at(1.0));
    assert_conflict(s.create_org(&dup, &bobs).await);
    // ...and once validated.
    assert!(
        s.set_status(first.id, OrgStatus::Pending, OrgStatus::Validated, at(2.0))
            .await
            .unwrap()
    );
    assert_conflict(s.create_org(&dup, &bobs).await);

    // Nothing of the refused organization was written.
    assert_eq!(s.find_org(dup.id).await.unwrap(), None);
    assert_eq!(s.find_membership(dup.id, bob.id).await.unwrap(), None);
    assert_eq!(s.memberships_of(bob.id).await.unwrap(), vec![]);
    let orgs = s.list_orgs(None, 100, 0).await.unwrap();
    assert_eq!(orgs.iter().map(|o| o.id).collect::<Vec<_>>(), [first.id]);
    assert_eq!(s.list_members(first.id).await.unwrap(), vec![alices]);

    // Companies without a SIRET never collide.
    for name in ["Beispiel GmbH", "Ejemplo SL"] {
        created_org(s, &organization(name, None, bob.id, at(3.0))).await;
    }
    assert_eq!(s.memberships_of(bob.id).await.unwrap().len(), 2);
}

async fn org_rejected_siret_can_be_reused(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let bob = created_user(s, "bob@example.com", "cd67890-xyz").await;
    let siret = Some("73282932000074");
    let rejected = organization("Acme", siret, alice.id, T0);
    created_org(s, &rejected).await;
    assert!(
        s.set_status(
            rejected.id,
            OrgStatus::Pending,
            OrgStatus::Rejected,
            at(1.0)
        )
        .await
        .unwrap()
    );

    let again = organization("Acme SAS", siret, bob.id, at(2.0));
    created_org(s, &again).await;
    assert_eq!(s.find_org(again.id).await.unwrap(), Some(again.clone()));
    // Several rejected registrations of a company may coexist.
    assert!(
        s.set_status(again.id, OrgStatus::Pending, OrgStatus::Rejected, at(3.0))
            .await
            .unwrap()
    );
    let third = organization("Acme SAS", siret, bob.id, at(4.0));
    created_org(s, &third).await;

    // Reviving a rejected registration while the SIRET is taken again is a
    // conflict, and changes nothing.
    assert_conflict(
        s.set_status(
            rejected.id,
            OrgStatus::Rejected,
            OrgStatus::Pending,
            at(5.0),
        )
        .await,
    );
    let back = s.find_org(rejected.id).await.unwrap().unwrap();
    assert_eq!(back.status, OrgStatus::Rejected);
    assert_eq!(back.decided_at, Some(at(1.0)));
}

async fn org_set_status_compare_and_swap(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let org = organization("Acme SAS", Some("73282932000074"), alice.id, T0);
    created_org(s, &org).await;

    assert!(
        s.set_status(org.id, OrgStatus::Pending, OrgStatus::Validated, at(5.0))
            .await
            .unwrap()
    );
    let decided = Organization {
        status: OrgStatus::Validated,
        decided_at: Some(at(5.0)),
        ..org.clone()
    };
    assert_eq!(s.find_org(org.id).await.unwrap(), Some(decided.clone()));

    // The same decision again, or another from the stale status: refused,
    // nothing changes.
    assert!(
        !s.set_status(org.id, OrgStatus::Pending, OrgStatus::Validated, at(6.0))
            .await
            .unwrap()
    );
    assert!(
        !s.set_status(org.id, OrgStatus::Pending, OrgStatus::Rejected, at(7.0))
            .await
            .unwrap()
    );
    assert_eq!(s.find_org(org.id).await.unwrap(), Some(decided));

    // From the current status it moves (and `decided_at` follows).
    assert!(
        s.set_status(org.id, OrgStatus::Validated, OrgStatus::Rejected, at(8.0))
            .await
            .unwrap()
    );
    let back = s.find_org(org.id).await.unwrap().unwrap();
    assert_eq!(back.status, OrgStatus::Rejected);
    assert_eq!(back.decided_at, Some(at(8.0)));

    // An unknown organization.
    let ghost = OrgId(Uuid::now_v7());
    assert!(
        !s.set_status(ghost, OrgStatus::Pending, OrgStatus::Validated, at(9.0))
            .await
            .unwrap()
    );
}

async fn concurrent_org_decisions_have_one_winner(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    for round in 0..5 {
        let org = organization("Acme", None, alice.id, at(f64::from(round)));
        created_org(s, &org).await;
        let id = org.id;
        let decisions = [OrgStatus::Validated, OrgStatus::Rejected];
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(decisions.len()));
        let handles: Vec<_> = decisions
            .iter()
            .map(|&new| {
                let (s, barrier) = (s.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    s.set_status(id, OrgStatus::Pending, new, at(10.0)).await
                })
            })
            .collect();
        let mut won = Vec::new();
        for (h, new) in handles.into_iter().zip(decisions) {
            if h.await.unwrap().unwrap() {
                won.push(new);
            }
        }
        assert_eq!(won.len(), 1, "round {round}: exactly one decision wins");
        let back = s.find_org(org.id).await.unwrap().unwrap();
        assert_eq!(back.status, won[0], "round {round}");
    }
}

async fn org_update_security_round_trips(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let org = organization("Acme SAS", Some("73282932000074"), alice.id, T0);
    let other = organization("Other", None, alice.id, T0);
    created_org(s, &org).await;
    created_org(s, &other).await;

    let kinds = vec!["console".to_owned(), "api".to_owned()];
    let policy = PasswordPolicy {
        min_length: 14,
        max_length: 64,
        require_lowercase: true,
        require_uppercase: true,
        require_digit: true,
        require_special: true,
        allowed_special: Some("!?#-_".into()),
        refuse_breached: false,
    };
    s.update_security(org.id, &kinds, &policy).await.unwrap();
    let expected = Organization {
        mfa_required_for: kinds,
        password_policy: policy,
        ..org.clone()
    };
    assert_eq!(s.find_org(org.id).await.unwrap(), Some(expected));
    assert_eq!(s.find_org(other.id).await.unwrap(), Some(other.clone()));

    // Back to nothing enforced.
    s.update_security(org.id, &[], &PasswordPolicy::default())
        .await
        .unwrap();
    assert_eq!(s.find_org(org.id).await.unwrap(), Some(org));

    // An unknown organization: nothing happens.
    let ghost = OrgId(Uuid::now_v7());
    s.update_security(ghost, &[], &PasswordPolicy::default())
        .await
        .unwrap();
    assert_eq!(s.find_org(ghost).await.unwrap(), None);
}

async fn members_add_set_roles_remove(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let bob = created_user(s, "bob@example.com", "cd67890-xyz").await;
    let org = organization("Acme SAS", Some("73282932000074"), alice.id, T0);
    let admin = created_org(s, &org).await;

    let bobs = membership(org.id, bob.id, &[Role::Member], at(1.0));
    s.add_member(&bobs).await.unwrap();
    assert_eq!(
        s.find_membership(org.id, bob.id).await.unwrap(),
        Some(bobs.clone())
    );

    // Already a member (with other roles): refused, nothing changes.
    let again = membership(org.id, bob.id, &[Role::Administrator], at(2.0));
    assert_conflict(s.add_member(&again).await);
    assert_eq!(
        s.find_membership(org.id, bob.id).await.unwrap(),
        Some(bobs.clone())
    );
    // An unknown user or organization.
    let ghost = membership(org.id, UserId(Uuid::now_v7()), &[Role::Member], at(2.0));
    assert_conflict(s.add_member(&ghost).await);
    let nowhere = membership(OrgId(Uuid::now_v7()), bob.id, &[Role::Member], at(2.0));
    assert_conflict(s.add_member(&nowhere).await);
    assert_eq!(
        s.list_members(org.id).await.unwrap(),
        vec![admin.clone(), bobs.clone()]
    );

    // Roles are replaced as given, in order.
    let roles = [Role::SecurityManager, Role::Member];
    assert!(s.set_roles(org.id, bob.id, &roles).await.unwrap());
    let promoted = Membership {
        roles: roles.to_vec(),
        ..bobs.clone()
    };
    assert_eq!(
        s.find_membership(org.id, bob.id).await.unwrap(),
        Some(promoted.clone())
    );
    // The same roles again still finds the membership.
    assert!(s.set_roles(org.id, bob.id, &roles).await.unwrap());
    assert_eq!(
        s.find_membership(org.id, alice.id).await.unwrap(),
        Some(admin.clone())
    );
    let stranger = UserId(Uuid::now_v7());
    assert!(!s.set_roles(org.id, stranger, &roles).await.unwrap());
    assert!(
        !s.set_roles(OrgId(Uuid::now_v7()), bob.id, &roles)
            .await
            .unwrap()
    );

    assert!(s.remove_member(org.id, bob.id).await.unwrap());
    assert!(!s.remove_member(org.id, bob.id).await.unwrap());
    assert_eq!(s.find_membership(org.id, bob.id).await.unwrap(), None);
    assert_eq!(s.memberships_of(bob.id).await.unwrap(), vec![]);
    assert_eq!(s.list_members(org.id).await.unwrap(), vec![admin]);
    // Removed, they can be added again.
    s.add_member(&promoted).await.unwrap();
    assert_eq!(s.memberships_of(bob.id).await.unwrap(), vec![promoted]);
}

async fn memberships_of_and_members_in_join_order(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let bob = created_user(s, "bob@example.com", "cd67890-xyz").await;
    let carol = created_user(s, "carol@example.com", "ef11111-xyz").await;
    let whole = T0.replace_nanosecond(0).unwrap() + Duration::seconds(5);
    let acme = organization("Acme", None, alice.id, whole - Duration::seconds(10));
    let globex = organization("Globex", None, carol.id, whole - Duration::seconds(10));
    let acme_admin = created_org(s, &acme).await;
    let globex_admin = created_org(s, &globex).await;

    // Joined out of insertion order, with whole and fractional seconds.
    let bob_acme = membership(
        acme.id,
        bob.id,
        &[Role::Member],
        whole + Duration::milliseconds(500),
    );
    let bob_globex = membership(globex.id, bob.id, &[Role::SecurityManager], whole);
    let carol_acme = membership(acme.id, carol.id, &[Role::Member], whole);
    for m in [&bob_acme, &bob_globex, &carol_acme] {
        s.add_member(m).await.unwrap();
    }

    assert_eq!(
        s.memberships_of(bob.id).await.unwrap(),
        vec![bob_globex.clone(), bob_acme.clone()]
    );
    assert_eq!(
        s.memberships_of(carol.id).await.unwrap(),
        vec![globex_admin.clone(), carol_acme.clone()]
    );
    assert_eq!(
        s.memberships_of(alice.id).await.unwrap(),
        vec![acme_admin.clone()]
    );
    assert_eq!(
        s.list_members(acme.id).await.unwrap(),
        vec![acme_admin, carol_acme, bob_acme]
    );
    assert_eq!(
        s.list_members(globex.id).await.unwrap(),
        vec![globex_admin, bob_globex]
    );
    assert_eq!(s.list_members(OrgId(Uuid::now_v7())).await.unwrap(), vec![]);
}

async fn list_orgs_filter_and_order(s: &SeaStorage) {
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    // Created out of order, with whole and fractional seconds.
    let whole = T0.replace_nanosecond(0).unwrap() + Duration::seconds(5);
    let times = [
        whole + Duration::milliseconds(500),
        whole,
        whole + Duration::seconds(1),
        whole - Duration::milliseconds(100),
        whole + Duration::microseconds(1),
    ];
    let statuses = [
        OrgStatus::Pending,
        OrgStatus::Validated,
        OrgStatus::Pending,
        OrgStatus::Rejected,
        OrgStatus::Validated,
    ];
    let mut orgs = Vec::new();
    for (i, (t, status)) in times.iter().zip(statuses).enumerate() {
        let org = organization(&format!("Org {i}"), None, alice.id, *t);
        created_org(s, &org).await;
        let org = if status == OrgStatus::Pending {
            org
        } else {
            assert!(
                s.set_status(org.id, OrgStatus::Pending, status, at(60.0))
                    .await
                    .unwrap()
            );
            Organization {
                status,
                decided_at: Some(at(60.0)),
                ..org
            }
        };
        orgs.push(org);
    }
    let mut expected = orgs.clone();
    expected.sort_by_key(|o| o.created_at);

    assert_eq!(s.list_orgs(None, 100, 0).await.unwrap(), expected);
    assert_eq!(s.list_orgs(None, 2, 0).await.unwrap(), expected[..2]);
    assert_eq!(s.list_orgs(None, 2, 2).await.unwrap(), expected[2..4]);
    assert_eq!(s.list_orgs(None, 10, 5).await.unwrap(), vec![]);
    for status in [
        OrgStatus::Pending,
        OrgStatus::Validated,
        OrgStatus::Rejected,
    ] {
        let of_status: Vec<_> = expected
            .iter()
            .filter(|o| o.status == status)
            .cloned()
            .collect();
        assert_eq!(
            s.list_orgs(Some(status), 100, 0).await.unwrap(),
            of_status,
            "{status:?}"
        );
        assert_eq!(
            s.list_orgs(Some(status), 1, 1).await.unwrap(),
            of_status[1.min(of_status.len())..of_status.len().min(2)],
            "{status:?}, second page of one"
        );
    }
}

// ---------------------------------------------------------------- audit

async fn audit_record_and_list_newest_first(s: &SeaStorage) {
    let alice = UserId(Uuid::now_v7());
    let bob = UserId(Uuid::now_v7());
    let whole = T0.replace_nanosecond(0).unwrap();
    // Recorded out of order; no users row is needed (no foreign key).
    let times = [
        whole + Duration::milliseconds(500),
        whole,
        whole + Duration::seconds(2),
        whole - Duration::microseconds(1),
        whole + Duration::seconds(1),
    ];
    let mut alices = Vec::new();
    for (i, t) in times.iter().enumerate() {
        let e = audit_event(Some(alice), &format!("login.step{i}"), *t);
        s.record(&e).await.unwrap();
        alices.push(e);
    }
    let bobs = audit_event(Some(bob), "login.failed", at(5.0));
    s.record(&bobs).await.unwrap();
    let anonymous = AuditEvent {
        user_id: None,
        client_id: None,
        ip: None,
        user_agent: None,
        detail: json!({}),
        ..audit_event(None, "login.unknown_user", at(6.0))
    };
    s.record(&anonymous).await.unwrap();

    let mut newest_first = alices.clone();
    newest_first.sort_by_key(|e| std::cmp::Reverse(e.at));
    assert_eq!(s.list_for_user(alice, 3).await.unwrap(), newest_first[..3]);
    assert_eq!(s.list_for_user(alice, 100).await.unwrap(), newest_first);
    assert_eq!(s.list_for_user(bob, 100).await.unwrap(), vec![bobs]);
    let nobody = UserId(Uuid::now_v7());
    assert_eq!(s.list_for_user(nobody, 100).await.unwrap(), vec![]);

    assert_conflict(s.record(&anonymous).await);
}

async fn audit_list_for_org_newest_first(s: &SeaStorage) {
    // No organizations row is needed (no foreign key).
    let acme = OrgId(Uuid::now_v7());
    let globex = OrgId(Uuid::now_v7());
    let alice = UserId(Uuid::now_v7());
    let whole = T0.replace_nanosecond(0).unwrap();
    let times = [
        whole + Duration::milliseconds(500),
        whole,
        whole + Duration::seconds(2),
        whole - Duration::microseconds(1),
        whole + Duration::seconds(1),
    ];
    let mut acmes = Vec::new();
    for (i, t) in times.iter().enumerate() {
        let e = AuditEvent {
            org_id: Some(acme),
            ..audit_event(Some(alice), &format!("org.event{i}"), *t)
        };
        s.record(&e).await.unwrap();
        acmes.push(e);
    }
    let globexs = AuditEvent {
        org_id: Some(globex),
        ..audit_event(None, "org.created", at(5.0))
    };
    s.record(&globexs).await.unwrap();
    // Alice's own event, of no organization.
    let personal = audit_event(Some(alice), "login.succeeded", at(6.0));
    s.record(&personal).await.unwrap();

    let mut newest_first = acmes.clone();
    newest_first.sort_by_key(|e| std::cmp::Reverse(e.at));
    assert_eq!(s.list_for_org(acme, 3).await.unwrap(), newest_first[..3]);
    assert_eq!(s.list_for_org(acme, 100).await.unwrap(), newest_first);
    assert_eq!(s.list_for_org(globex, 100).await.unwrap(), vec![globexs]);
    let nowhere = OrgId(Uuid::now_v7());
    assert_eq!(s.list_for_org(nowhere, 100).await.unwrap(), vec![]);

    // The user's list has both kinds, `org_id` as recorded.
    let mut alices = acmes;
    alices.push(personal);
    alices.sort_by_key(|e| std::cmp::Reverse(e.at));
    assert_eq!(s.list_for_user(alice, 100).await.unwrap(), alices);
}

// ---------------------------------------------------------------- client state

async fn client_state_touch_creates_then_updates(s: &SeaStorage) {
    let portal = ClientId("marketplace".into());
    assert_eq!(ClientStateRepo::find(s, &portal).await.unwrap(), None);

    s.touch(&portal, at(1.0)).await.unwrap();
    let created = ClientStateRepo::find(s, &portal).await.unwrap().unwrap();
    assert_eq!(created.client_id, portal);
    assert_eq!(created.first_seen_at, at(1.0));
    assert_eq!(created.last_token_at, Some(at(1.0)));

    s.touch(&portal, at(2.5)).await.unwrap();
    let updated = ClientStateRepo::find(s, &portal).await.unwrap().unwrap();
    assert_eq!(updated.first_seen_at, at(1.0));
    assert_eq!(updated.last_token_at, Some(at(2.5)));

    let other = ClientId("console".into());
    assert_eq!(ClientStateRepo::find(s, &other).await.unwrap(), None);
}

// ---------------------------------------------------------------- schema

async fn migrate_is_idempotent(s: &SeaStorage) {
    // The storage is already migrated once.
    s.migrate().await.unwrap();
    s.migrate().await.unwrap();
    s.ping().await.unwrap();
    let u = created_user(s, "alice@example.com", "ab12345-xyz").await;
    assert_eq!(s.find_by_id(u.id).await.unwrap(), Some(u));
}

// ---------------------------------------------------------------- both backends

macro_rules! on_both_backends {
    ($file:ident: $($case:ident => $sqlite:ident, $postgres:ident;)+) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let storage = fresh_sqlite().await;
            $case(&storage).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let db = fresh_postgres().await;
            let storage = SeaStorage::connect(db.url())
                .await
                .expect("connecting to the test database");
            storage.migrate().await.expect("migrating the test database");
            // Run in a task so a failing case still drops the database
            // before the panic is passed on.
            let outcome = tokio::spawn(async move { $case(&storage).await }).await;
            db.drop_database().await;
            if let Err(e) = outcome {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    )+
        /// The same cases on a SQLite file, where reads and writes go to
        /// separate pools (one writing connection, query-only readers): a
        /// write sent to a reader would fail here.
        mod $file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let dir = std::env::temp_dir()
                        .join(format!("idp-repos-{}", uuid::Uuid::new_v4().simple()));
                    std::fs::create_dir_all(&dir).unwrap();
                    let url = format!("sqlite://{}/idp.db?mode=rwc", dir.display());
                    let storage = idp_storage::SeaStorage::connect(&url).await.unwrap();
                    storage.migrate().await.unwrap();
                    let outcome =
                        tokio::spawn(async move { super::$case(&storage).await }).await;
                    let _ = std::fs::remove_dir_all(&dir);
                    if let Err(e) = outcome {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            )+
        }
    };
}

on_both_backends! {
    on_sqlite_file:
    user_create_and_find => user_create_and_find__sqlite, user_create_and_find__postgres;
    user_fields_round_trip => user_fields_round_trip__sqlite, user_fields_round_trip__postgres;
    user_duplicate_email_conflicts =>
        user_duplicate_email_conflicts__sqlite, user_duplicate_email_conflicts__postgres;
    user_list_order => user_list_order__sqlite, user_list_order__postgres;
    user_login_settings_default_then_set =>
        user_login_settings_default_then_set__sqlite,
        user_login_settings_default_then_set__postgres;
    user_set_email_conflict_changes_nothing =>
        user_set_email_conflict_changes_nothing__sqlite,
        user_set_email_conflict_changes_nothing__postgres;
    user_backup_email_and_name =>
        user_backup_email_and_name__sqlite, user_backup_email_and_name__postgres;
    password_set_and_replace => password_set_and_replace__sqlite, password_set_and_replace__postgres;
    password_of_unknown_user_is_refused =>
        password_of_unknown_user_is_refused__sqlite, password_of_unknown_user_is_refused__postgres;
    concurrent_password_sets_keep_one_row =>
        concurrent_password_sets_keep_one_row__sqlite,
        concurrent_password_sets_keep_one_row__postgres;
    credentials_create_find_and_list_by_kind =>
        credentials_create_find_and_list_by_kind__sqlite,
        credentials_create_find_and_list_by_kind__postgres;
    credential_secret_swaps_once =>
        credential_secret_swaps_once__sqlite, credential_secret_swaps_once__postgres;
    concurrent_credential_swaps_have_one_winner =>
        concurrent_credential_swaps_have_one_winner__sqlite,
        concurrent_credential_swaps_have_one_winner__postgres;
    credentials_rename_and_delete =>
        credentials_rename_and_delete__sqlite, credentials_rename_and_delete__postgres;
    devices_create_find_touch => devices_create_find_touch__sqlite, devices_create_find_touch__postgres;
    device_revoke_once => device_revoke_once__sqlite, device_revoke_once__postgres;
    devices_list_most_recently_seen_first =>
        devices_list_most_recently_seen_first__sqlite,
        devices_list_most_recently_seen_first__postgres;
    family_create_with_first_token =>
        family_create_with_first_token__sqlite, family_create_with_first_token__postgres;
    family_creation_is_atomic => family_creation_is_atomic__sqlite, family_creation_is_atomic__postgres;
    rotate_once_then_refused => rotate_once_then_refused__sqlite, rotate_once_then_refused__postgres;
    concurrent_rotation_has_one_winner =>
        concurrent_rotation_has_one_winner__sqlite, concurrent_rotation_has_one_winner__postgres;
    revoke_family_once => revoke_family_once__sqlite, revoke_family_once__postgres;
    revoke_families_of_session =>
        revoke_families_of_session__sqlite, revoke_families_of_session__postgres;
    grant_reads_bring_the_user_in_the_same_query =>
        grant_reads_bring_the_user_in_the_same_query__sqlite,
        grant_reads_bring_the_user_in_the_same_query__postgres;
    grant_read_with_organizations_in_join_order =>
        grant_read_with_organizations_in_join_order__sqlite,
        grant_read_with_organizations_in_join_order__postgres;
    signing_keys_list_create_retire =>
        signing_keys_list_create_retire__sqlite, signing_keys_list_create_retire__postgres;
    consents_upsert_and_replace =>
        consents_upsert_and_replace__sqlite, consents_upsert_and_replace__postgres;
    org_create_with_creator_membership =>
        org_create_with_creator_membership__sqlite, org_create_with_creator_membership__postgres;
    org_creation_is_atomic => org_creation_is_atomic__sqlite, org_creation_is_atomic__postgres;
    org_siret_conflict_writes_nothing =>
        org_siret_conflict_writes_nothing__sqlite, org_siret_conflict_writes_nothing__postgres;
    org_rejected_siret_can_be_reused =>
        org_rejected_siret_can_be_reused__sqlite, org_rejected_siret_can_be_reused__postgres;
    org_set_status_compare_and_swap =>
        org_set_status_compare_and_swap__sqlite, org_set_status_compare_and_swap__postgres;
    concurrent_org_decisions_have_one_winner =>
        concurrent_org_decisions_have_one_winner__sqlite,
        concurrent_org_decisions_have_one_winner__postgres;
    org_update_security_round_trips =>
        org_update_security_round_trips__sqlite, org_update_security_round_trips__postgres;
    members_add_set_roles_remove =>
        members_add_set_roles_remove__sqlite, members_add_set_roles_remove__postgres;
    memberships_of_and_members_in_join_order =>
        memberships_of_and_members_in_join_order__sqlite,
        memberships_of_and_members_in_join_order__postgres;
    list_orgs_filter_and_order => list_orgs_filter_and_order__sqlite, list_orgs_filter_and_order__postgres;
    audit_record_and_list_newest_first =>
        audit_record_and_list_newest_first__sqlite, audit_record_and_list_newest_first__postgres;
    audit_list_for_org_newest_first =>
        audit_list_for_org_newest_first__sqlite, audit_list_for_org_newest_first__postgres;
    client_state_touch_creates_then_updates =>
        client_state_touch_creates_then_updates__sqlite,
        client_state_touch_creates_then_updates__postgres;
    migrate_is_idempotent => migrate_is_idempotent__sqlite, migrate_is_idempotent__postgres;
}

// ---------------------------------------------------------------- stored garbage

#[test]
fn stored_garbage_is_corrupt() {
    let row = entities::users::Model {
        id: Uuid::now_v7(),
        customer_id: "ab12345-xyz".into(),
        email: "alice@example.com".into(),
        email_normalized: "alice@example.com".into(),
        email_verified: true,
        name: None,
        locale: None,
        status: "active".into(),
        phone: None,
        phone_verified: false,
        mfa_required: false,
        last_method: None,
        backup_email: None,
        created_at: T0,
        updated_at: T0,
    };
    assert!(User::try_from(row.clone()).is_ok());
    for bad in [
        entities::users::Model {
            status: "suspended".into(),
            ..row.clone()
        },
        entities::users::Model {
            email: "not an address".into(),
            ..row.clone()
        },
        entities::users::Model {
            customer_id: "12345".into(),
            ..row.clone()
        },
        entities::users::Model {
            backup_email: Some("not an address".into()),
            ..row.clone()
        },
    ] {
        assert!(matches!(User::try_from(bad), Err(RepoError::Corrupt(_))));
    }

    let fam = entities::token_families::Model {
        id: Uuid::now_v7(),
        user_id: Uuid::now_v7(),
        client_id: "marketplace".into(),
        scope: "openid".into(),
        sid: None,
        auth_time: T0,
        acr: None,
        amr: r#"["pwd","otp"]"#.into(),
        created_at: T0,
        expires_at: T0,
        revoked_at: None,
        revoked_reason: None,
        resources: Some(r#"["https://billing.example/api"]"#.into()),
        dpop_jkt: None,
        claims: Some(r#"{"userinfo":["name"]}"#.into()),
    };
    let read = TokenFamily::try_from(fam.clone()).unwrap();
    assert_eq!(read.amr, ["pwd", "otp"]);
    assert_eq!(read.claims.userinfo, ["name"]);
    assert!(read.claims.id_token.is_empty());
    let none = entities::token_families::Model {
        claims: None,
        ..fam.clone()
    };
    assert!(TokenFamily::try_from(none).unwrap().claims.is_empty());
    assert_eq!(read.resources, ["https://billing.example/api"]);
    let bad_resources = entities::token_families::Model {
        resources: Some("{}".into()),
        ..fam.clone()
    };
    assert!(matches!(
        TokenFamily::try_from(bad_resources),
        Err(RepoError::Corrupt(_))
    ));
    let bad_claims = entities::token_families::Model {
        claims: Some("[1]".into()),
        ..fam.clone()
    };
    assert!(matches!(
        TokenFamily::try_from(bad_claims),
        Err(RepoError::Corrupt(_))
    ));
    let bad = entities::token_families::Model {
        amr: "pwd".into(),
        ..fam
    };
    assert!(matches!(
        TokenFamily::try_from(bad),
        Err(RepoError::Corrupt(_))
    ));

    let event = entities::audit_events::Model {
        id: Uuid::now_v7(),
        at: T0,
        kind: "login.succeeded".into(),
        user_id: None,
        client_id: None,
        org_id: None,
        ip: None,
        user_agent: None,
        detail: "{not json".into(),
    };
    assert!(matches!(
        AuditEvent::try_from(event),
        Err(RepoError::Corrupt(_))
    ));

    let org = entities::organizations::Model {
        id: Uuid::now_v7(),
        name: "Acme SAS".into(),
        siret: Some("73282932000074".into()),
        country: "FR".into(),
        status: "validated".into(),
        created_by: Uuid::now_v7(),
        created_at: T0,
        decided_at: Some(T0),
        mfa_required_for: r#"["console"]"#.into(),
        password_policy: r#"{"min_length":12}"#.into(),
    };
    let back = Organization::try_from(org.clone()).unwrap();
    assert_eq!(back.mfa_required_for, ["console"]);
    // Fields missing from the stored policy take their defaults.
    assert_eq!(
        back.password_policy,
        PasswordPolicy {
            min_length: 12,
            ..PasswordPolicy::default()
        }
    );
    for bad in [
        entities::organizations::Model {
            status: "approved".into(),
            ..org.clone()
        },
        entities::organizations::Model {
            mfa_required_for: "console".into(),
            ..org.clone()
        },
        entities::organizations::Model {
            password_policy: r#"{"min_length":"long"}"#.into(),
            ..org.clone()
        },
        entities::organizations::Model {
            password_policy: r#"{"shiny":true}"#.into(),
            ..org.clone()
        },
    ] {
        assert!(matches!(
            Organization::try_from(bad),
            Err(RepoError::Corrupt(_))
        ));
    }

    let member = entities::memberships::Model {
        org_id: Uuid::now_v7(),
        user_id: Uuid::now_v7(),
        roles: r#"["administrator","security_manager"]"#.into(),
        created_at: T0,
    };
    assert_eq!(
        Membership::try_from(member.clone()).unwrap().roles,
        [Role::Administrator, Role::SecurityManager]
    );
    for roles in [r#"["owner"]"#, "administrator", r#"[1]"#] {
        let bad = entities::memberships::Model {
            roles: roles.into(),
            ..member.clone()
        };
        assert!(
            matches!(Membership::try_from(bad), Err(RepoError::Corrupt(_))),
            "{roles}"
        );
    }
}

// ---------------------------------------------------------------- webhook outbox

/// Scheduling times are kept to the millisecond.
const W0: OffsetDateTime = datetime!(2026-11-22 10:00:00.123 UTC);

fn wat(seconds: f64) -> OffsetDateTime {
    W0 + Duration::seconds_f64(seconds)
}

fn webhook_delivery(n: u32, due: OffsetDateTime) -> idp_core::webhooks::WebhookDelivery {
    use idp_core::webhooks::{DeliveryStatus, WebhookDelivery, WebhookEventType};
    WebhookDelivery {
        id: Uuid::now_v7(),
        event_id: Uuid::now_v7(),
        event_type: WebhookEventType::UserCreated,
        client_id: ClientId("platform".into()),
        url: format!("https://platform.example/hooks/{n}"),
        payload: json!({"n": n}).to_string(),
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_attempt_at: due,
        lease_until: None,
        last_error: None,
        created_at: T0,
        delivered_at: None,
    }
}

async fn webhook_outbox_claim_lease_and_finish(s: &SeaStorage) {
    use idp_core::ports::WebhookRepo;
    use idp_core::webhooks::DeliveryStatus;
    let now = wat(0.0);
    let a = webhook_delivery(1, now);
    let b = webhook_delivery(2, wat(-5.0));
    let later = webhook_delivery(3, wat(60.0));
    s.enqueue(&[a.clone(), b.clone(), later.clone()])
        .await
        .unwrap();
    s.enqueue(&[]).await.unwrap();
    assert_eq!(s.list_deliveries(None, 10).await.unwrap().len(), 3);

    // Due ones only, earliest due first, leased.
    let lease = wat(30.0);
    let claimed = s.claim_due(now, lease, 10).await.unwrap();
    let ids: Vec<Uuid> = claimed.iter().map(|d| d.id).collect();
    assert_eq!(ids, vec![b.id, a.id]);
    assert_eq!(claimed[0].lease_until, Some(lease));
    assert_eq!(claimed[0].payload, b.payload);
    assert_eq!(claimed[0].url, b.url);
    // Held: nobody else gets them while the lease runs.
    assert!(
        s.claim_due(wat(29.0), wat(59.0), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A lease that ran out (the holder died) frees them.
    let again = s.claim_due(wat(30.0), wat(60.0), 1).await.unwrap();
    assert_eq!(again.iter().map(|d| d.id).collect::<Vec<_>>(), vec![b.id]);

    // Finishing is conditional on the attempt count seen at claim time.
    assert!(s.mark_delivered(b.id, 0, wat(31.0)).await.unwrap());
    assert!(!s.mark_delivered(b.id, 0, wat(32.0)).await.unwrap(), "once");
    assert!(
        !s.mark_failed(b.id, 0, "late", Some(wat(90.0)))
            .await
            .unwrap(),
        "a delivered one stays delivered"
    );
    assert!(
        s.mark_failed(a.id, 0, "HTTP 503", Some(wat(45.0)))
            .await
            .unwrap()
    );
    assert!(
        !s.mark_failed(a.id, 0, "stale holder", None).await.unwrap(),
        "a stale holder cannot overwrite the newer attempt"
    );
    // Not before its next attempt; the failure released the lease.
    assert!(
        s.claim_due(wat(44.0), wat(74.0), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let retried = s.claim_due(wat(60.0), wat(90.0), 10).await.unwrap();
    assert_eq!(
        retried.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![a.id, later.id]
    );
    assert_eq!(retried[0].attempts, 1);
    assert_eq!(retried[0].last_error.as_deref(), Some("HTTP 503"));
    // Given up.
    assert!(s.mark_failed(a.id, 1, "HTTP 500", None).await.unwrap());
    let rest = s.claim_due(wat(1e6), wat(1e6 + 30.0), 10).await.unwrap();
    assert_eq!(
        rest.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![later.id],
        "a given-up delivery is never claimed again"
    );

    let delivered = s
        .list_deliveries(Some(DeliveryStatus::Delivered), 10)
        .await
        .unwrap();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].id, b.id);
    assert_eq!(delivered[0].attempts, 1);
    assert_eq!(delivered[0].delivered_at, Some(wat(31.0)));
    assert_eq!(delivered[0].lease_until, None);
    let failed = s
        .list_deliveries(Some(DeliveryStatus::Failed), 10)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, a.id);
    assert_eq!(failed[0].attempts, 2);
    assert_eq!(failed[0].last_error.as_deref(), Some("HTTP 500"));
    // Newest first.
    let all = s.list_deliveries(None, 2).await.unwrap();
    assert_eq!(
        all.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![later.id, b.id]
    );
}

async fn concurrent_webhook_claimers_get_disjoint_sets(s: &SeaStorage) {
    use idp_core::ports::WebhookRepo;
    let batch: Vec<_> = (0..40).map(|n| webhook_delivery(n, wat(0.0))).collect();
    s.enqueue(&batch).await.unwrap();
    for round in 0..3 {
        // Each round the previous leases have run out: everything is free.
        let now = wat(f64::from(round) * 100.0);
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(3));
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let (s, barrier) = (s.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    s.claim_due(now, now + Duration::seconds(60), 40).await
                })
            })
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        let mut total = 0;
        for h in handles {
            let got = h.await.unwrap().unwrap();
            total += got.len();
            seen.extend(got.into_iter().map(|d| d.id));
        }
        assert_eq!(
            total,
            seen.len(),
            "round {round}: no delivery claimed twice"
        );
        assert_eq!(seen.len(), 40, "round {round}: every delivery claimed");
    }
}

on_both_backends! {
    webhooks_on_sqlite_file:
    webhook_outbox_claim_lease_and_finish =>
        webhook_outbox_claim_lease_and_finish__sqlite,
        webhook_outbox_claim_lease_and_finish__postgres;
    concurrent_webhook_claimers_get_disjoint_sets =>
        concurrent_webhook_claimers_get_disjoint_sets__sqlite,
        concurrent_webhook_claimers_get_disjoint_sets__postgres;
}

// ---------------------------------------------------------------- federated identities

async fn federated_identity_link_find_touch_and_unlink(s: &SeaStorage) {
    use idp_core::federation::FederatedIdentity;
    use idp_core::ports::FederatedIdentityRepo;
    let alice = created_user(s, "alice@example.com", "ab12345-xyz").await;
    let bob = created_user(s, "bob@example.com", "cd67890-xyz").await;
    let link = |user: UserId, upstream: &str, subject: &str, created_at| FederatedIdentity {
        user_id: user,
        upstream: upstream.into(),
        subject: subject.into(),
        email: Some("alice@partner.example".into()),
        created_at,
        last_used_at: None,
    };
    let partner = link(alice.id, "partner", "248289761001", at(1.0));
    s.create_identity(&partner).await.unwrap();
    s.create_identity(&link(alice.id, "agency", "a-1", at(2.0)))
        .await
        .unwrap();
    assert_eq!(
        s.find_identity("partner", "248289761001").await.unwrap(),
        Some(partner.clone())
    );
    assert_eq!(s.find_identity("partner", "unknown").await.unwrap(), None);
    // The same identity for someone else, or a second link of Alice at the
    // same upstream: conflicts, nothing written.
    assert!(matches!(
        s.create_identity(&link(bob.id, "partner", "248289761001", at(3.0)))
            .await,
        Err(RepoError::Conflict(_))
    ));
    assert!(matches!(
        s.create_identity(&link(alice.id, "partner", "other", at(3.0)))
            .await,
        Err(RepoError::Conflict(_))
    ));
    assert!(s.list_identities(bob.id).await.unwrap().is_empty());
    let listed = s.list_identities(alice.id).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|l| l.upstream.as_str())
            .collect::<Vec<_>>(),
        ["partner", "agency"],
        "oldest first"
    );

    s.touch_identity("partner", "248289761001", at(10.0))
        .await
        .unwrap();
    let touched = s
        .find_identity("partner", "248289761001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(touched.last_used_at, Some(at(10.0)));

    assert!(s.delete_identity(alice.id, "partner").await.unwrap());
    assert!(!s.delete_identity(alice.id, "partner").await.unwrap());
    assert_eq!(
        s.find_identity("partner", "248289761001").await.unwrap(),
        None
    );
    assert_eq!(s.list_identities(alice.id).await.unwrap().len(), 1);
}

on_both_backends! {
    identities_on_sqlite_file:
    federated_identity_link_find_touch_and_unlink =>
        federated_identity_link_find_touch_and_unlink__sqlite,
        federated_identity_link_find_touch_and_unlink__postgres;
}
