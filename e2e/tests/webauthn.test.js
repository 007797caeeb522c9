// Journeys with Chromium's virtual authenticator (CDP WebAuthn domain): a
// security key enrolled during the first login (password + WebAuthn), used
// as the second factor at the next login, then as a passkey for a
// passwordless login (acr_values=2). The issuer is http://localhost:<port>:
// WebAuthn needs a host name, not an IP address.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, signInWithPassword } from '../lib/fixture.js';
import { journey } from '../lib/browser.js';

const K = 'keys';

describe('WebAuthn', () => {
  let env;

  before(async () => {
    env = await setup('webauthn', [
      { id: K, name: 'Key Portal', flows: [['identifier', 'password', 'webauthn'], ['passkey']] },
    ], { host: 'localhost' });
  });

  after(async () => {
    await env?.teardown();
  });

  it('(d) password + security key, then passwordless with the passkey', async () => {
    const rp = env.rps[K];
    assert.ok(env.idp.issuer.startsWith('http://localhost:'));
    const user = await env.idp.createUser(env.newEmail('carol'), env.newPassword());
    const j = await journey(env.browser, 'f-webauthn');
    const { page } = j;
    await j.run(async () => {
      const cdp = await j.context.newCDPSession(page);
      await cdp.send('WebAuthn.enable');
      const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
        options: {
          protocol: 'ctap2',
          transport: 'internal',
          hasResidentKey: true,
          hasUserVerification: true,
          isUserVerified: true,
          automaticPresenceSimulation: true,
        },
      });
      const credentials = async () => (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials;

      // First login: password, then enroll the key.
      let req = await rp.start();
      await page.goto(req.url);
      await signInWithPassword(j, user);
      await page.locator('#webauthn-name').waitFor();
      await j.visit('webauthn-enroll');
      await page.click('form.form button[type=submit]');
      // Recovery codes, shown once after the first second factor.
      await page.locator('.recovery-codes__code').first().waitFor();
      await j.visit('recovery-codes');
      const creds = await credentials();
      assert.equal(creds.length, 1, 'the virtual authenticator holds one credential');
      assert.equal(creds[0].isResidentCredential, true, 'registered as a discoverable credential');
      assert.equal(creds[0].rpId, 'localhost');
      await page.click('form.form button[type=submit]');
      await page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      await j.visit('callback-enrolled');
      let tokens = await rp.finish(page.url(), req);
      const sub = tokens.claims().sub;
      assert.ok(tokens.claims().amr.includes('hwk'), `amr ${JSON.stringify(tokens.claims().amr)}`);
      await page.goto(rp.logoutUrl(tokens.id_token));
      await page.waitForURL((u) => u.href.startsWith(rp.client.postLogoutRedirectUri));

      // Second login: password, then the key.
      req = await rp.start();
      await page.goto(req.url);
      await signInWithPassword(j, user);
      await page.locator('form[data-webauthn=get]').waitFor();
      await j.visit('webauthn-get');
      await page.click('form[data-webauthn=get] button[type=submit]');
      await page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      tokens = await rp.finish(page.url(), req);
      assert.equal(tokens.claims().sub, sub);
      assert.ok(tokens.claims().amr.includes('hwk'));
      assert.equal((await credentials())[0].signCount >= 2, true, 'the key signed twice');
      await page.goto(rp.logoutUrl(tokens.id_token));
      await page.waitForURL((u) => u.href.startsWith(rp.client.postLogoutRedirectUri));

      // Passwordless: acr_values=2 runs the passkey flow; no identifier asked.
      req = await rp.start({ acr_values: '2' });
      await page.goto(req.url);
      await page.locator('form[data-webauthn=get]').waitFor();
      assert.equal(await page.locator('#identifier').count(), 0);
      await j.visit('passkey');
      await page.click('form[data-webauthn=get] button[type=submit]');
      await page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      await j.visit('callback-passkey');
      tokens = await rp.finish(page.url(), req);
      assert.equal(tokens.claims().sub, sub, 'the passkey identified the same user');
      assert.equal(tokens.claims().acr, '2');
    });
  });
});
