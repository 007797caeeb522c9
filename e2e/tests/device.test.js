// Device sign-in (RFC 8628) driven by openid-client's device flow support:
// the "device" (openid-client in this process) asks for codes and polls,
// honouring the interval and slow_down; Chromium opens
// verification_uri_complete, sends the prefilled code, confirms the client
// and scopes, signs in with the client's flow and allows (or denies). The
// device gets tokens whose ID token carries acr, amr, sid and auth_time (its
// signature checked against the JWKS), or access_denied.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, signInWithPassword } from '../lib/fixture.js';
import { journey } from '../lib/browser.js';
import { oidc, verifySignature } from '../lib/rp.js';

const C = 'cli';
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

describe('device sign-in', () => {
  let env;

  before(async () => {
    env = await setup('device', [
      {
        id: C,
        name: 'Cloud CLI',
        flows: [['identifier', 'password']],
        grantTypes: [DEVICE_GRANT, 'refresh_token'],
      },
    ]);
  });

  after(async () => {
    await env?.teardown();
  });

  // Opens the link with the code filled in, sends it, confirms, signs in
  // (when asked) and presses `decision`.
  async function inBrowser(j, response, user, decision) {
    const { page } = j;
    await page.goto(response.verification_uri_complete);
    await page.locator('#user_code').waitFor();
    assert.equal(await page.locator('#user_code').inputValue(), response.user_code);
    await j.visit(`code-${decision}`);
    await page.click('form.form button[type=submit]');
    await page.getByText('Allow this device?').waitFor();
    assert.ok((await page.content()).includes('Cloud CLI'), 'the client is named');
    await j.visit(`confirm-${decision}`);
    await page.click('form.form button[type=submit]');
    if (user) await signInWithPassword(j, user);
    await page.locator(`button[value=${decision}]`).waitFor();
    await j.visit(`approve-${decision}`);
    await page.click(`button[value=${decision}]`);
    await page.getByText('You may return to your device').waitFor();
    await j.visit(`done-${decision}`);
  }

  it('the whole grant: codes, the browser signs in and allows, the device polls for tokens', async () => {
    const rp = env.rps[C];
    const meta = rp.config.serverMetadata();
    assert.equal(meta.device_authorization_endpoint, `${env.idp.issuer}/device_authorization`);
    assert.ok(meta.grant_types_supported.includes(DEVICE_GRANT));
    const user = await env.idp.createUser(env.newEmail('device'), env.newPassword());
    const j = await journey(env.browser, 'device');
    await j.run(async () => {
      const response = await oidc.initiateDeviceAuthorization(rp.config, {
        scope: 'openid profile email offline_access',
      });
      assert.match(response.user_code, /^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/);
      assert.equal(response.verification_uri, `${env.idp.issuer}/device`);
      assert.equal(response.interval, 5);
      // The device polls while the user signs in.
      const polling = oidc.pollDeviceAuthorizationGrant(rp.config, response);
      await inBrowser(j, response, user, 'approve');
      const tokens = await polling;
      await verifySignature(rp.config.serverMetadata().jwks_uri, tokens.id_token);
      const claims = tokens.claims();
      assert.equal(claims.aud, C);
      assert.equal(claims.acr, '1');
      assert.deepEqual(claims.amr, ['pwd']);
      assert.ok(claims.sid, 'sid');
      assert.ok(Number.isInteger(claims.auth_time), 'auth_time');
      assert.ok(tokens.refresh_token, 'a refresh token (offline_access)');
      const info = await rp.userinfo(tokens.access_token, claims.sub);
      assert.equal(info.email, user.email);

      // A second device in the same browser: the session satisfies the
      // flow, nothing is asked but the confirmation and the approval.
      const second = await oidc.initiateDeviceAuthorization(rp.config, { scope: 'openid' });
      const polling2 = oidc.pollDeviceAuthorizationGrant(rp.config, second);
      await inBrowser(j, second, null, 'deny');
      await assert.rejects(polling2, (e) => e.error === 'access_denied' || e.code === 'access_denied'
        || /access_denied/.test(String(e.message) + String(e.cause?.error)));
    });
  });
});
