// The example clients of config/clients/, with their own flows as written
// there (only the secret and the redirect URIs are the test's): the customer
// space (password, then a code by email), the marketplace (password, and an
// emailed code from a browser not seen before), the cloud console (password
// plus a mandatory authenticator app or security key, enrolled at the first
// login; passwordless with the passkey on acr_values=3), and organization
// creation from the customer space's login page through to validation.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, signInWithPassword } from '../lib/fixture.js';
import { journey } from '../lib/browser.js';
import { totpAt, currentStep } from '../lib/totp.js';

describe('example clients', () => {
  let env;

  before(async () => {
    env = await setup('examples', [
      { id: 'customer-space', example: 'customer-space.toml' },
      { id: 'marketplace', example: 'marketplace.toml' },
      { id: 'cloud-console', example: 'cloud-console.toml' },
    ], { host: 'localhost' });
  });

  after(async () => {
    await env?.teardown();
  });

  // Reads the 6-digit code of the newest sign-in email to `email`.
  async function emailedCode(email) {
    const mail = await env.idp.waitForEmail(email, /sign-in code/);
    const code = /^\s+(\d{6})\s*$/m.exec(mail.text)?.[1];
    assert.ok(code, `a 6-digit code in:\n${mail.text}`);
    return code;
  }

  async function enterCode(j, code) {
    await j.page.fill('#code', code);
    await j.page.click('form.form button[type=submit]');
  }

  async function logout(j, rp, idToken) {
    await j.page.goto(rp.logoutUrl(idToken));
    await j.page.waitForURL((u) => u.href.startsWith(rp.client.postLogoutRedirectUri));
  }

  it('customer-space: password, then a code sent by email', async () => {
    const rp = env.rps['customer-space'];
    const user = await env.idp.createUser(env.newEmail('dan'), env.newPassword());
    const j = await journey(env.browser, 'g-customer-space');
    await j.run(async () => {
      const req = await rp.start();
      await j.page.goto(req.url);
      assert.match(await j.page.locator('.card__subtitle').innerText(), /Customer Space/);
      assert.equal(await j.page.locator('a[href^="/organizations/new"]').count(), 1, 'the login page offers organization creation');
      await signInWithPassword(j, user);
      await j.page.locator('#code').waitFor();
      await j.visit('email-code');
      await enterCode(j, await emailedCode(user.email));
      await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      await j.visit('callback');
      const claims = (await rp.finish(j.page.url(), req)).claims();
      assert.equal(claims.acr, '2');
      assert.ok(claims.amr.includes('pwd') && claims.amr.length >= 2, `amr ${JSON.stringify(claims.amr)}`);
    });
  });

  it('customer-space: organization creation through to validation', async () => {
    const rp = env.rps['customer-space'];
    const user = await env.idp.createUser(env.newEmail('gus'), env.newPassword());
    const j = await journey(env.browser, 'j-organization');
    await j.run(async () => {
      const req = await rp.start();
      await j.page.goto(req.url);
      await j.page.locator('#identifier').waitFor();
      await j.visit('login');
      await j.page.click('a[href^="/organizations/new"]');
      await j.page.locator('#siret').waitFor();
      await j.page.check('#account-existing');
      await j.page.fill('#email', user.email);
      await j.page.fill('#password', user.password);
      await j.page.check('#domicile-france');
      await j.page.fill('#siret', '424 761 419 00045');
      await j.page.waitForFunction(() => document.querySelector('input[name=altcha]').value !== '');
      await j.visit('org-new');
      await j.page.click('form.form button[type=submit]');
      // The registry's answer, to confirm.
      await j.page.locator('input[name=request]').waitFor({ state: 'attached' });
      assert.match(await j.page.locator('main dl').innerText(), /OVH/);
      await j.visit('org-confirm');
      await j.page.click('form.form button[type=submit]');
      await j.page.locator('input[name=request]').waitFor({ state: 'detached' });
      assert.match(await j.page.locator('main').innerText(), /OVH/);
      await j.visit('org-created');
      await env.idp.waitForEmail(user.email, /pending validation/);

      // The operator validates it with the CLI; the member is emailed.
      const listed = await env.idp.cli('org', 'list', '--status', 'pending');
      const line = listed.split('\n').find((l) => /OVH/.test(l));
      const id = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/.exec(line || '')?.[0];
      assert.ok(id, `an OVH organization pending in:\n${listed}`);
      await env.idp.cli('org', 'validate', id);
      await env.idp.waitForEmail(user.email, /is validated/);

      // The portal sees it in the ID token.
      await j.page.goto(req.url);
      await signInWithPassword(j, user);
      await j.page.locator('#code').waitFor();
      await j.visit('email-code');
      await enterCode(j, await emailedCode(user.email));
      await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      await j.visit('callback');
      const claims = (await rp.finish(j.page.url(), req)).claims();
      assert.equal(claims.organizations?.length, 1, JSON.stringify(claims.organizations));
      const [org] = claims.organizations;
      assert.equal(org.id, id);
      assert.equal(org.status, 'validated');
      assert.deepEqual(org.roles, ['administrator']);
    });
  });

  it('marketplace: an emailed code from a new browser only', async () => {
    const rp = env.rps.marketplace;
    const user = await env.idp.createUser(env.newEmail('erin'), env.newPassword());
    const j = await journey(env.browser, 'h-marketplace');
    await j.run(async () => {
      let req = await rp.start();
      await j.page.goto(req.url);
      await signInWithPassword(j, user);
      await j.page.locator('#code').waitFor();
      await j.visit('new-device-code');
      await enterCode(j, await emailedCode(user.email));
      await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      let tokens = await rp.finish(j.page.url(), req);
      assert.equal(tokens.claims().acr, '1');
      await logout(j, rp, tokens.id_token);

      // Same browser: remembered, no code this time.
      req = await rp.start();
      await j.page.goto(req.url);
      await signInWithPassword(j, user);
      await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      await j.visit('callback-known-device');
      tokens = await rp.finish(j.page.url(), req);
      assert.deepEqual(tokens.claims().amr, ['pwd']);
    });
  });

  it('cloud-console: password plus an authenticator app enrolled at the first login', async () => {
    const rp = env.rps['cloud-console'];
    const user = await env.idp.createUser(env.newEmail('fay'), env.newPassword());
    const j = await journey(env.browser, 'i-cloud-console');
    await j.run(async () => {
      let req = await rp.start();
      await j.page.goto(req.url);
      await signInWithPassword(j, user);
      await j.page.locator('#totp-name').waitFor();
      await j.visit('totp-enroll');
      assert.ok(await j.page.locator('.alternatives__form').count() >= 1, 'another method may be chosen');
      const key = (await j.page.locator('#totp-key').textContent()).trim();
      const step = currentStep();
      await enterCode(j, totpAt(key, step));
      await j.page.locator('.recovery-codes__code').first().waitFor();
      await j.visit('recovery-codes');
      await j.page.click('form.form button[type=submit]');
      await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      await j.visit('callback');
      let tokens = await rp.finish(j.page.url(), req);
      assert.equal(tokens.claims().acr, '2');
      assert.ok(tokens.claims().amr.includes('mfa'));
      await logout(j, rp, tokens.id_token);

      req = await rp.start();
      await j.page.goto(req.url);
      await signInWithPassword(j, user);
      await j.page.locator('#code').waitFor();
      await j.visit('totp-code');
      await enterCode(j, totpAt(key, Math.max(step + 1, currentStep())));
      await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      tokens = await rp.finish(j.page.url(), req);
      assert.ok(tokens.claims().amr.includes('otp'));
    });
  });

  it('cloud-console: a security key chosen at enrollment, then the passkey flow (acr_values=3)', async () => {
    const rp = env.rps['cloud-console'];
    const user = await env.idp.createUser(env.newEmail('hal'), env.newPassword());
    const j = await journey(env.browser, 'k-cloud-console-passkey');
    await j.run(async () => {
      const cdp = await j.context.newCDPSession(j.page);
      await cdp.send('WebAuthn.enable');
      await cdp.send('WebAuthn.addVirtualAuthenticator', {
        options: {
          protocol: 'ctap2', transport: 'internal', hasResidentKey: true,
          hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
        },
      });
      let req = await rp.start();
      await j.page.goto(req.url);
      await signInWithPassword(j, user);
      await j.page.locator('#totp-name').waitFor();
      // "Use another method": a security key instead of an app.
      await j.page.click('form.alternatives__form:has(input[name=method][value=webauthn]) button');
      await j.page.locator('#webauthn-name').waitFor();
      await j.visit('webauthn-enroll');
      await j.page.click('form.form button[type=submit]');
      await j.page.locator('.recovery-codes__code').first().waitFor();
      await j.page.click('form.form button[type=submit]');
      await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      let tokens = await rp.finish(j.page.url(), req);
      const { sub } = tokens.claims();
      assert.ok(tokens.claims().amr.includes('hwk'), `amr ${JSON.stringify(tokens.claims().amr)}`);
      await logout(j, rp, tokens.id_token);

      req = await rp.start({ acr_values: '3' });
      await j.page.goto(req.url);
      await j.page.locator('form[data-webauthn=get]').waitFor();
      await j.visit('passkey');
      await j.page.click('form[data-webauthn=get] button[type=submit]');
      await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      await j.visit('callback-passkey');
      tokens = await rp.finish(j.page.url(), req);
      assert.equal(tokens.claims().sub, sub);
      assert.equal(tokens.claims().acr, '3');
    });
  });
});
