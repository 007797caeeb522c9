// Single sign-on across the example clients of config/clients/, each asking
// only what its own flow lacks from the session's proofs. A user enrolls a
// security key at the cloud console (Chromium's virtual authenticator, CDP
// WebAuthn domain; "use another method" instead of the authenticator app
// offered first), then signs out. (A) In that browser: the customer space
// (password, then an emailed code: level 1, amr exactly pwd + email_otp,
// no mfa); the cloud console then asks only the key (no identifier, no
// password page: level 2, amr with the key's hwk, pwd and mfa, same sid);
// the marketplace's step-up flow (acr_values=2) then asks nothing at all
// (level 2, mfa). (B) In a new browser holding a copy of the key: the
// customer space, then the marketplace's step-up flow asks only its second
// factor, the key (used last). The issuer is http://localhost:<port>:
// WebAuthn needs a host name, not an IP address.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, signInWithPassword } from '../lib/fixture.js';
import { journey } from '../lib/browser.js';
import { waitFor } from '../lib/harness.js';
import { startPartnerSso } from '../lib/upstream.js';

const CS = 'customer-space';
const CC = 'cloud-console';
const MP = 'marketplace';

// A security key that verifies its user, registers discoverable
// credentials, and is touched as soon as the page asks.
const AUTHENTICATOR = {
  protocol: 'ctap2',
  transport: 'internal',
  hasResidentKey: true,
  hasUserVerification: true,
  isUserVerified: true,
  automaticPresenceSimulation: true,
};

