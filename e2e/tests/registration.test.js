// Dynamic client registration (RFC 7591, RFC 7592) from outside: a portal
// registers itself with fetch at the registration endpoint discovery lists,
// then signs a user in with openid-client (a certified relying-party
// library) as the registered client, refreshes, and deletes its
// registration with the registration access token: its refresh token is
// refused afterwards. The provider runs with `[registration]` enabled and
// open (the OpenID Dynamic plan registers without an initial token).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, signInWithPassword } from '../lib/fixture.js';
import { journey } from '../lib/browser.js';
import { relyingParty } from '../lib/rp.js';

describe('dynamic client registration with openid-client', () => {
  let env;
  let user;

  before(async () => {
    env = await setup('registration', [], {
      config: ['[registration]', 'enabled = true', 'open = true'],
    });
    user = await env.idp.createUser(env.newEmail('dcr'), env.newPassword());
  });

  after(async () => {
    await env?.teardown();
  });

  it('a portal registers through fetch, signs a user in with openid-client, refreshes, and deletes its registration', async () => {
    const issuer = env.idp.issuer;
    const meta = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
    assert.equal(meta.registration_endpoint, `${issuer}/register`);
    // A loopback redirect URI (RFC 8252 §7.3), allowed by default.
    const { redirectUri } = env.portal.clientUris('registered');
    const res = await fetch(meta.registration_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        redirect_uris: [redirectUri],
        client_name: 'Registered Portal',
        grant_types: ['authorization_code', 'refresh_token'],
        scope: 'openid profile email',
      }),
    });
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const info = await res.json();
    assert.match(info.client_id, /^dcr-/);
    assert.equal(info.client_secret_expires_at, 0);
    assert.equal(info.registration_client_uri, `${issuer}/register/${info.client_id}`);

    const rp = await relyingParty(issuer, { id: info.client_id, secret: info.client_secret, redirectUri });
    const j = await journey(env.browser, 'registered');
    await j.run(async () => {
      const req = await rp.start();
      await j.page.goto(req.url);
      await signInWithPassword(j, user);
      await j.page.waitForURL((u) => u.href.startsWith(redirectUri));
      await j.visit('callback');
      const tokens = await rp.finish(j.page.url(), req);
      const claims = tokens.claims();
      assert.equal(claims.aud, info.client_id);
      assert.equal(claims.email, user.email);
      assert.equal((await rp.userinfo(tokens.access_token, claims.sub)).email, user.email);
      const refreshed = await rp.refresh(tokens.refresh_token);
      assert.ok(refreshed.access_token);

      // RFC 7592: read (the token rotates), then delete.
      const read = await fetch(info.registration_client_uri, {
        headers: { authorization: `Bearer ${info.registration_access_token}` },
      });
      assert.equal(read.status, 200);
      const current = await read.json();
      assert.equal(current.client_name, 'Registered Portal');
      assert.equal(current.client_secret, undefined, 'the secret is never given back');
      const stale = await fetch(info.registration_client_uri, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${info.registration_access_token}` },
      });
      assert.equal(stale.status, 401, 'the used token was rotated');
      const del = await fetch(info.registration_client_uri, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${current.registration_access_token}` },
      });
      assert.equal(del.status, 204);
      // The client no longer authenticates (401 with a Basic challenge).
      await assert.rejects(rp.refresh(refreshed.refresh_token), (e) => {
        assert.equal(e.status, 401, `${e}`);
        return true;
      });
    });
  });
});
