// The account page (/account, /account/devices), signed in through the
// provider's own `account` client: the password changed (the current one
// required, a wrong one refused), an authenticator app added (its recovery
// codes shown once), renamed and removed, the recovery codes regenerated,
// the sessions listed and the other one (a second browser context) signed
// out, and the recent events listed.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup } from '../lib/fixture.js';
import { journey } from '../lib/browser.js';
import { totpAt, currentStep } from '../lib/totp.js';

describe('account page', () => {
  let env;

  before(async () => {
    env = await setup('account', []);
  });

  after(async () => {
    await env?.teardown();
  });

  // From /account, the provider's login pages: identifier, password, and a
  // code of the authenticator app `totp` ({key, step}) when one is enrolled.
  // Ends on the overview.
  async function signIn(j, email, password, label, totp) {
    const { page } = j;
    await page.goto(`${env.idp.issuer}/account`);
    await page.locator('#identifier').waitFor();
    await j.visit(`${label}-identifier`);
    await page.fill('#identifier', email);
    await page.click('button[type=submit]');
    await page.locator('#password').waitFor();
    await page.fill('#password', password);
    await page.click('button[type=submit]');
    if (totp) {
      await page.locator('#code').waitFor();
      await j.visit(`${label}-totp`);
      await page.fill('#code', totpAt(totp.key, totp.step));
      await page.click('form.form button[type=submit]');
    }
    await page.waitForURL((u) => u.pathname === '/account');
    await page.locator('#sessions-title').waitFor();
  }

  const notice = (page) => page.locator('main .notice[role=status]').innerText();
  const sessions = (page) => page.locator('tr.session').count();

  it('password, authenticator app, recovery codes, sessions and events', async () => {
    const user = await env.idp.createUser(env.newEmail('kim'), env.newPassword());
    const newPassword = env.newPassword();
    // A wrong current password is refused on purpose (400).
    let refusing = false;
    const j = await journey(env.browser, 'm-account', {
      expectedStatus: (url, status) => refusing && status === 400 && new URL(url).pathname === '/account/password',
    });
    const { page } = j;
    let other;
    await j.run(async () => {
      await signIn(j, user.email, user.password, 'sign-in');
      assert.match(await page.locator('.card__subtitle').innerText(), new RegExp(user.email.replace(/[.]/g, '\\.')));
      assert.equal(await page.locator('main code').first().innerText(), user.customerId);
      assert.equal(await sessions(page), 1);
      await j.visit('overview');

      // The password: the current one is required, then the new one twice.
      await page.click('a[href^="/account/password"]');
      await page.locator('#current_password').waitFor();
      assert.equal(await page.inputValue('#username'), user.email);
      await j.visit('password');
      refusing = true;
      await page.fill('#current_password', `${user.password}-wrong`);
      await page.fill('#new_password', newPassword);
      await page.fill('#confirmation', newPassword);
      await page.click('form.form button[type=submit]');
      await page.locator('#current-error').waitFor();
      await j.visit('password-current-wrong');
      refusing = false;
      await page.fill('#current_password', user.password);
      await page.fill('#new_password', newPassword);
      await page.fill('#confirmation', newPassword);
      await page.click('form.form button[type=submit]');
      await page.waitForURL((u) => u.pathname === '/account' && u.searchParams.get('done') === 'password_changed');
      assert.match(await notice(page), /password is changed/);
      await j.visit('password-changed');
      const mail = await env.idp.waitForEmail(user.email, /password was changed/);
      assert.match(mail.text, /was just changed/);

      // An authenticator app: the key shown, a code it computes, then the
      // recovery codes of a first second factor, shown once.
      await page.click('a[href^="/account/devices"]');
      await page.locator('#factors-title').waitFor();
      assert.equal(await page.locator('li[id^=factor-]').count(), 0);
      await j.visit('devices-none');
      await page.click('a[href^="/account/devices/totp/new"]');
      await page.locator('#totp-name').waitFor();
      await page.click('summary.disclosure__summary');
      await j.visit('totp-new');
      const key = (await page.locator('#totp-key').textContent()).trim();
      const step = currentStep();
      await page.fill('#totp-name', 'Work phone');
      await page.fill('#code', totpAt(key, step));
      await page.click('form.form button[type=submit]');
      await page.locator('.recovery-codes__code').first().waitFor();
      const firstCodes = await page.locator('.recovery-codes__code').allInnerTexts();
      assert.equal(firstCodes.length, 10);
      assert.match(await notice(page), /your first one/);
      await j.visit('recovery-codes-first');
      await page.click('.card__links a');
      await page.locator('li[id^=factor-]').waitFor();
      assert.match(await page.locator('li[id^=factor-] .notice__title').innerText(), /^Work phone$/);
      await j.visit('devices-app');

      // Renamed.
      await page.fill('li[id^=factor-] input[name=name]', 'Personal phone');
      await page.click('li[id^=factor-] form:has(input[name=name]) button[type=submit]');
      await page.waitForURL((u) => u.searchParams.get('done') === 'renamed');
      assert.match(await notice(page), /name is changed/);
      assert.match(await page.locator('li[id^=factor-] .notice__title').innerText(), /^Personal phone$/);
      await j.visit('devices-renamed');

      // A second browser signs in (the new password and the app), so the
      // account has two sessions; this one signs the other out.
      other = await journey(env.browser, 'm-account-other-browser');
      await other.run(async () => {
        await signIn(other, user.email, newPassword, 'sign-in',
          { key, step: Math.max(step + 1, currentStep()) });
        assert.equal(await sessions(other.page), 2);
        await other.visit('overview-two-sessions');
        await page.goto(`${env.idp.issuer}/account`);
        await page.locator('#sessions-title').waitFor();
        assert.equal(await sessions(page), 2);
        await j.visit('overview-two-sessions');
        await page.click('form[action="/account/sessions/sign-out-others"] button[type=submit]');
        await page.waitForURL((u) => u.searchParams.get('done') === 'sessions_ended');
        assert.match(await notice(page), /other sessions are signed out/);
        assert.equal(await sessions(page), 1);
        await j.visit('others-signed-out');
        // The other browser is signed out: the account page asks it to sign in.
        await other.page.goto(`${env.idp.issuer}/account`);
        await other.page.locator('#identifier').waitFor();
        await other.visit('signed-out');
      });

      // New recovery codes replace the first ones.
      await page.goto(`${env.idp.issuer}/account/devices`);
      await page.locator('#recovery-title').waitFor();
      assert.match(await page.locator('main').innerText(), /Unused recovery codes: 10\./);
      await page.click('form[action^="/account/devices/recovery-codes"] button[type=submit]');
      await page.locator('.recovery-codes__code').first().waitFor();
      const newCodes = await page.locator('.recovery-codes__code').allInnerTexts();
      assert.equal(newCodes.length, 10);
      assert.ok(newCodes.every((c) => !firstCodes.includes(c)), 'all new codes');
      assert.match(await notice(page), /previous codes no longer work/);
      await j.visit('recovery-codes-new');
      await page.click('.card__links a');
      await page.locator('li[id^=factor-]').waitFor();

      // Removed: no second factor left.
      await page.click('li[id^=factor-] form:not(:has(input[name=name])) button[type=submit]');
      await page.waitForURL((u) => u.searchParams.get('done') === 'removed');
      assert.match(await notice(page), /method is removed/);
      assert.equal(await page.locator('li[id^=factor-]').count(), 0);
      await j.visit('devices-removed');

      // The overview: no second factor, and what happened, newest first.
      await page.goto(`${env.idp.issuer}/account`);
      await page.locator('#activity-title').waitFor();
      assert.match(await page.locator('main').innerText(), /Authenticator apps: 0/i);
      const kinds = await page.locator('tr.event').evaluateAll((rows) => rows.map((r) => r.dataset.kind));
      for (const kind of ['login.succeeded', 'password.change_failed', 'password.changed', 'mfa.added',
        'mfa.renamed', 'session.revoked', 'recovery_codes.regenerated', 'mfa.removed']) {
        assert.ok(kinds.includes(kind), `event ${kind} in ${JSON.stringify(kinds)}`);
      }
      assert.ok(kinds.indexOf('mfa.removed') < kinds.indexOf('mfa.added'), 'newest first');
      await j.visit('overview-events');
    });
  });
});
