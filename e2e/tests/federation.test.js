// Federation (issue 5): sign-in through upstream OpenID providers this
// project did not write. The provider under test runs on `localhost` (its
// cookies stay apart from the upstreams', all on 127.0.0.1) with
// `[[upstreams]]`:
//
// - `partner` ("Partner SSO"): panva's oidc-provider (lib/upstream.js), a
//   static confidential client for us, accounts from the test's fixture;
// - `partner-idp` ("Partner IdP"): another instance of this provider
//   (`idp serve`, own data folder, a client for the provider under test);
// - `mixup` and `mixup-quiet`: a proxy whose discovery documents claim to be
//   their issuer while every endpoint is a second oidc-provider's, so the
//   answers and ID tokens name another issuer.
//
// Journeys: a just-in-time account (the same `sub` at the next sign-in); a
// link to an existing account after proving it (its password), then the
// upstream alone; an unverified email matching an account refused (twice:
// nothing was linked; the password still works); unlinking from the account
// page (the proof is asked again), and the refusal to unlink a just-in-time
// account's only way to sign in (until it has a password); a tampered
// `state`; a sign-in cancelled at the upstream; a tampered `nonce`;
// answers from the wrong issuer (the RFC 9207 `iss` parameter, then the ID
// token's `iss`); the second upstream, offered next to the first.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setup, signInWithPassword } from '../lib/fixture.js';
import { journey, rewriteRequests, ARTIFACTS } from '../lib/browser.js';
import { startIdp, freePort, waitFor, BACKEND } from '../lib/harness.js';
import { startOidcProvider, startMixupProxy, signInAtUpstream, escapeRe } from '../lib/upstream.js';

// The portal whose login page offers Partner SSO and Partner IdP, and the one
// offering the two lying upstreams. Each has the flows of a client offering
// upstreams: identifier and password, or an upstream, at the same level.
const PORTAL = 'fed-portal';
const MIXUP_PORTAL = 'mixup-portal';
const FLOWS = [
  { name: 'standard', acr: '1', steps: ['identifier', 'password'] },
  { name: 'partner', acr: '1', steps: ['upstream'] },
];
// Our registration at the oidc-provider instances (the same at both).
const REGISTRATION = 'idp-under-test';