// A virtual authenticator in the journey's page; `credentials` lists (or
// `add` puts in) the keys it holds.
async function virtualAuthenticator(j) {
  const cdp = await j.context.newCDPSession(j.page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', { options: AUTHENTICATOR });
  return {
    credentials: async () => (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials,
    add: (credential) => cdp.send('WebAuthn.addCredential', { authenticatorId, credential }),
  };
}

// The documents the browser shows from now on: the main frame's
// navigations that commit (the redirects between them show nothing).
function watchShown(page) {
  const urls = [];
  const onNavigated = (frame) => {
    if (frame === page.mainFrame()) urls.push(frame.url());
  };
  page.on('framenavigated', onNavigated);
  return { urls, stop: () => page.off('framenavigated', onNavigated) };
}

describe('assurance across clients', () => {
  let env;
  let user;
  let key; // the enrolled key's credential, as the virtual authenticator holds it
  let partner; // the customer space's upstream, unused here but required by its file

  before(async () => {
    // customer-space.toml's "Continue with Partner SSO" flow needs the
    // upstream (see startPartnerSso).
    let options;
    ({ partner, options } = await startPartnerSso(CS));
    env = await setup('assurance', [
      { id: CS, example: 'customer-space.toml' },
      { id: CC, example: 'cloud-console.toml' },
      { id: MP, example: 'marketplace.toml' },
    ], options);
    user = await env.idp.createUser(env.newEmail('ada'), env.newPassword());
  });

  after(async () => {
    await env?.teardown();
    await partner?.close();
  });

  // Notes the sign-in emails to `email` already received; the function
  // returned waits for a newer one and gives its 6-digit code.
  async function nextEmailedCode(email) {
    const mails = async () => (await env.idp.smtp.messages())
      .filter((m) => m.to.includes(email) && /sign-in code/.test(`${m.subject}\n${m.text}`));
    const seen = new Set((await mails()).map((m) => m.text));
    return async () => {
      const mail = await waitFor(`a new sign-in email to ${email}`,
        async () => (await mails()).find((m) => !seen.has(m.text)));
      const code = /^\s+(\d{6})\s*$/m.exec(mail.text)?.[1];
      assert.ok(code, `a 6-digit code in:\n${mail.text}`);
      return code;
    };
  }

  async function enterCode(j, code) {
    await j.page.fill('#code', code);
    await j.page.click('form.form button[type=submit]');
  }

  // Notes a token's level and methods in the test's output.
  function note(t, what, tokens) {
    const { acr, amr, sid } = tokens.claims();
    t.diagnostic(`${what}: acr ${acr}, amr ${JSON.stringify(amr)}, sid ${sid}`);
  }

  async function logout(j, rp, idToken) {
    await j.page.goto(rp.logoutUrl(idToken));
    await j.page.waitForURL((u) => u.href.startsWith(rp.client.postLogoutRedirectUri));
  }

  // The customer space without a session: identifier, password, then the
  // emailed code (the user has no mobile number). Its tokens.
  async function customerSpace(j) {
    const rp = env.rps[CS];
    const req = await rp.start();
    await j.page.goto(req.url);
    const emailedCode = await nextEmailedCode(user.email);
    await signInWithPassword(j, user);
    await j.page.locator('#code').waitFor();
    await j.visit('customer-space-email-code');
    await enterCode(j, await emailedCode());
    await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
    await j.visit('customer-space-callback');
    const tokens = await rp.finish(j.page.url(), req);
    const { acr, amr } = tokens.claims();
    // An emailed code is a check, not a second factor: level 1, no mfa.
    assert.equal(acr, '1');
    assert.deepEqual(amr, ['pwd', 'email_otp']);
    return tokens;
  }

  // Opens `req` and expects the first page shown to be the key's assertion
  // page (in the client's theme, for the session's user), nothing before it
  // and no identifier or password asked; answers it with the virtual key.
  // Its tokens.
  async function onlyTheKey(j, rp, req, label, brand) {
    const shown = watchShown(j.page);
    try {
      await j.page.goto(req.url);
      await j.page.locator('form[data-webauthn=get]').waitFor();
      assert.equal(shown.urls.length, 1, `the key's page is the first shown: ${JSON.stringify(shown.urls)}`);
      assert.ok(shown.urls[0].startsWith(env.idp.issuer), shown.urls[0]);
      assert.equal(await j.page.locator('#identifier').count(), 0, 'no identifier asked');
      assert.equal(await j.page.locator('#password').count(), 0, 'no password asked');
      assert.equal((await j.page.locator('.masthead__name').innerText()).trim(), brand);
      const subtitle = await j.page.locator('.card__subtitle').innerText();
      assert.ok(subtitle.includes(user.customerId), `signing in as ${user.customerId}: ${subtitle}`);
      await j.visit(label);
      await j.page.click('form[data-webauthn=get] button[type=submit]');
      await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      assert.equal(shown.urls.length, 2, `the key's page, then the callback: ${JSON.stringify(shown.urls)}`);
    } finally {
      shown.stop();
    }
    await j.visit(`${label}-callback`);
    return rp.finish(j.page.url(), req);
  }

  it('(A) a key enrolled at the cloud console; then customer space, cloud console and marketplace step-up on one session', async (t) => {
    const j = await journey(env.browser, 'n-assurance-sso');
    await j.run(async () => {
      const authenticator = await virtualAuthenticator(j);

      // Enrollment: the cloud console's second factor offers an
      // authenticator app first; "use another method" for a security key.
      let rp = env.rps[CC];
      let req = await rp.start();
      await j.page.goto(req.url);
      await signInWithPassword(j, user);
      await j.page.locator('#totp-name').waitFor();
      await j.visit('cloud-console-totp-enroll');
      await j.page.click('form.alternatives__form:has(input[name=method][value=webauthn]) button');
      await j.page.locator('#webauthn-name').waitFor();
      await j.visit('cloud-console-webauthn-enroll');
      await j.page.click('form.form button[type=submit]');
      await j.page.locator('.recovery-codes__code').first().waitFor();
      await j.visit('recovery-codes');
      await j.page.click('form.form button[type=submit]');
      await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      await j.visit('cloud-console-enrolled-callback');
      let tokens = await rp.finish(j.page.url(), req);
      assert.equal(tokens.claims().acr, '2');
      assert.ok(tokens.claims().amr.includes('hwk'), `amr ${JSON.stringify(tokens.claims().amr)}`);
      note(t, 'cloud-console (enrollment)', tokens);
      const { sub } = tokens.claims();
      assert.equal((await authenticator.credentials()).length, 1, 'one key registered');
      await logout(j, rp, tokens.id_token);

      // The customer space, without a session: password, then the emailed code.
      const cs = await customerSpace(j);
      note(t, 'customer-space', cs);
      const { sid } = cs.claims();
      assert.equal(cs.claims().sub, sub);
      assert.ok(sid, 'the customer space ID token has a sid');

      // The cloud console, same session: the password is proven, only its
      // second factor is missing; the key (the user's only factor) is asked.
      rp = env.rps[CC];
      req = await rp.start();
      tokens = await onlyTheKey(j, rp, req, 'cloud-console-key', 'Nimbalt Console');
      note(t, 'cloud-console', tokens);
      let claims = tokens.claims();
      assert.equal(claims.sub, sub);
      assert.equal(claims.acr, '2');
      assert.ok(claims.amr.includes('hwk') || claims.amr.includes('swk'), `a key in amr ${JSON.stringify(claims.amr)}`);
      for (const a of ['pwd', 'mfa']) assert.ok(claims.amr.includes(a), `${a} in amr ${JSON.stringify(claims.amr)}`);
      assert.equal(claims.sid, sid, 'the same session as the customer space');

      // The marketplace's step-up flow: password and second factor are both
      // proven in the session, so nothing is asked at all.
      rp = env.rps[MP];
      req = await rp.start({ acr_values: '2' });
      const shown = watchShown(j.page);
      try {
        await j.page.goto(req.url);
        await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
        assert.equal(shown.urls.length, 1, `only the callback shown: ${JSON.stringify(shown.urls)}`);
      } finally {
        shown.stop();
      }
      await j.visit('marketplace-step-up-callback');
      tokens = await rp.finish(j.page.url(), req);
      note(t, 'marketplace acr_values=2', tokens);
      claims = tokens.claims();
      assert.equal(claims.sub, sub);
      assert.equal(claims.acr, '2');
      assert.ok(claims.amr.includes('mfa'), `mfa in amr ${JSON.stringify(claims.amr)}`);
      assert.equal(claims.sid, sid, 'the same session again');

      // The key for journey B (its signature counter included), then sign out.
      [key] = await authenticator.credentials();
      await logout(j, rp, tokens.id_token);
    });
  });

  it('(B) a new browser: customer space, then the marketplace step-up asks only the key', async (t) => {
    assert.ok(key, 'journey (A) enrolled a key');
    const j = await journey(env.browser, 'n-assurance-step-up');
    await j.run(async () => {
      // A browser without any cookie of the provider, holding the same key.
      const authenticator = await virtualAuthenticator(j);
      await authenticator.add(key);
      assert.equal((await j.context.cookies()).length, 0, 'a fresh browser');

      const cs = await customerSpace(j);
      note(t, 'customer-space', cs);
      const { sub, sid } = cs.claims();

      // Identifier and password are proven; the step-up's second factor is
      // not: only the key's page is shown.
      const rp = env.rps[MP];
      const req = await rp.start({ acr_values: '2' });
      const tokens = await onlyTheKey(j, rp, req, 'marketplace-step-up-key', 'Orchardly Market');
      note(t, 'marketplace acr_values=2', tokens);
      const claims = tokens.claims();
      assert.equal(claims.sub, sub);
      assert.equal(claims.acr, '2');
      for (const a of ['pwd', 'mfa']) assert.ok(claims.amr.includes(a), `${a} in amr ${JSON.stringify(claims.amr)}`);
      assert.ok(claims.amr.includes('hwk') || claims.amr.includes('swk'), `a key in amr ${JSON.stringify(claims.amr)}`);
      assert.equal(claims.sid, sid, 'the customer space\'s session, stepped up');
      const [used] = await authenticator.credentials();
      assert.ok(used.signCount > key.signCount, 'the key signed in this browser');
    });
  });
});
