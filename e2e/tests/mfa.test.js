// Journey (d): password + TOTP. The authenticator app is enrolled during the
// first login (codes computed from the key shown on the page), the recovery
// codes are shown once; the next login asks for a code, and a recovery code
// works instead.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, signInWithPassword } from '../lib/fixture.js';
import { journey } from '../lib/browser.js';
import { totpAt, currentStep } from '../lib/totp.js';

const C = 'console';

describe('second factors', () => {
  let env;

  before(async () => {
    env = await setup('mfa', [
      { id: C, name: 'Console', flows: [['identifier', 'password', 'totp|recovery_code']] },
    ]);
  });

  after(async () => {
    await env?.teardown();
  });

  async function logout(j, rp, idToken) {
    await j.page.goto(rp.logoutUrl(idToken));
    await j.page.waitForURL((u) => u.href.startsWith(rp.client.postLogoutRedirectUri));
  }

  it('(d) password + TOTP: enrollment at first login, then a code, then a recovery code', async () => {
    const rp = env.rps[C];
    const user = await env.idp.createUser(env.newEmail('totp'), env.newPassword());
    const j = await journey(env.browser, 'd-totp');
    const { page } = j;
    await j.run(async () => {
      // First login: enroll an authenticator app.
      let req = await rp.start();
      await page.goto(req.url);
      await signInWithPassword(j, user);
      await page.locator('#totp-name').waitFor();
      await j.visit('totp-enroll');
      await page.click('summary');
      const key = (await page.locator('#totp-key').innerText()).trim();
      assert.match(key, /^[A-Z2-7 ]{16,}$/, 'the key is shown in base32');
      await j.visit('totp-enroll-key');
      const enrolledStep = currentStep();
      await page.fill('#code', totpAt(key, enrolledStep));
      await page.click('form.form button[type=submit]');

      // Recovery codes, shown once.
      await page.locator('.recovery-codes__code').first().waitFor();
      const codes = await page.locator('.recovery-codes__code').allInnerTexts();
      assert.equal(codes.length, 10);
      await j.visit('recovery-codes');
      await page.click('form.form button[type=submit]');
      await page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      await j.visit('callback-enrolled');
      let tokens = await rp.finish(page.url(), req);
      let claims = tokens.claims();
      assert.ok(claims.amr.includes('pwd') && claims.amr.includes('otp') && claims.amr.includes('mfa'),
        `amr ${JSON.stringify(claims.amr)}`);
      await logout(j, rp, tokens.id_token);

      // Second login: password, then a code of a later time step (a code is
      // never accepted twice, and one step of drift is allowed).
      req = await rp.start();
      await page.goto(req.url);
      await signInWithPassword(j, user);
      await page.locator('#code').waitFor();
      await j.visit('totp-code');
      await page.fill('#code', totpAt(key, Math.max(enrolledStep + 1, currentStep())));
      await page.click('form.form button[type=submit]');
      await page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      tokens = await rp.finish(page.url(), req);
      claims = tokens.claims();
      assert.ok(claims.amr.includes('otp'), `amr ${JSON.stringify(claims.amr)}`);
      await logout(j, rp, tokens.id_token);

      // Third login: "use another method", a recovery code.
      req = await rp.start();
      await page.goto(req.url);
      await signInWithPassword(j, user);
      await page.locator('#code').waitFor();
      await page.click('.alternatives__form button');
      await page.locator('#code[autocomplete=off]').waitFor();
      await j.visit('recovery-code');
      await page.fill('#code', codes[0]);
      await page.click('form.form button[type=submit]');
      await page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      await j.visit('callback-recovery');
      tokens = await rp.finish(page.url(), req);
      assert.equal(tokens.claims().sub, claims.sub);
    });
  });
});
