//! The signed-in user's account page (`/account`): signing in to it through
//! the real OIDC login, changing the password and the primary email, the
//! backup email, sessions, the protection status and the recent activity.

mod support;

use idp_core::domain::{Email, Membership, OrgId, OrgStatus, Organization, Role};
use idp_core::notify::{Message, Recipient};
use idp_core::password_policy::{PasswordPolicy, Violation};
use idp_core::secret::Secret;
use idp_mail::testing::SmtpSink;
use support::*;

const NEW_PASSWORD: &str = "Purple-Otter-42-Sings";

/// The POST form of `html` whose action is `action`.
fn form_for(html: &str, action: &str) -> String {
    let at = html
        .find(&format!("action=\"{action}\""))
        .unwrap_or_else(|| panic!("no form posting to {action} in {html}"));
    let start = html[..at].rfind("<form").expect("form start");
    let end = at + html[at..].find("</form>").expect("form end") + "</form>".len();
    html[start..end].to_owned()
}

/// Posts `fields` to a form of the page, like a browser.
async fn post_form(
    app: &TestApp,
    browser: &Browser,
    html: &str,
    action: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    browser.submit(app, &form_for(html, action), fields).await
}

/// The identifier and password pages from `url` (which must lead to them);
/// returns the response to the password.
async fn password_login(
    app: &TestApp,
    browser: &Browser,
    url: &str,
    identifier: &str,
    password: &str,
) -> reqwest::Response {
    let (res, _) = browser.follow(app, url).await;
    assert_eq!(res.status(), 200, "the identifier page");
    let html = res.text().await.unwrap();
    let res = browser
        .submit(app, &html, &[("identifier", identifier)])
        .await;
    assert_eq!(res.status(), 303);
    let (res, _) = browser.follow(app, &app.url(&location(&res))).await;
    let html = res.text().await.unwrap();
    browser.submit(app, &html, &[("password", password)]).await
}

/// Signs in again at `url` in a browser whose session already names the
/// user (`max_age=0`): the password is asked at once, no identifier.
async fn password_again(
    app: &TestApp,
    browser: &Browser,
    url: &str,
    password: &str,
) -> reqwest::Response {
    let (res, _) = browser.follow(app, url).await;
    assert_eq!(res.status(), 200, "the password page");
    let html = res.text().await.unwrap();
    assert!(
        Form::parse(&html).unwrap().action.ends_with("/password"),
        "the user is known: only the password is asked: {html}"
    );
    browser.submit(app, &html, &[("password", password)]).await
}

/// Signs in to the account page from scratch (no session yet); returns it.
async fn sign_in(app: &TestApp, browser: &Browser, identifier: &str, password: &str) -> String {
    let res = browser.get(&app.url("/account")).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account/login");
    let res = password_login(
        app,
        browser,
        &app.url("/account/login"),
        identifier,
        password,
    )
    .await;
    assert_eq!(res.status(), 303, "password accepted");
    let back = location(&res);
    assert!(
        back.starts_with(&app.url("/account/callback?code=")),
        "{back}"
    );
    let (res, url) = browser.follow(app, &back).await;
    assert_eq!(res.status(), 200);
    assert_eq!(url, app.url("/account"));
    res.text().await.unwrap()
}

async fn page(app: &TestApp, browser: &Browser, path: &str) -> String {
    let res = browser.get(&app.url(path)).await;
    assert_eq!(res.status(), 200, "{path}");
    res.text().await.unwrap()
}

// ---------------------------------------------------------------------------

