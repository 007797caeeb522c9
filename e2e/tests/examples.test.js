// The example clients of config/clients/, with their own flows and themes as
// written there (only the secret and the redirect URIs are the test's): the
// customer space (password, then a code by email, or by text message once the
// user adds a mobile number), the marketplace (password, and an emailed code
// from a browser not seen before), the cloud console (password plus a
// mandatory authenticator app or security key, enrolled at the first login;
// passwordless with the passkey on acr_values=3), and organization creation
// from the customer space's login page through to validation; the customer
// space's "Continue with Partner SSO" (its second flow: the upstream, then
// its emailed code), with panva's oidc-provider as the partner's single
// sign-on, configured as config/idp.toml configures the demo's. Each client's
// pages show its theme (themes/<client>/: logo, colours, product name), and
// the customer space's emails its product name.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import { setup, signInWithPassword } from '../lib/fixture.js';
import { journey } from '../lib/browser.js';
import { startPartnerSso, signInAtUpstream } from '../lib/upstream.js';
import { totpAt, currentStep } from '../lib/totp.js';

// Each example client's theme: its product name, and its primary colour
// (light scheme) as its theme.css sets it.
const THEMES = Object.fromEntries([
  ['customer-space', 'Lanternhouse'],
  ['marketplace', 'Orchardly Market'],
  ['cloud-console', 'Nimbalt Console'],
].map(([id, brand]) => {
  const css = readFileSync(new URL(`../../themes/${id}/static/theme.css`, import.meta.url), 'utf8');
  const primary = /--color-primary:\s*(#[0-9a-f]{6})/i.exec(css)?.[1];
  if (!primary) throw new Error(`themes/${id}/static/theme.css sets no --color-primary`);
  return [id, { brand, primary }];
}));

function rgb(hex) {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return `rgb(${r}, ${g}, ${b})`;
}

// The page shows client `id`'s theme: its logo (loaded), its product name
// next to it and in the window title, its theme.css after the default
// style.css, and its primary colour on the primary button.
async function assertTheme(j, id) {
  const { brand, primary } = THEMES[id];
  const shown = await j.page.evaluate(() => {
    const logo = document.querySelector('img.masthead__logo');
    const button = document.querySelector('.button--primary');
    return {
      logo: logo && new URL(logo.src).pathname,
      logoLoaded: Boolean(logo && logo.complete && logo.naturalWidth > 0),
      name: document.querySelector('.masthead__name')?.textContent.trim(),
      title: document.title,
      sheets: [...document.querySelectorAll('link[rel=stylesheet]')].map((l) => new URL(l.href).pathname),
      primary: getComputedStyle(document.documentElement).getPropertyValue('--color-primary').trim(),
      button: button && getComputedStyle(button).backgroundColor,
    };
  });
  assert.equal(shown.logo, `/assets/${id}/logo.svg`, `${id}'s logo`);
  assert.ok(shown.logoLoaded, `${id}'s logo is loaded`);
  assert.equal(shown.name, brand, `${id}'s product name`);
  assert.ok(shown.title.endsWith(` · ${brand}`), `window title ${shown.title}`);
  assert.deepEqual(shown.sheets, [`/assets/${id}/style.css`, `/assets/${id}/theme.css`]);
  assert.equal(shown.primary.toLowerCase(), primary.toLowerCase(), `${id}'s colours`);
  assert.equal(shown.button, rgb(primary), `${id}'s primary button`);
}

const PHONE_CHECK = 'phone-check';

describe('example clients', () => {
  let env;
  let partner; // the customer space's upstream (config/idp.toml's partner-sso)

  before(async () => {
    let options;
    ({ partner, options } = await startPartnerSso('customer-space'));
    env = await setup('examples', [
      { id: 'customer-space', example: 'customer-space.toml' },
      { id: 'marketplace', example: 'marketplace.toml' },
      { id: 'cloud-console', example: 'cloud-console.toml' },
      // Not an example: a portal asking a texted code, then an emailed one,
      // where a user without a mobile number adds one.
      { id: PHONE_CHECK, name: 'Phone check', flows: [['identifier', 'password', 'sms_code', 'email_code']] },
    ], options);
  });

  after(async () => {
    await env?.teardown();
    await partner?.close();
  });

  // The newest sign-in email to `email` and its 6-digit code.
  async function emailedMail(email) {
    const mail = await env.idp.waitForEmail(email, /sign-in code/);
    const code = /^\s+(\d{6})\s*$/m.exec(mail.text)?.[1];
    assert.ok(code, `a 6-digit code in:\n${mail.text}`);
    return { mail, code };
  }

  async function emailedCode(email) {
    return (await emailedMail(email)).code;
  }

  // The 6-digit code of the newest text message to `phone` matching `pattern`.
  async function textedCode(phone, pattern, after) {
    const sms = await env.idp.waitForSms(phone, pattern, after);
    const code = /\b(\d{6})\b/.exec(sms.text)?.[1];
    assert.ok(code, `a 6-digit code in: ${sms.text}`);
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
      await j.page.locator('#identifier').waitFor();
      await assertTheme(j, 'customer-space');
      await signInWithPassword(j, user);
      await j.page.locator('#code').waitFor();
      await assertTheme(j, 'customer-space');
      await j.visit('email-code');
      // The email comes in the client's theme too: its product name heads
      // the HTML part and signs the text part; the subject names the client.
      const { mail, code } = await emailedMail(user.email);
      assert.match(mail.subject, /Customer Space/);
      const htmlPart = mail.parts.find((p) => p.type.startsWith('text/html'));
      assert.ok(htmlPart, 'an HTML part');
      assert.match(htmlPart.text, />Lanternhouse<\/p>/, 'the HTML part is headed with the product name');
      assert.match(mail.text, /^-- \nLanternhouse\n/m, 'the text part is signed with the product name');
      await enterCode(j, code);
      await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      await j.visit('callback');
      const claims = (await rp.finish(j.page.url(), req)).claims();
      // An emailed code is a check, not a second factor: level 1, no mfa.
      assert.equal(claims.acr, '1');
      assert.deepEqual(claims.amr, ['pwd', 'email_otp']);
    });
  });

  it('customer-space: "Continue with Partner SSO", then the customer space\'s emailed code', async () => {
    const rp = env.rps['customer-space'];
    const account = partner.addAccount({
      email: env.newEmail('pia'), password: env.newPassword(), email_verified: true, name: 'Pia Partner',
    });
    const j = await journey(env.browser, 'g-customer-space-partner-sso');
    await j.run(async () => {
      const req = await rp.start();
      await j.page.goto(req.url);
      await j.page.locator('#identifier').waitFor();
      await assertTheme(j, 'customer-space');
      const button = j.page.locator('form[action$="/federate"] button', { hasText: 'Continue with Partner SSO' });
      assert.equal(await button.count(), 1, 'the identifier page offers the partner');
      await button.click();
      await signInAtUpstream(j, partner, account, 'partner');
      // Back here: a new account for Pia, then the level's own second step.
      await j.page.locator('#code').waitFor();
      await assertTheme(j, 'customer-space');
      await j.visit('email-code');
      await enterCode(j, await emailedCode(account.email));
      await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      await j.visit('callback');
      const claims = (await rp.finish(j.page.url(), req)).claims();
      assert.equal(claims.email, account.email);
      assert.equal(claims.acr, '1');
      for (const a of ['fed', 'pwd', 'email_otp']) {
        assert.ok(claims.amr.includes(a), `${a} in amr ${JSON.stringify(claims.amr)}`);
      }
      // An emailed code is not a second factor (NIST SP 800-63B 5.1.3.1).
      assert.ok(!claims.amr.includes('mfa'), `no mfa in amr ${JSON.stringify(claims.amr)}`);
    });
  });

  // The customer space offers the text message only to users with a
  // verified mobile number (the runner offers enrolling a method only when
  // no method of the step is usable, and the emailed code always is): the
  // number is added at the login of a portal whose flow asks a texted code
  // (and then an emailed one), then the customer space lets the user switch.
  it('customer-space: the phone added at another portal, "use another method" to the text message, then the next login', async () => {
    const rp = env.rps['customer-space'];
    const setupRp = env.rps[PHONE_CHECK];
    const user = await env.idp.createUser(env.newEmail('ivy'), env.newPassword());
    // A French mobile number, typed with spaces; the provider keeps E.164.
    const digits = String(randomInt(10_000_000, 100_000_000));
    const typed = `+33 6 ${digits.replace(/(\d{2})(?=\d)/g, '$1 ')}`;
    const phone = `+336${digits}`;
    const masked = `+33${'*'.repeat(phone.length - 5)}${phone.slice(-2)}`;
    const smsTo = () => env.idp.sms.messages().filter((m) => m.to === phone);
    const emailsTo = async () => (await env.idp.smtp.messages()).filter((m) => m.to.includes(user.email)).length;
    const j = await journey(env.browser, 'l-customer-space-sms');
    await j.run(async () => {
      // Without a number, the customer space asks the emailed code and
      // offers nothing else.
      let req = await rp.start();
      await j.page.goto(req.url);
      await signInWithPassword(j, user);
      await j.page.locator('#code').waitFor();
      assert.match(await j.page.locator('main').innerText(), /@example\.test/);
      assert.equal(await j.page.locator('form.alternatives__form').count(), 0, 'no other method yet');
      await j.visit('email-code-only');
      await enterCode(j, await emailedCode(user.email));
      await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      let tokens = await rp.finish(j.page.url(), req);
      await logout(j, rp, tokens.id_token);

      // The phone-check portal: the number is added during its login,
      // confirmed by a code texted to it (read from the SMS provider's
      // stand-in), then the emailed code.
      req = await setupRp.start();
      await j.page.goto(req.url);
      await signInWithPassword(j, user);
      await j.page.locator('#phone').waitFor();
      await j.visit('phone-enroll');
      await j.page.fill('#phone', typed);
      await j.page.click('form.form button[type=submit]');
      await j.page.locator('#code').waitFor();
      assert.ok((await j.page.locator('main').innerText()).includes(masked), 'the number, masked');
      await j.visit('phone-code');
      await enterCode(j, await textedCode(phone, /confirm this phone number for Phone check/));
      // Its first second factor: recovery codes, shown once.
      await j.page.locator('.recovery-codes__code').first().waitFor();
      assert.equal(await j.page.locator('.recovery-codes__code').count(), 10);
      await j.visit('recovery-codes');
      await j.page.click('form.form button[type=submit]');
      await j.page.locator('#code').waitFor();
      await enterCode(j, await emailedCode(user.email));
      await j.page.waitForURL((u) => u.href.startsWith(setupRp.client.redirectUri));
      tokens = await setupRp.finish(j.page.url(), req);
      assert.ok(tokens.claims().amr.includes('sms'), `amr ${JSON.stringify(tokens.claims().amr)}`);
      await logout(j, setupRp, tokens.id_token);

      // The customer space: the emailed code (used last), and now "use
      // another method" offers the text message.
      req = await rp.start();
      await j.page.goto(req.url);
      await signInWithPassword(j, user);
      await j.page.locator('#code').waitFor();
      assert.match(await j.page.locator('main').innerText(), /@example\.test/);
      await j.visit('email-code');
      const texts = smsTo().length;
      await j.page.click('form.alternatives__form:has(input[name=method][value=sms_code]) button');
      await j.page.locator('#code').waitFor();
      const shown = await j.page.locator('main').innerText();
      assert.match(shown, /text message/i);
      assert.ok(shown.includes(masked), `the number, masked: ${shown}`);
      await assertTheme(j, 'customer-space');
      await j.visit('sms-code');
      await enterCode(j, await textedCode(phone, /Customer Space sign-in code/, texts));
      await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      await j.visit('callback');
      tokens = await rp.finish(j.page.url(), req);
      let { amr, acr } = tokens.claims();
      assert.ok(amr.includes('sms') && amr.includes('pwd'), `amr ${JSON.stringify(amr)}`);
      // The flow may end with an emailed code instead: it claims level 1.
      assert.equal(acr, '1');
      await logout(j, rp, tokens.id_token);

      // The next login: the text message at once (used last), no email.
      const emails = await emailsTo();
      req = await rp.start();
      await j.page.goto(req.url);
      await signInWithPassword(j, user);
      await j.page.locator('#code').waitFor();
      assert.match(await j.page.locator('main').innerText(), /text message/i);
      assert.equal(await j.page.locator('form.alternatives__form:has(input[name=method][value=email_code])').count(), 1,
        'the email stays offered');
      await j.visit('sms-code-next-login');
      await enterCode(j, await textedCode(phone, /Customer Space sign-in code/, smsTo().length - 1));
      await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      tokens = await rp.finish(j.page.url(), req);
      ({ amr, acr } = tokens.claims());
      assert.ok(amr.includes('sms') && amr.includes('pwd'), `amr ${JSON.stringify(amr)}`);
      assert.equal(await emailsTo(), emails, 'no email at this login');
      const sent = smsTo();
      assert.equal(sent.length, 3, 'a confirmation code, then a sign-in code per login');
      assert.ok(sent.every((m) => m.contentType === 'application/json'), 'the JSON body of [sms]');
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
      await j.page.locator('#identifier').waitFor();
      await assertTheme(j, 'marketplace');
      await signInWithPassword(j, user);
      await j.page.locator('#code').waitFor();
      await assertTheme(j, 'marketplace');
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
      await j.page.locator('#identifier').waitFor();
      await assertTheme(j, 'cloud-console');
      await signInWithPassword(j, user);
      await j.page.locator('#totp-name').waitFor();
      await assertTheme(j, 'cloud-console');
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
      await assertTheme(j, 'cloud-console');
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
