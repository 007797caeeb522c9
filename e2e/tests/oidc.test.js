// Journeys (a) basic OIDC with openid-client, (b) single sign-on across two
// clients and logout from one, (c) the language switch to French.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, signInWithPassword } from '../lib/fixture.js';
import { journey } from '../lib/browser.js';
import { oidc, verifySignature } from '../lib/rp.js';

const A = 'portal-a';
const B = 'portal-b';

describe('OpenID Connect journeys', () => {
  let env;
  let user;

  before(async () => {
    env = await setup('oidc', [
      { id: A, name: 'Portal A' },
      { id: B, name: 'Portal B' },
    ]);
    user = await env.idp.createUser(env.newEmail('alice'), env.newPassword());
    assert.match(user.customerId, /^[a-z]{2}\d{5}-idp$/, 'idp user create prints the customer identifier');
  });

  after(async () => {
    await env?.teardown();
  });

  // Asks for a code without any interaction; resolves to the URL the browser
  // lands on at the portal's callback.
  async function silentAuthorize(j, rp) {
    const req = await rp.start({ prompt: 'none' });
    await j.page.goto(req.url);
    await j.page.waitForURL((u) => u.href.startsWith(rp.client.redirectUri));
    return { req, url: j.page.url() };
  }

  it('(a) discovery, code + PKCE, password login, ID token, userinfo, refresh, RP-initiated logout', async () => {
    const rpA = env.rps[A];
    const meta = rpA.config.serverMetadata();
    assert.equal(meta.issuer, env.idp.issuer);
    assert.ok(meta.code_challenge_methods_supported.includes('S256'));
    assert.ok(meta.end_session_endpoint, 'discovery publishes end_session_endpoint');

    const j = await journey(env.browser, 'a-basic');
    await j.run(async () => {
      const req = await rpA.start();
      await j.page.goto(req.url);
      assert.match(await j.page.locator('h1').innerText(), /sign in/i);
      await signInWithPassword(j, user);
      await j.page.waitForURL((u) => u.href.startsWith(rpA.client.redirectUri));
      const callback = new URL(j.page.url());
      assert.equal(callback.searchParams.get('iss'), env.idp.issuer, 'RFC 9207 iss in the response');
      assert.equal(callback.searchParams.get('state'), req.state);
      await j.visit('callback');

      // openid-client checks state, iss, PKCE, the ID token's iss, aud, exp,
      // iat and nonce; rp.finish adds its signature against the JWKS.
      const tokens = await rpA.finish(callback.href, req);
      // The client file names no algorithm: the ID token is RS256 (Dynamic
      // Client Registration 1.0 §2), and its kid is an RSA key of the JWKS
      // (rp.finish verified the signature with it).
      const [head, payload, signature] = tokens.id_token.split('.');
      const idHeader = JSON.parse(Buffer.from(head, 'base64url').toString());
      assert.equal(idHeader.alg, 'RS256');
      const { keys } = await (await fetch(meta.jwks_uri)).json();
      const idKey = keys.find((k) => k.kid === idHeader.kid);
      assert.equal(idKey?.kty, 'RSA', `the key ${idHeader.kid} of the ID token is an RSA key`);
      assert.ok(meta.id_token_signing_alg_values_supported.includes('RS256'));
      // A tampered token fails that signature check (the check is real).
      const altered = JSON.parse(Buffer.from(payload, 'base64url').toString());
      altered.sub = 'someone-else';
      const forged = [head, Buffer.from(JSON.stringify(altered)).toString('base64url'), signature].join('.');
      await assert.rejects(verifySignature(meta.jwks_uri, forged), /bad RS256 signature/);
      // JWT access tokens keep their own default, ES256, and verify too.
      const atHeader = JSON.parse(Buffer.from(tokens.access_token.split('.')[0], 'base64url').toString());
      assert.equal(atHeader.alg, 'ES256');
      assert.equal(atHeader.typ, 'at+jwt');
      await verifySignature(meta.jwks_uri, tokens.access_token);
      const claims = tokens.claims();
      assert.equal(claims.iss, env.idp.issuer);
      assert.equal(claims.aud, A);
      assert.equal(claims.nonce, req.nonce);
      assert.equal(claims.email, user.email);
      assert.equal(claims.customer_id, user.customerId);
      assert.ok(claims.amr.includes('pwd'), `amr ${JSON.stringify(claims.amr)} has pwd`);
      assert.ok(claims.sid, 'the ID token carries sid');
      assert.equal(tokens.token_type.toLowerCase(), 'bearer');
      assert.ok(tokens.refresh_token, 'a refresh token is issued');

      const info = await rpA.userinfo(tokens.access_token, claims.sub);
      assert.equal(info.sub, claims.sub);
      assert.equal(info.email, user.email);

      // Refresh rotates the refresh token and yields a working access token.
      const refreshed = await rpA.refresh(tokens.refresh_token);
      assert.ok(refreshed.access_token);
      assert.notEqual(refreshed.refresh_token, tokens.refresh_token, 'refresh tokens rotate');
      if (refreshed.id_token) assert.equal(refreshed.claims().sub, claims.sub);
      const info2 = await rpA.userinfo(refreshed.access_token, claims.sub);
      assert.equal(info2.email, user.email);

      // The session is live: prompt=none gets a code.
      const silent = await silentAuthorize(j, rpA);
      assert.ok(new URL(silent.url).searchParams.get('code'), 'prompt=none gets a code while signed in');
      await j.visit('silent-callback');

      // RP-initiated logout with id_token_hint ends the session at once and
      // returns to the registered post_logout_redirect_uri.
      await j.page.goto(rpA.logoutUrl(tokens.id_token));
      await j.page.waitForURL((u) => u.href.startsWith(rpA.client.postLogoutRedirectUri));
      await j.visit('after-logout');

      const after = await silentAuthorize(j, rpA);
      await assert.rejects(rpA.finish(after.url, after.req), (e) => {
        assert.ok(e instanceof oidc.AuthorizationResponseError, `${e}`);
        assert.equal(e.error, 'login_required');
        return true;
      });
      await j.visit('login-required');

      // Logout revoked the grant born of the session.
      await assert.rejects(rpA.refresh(refreshed.refresh_token), (e) => {
        assert.equal(e.error, 'invalid_grant');
        return true;
      });
    });
  });

  it('(b) single sign-on across two clients; logout from one ends the session', async () => {
    const rpA = env.rps[A];
    const rpB = env.rps[B];
    const j = await journey(env.browser, 'b-sso');
    await j.run(async () => {
      const reqA = await rpA.start();
      await j.page.goto(reqA.url);
      await signInWithPassword(j, user);
      await j.page.waitForURL((u) => u.href.startsWith(rpA.client.redirectUri));
      await j.visit('callback-a');
      const tokensA = await rpA.finish(j.page.url(), reqA);

      // Client B: straight to its callback, no login page on the way.
      const loginPages = [];
      const onNav = (frame) => {
        if (frame === j.page.mainFrame() && new URL(frame.url()).pathname.startsWith('/login/')) loginPages.push(frame.url());
      };
      j.page.on('framenavigated', onNav);
      const reqB = await rpB.start();
      await j.page.goto(reqB.url);
      await j.page.waitForURL((u) => u.href.startsWith(rpB.client.redirectUri));
      j.page.off('framenavigated', onNav);
      assert.deepEqual(loginPages, [], 'client B got its code without any login page');
      await j.visit('callback-b');
      const tokensB = await rpB.finish(j.page.url(), reqB);
      const a = tokensA.claims();
      const b = tokensB.claims();
      assert.equal(b.aud, B);
      assert.equal(b.sub, a.sub, 'same user');
      assert.equal(b.sid, a.sid, 'same session');
      assert.equal(b.auth_time, a.auth_time, 'no new authentication');

      // Logout from B ends the session for A too.
      await j.page.goto(rpB.logoutUrl(tokensB.id_token));
      await j.page.waitForURL((u) => u.href.startsWith(rpB.client.postLogoutRedirectUri));
      await j.visit('after-logout-b');

      const after = await silentAuthorize(j, rpA);
      assert.equal(new URL(after.url).searchParams.get('error'), 'login_required');
      await j.visit('a-login-required');
      await assert.rejects(rpA.refresh(tokensA.refresh_token), (e) => e.error === 'invalid_grant');
      await assert.rejects(rpB.refresh(tokensB.refresh_token), (e) => e.error === 'invalid_grant');

      // Without a session, client A shows the login page again.
      const again = await rpA.start();
      await j.page.goto(again.url);
      await j.page.locator('#identifier').waitFor();
      await j.visit('login-again');
    });
  });

  it('(a2) logout without id_token_hint: the user confirms, the session ends', async () => {
    const rpA = env.rps[A];
    const j = await journey(env.browser, 'a2-logout-confirm');
    await j.run(async () => {
      const req = await rpA.start();
      await j.page.goto(req.url);
      await signInWithPassword(j, user);
      await j.page.waitForURL((u) => u.href.startsWith(rpA.client.redirectUri));
      const tokens = await rpA.finish(j.page.url(), req);

      const end = new URL(rpA.config.serverMetadata().end_session_endpoint);
      end.searchParams.set('client_id', A);
      end.searchParams.set('post_logout_redirect_uri', rpA.client.postLogoutRedirectUri);
      await j.page.goto(end.href);
      await j.page.locator('form.form button[type=submit]').waitFor();
      assert.match(await j.page.locator('main').innerText(), /Portal A/, 'the page names the client');
      await j.visit('logout-confirm');
      await j.page.click('form.form button[type=submit]');
      await j.page.waitForURL((u) => u.href.startsWith(rpA.client.postLogoutRedirectUri));
      await j.visit('after-logout');
      const after = await silentAuthorize(j, rpA);
      assert.equal(new URL(after.url).searchParams.get('error'), 'login_required');
      await assert.rejects(rpA.refresh(tokens.refresh_token), (e) => e.error === 'invalid_grant');

      // Without a client or redirect: the provider's own "signed out" page.
      await j.page.goto(new URL('/logout', env.idp.issuer).href);
      await j.page.locator('h1').waitFor();
      assert.equal(await j.page.locator('h1').innerText(), 'Signed out');
      await j.visit('logout-no-session');
    });
  });

  it('(e) request parameters: login_hint, ui_locales, prompt=login, max_age=0, code reuse, bad redirect_uri', async () => {
    const rpA = env.rps[A];
    const rpB = env.rps[B];
    const j = await journey(env.browser, 'e-request-parameters', {
      // The unregistered redirect URI gets an error page (400), on purpose.
      expectedStatus: (url, status) => status === 400 && new URL(url).pathname === '/authorize',
    });
    await j.run(async () => {
      // login_hint prefills the identifier; ui_locales=fr shows French.
      const req = await rpA.start({ login_hint: user.email, ui_locales: 'fr' });
      await j.page.goto(req.url);
      await j.page.locator('#identifier').waitFor();
      assert.equal(await j.page.inputValue('#identifier'), user.email);
      assert.equal(await j.page.getAttribute('html', 'lang'), 'fr');
      await j.visit('login-hint-fr');
      await j.page.click('button[type=submit]');
      await j.page.fill('#password', user.password);
      await j.page.click('button[type=submit]');
      await j.page.waitForURL((u) => u.href.startsWith(rpA.client.redirectUri));
      const callbackUrl = j.page.url();
      const first = await rpA.finish(callbackUrl, req);
      const authTime = first.claims().auth_time;

      // The same code twice: refused, and what it issued is revoked.
      await assert.rejects(rpA.finish(callbackUrl, req), (e) => e.error === 'invalid_grant');
      await assert.rejects(rpA.userinfo(first.access_token, first.claims().sub), (e) => e.status === 401 && /invalid_token/.test(JSON.stringify(e.cause ?? e.error ?? '')));

      // prompt=login asks for the password again despite the session.
      const again = await rpA.start({ prompt: 'login' });
      await j.page.goto(again.url);
      await j.page.locator('#password, #identifier').first().waitFor();
      await j.visit('reauth-prompt-login');
      if (await j.page.locator('#identifier').count()) {
        await j.page.fill('#identifier', user.email);
        await j.page.click('button[type=submit]');
      }
      await j.page.fill('#password', user.password);
      await j.page.click('button[type=submit]');
      await j.page.waitForURL((u) => u.href.startsWith(rpA.client.redirectUri));
      const relogged = await rpA.finish(j.page.url(), again);
      assert.ok(relogged.claims().auth_time >= authTime);

      // max_age=0: the code comes only for an authentication at most 0 s
      // old, so either the provider asks again, or (same second as the
      // login above) auth_time is the current second.
      const started = Math.floor(Date.now() / 1000);
      const fresh = await rpA.start({ max_age: '0' });
      await j.page.goto(fresh.url);
      await j.page.waitForURL((u) => u.href.startsWith(rpA.client.redirectUri) || u.pathname.startsWith('/login/'));
      if (!j.page.url().startsWith(rpA.client.redirectUri)) {
        await j.page.locator('#password, #identifier').first().waitFor();
        await j.visit('reauth-max-age-0');
        if (await j.page.locator('#identifier').count()) {
          await j.page.fill('#identifier', user.email);
          await j.page.click('button[type=submit]');
        }
        await j.page.fill('#password', user.password);
        await j.page.click('button[type=submit]');
        await j.page.waitForURL((u) => u.href.startsWith(rpA.client.redirectUri));
      }
      const maxAged = await rpA.finish(j.page.url(), fresh);
      assert.ok(maxAged.claims().auth_time >= started, 'auth_time satisfies max_age=0');

      // A redirect URI the client did not register: an error page, no redirect.
      const bad = await rpB.start({ redirect_uri: `${rpA.client.redirectUri}-not-registered` });
      const response = await j.page.goto(bad.url);
      assert.equal(response.status(), 400);
      assert.equal(new URL(j.page.url()).origin, new URL(env.idp.issuer).origin, 'the browser stays on the provider');
      await j.visit('bad-redirect-uri');
    });
  });

  it('(c) the language link switches the login pages to French', async () => {
    const rpA = env.rps[A];
    const j = await journey(env.browser, 'c-french');
    await j.run(async () => {
      const req = await rpA.start();
      await j.page.goto(req.url);
      await j.page.locator('#identifier').waitFor();
      assert.equal(await j.page.getAttribute('html', 'lang'), 'en');
      await j.visit('identifier-en');
      await j.page.click('a[hreflang=fr]');
      await j.page.waitForURL((u) => u.searchParams.get('lang') === 'fr');
      assert.equal(await j.page.getAttribute('html', 'lang'), 'fr');
      assert.equal(await j.page.locator('h1').innerText(), 'Connexion');
      assert.equal(await j.page.locator('label[for=identifier]').innerText(), 'Adresse e-mail ou identifiant client');
      await signInWithPassword(j, user, { lang: 'fr' });
      await j.page.waitForURL((u) => u.href.startsWith(rpA.client.redirectUri));
      await j.visit('callback');
      const tokens = await rpA.finish(j.page.url(), req);
      assert.equal(tokens.claims().email, user.email);
    });
  });
});