describe('federation with upstream OpenID providers', () => {
  let env;
  let partner; // oidc-provider
  let other; // the second oidc-provider, behind the mix-up proxy
  let proxy;
  let upIdp; // another instance of this provider
  let callback; // upstream name -> our redirect URI for it

  before(async () => {
    const port = await freePort();
    const issuer = `http://localhost:${port}`;
    callback = (name) => `${issuer}/login/upstream/${name}/callback`;
    const secret = randomBytes(24).toString('base64url');
    partner = await startOidcProvider({
      brand: 'Partner SSO',
      tag: 'partner',
      client: { id: REGISTRATION, secret, redirectUris: [callback('partner')] },
    });
    other = await startOidcProvider({
      brand: 'Other SSO',
      tag: 'other',
      client: { id: REGISTRATION, secret, redirectUris: [callback('mixup'), callback('mixup-quiet')] },
    });
    proxy = await startMixupProxy(other.issuer, { loud: { iss: true }, quiet: { iss: false } });
    await mkdir(join(ARTIFACTS, BACKEND), { recursive: true });
    upIdp = await startIdp({
      logFile: join(ARTIFACTS, BACKEND, 'federation-upstream-idp.log'),
      clients: [{
        id: 'downstream',
        name: 'Downstream portal',
        redirectUri: callback('partner-idp'),
        postLogoutRedirectUri: `${issuer}/`,
      }],
    });
    const upstream = (name, displayName, upstreamIssuer, secretFile, clients) => [
      '[[upstreams]]',
      `name = "${name}"`,
      `display_name = "${displayName}"`,
      `issuer = "${upstreamIssuer}"`,
      `client_id = "${name === 'partner-idp' ? 'downstream' : REGISTRATION}"`,
      `client_secret_file = "${secretFile}"`,
      `clients = ${JSON.stringify(clients)}`,
      'create_accounts = true',
      '',
    ];
    env = await setup('federation', [
      { id: PORTAL, name: 'Federated portal', flows: FLOWS },
      { id: MIXUP_PORTAL, name: 'Mix-up portal', flows: FLOWS },
    ], {
      host: 'localhost',
      port,
      files: {
        'partner.secret': `${secret}\n`,
        'partner-idp.secret': `${upIdp.clients.downstream.secret}\n`,
      },
      config: [
        ...upstream('partner', 'Partner SSO', partner.issuer, 'partner.secret', [PORTAL, 'account']),
        ...upstream('partner-idp', 'Partner IdP', upIdp.issuer, 'partner-idp.secret', [PORTAL]),
        ...upstream('mixup', 'Mix-up SSO', proxy.issuer('loud'), 'partner.secret', [MIXUP_PORTAL]),
        ...upstream('mixup-quiet', 'Quiet mix-up SSO', proxy.issuer('quiet'), 'partner.secret', [MIXUP_PORTAL]),
      ],
    });
    assert.equal(env.idp.issuer, issuer);
  });

  after(async () => {
    await env?.teardown();
    await upIdp?.stop();
    await partner?.close();
    await other?.close();
    await proxy?.close();
  });

  // A journey whose refusals, provoked on purpose, are declared: `expect`
  // holds [path prefix, status] pairs the current step may answer.
  function fedJourney(name) {
    const expect = [];
    const j = journey(env.browser, name, {
      expectedStatus: (url, status) => expect.some(([p, s]) => s === status && new URL(url).pathname.startsWith(p)),
    });
    return j.then((x) => Object.assign(x, { expect }));
  }

  const buttons = (page) => page.locator('form[action$="/federate"] button').allInnerTexts();
  const continueWith = (page, name) => page.locator('form[action$="/federate"] button', { hasText: `Continue with ${name}` });
  const accountsWith = async (email) => (await env.idp.users()).filter((u) => u.email === email);

  // The portal's authorization request, to the identifier page.
  async function openPortal(j, rp, label) {
    const req = await rp.start();
    await j.page.goto(req.url);
    await j.page.locator('#identifier').waitFor();
    await j.visit(label);
    return req;
  }

  // Where our callback sends the browser: the portal (tokens), or a page of
  // ours (a refusal, the proof of a local account).
  async function landing(j, rp) {
    await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri)
      || (u.origin === env.idp.issuer
        && (u.pathname.startsWith('/login/upstream/') || /^\/login\/[^/]+$/.test(u.pathname))));
    return new URL(j.page.url());
  }

  async function atPortal(j, rp, req, label = 'portal-callback') {
    const url = await landing(j, rp);
    assert.ok(url.href.startsWith(rp.client.redirectUri), `back at the portal, not at ${url.href}`);
    assert.equal(url.searchParams.get('iss'), env.idp.issuer);
    await j.visit(label);
    // openid-client checks state, iss, PKCE and the ID token; rp.finish its
    // signature.
    return rp.finish(url.href, req);
  }

  // The page our callback answered with its refusal; its message.
  async function refusal(j, label) {
    const error = j.page.locator('#upstream-error');
    await error.waitFor();
    await j.visit(label);
    return error.innerText();
  }

  // The provider's log from now on (without colours), to tell which check
  // refused an answer, beyond the page's words: the function returned waits
  // until a line matches `re` (stdout reaches this process after the page).
  function logFromHere() {
    const plain = () => env.idp.serverLogs().replace(/\x1b\[[0-9;]*m/g, '');
    const start = plain().length;
    return (re) => waitFor(`the provider to log ${re}`, () => re.test(plain().slice(start)), 5000);
  }

  function assertFederatedAmr(claims) {
    assert.ok(claims.amr.includes('fed'), `amr ${JSON.stringify(claims.amr)} has fed`);
    assert.ok(claims.amr.includes('pwd'), `amr ${JSON.stringify(claims.amr)} keeps the upstream's pwd`);
  }

  it('just in time: a verified upstream identity unknown here gets an account, found again next time', async () => {
    const rp = env.rps[PORTAL];
    const account = partner.addAccount({
      email: env.newEmail('jill'), password: env.newPassword(), email_verified: true, name: 'Jill Upstream',
    });
    assert.deepEqual(await accountsWith(account.email), []);
    let sub;
    const j = await fedJourney('f-jit');
    await j.run(async () => {
      const req = await openPortal(j, rp, 'identifier');
      assert.deepEqual(await buttons(j.page), ['Continue with Partner SSO', 'Continue with Partner IdP']);
      await continueWith(j.page, 'Partner SSO').click();
      await signInAtUpstream(j, partner, account, 'partner');
      const tokens = await atPortal(j, rp, req);
      const claims = tokens.claims();
      assert.equal(claims.email, account.email);
      assert.equal(claims.email_verified, true);
      assert.equal(claims.name, 'Jill Upstream');
      assert.equal(claims.acr, '1');
      assertFederatedAmr(claims);
      const info = await rp.userinfo(tokens.access_token, claims.sub);
      assert.equal(info.email, account.email);
      sub = claims.sub;
    });
    const created = await accountsWith(account.email);
    assert.equal(created.length, 1, 'one account created');
    assert.equal(created[0].id, sub);

    // A new browser, the same upstream identity: the same account.
    const again = await fedJourney('f-jit-again');
    await again.run(async () => {
      const req = await openPortal(again, rp, 'identifier');
      await continueWith(again.page, 'Partner SSO').click();
      await signInAtUpstream(again, partner, account, 'partner');
      const tokens = await atPortal(again, rp, req);
      assert.equal(tokens.claims().sub, sub);
      assertFederatedAmr(tokens.claims());
    });
    assert.equal((await accountsWith(account.email)).length, 1, 'no second account');
  });

  it('linking: an account with the same verified email is proven with its password once, then the upstream is enough', async () => {
    const rp = env.rps[PORTAL];
    const user = await env.idp.createUser(env.newEmail('lin'), env.newPassword());
    const account = partner.addAccount({
      email: user.email, password: env.newPassword(), email_verified: true, name: 'Lin Partner',
    });
    const j = await fedJourney('f-link');
    const { page } = j;
    await j.run(async () => {
      const req = await openPortal(j, rp, 'identifier');
      await continueWith(page, 'Partner SSO').click();
      await signInAtUpstream(j, partner, account, 'partner');
      const url = await landing(j, rp);
      assert.match(url.pathname, /^\/login\/[^/]+$/, `the proof of the account follows, not ${url.href}`);
      await page.locator('#password').waitFor();
      assert.match(await page.locator('main .notice[role=status]').innerText(),
        /An account with your email address already exists here\. Sign in to it once to link it to Partner SSO/);
      assert.equal(await page.inputValue('#username'), user.email, 'pinned to that account');
      await j.visit('link-proof');
      // A wrong password links nothing (refused on purpose).
      j.expect.push(['/login/', 401]);
      await page.fill('#password', `${user.password}-wrong`);
      await page.click('form.form button[type=submit]');
      await page.locator('#password-error').waitFor();
      await j.visit('link-proof-wrong-password');
      j.expect.length = 0;
      await page.fill('#password', user.password);
      await page.click('form.form button[type=submit]');
      const tokens = await atPortal(j, rp, req);
      const claims = tokens.claims();
      assert.equal(claims.sub, user.id, 'signed in to the existing account');
      assert.equal(claims.email, user.email);
      assertFederatedAmr(claims);
    });
    assert.equal((await accountsWith(user.email)).length, 1, 'no second account');

    // Linked: next time, in a new browser, the upstream alone signs in.
    const again = await fedJourney('f-link-again');
    await again.run(async () => {
      const req = await openPortal(again, rp, 'identifier');
      await continueWith(again.page, 'Partner SSO').click();
      await signInAtUpstream(again, partner, account, 'partner');
      const tokens = await atPortal(again, rp, req);
      assert.equal(tokens.claims().sub, user.id);
      assertFederatedAmr(tokens.claims());
    });
  });

  it('an unverified upstream email matching an account is refused, links nothing, and the password still works', async () => {
    const rp = env.rps[PORTAL];
    const user = await env.idp.createUser(env.newEmail('uma'), env.newPassword());
    const account = partner.addAccount({
      email: user.email, password: env.newPassword(), email_verified: false, name: 'Uma Unverified',
    });
    for (const name of ['f-unverified', 'f-unverified-again']) {
      const j = await fedJourney(name);
      j.expect.push(['/login/upstream/partner/callback', 403]);
      await j.run(async () => {
        await openPortal(j, rp, 'identifier');
        await continueWith(j.page, 'Partner SSO').click();
        await signInAtUpstream(j, partner, account, 'partner');
        const message = await refusal(j, 'refused');
        assert.match(message, /Your sign-in service did not confirm your email address, so we cannot use it to find or create your account/);
        assert.equal(await j.page.locator('#password').count(), 0, 'no proof offered');
        if (name === 'f-unverified-again') {
          // Refused the same way the second time: nothing was linked. The
          // account's own password still signs in.
          j.expect.length = 0;
          const req = await rp.start();
          await j.page.goto(req.url);
          await signInWithPassword(j, user);
          const tokens = await atPortal(j, rp, req);
          assert.equal(tokens.claims().sub, user.id);
          assert.deepEqual(tokens.claims().amr, ['pwd']);
          // Its account page (single sign-on) lists no linked service.
          await j.page.goto(`${env.idp.issuer}/account`);
          await j.page.waitForURL((u) => u.origin === env.idp.issuer && u.pathname === '/account');
          await j.page.locator('#sessions-title').waitFor();
          assert.equal(await j.page.locator('#linked-identities').count(), 0, 'no linked sign-in service');
          await j.visit('account-nothing-linked');
        }
      });
    }
    assert.equal((await accountsWith(user.email)).length, 1, 'no second account');
  });

  // The account page's unlinking, as the lead specified it: a section
  // `#linked-identities` listing each link (display name, upstream email)
  // with a form posting `upstream` to /account/identities/unlink.
  it('unlink from the account page: the proof is asked again; a just-in-time account cannot lose its only way in', async () => {
    const rp = env.rps[PORTAL];
    const user = await env.idp.createUser(env.newEmail('ned'), env.newPassword());
    const account = partner.addAccount({
      email: user.email, password: env.newPassword(), email_verified: true, name: 'Ned Partner',
    });
    const linked = (page) => page.locator('#linked-identities form[action="/account/identities/unlink"]:has(input[name=upstream][value=partner])');

    // Signs in to /account through Partner SSO (the account client offers
    // it); `proof` is the local password when the link must be proven.
    async function accountThroughPartner(j, acct, proof) {
      const { page } = j;
      await page.goto(`${env.idp.issuer}/account`);
      await page.locator('#identifier').waitFor();
      assert.deepEqual(await buttons(page), ['Continue with Partner SSO']);
      await j.visit('account-identifier');
      await continueWith(page, 'Partner SSO').click();
      await signInAtUpstream(j, partner, acct, 'partner');
      if (proof) {
        await page.locator('#password').waitFor();
        assert.match(await page.locator('main .notice[role=status]').innerText(), /link it to Partner SSO/);
        await j.visit('account-link-proof');
        await page.fill('#password', proof);
        await page.click('form.form button[type=submit]');
      }
      await page.waitForURL((u) => u.origin === env.idp.issuer && u.pathname === '/account');
      await page.locator('#sessions-title').waitFor();
      assert.equal(await page.locator('#linked-identities').count(), 1,
        'the account page has its section of linked identities (#linked-identities)');
    }

    const j = await fedJourney('f-unlink');
    const { page } = j;
    await j.run(async () => {
      await accountThroughPartner(j, account, user.password);
      const section = page.locator('#linked-identities');
      assert.match(await section.innerText(), /Partner SSO/);
      assert.match(await section.innerText(), new RegExp(escapeRe(user.email), 'i'));
      assert.equal(await linked(page).count(), 1);
      await j.visit('account-linked');
      await linked(page).locator('button', { hasText: 'Unlink' }).click();
      await page.getByText(/is no longer linked/).first().waitFor();
      assert.equal(await linked(page).count(), 0, 'Partner SSO is no longer listed');
      await page.locator('#activity-title').waitFor();
      const kinds = await page.locator('tr.event').evaluateAll((rows) => rows.map((r) => r.dataset.kind));
      assert.ok(kinds.indexOf('federation.unlinked') >= 0 && kinds.indexOf('federation.unlinked') < kinds.indexOf('federation.linked'),
        `federation.linked then federation.unlinked in the recent events ${JSON.stringify(kinds)}`);
      await j.visit('account-unlinked');
    });

    // Unlinked: the upstream sign-in asks for the account's proof again.
    const again = await fedJourney('f-unlink-proof-again');
    await again.run(async () => {
      const req = await openPortal(again, rp, 'identifier');
      await continueWith(again.page, 'Partner SSO').click();
      await signInAtUpstream(again, partner, account, 'partner');
      const url = await landing(again, rp);
      assert.match(url.pathname, /^\/login\/[^/]+$/, `the proof is asked again, not ${url.href}`);
      await again.page.locator('#password').waitFor();
      assert.match(await again.page.locator('main .notice[role=status]').innerText(), /link it to Partner SSO/);
      await again.visit('link-proof-again');
      await again.page.fill('#password', user.password);
      await again.page.click('form.form button[type=submit]');
      const tokens = await atPortal(again, rp, req);
      assert.equal(tokens.claims().sub, user.id);
    });

    // A just-in-time account has no password: its link is its only way to
    // sign in, and unlinking it is refused.
    const jit = partner.addAccount({
      email: env.newEmail('jo'), password: env.newPassword(), email_verified: true, name: 'Jo Only',
    });
    const only = await fedJourney('f-unlink-only-way');
    await only.run(async () => {
      await accountThroughPartner(only, jit, null);
      assert.equal(await linked(only.page).count(), 1);
      await only.visit('account-jit');
      // Refused on purpose (409, the overview with the reason).
      only.expect.push(['/account/identities/unlink', 409]);
      await linked(only.page).locator('button', { hasText: 'Unlink' }).click();
      const reason = only.page.locator('#linked-identities [role=alert]');
      await reason.waitFor();
      assert.match(await reason.innerText(), /You cannot unlink your only way to sign in/);
      await only.visit('unlink-refused');
      only.expect.length = 0;
      await only.page.goto(`${env.idp.issuer}/account`);
      await only.page.locator('#sessions-title').waitFor();
      assert.equal(await linked(only.page).count(), 1, 'still linked');
      // With a password of its own (none to confirm: it had none), the
      // account may let the link go.
      await only.page.goto(`${env.idp.issuer}/account/password`);
      await only.page.locator('#new_password').waitFor();
      assert.equal(await only.page.locator('#current_password').count(), 0, 'no current password to give');
      await only.visit('password-first');
      const password = env.newPassword();
      await only.page.fill('#new_password', password);
      await only.page.fill('#confirmation', password);
      await only.page.click('form.form button[type=submit]');
      await only.page.waitForURL((u) => u.pathname === '/account' && u.searchParams.get('done') === 'password_changed');
      await linked(only.page).locator('button', { hasText: 'Unlink' }).click();
      await only.page.getByText(/is no longer linked/).first().waitFor();
      assert.equal(await linked(only.page).count(), 0);
      await only.visit('unlinked-with-password');
    });
  });

  it('a tampered state is refused; the genuine answer then signs in', async () => {
    const rp = env.rps[PORTAL];
    const account = partner.addAccount({
      email: env.newEmail('stan'), password: env.newPassword(), email_verified: true, name: 'Stan State',
    });
    const j = await fedJourney('f-state');
    const { page } = j;
    await j.run(async () => {
      await openPortal(j, rp, 'identifier');
      // Our callback receives another state than the one we sent (the
      // browser's Fetch interception: page.route misses redirects).
      const tamper = await rewriteRequests(page, `${callback('partner')}?`, (u) => {
        u.searchParams.set('state', `${u.searchParams.get('state')}x`);
      });
      j.expect.push(['/login/upstream/partner/callback', 400]);
      await continueWith(page, 'Partner SSO').click();
      await signInAtUpstream(j, partner, account, 'partner');
      await page.getByText(/does not match any sign-in started in this browser/).waitFor();
      assert.equal(tamper.count(), 1, 'the answer was tampered with');
      await j.visit('state-refused');
      await tamper.stop();
      j.expect.length = 0;
      assert.deepEqual(await accountsWith(account.email), [], 'no account created');
      // Untouched, the same upstream sign-in (remembered by Partner SSO:
      // no login page there this time) works.
      const req = await openPortal(j, rp, 'identifier-again');
      await continueWith(page, 'Partner SSO').click();
      // (Waited for here: the identifier page's own URL would pass for a
      // page of ours in landing().)
      await page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
      const tokens = await atPortal(j, rp, req);
      assert.equal(tokens.claims().email, account.email);
    });
  });

  it('a sign-in cancelled at the upstream is refused as cancelled', async () => {
    const rp = env.rps[PORTAL];
    const account = partner.addAccount({
      email: env.newEmail('cam'), password: env.newPassword(), email_verified: true, name: 'Cam Cancel',
    });
    const j = await fedJourney('f-cancelled');
    const { page } = j;
    await j.run(async () => {
      await openPortal(j, rp, 'identifier');
      await continueWith(page, 'Partner SSO').click();
      await page.waitForURL((u) => u.href.startsWith(`${partner.issuer}/interaction/`));
      await page.locator('#email').waitFor();
      await j.visit('partner-login');
      j.expect.push(['/login/upstream/partner/callback', 403]);
      await page.click('a[href$="/abort"]');
      const message = await refusal(j, 'cancelled');
      assert.equal(new URL(page.url()).searchParams.get('error'), 'access_denied');
      assert.match(message, /The sign-in was cancelled\./);
    });
    assert.deepEqual(await accountsWith(account.email), [], 'no account created');
  });

  it('a tampered nonce: the upstream signs an ID token for another nonce, which is refused', async () => {
    const rp = env.rps[PORTAL];
    const account = partner.addAccount({
      email: env.newEmail('nora'), password: env.newPassword(), email_verified: true, name: 'Nora Nonce',
    });
    const j = await fedJourney('f-nonce');
    const { page } = j;
    await j.run(async () => {
      await openPortal(j, rp, 'identifier');
      // The authorization request reaches oidc-provider with another nonce.
      let sent;
      const tamper = await rewriteRequests(page, `${partner.issuer}/auth?`, (u) => {
        sent = u.searchParams.get('nonce');
        u.searchParams.set('nonce', randomBytes(32).toString('base64url'));
      });
      j.expect.push(['/login/upstream/partner/callback', 403]);
      const log = logFromHere();
      await continueWith(page, 'Partner SSO').click();
      await signInAtUpstream(j, partner, account, 'partner');
      const message = await refusal(j, 'nonce-refused');
      assert.equal(tamper.count(), 1, 'the authorization request was tampered with');
      assert.ok(sent && sent.length >= 43, 'we had sent a nonce');
      assert.match(message, /The sign-in service’s answer could not be verified/);
      await log(/upstream answer refused upstream="partner" error=invalid upstream answer: ID token: Invalid nonce/);
      await tamper.stop();
    });
    assert.deepEqual(await accountsWith(account.email), [], 'no account created');
  });

  it('an answer from another issuer than the configured one is refused (iss parameter, then ID token iss)', async () => {
    const rp = env.rps[MIXUP_PORTAL];
    const account = other.addAccount({
      email: env.newEmail('max'), password: env.newPassword(), email_verified: true, name: 'Max Mixup',
    });
    const j = await fedJourney('f-mixup');
    j.expect.push(['/login/upstream/mixup/callback', 403], ['/login/upstream/mixup-quiet/callback', 403]);
    const { page } = j;
    await j.run(async () => {
      await openPortal(j, rp, 'identifier');
      assert.deepEqual(await buttons(page), ['Continue with Mix-up SSO', 'Continue with Quiet mix-up SSO']);
      // "Mix-up SSO" claims to be the proxy; its endpoints are the other
      // oidc-provider's, whose answer says (RFC 9207) who sent it.
      let log = logFromHere();
      await continueWith(page, 'Mix-up SSO').click();
      await signInAtUpstream(j, other, account, 'other');
      let message = await refusal(j, 'iss-param-refused');
      const answer = new URL(page.url());
      assert.equal(answer.pathname, '/login/upstream/mixup/callback');
      assert.equal(answer.searchParams.get('iss'), other.issuer);
      assert.match(message, /The answer came from another sign-in service than the one you chose/);
      await log(new RegExp(`upstream="mixup" error=wrong issuer: the answer's iss is "${escapeRe(other.issuer)}"`));

      // "Quiet mix-up SSO" does not announce the iss parameter, and the
      // answer arrives without it: the ID token's iss names the other
      // issuer (the other provider remembers the browser: no login page).
      const strip = await rewriteRequests(page, `${callback('mixup-quiet')}?`, (u) => u.searchParams.delete('iss'));
      await openPortal(j, rp, 'identifier-again');
      log = logFromHere();
      await continueWith(page, 'Quiet mix-up SSO').click();
      message = await refusal(j, 'id-token-iss-refused');
      assert.equal(strip.count(), 1, 'the iss parameter was removed');
      assert.match(message, /The answer came from another sign-in service than the one you chose/);
      await log(new RegExp(`upstream="mixup-quiet" error=wrong issuer: ID token: expected \`${escapeRe(proxy.issuer('quiet'))}\` \\(found \`${escapeRe(other.issuer)}\`\\)`));
      await strip.stop();
    });
    assert.deepEqual(await accountsWith(account.email), [], 'no account created');
  });

  it('a second upstream, another instance of this provider, offered next to the first: just in time', async () => {
    const rp = env.rps[PORTAL];
    // An account there whose address it has verified: it received the
    // password reset link (the reset verifies the address).
    const user = await upIdp.createUser(env.newEmail('pat'), env.newPassword());
    const verify = await fedJourney('f-idp-upstream-verify');
    await verify.run(async () => {
      const { page } = verify;
      await page.goto(`${upIdp.issuer}/forgot-password?client_id=downstream`);
      await page.fill('#identifier', user.email);
      await page.waitForFunction(() => document.querySelector('input[name=altcha]').value !== '');
      await verify.visit('upstream-forgot-password');
      await page.click('form.form button[type=submit]');
      await page.locator('input[name=altcha]').waitFor({ state: 'detached' });
      const mail = await upIdp.waitForEmail(user.email, /reset-password/);
      const link = new RegExp(`(${escapeRe(upIdp.issuer)}/reset-password\\?\\S+)`).exec(mail.text)?.[1];
      assert.ok(link, `a reset link in:\n${mail.text}`);
      await page.goto(link);
      await page.locator('#confirmation').waitFor();
      user.password = env.newPassword();
      await page.fill('#password', user.password);
      await page.fill('#confirmation', user.password);
      await page.click('form.form button[type=submit]');
      await page.locator('#confirmation').waitFor({ state: 'detached' });
      await verify.visit('upstream-password-changed');
    });

    const j = await fedJourney('f-idp-upstream');
    const { page } = j;
    await j.run(async () => {
      const req = await openPortal(j, rp, 'identifier');
      assert.deepEqual(await buttons(page), ['Continue with Partner SSO', 'Continue with Partner IdP']);
      await continueWith(page, 'Partner IdP').click();
      // The upstream's own login pages (identifier, password).
      await page.waitForURL((u) => u.origin === upIdp.issuer && u.pathname.startsWith('/login/'));
      assert.match(await page.locator('.card__subtitle').innerText(), /Downstream portal/);
      await signInWithPassword(j, user);
      const tokens = await atPortal(j, rp, req);
      const claims = tokens.claims();
      assert.equal(claims.email, user.email);
      assert.equal(claims.email_verified, true);
      assertFederatedAmr(claims);
      const created = await accountsWith(user.email);
      assert.equal(created.length, 1, 'an account created just in time');
      assert.equal(created[0].id, claims.sub);
      assert.notEqual(claims.sub, user.id, 'our own account, not the upstream\'s id');
    });
  });
});