async fn signing_in_runs_the_oidc_login_and_lands_on_the_account(app: &TestApp) {
    // Without a session every page leads to the sign-in.
    let anonymous = Browser::new();
    for path in ["/account", "/account/password", "/account/email"] {
        let res = anonymous.get(&app.url(path)).await;
        assert_eq!(res.status(), 303, "{path}");
        assert_eq!(location(&res), "/account/login", "{path}");
    }
    let res = anonymous.get(&app.url("/account/login")).await;
    assert_eq!(res.status(), 303);
    let authorize = location(&res);
    assert!(authorize.starts_with("/authorize?"), "{authorize}");
    let url = app.url(&authorize);
    assert_eq!(query_param(&url, "client_id").as_deref(), Some("account"));
    assert_eq!(
        query_param(&url, "redirect_uri"),
        Some(app.url("/account/callback"))
    );
    assert_eq!(
        query_param(&url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        query_param(&url, "max_age"),
        None,
        "not a re-authentication"
    );

    let browser = Browser::new();
    let html = sign_in(app, &browser, "alice@example.com", PASSWORD).await;
    assert!(html.contains("Your account"), "{html}");
    assert!(html.contains("Alice@Example.com"));
    assert!(html.contains(app.user.customer_id.as_str()));
    assert!(
        html.contains(r#"href="/account/devices""#),
        "links to the devices section"
    );

    // The state is single use, and bound to the browser that started.
    let res = browser.get(&app.url("/account/login")).await;
    let state = query_param(&app.url(&location(&res)), "state").unwrap();
    let stranger = Browser::new();
    let res = stranger
        .get(&app.url(&format!("/account/callback?code=x&state={state}")))
        .await;
    assert_eq!(res.status(), 400, "another browser");
    assert!(res.text().await.unwrap().contains("expired"));
    let res = browser
        .get(&app.url(&format!("/account/callback?code=x&state={state}")))
        .await;
    assert_eq!(res.status(), 400, "the state was used up");
    // A session already there: the sign-in passes without a login page.
    let res = browser.get(&app.url("/account/login")).await;
    let (res, url) = browser.follow(app, &app.url(&location(&res))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        url,
        app.url("/account"),
        "a code straight away, no login page"
    );
    // A refused login comes back as an error, not a page of the account.
    let res = browser.get(&app.url("/account/login")).await;
    let state = query_param(&app.url(&location(&res)), "state").unwrap();
    let res = browser
        .get(&app.url(&format!(
            "/account/callback?error=access_denied&state={state}"
        )))
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("did not complete"));
}

/// Makes the test user a member of a new organization.
async fn join_org(app: &TestApp, name: &str, mfa_for: &[&str], policy: PasswordPolicy) {
    let now = idp_core::clock::Clock::now(&app.clock);
    let org = Organization {
        id: OrgId::new_v7(),
        name: name.into(),
        siret: None,
        country: "DE".into(),
        status: OrgStatus::Validated,
        created_by: app.user.id,
        created_at: now,
        decided_at: Some(now),
        mfa_required_for: mfa_for.iter().map(|k| (*k).to_owned()).collect(),
        password_policy: policy,
    };
    let membership = Membership {
        org_id: org.id,
        user_id: app.user.id,
        roles: vec![Role::Member],
        created_at: now,
    };
    app.state
        .provider
        .ports
        .orgs
        .create_org(&org, &membership)
        .await
        .unwrap();
}

async fn password_change_checks_everything_and_notifies(app: &TestApp) {
    // The user's organization has stricter rules than the platform: they apply.
    join_org(
        app,
        "Strict SAS",
        &[],
        PasswordPolicy {
            min_length: 10,
            require_uppercase: true,
            require_digit: true,
            ..PasswordPolicy::default()
        },
    )
    .await;
    let browser = Browser::new();
    sign_in(app, &browser, "alice@example.com", PASSWORD).await;
    let html = page(app, &browser, "/account/password").await;
    assert!(html.contains(r#"autocomplete="current-password""#));
    assert!(html.contains("must follow these rules"));

    // Wrong current password: refused, nothing changed.
    let res = post_form(
        app,
        &browser,
        &html,
        "/account/password",
        &[
            ("current_password", "not my password"),
            ("new_password", NEW_PASSWORD),
            ("confirmation", NEW_PASSWORD),
        ],
    )
    .await;
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("This is not your current password."),
        "{html}"
    );
    assert!(!html.contains(NEW_PASSWORD), "passwords are never re-shown");

    // Every broken rule is named, with the mismatch.
    let res = post_form(
        app,
        &browser,
        &html,
        "/account/password",
        &[
            ("current_password", PASSWORD),
            ("new_password", "short"),
            ("confirmation", "shorter"),
        ],
    )
    .await;
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(!html.contains("This is not your current password."));
    assert!(html.contains("The two passwords are different."), "{html}");
    for v in [
        Violation::TooShort { min: 10 },
        Violation::MissingUppercase,
        Violation::MissingDigit,
    ] {
        assert!(html.contains(&v.english()), "{}: {html}", v.english());
    }
    let res = post_form(
        app,
        &browser,
        &html,
        "/account/password",
        &[
            ("current_password", PASSWORD),
            ("new_password", "Password123"),
            ("confirmation", "Password123"),
        ],
    )
    .await;
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(html.contains(&Violation::Breached.english()), "{html}");
    assert!(app.outbox.messages().is_empty(), "nothing sent yet");

    // Success: the notice goes out, the old password stops working.
    let res = post_form(
        app,
        &browser,
        &html,
        "/account/password",
        &[
            ("current_password", PASSWORD),
            ("new_password", NEW_PASSWORD),
            ("confirmation", NEW_PASSWORD),
        ],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account?done=password_changed");
    let html = page(app, &browser, "/account?done=password_changed").await;
    assert!(html.contains("Your password is changed."));
    let notice = app
        .outbox
        .last_to(&Recipient::Email("Alice@Example.com".into()))
        .expect("a notice");
    assert_eq!(notice.message, Message::PasswordChanged);

    let other = Browser::new();
    let res = password_login(
        app,
        &other,
        &authorize_url(app, "conf", None, &[]),
        "alice@example.com",
        PASSWORD,
    )
    .await;
    assert_eq!(res.status(), 401, "the old password is refused");
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("Incorrect identifier or password.")
    );
    let res = password_login(
        app,
        &other,
        &authorize_url(app, "conf", None, &[]),
        "alice@example.com",
        NEW_PASSWORD,
    )
    .await;
    assert_eq!(res.status(), 303, "the new one works");

    // Too many wrong current passwords lock the form for a while.
    let mut html = page(app, &browser, "/account/password").await;
    let mut last = 0;
    for _ in 0..6 {
        let res = post_form(
            app,
            &browser,
            &html,
            "/account/password",
            &[
                ("current_password", "wrong"),
                ("new_password", "Another-Password-77"),
                ("confirmation", "Another-Password-77"),
            ],
        )
        .await;
        last = res.status().as_u16();
        html = res.text().await.unwrap();
    }
    assert_eq!(last, 429);
    assert!(html.contains("Too many wrong passwords."), "{html}");
}

async fn an_old_authentication_signs_in_again_before_a_sensitive_change(app: &TestApp) {
    let browser = Browser::new();
    sign_in(app, &browser, "alice@example.com", PASSWORD).await;
    app.clock.advance(time::Duration::minutes(11));
    // The overview still shows; the password page wants a fresh login.
    page(app, &browser, "/account").await;
    let res = browser.get(&app.url("/account/password")).await;
    assert_eq!(res.status(), 303);
    let reauth = location(&res);
    assert_eq!(reauth, "/account/login?reauth=1&next=%2Faccount%2Fpassword");
    let res = browser.get(&app.url(&reauth)).await;
    let authorize = app.url(&location(&res));
    assert_eq!(query_param(&authorize, "max_age").as_deref(), Some("0"));
    let res = password_again(app, &browser, &authorize, PASSWORD).await;
    assert_eq!(res.status(), 303, "signed in again");
    let (res, url) = browser.follow(app, &location(&res)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(url, app.url("/account/password"), "back where it was going");
    // One session still: the new proof went into it (under a new cookie).
    let html = page(app, &browser, "/account").await;
    assert_eq!(html.matches("<tr class=\"session\">").count(), 1, "{html}");
}

async fn email_change_is_proved_by_a_code_to_the_new_address(app: &TestApp) {
    let browser = Browser::new();
    sign_in(app, &browser, "alice@example.com", PASSWORD).await;
    let html = page(app, &browser, "/account/email").await;

    // Bad input: a readable error, the typed value kept.
    let res = post_form(
        app,
        &browser,
        &html,
        "/account/email",
        &[("new_email", "not an address")],
    )
    .await;
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(html.contains("Enter a valid email address"), "{html}");
    assert!(html.contains(r#"value="not an address""#));
    let res = post_form(
        app,
        &browser,
        &html,
        "/account/email",
        &[("new_email", "ALICE@example.com")],
    )
    .await;
    assert_eq!(res.status(), 400);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("This is already your email address.")
    );

    // A code to the new address; a wrong one is refused.
    let res = post_form(
        app,
        &browser,
        &html,
        "/account/email",
        &[("new_email", "alice.martin@new.example")],
    )
    .await;
    assert_eq!(res.status(), 303);
    let html = page(app, &browser, "/account/email").await;
    assert!(html.contains("We sent a code to alice.martin@new.example."));
    let code = match app
        .outbox
        .last_to(&Recipient::Email("alice.martin@new.example".into()))
        .expect("a code to the new address")
        .message
    {
        Message::EmailChangeCode {
            code,
            valid_minutes,
        } => {
            assert_eq!(valid_minutes, 10);
            code
        }
        other => panic!("{other:?}"),
    };
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let res = post_form(
        app,
        &browser,
        &html,
        "/account/email/confirm",
        &[("code", wrong)],
    )
    .await;
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(html.contains("This code is not correct."), "{html}");
    let unchanged = app.state.provider.ports.users.find_by_id(app.user.id).await;
    assert_eq!(
        unchanged.unwrap().unwrap().email.as_str(),
        "Alice@Example.com"
    );

    // The right code: changed and verified, the old address told.
    let res = post_form(
        app,
        &browser,
        &html,
        "/account/email/confirm",
        &[("code", &code)],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account?done=email_changed");
    let user = app
        .state
        .provider
        .ports
        .users
        .find_by_id(app.user.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.email.as_str(), "alice.martin@new.example");
    assert!(user.email_verified);
    assert_eq!(
        app.outbox
            .last_to(&Recipient::Email("Alice@Example.com".into()))
            .expect("a notice to the old address")
            .message,
        Message::EmailChanged {
            new_email: "alice.martin@new.example".into()
        }
    );
    let html = page(app, &browser, "/account").await;
    assert!(html.contains("alice.martin@new.example"));
    assert!(html.contains("data-kind=\"email.changed\""));
    // The code was single use.
    let html = page(app, &browser, "/account/email").await;
    assert!(
        html.contains(r#"action="/account/email""#),
        "address form again"
    );
    // Signing in with the new address works.
    let other = Browser::new();
    let res = password_login(
        app,
        &other,
        &authorize_url(app, "conf", None, &[]),
        "alice.martin@new.example",
        PASSWORD,
    )
    .await;
    assert_eq!(res.status(), 303);
}

async fn email_change_refusals(app: &TestApp) {
    app.state
        .provider
        .accounts
        .create_user(
            Email::parse("bob@example.com").unwrap(),
            None,
            &Secret::new("bob's long password"),
        )
        .await
        .unwrap();
    let browser = Browser::new();
    sign_in(app, &browser, "alice@example.com", PASSWORD).await;
    let request = |address: &'static str| {
        let browser = &browser;
        async move {
            let html = page(app, browser, "/account/email").await;
            let html = if html.contains("action=\"/account/email/cancel\"") {
                let res = post_form(app, browser, &html, "/account/email/cancel", &[]).await;
                assert_eq!(res.status(), 303);
                page(app, browser, "/account/email").await
            } else {
                html
            };
            let res = post_form(
                app,
                browser,
                &html,
                "/account/email",
                &[("new_email", address)],
            )
            .await;
            assert_eq!(res.status(), 303, "the same answer for any address");
            let code = match app
                .outbox
                .last_to(&Recipient::Email(address.into()))
                .expect("a code")
                .message
            {
                Message::EmailChangeCode { code, .. } => code,
                other => panic!("{other:?}"),
            };
            (page(app, browser, "/account/email").await, code)
        }
    };

    // Expired (the clock moves past its 10 minutes).
    let (html, code) = request("alice@elsewhere.example").await;
    app.clock.advance(time::Duration::minutes(11));
    let res = post_form(
        app,
        &browser,
        &html,
        "/account/email/confirm",
        &[("code", &code)],
    )
    .await;
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(html.contains("The code has expired."), "{html}");
    assert!(
        html.contains(r#"value="alice@elsewhere.example""#),
        "the address is kept"
    );
    // Sensitive pages need a fresh login again after the clock moved.
    let res = browser.get(&app.url("/account/login?reauth=1")).await;
    let res = password_again(app, &browser, &app.url(&location(&res)), PASSWORD).await;
    browser.follow(app, &location(&res)).await;

    // Too many wrong codes kill it.
    let (mut html, code) = request("alice@third.example").await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for i in 0..5 {
        let res = post_form(
            app,
            &browser,
            &html,
            "/account/email/confirm",
            &[("code", wrong)],
        )
        .await;
        html = res.text().await.unwrap();
        if i < 4 {
            assert!(html.contains("This code is not correct."), "{html}");
        }
    }
    assert!(html.contains("Too many wrong codes."), "{html}");
    let html = page(app, &browser, "/account/email").await;
    let res = post_form(
        app,
        &browser,
        &form_with_code(&html),
        "/account/email/confirm",
        &[("code", &code)],
    )
    .await;
    assert_eq!(res.status(), 400, "the right code no longer works");

    // An address of another account: said only once the code proved it.
    let (html, code) = request("bob@example.com").await;
    let res = post_form(
        app,
        &browser,
        &html,
        "/account/email/confirm",
        &[("code", &code)],
    )
    .await;
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("This address is used by another account."),
        "{html}"
    );
    let user = app
        .state
        .provider
        .ports
        .users
        .find_by_id(app.user.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.email.as_str(), "Alice@Example.com", "unchanged");
    assert!(
        app.outbox
            .last_to(&Recipient::Email("Alice@Example.com".into()))
            .is_none(),
        "no notice for a change that did not happen"
    );
}

/// A page with a code form, even when the page shows the address form (to
/// post a code where none is pending).
fn form_with_code(html: &str) -> String {
    if html.contains("action=\"/account/email/confirm\"") {
        html.to_owned()
    } else {
        let csrf = Form::parse(&form_for(html, "/account/email"))
            .unwrap()
            .fields
            .into_iter()
            .find(|(n, _)| n == "csrf")
            .unwrap()
            .1;
        format!(
            r#"<form method="post" action="/account/email/confirm"><input type="hidden" name="csrf" value="{csrf}"><input name="code" value=""></form>"#
        )
    }
}

async fn backup_email_is_set_and_removed(app: &TestApp) {
    let browser = Browser::new();
    let html = sign_in(app, &browser, "alice@example.com", PASSWORD).await;
    let res = post_form(
        app,
        &browser,
        &html,
        "/account/backup-email",
        &[("backup_email", "alice at backup")],
    )
    .await;
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(html.contains("Enter a valid email address"), "{html}");
    assert!(
        html.contains(r#"value="alice at backup""#),
        "typed value kept"
    );
    let res = post_form(
        app,
        &browser,
        &html,
        "/account/backup-email",
        &[("backup_email", "alice@example.COM")],
    )
    .await;
    assert_eq!(res.status(), 400);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("other than your main email address")
    );
    let users = &app.state.provider.ports.users;
    assert_eq!(
        users
            .find_by_id(app.user.id)
            .await
            .unwrap()
            .unwrap()
            .backup_email,
        None
    );

    let res = post_form(
        app,
        &browser,
        &html,
        "/account/backup-email",
        &[("backup_email", "alice@backup.example")],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account?done=backup_email_set");
    let user = users.find_by_id(app.user.id).await.unwrap().unwrap();
    assert_eq!(
        user.backup_email.as_ref().map(Email::as_str),
        Some("alice@backup.example")
    );
    let html = page(app, &browser, "/account?done=backup_email_set").await;
    assert!(html.contains("Your backup email address is saved."));
    assert!(html.contains(r#"value="alice@backup.example""#));
    let remove = html
        .split("<form")
        .find(|f| f.contains("name=\"clear\""))
        .map(|f| format!("<form{f}"))
        .expect("a remove button");
    let res = browser.submit(app, &remove, &[]).await;
    assert_eq!(location(&res), "/account?done=backup_email_cleared");
    let user = users.find_by_id(app.user.id).await.unwrap().unwrap();
    assert_eq!(user.backup_email, None);
}

async fn sign_out_other_sessions_ends_them_and_their_tokens(app: &TestApp) {
    // Browser B signs in to a portal and gets a refresh token.
    let b = Browser::with_agent("Browser B");
    let back = b
        .login(
            app,
            &authorize_url(app, "conf", None, &[]),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    let code = query_param(&back, "code").expect("a code");
    let tokens = exchange_code(app, "conf", &code, None).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    page(app, &b, "/account").await;

    // Browser A sees both sessions.
    let a = Browser::with_agent("Browser A");
    let html = sign_in(app, &a, "alice@example.com", PASSWORD).await;
    assert_eq!(html.matches("<tr class=\"session\">").count(), 2, "{html}");
    assert!(html.contains("Browser A") && html.contains("Browser B"));
    assert!(html.contains("(this session)"));
    assert!(html.contains("Sign out my other sessions (1)"));

    let res = post_form(app, &a, &html, "/account/sessions/sign-out-others", &[]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account?done=sessions_ended");
    let html = page(app, &a, "/account?done=sessions_ended").await;
    assert_eq!(html.matches("<tr class=\"session\">").count(), 1);
    assert!(html.contains("This is your only session."));
    assert!(html.contains("data-kind=\"session.revoked\""));

    // B is signed out, and its refresh token is dead.
    let res = b.get(&app.url("/account")).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account/login");
    let (status, body) = token_request(
        app,
        "conf",
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    // A logout elsewhere drops out of the list too.
    let c = Browser::with_agent("Browser C");
    sign_in(app, &c, "alice@example.com", PASSWORD).await;
    assert_eq!(
        page(app, &a, "/account")
            .await
            .matches("<tr class=\"session\">")
            .count(),
        2
    );
    let html = page(app, &c, "/logout").await;
    let res = c.submit(app, &html, &[]).await;
    assert!(res.status().is_redirection() || res.status() == 200);
    assert_eq!(
        page(app, &a, "/account")
            .await
            .matches("<tr class=\"session\">")
            .count(),
        1,
        "the signed-out session is gone from the list"
    );
}

async fn recent_activity_lists_logins_and_changes(app: &TestApp) {
    let browser = Browser::new();
    sign_in(app, &browser, "alice@example.com", PASSWORD).await;
    let html = page(app, &browser, "/account/password").await;
    let res = post_form(
        app,
        &browser,
        &html,
        "/account/password",
        &[
            ("current_password", PASSWORD),
            ("new_password", NEW_PASSWORD),
            ("confirmation", NEW_PASSWORD),
        ],
    )
    .await;
    assert_eq!(res.status(), 303);
    let html = page(app, &browser, "/account").await;
    let changed = html
        .find("data-kind=\"password.changed\"")
        .expect("the change");
    let login = html
        .find("data-kind=\"login.succeeded\"")
        .expect("the login");
    assert!(changed < login, "newest first");
    assert!(html.contains("Password changed") && html.contains("Signed in"));
    assert!(html.contains("127.0.0.1"), "from which IP");
}

async fn forms_without_their_csrf_token_are_refused(app: &TestApp) {
    let browser = Browser::new();
    sign_in(app, &browser, "alice@example.com", PASSWORD).await;
    let other = Browser::new();
    sign_in(app, &other, "alice@example.com", PASSWORD).await;
    let theirs = page(app, &other, "/account").await;
    let their_token = Form::parse(&form_for(&theirs, "/account/backup-email"))
        .unwrap()
        .fields
        .into_iter()
        .find(|(n, _)| n == "csrf")
        .unwrap()
        .1;
    for (path, body) in [
        (
            "/account/password",
            vec![
                ("current_password", PASSWORD),
                ("new_password", NEW_PASSWORD),
                ("confirmation", NEW_PASSWORD),
            ],
        ),
        (
            "/account/backup-email",
            vec![("backup_email", "x@y.example")],
        ),
        ("/account/email", vec![("new_email", "x@y.example")]),
        ("/account/sessions/sign-out-others", vec![]),
    ] {
        for token in [None, Some(their_token.as_str())] {
            let mut form = body.clone();
            if let Some(t) = token {
                form.push(("csrf", t));
            }
            let res = browser
                .http
                .post(app.url(path))
                .header("origin", &app.issuer)
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 403, "{path} with {token:?}");
        }
    }
    let user = app
        .state
        .provider
        .ports
        .users
        .find_by_id(app.user.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.backup_email, None);
    assert!(app.outbox.messages().is_empty());
    assert_eq!(
        app.state
            .provider
            .accounts
            .list_sessions(app.user.id)
            .await
            .unwrap()
            .len(),
        2,
        "no session ended"
    );
}

async fn protection_status_shows_what_the_organization_enforces(app: &TestApp) {
    let browser = Browser::new();
    let html = sign_in(app, &browser, "alice@example.com", PASSWORD).await;
    assert!(html.contains("Two-step verification is optional for your account."));
    assert!(html.contains("Your account has no second step"));
    assert!(html.contains("Unused recovery codes: 0"));

    join_org(
        app,
        "Acme Cloud SAS",
        &["console", "api"],
        PasswordPolicy::default(),
    )
    .await;
    let codes = app
        .state
        .provider
        .accounts
        .regenerate_recovery_codes(&app.user)
        .await
        .unwrap();
    // The organization enforces a second factor for console sign-ins, which
    // the account pages are: the password-only session no longer opens
    // them, and signing in asks only the missing second factor.
    let res = browser.get(&app.url("/account")).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account/login");
    let (res, _) = browser.follow(app, &app.url("/account/login")).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(
        Form::parse(&html)
            .unwrap()
            .action
            .ends_with("/recovery_code"),
        "only the second factor is asked: {html}"
    );
    let res = browser.submit(app, &html, &[("code", &codes[0])]).await;
    assert_eq!(res.status(), 303);
    let (res, url) = browser.follow(app, &location(&res)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(url, app.url("/account"));
    let html = page(app, &browser, "/account").await;
    assert!(
        html.contains("Two-step verification is required for your account:"),
        "{html}"
    );
    assert!(html.contains("by Acme Cloud SAS, for these sign-ins: console, api"));
    assert!(html.contains("Unused recovery codes: 9"));
}

matrix!(
    signing_in_runs_the_oidc_login_and_lands_on_the_account,
    password_change_checks_everything_and_notifies,
    an_old_authentication_signs_in_again_before_a_sensitive_change,
    email_change_is_proved_by_a_code_to_the_new_address,
    email_change_refusals,
    backup_email_is_set_and_removed,
    sign_out_other_sessions_ends_them_and_their_tokens,
    recent_activity_lists_logins_and_changes,
    forms_without_their_csrf_token_are_refused,
    protection_status_shows_what_the_organization_enforces,
);

/// The notices of a password change and of an email change, through a real
/// SMTP server process; the code typed is the one read from the mailbox.
async fn notices_arrive_by_smtp(backend: Backend) {
    let sink = SmtpSink::start();
    let port = sink.port();
    let app = spawn_app_with_smtp(
        backend,
        AppOptions::default(),
        "Account <no-reply@idp.example>",
        port,
        |_| {},
    )
    .await;
    let browser = Browser::new();
    sign_in(&app, &browser, "alice@example.com", PASSWORD).await;

    let html = page(&app, &browser, "/account/email").await;
    let res = post_form(
        &app,
        &browser,
        &html,
        "/account/email",
        &[("new_email", "alice@smtp.example")],
    )
    .await;
    assert_eq!(res.status(), 303);
    let mails = sink.messages();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].defects.is_empty(), "{:?}", mails[0].defects);
    assert!(
        mails[0]
            .header("To")
            .unwrap()
            .contains("alice@smtp.example")
    );
    assert_eq!(
        mails[0].header("Subject"),
        Some("Confirm your new email address")
    );
    let text = mails[0].text.clone().unwrap();
    let code: String = text
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
        .expect("the code in the email")
        .to_owned();
    assert!(mails[0].html.as_deref().unwrap().contains(&code));
    let html = page(&app, &browser, "/account/email").await;
    let res = post_form(
        &app,
        &browser,
        &html,
        "/account/email/confirm",
        &[("code", &code)],
    )
    .await;
    assert_eq!(location(&res), "/account?done=email_changed");
    let mails = sink.messages();
    assert_eq!(mails.len(), 2);
    assert!(mails[1].header("To").unwrap().contains("Alice@Example.com"));
    assert!(
        mails[1]
            .text
            .as_deref()
            .unwrap()
            .contains("alice@smtp.example"),
        "the old address is told the new one"
    );

    let html = page(&app, &browser, "/account/password").await;
    let res = post_form(
        &app,
        &browser,
        &html,
        "/account/password",
        &[
            ("current_password", PASSWORD),
            ("new_password", NEW_PASSWORD),
            ("confirmation", NEW_PASSWORD),
        ],
    )
    .await;
    assert_eq!(location(&res), "/account?done=password_changed");
    let mails = sink.messages();
    assert_eq!(mails.len(), 3);
    assert!(
        mails[2]
            .header("To")
            .unwrap()
            .contains("alice@smtp.example")
    );
    assert!(mails[2].text.as_deref().unwrap().contains("password"));
    app.cleanup().await;
}

on_both_backends!(notices_arrive_by_smtp);
