// Journey: a forgotten password, through the link emailed over SMTP (a real
// aiosmtpd process), then a login with the new password.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, signInWithPassword } from '../lib/fixture.js';
import { journey } from '../lib/browser.js';

const P = 'portal';

describe('account recovery', () => {
  let env;

  before(async () => {
    env = await setup('recovery', [{ id: P, name: 'Portal' }]);
  });

  after(async () => {
    await env?.teardown();
  });

  it('forgot password: emailed link, new password, login with it', async () => {
    const rp = env.rps[P];
    const user = await env.idp.createUser(env.newEmail('bob'), env.newPassword());
    // Refused on purpose: the used link, then the old password.
    let refusing = null;
    const j = await journey(env.browser, 'e-forgot-password', {
      expectedStatus: (url, status) => refusing !== null && status >= 400 && status < 500 && new URL(url).pathname.startsWith(refusing),
    });
    const { page } = j;
    await j.run(async () => {
      let req = await rp.start();
      await page.goto(req.url);
      await page.locator('#identifier').waitFor();
      await page.click('a[href^="/forgot-password"]');
      await page.waitForURL((u) => u.pathname === '/forgot-password');
      assert.equal(new URL(page.url()).searchParams.get('client_id'), P);
      await page.fill('#identifier', user.email);
      // altcha.js solves the proof of work, fills the field and enables the button.
      await page.waitForFunction(() => document.querySelector('input[name=altcha]').value !== '');
      await j.visit('forgot-password');
      await page.click('form.form button[type=submit]');
      await page.locator('input[name=altcha]').waitFor({ state: 'detached' });
      await j.visit('recovery-sent');

      const mail = await env.idp.waitForEmail(user.email, /reset-password/);
      const link = /(http:\/\/127\.0\.0\.1:\d+\/reset-password\?\S+)/.exec(mail.text)?.[1];
      assert.ok(link, `a reset link in:\n${mail.text}`);
      assert.ok(link.startsWith(env.idp.issuer));

      await page.goto(link);
      await page.locator('#confirmation').waitFor();
      assert.equal(await page.inputValue('#username'), user.email);
      await j.visit('reset-password');
      const newPassword = env.newPassword();
      await page.fill('#password', newPassword);
      await page.fill('#confirmation', newPassword);
      await page.click('form.form button[type=submit]');
      await page.locator('#confirmation').waitFor({ state: 'detached' });
      await j.visit('password-changed');
      const notice = await env.idp.waitForEmail(user.email, /password was changed/);
      assert.equal(notice.subject, 'Your Portal password was changed');
      assert.equal(mail.subject, 'Reset your password for Portal');

      // The link works once.
      refusing = '/reset-password';
      await page.goto(link);
      await page.locator('h1').waitFor();
      assert.equal(await page.locator('#confirmation').count(), 0, 'a used link shows no form');
      await j.visit('link-used');

      // The old password is refused, the new one signs in.
      await page.goto(req.url);
      refusing = '/login/';
      await signInWithPassword(j, user);
      await page.locator('#password-error').waitFor();
      await j.visit('old-password-refused');
      refusing = null;
      await page.fill('#password', newPassword);
      await page.click('form.form button[type=submit]');
      await page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      await j.visit('callback');
      const tokens = await rp.finish(page.url(), req);
      assert.equal(tokens.claims().email, user.email);
    });
  });
});
