// Single logout across portals (OpenID Connect Back-Channel Logout 1.0):
// two portals, each with its own signed-in session (a cookie of its own) and
// a back-channel logout endpoint, both driven by panva's openid-client. One
// browser signs in at the marketplace, then at the customer space (single
// sign-on), then signs out at the marketplace (RP-initiated logout with its
// ID token as hint). The provider posts a logout token to each portal of the
// session; each portal checks it here (signature against the JWKS, iss, aud,
// the logout event, no nonce, iat, sid) and drops its session: the customer
// space's page shows signed out on reload. A third portal with a
// front-channel logout URI is framed by the provider's logout page, which
// then goes on to the post-logout redirect URI.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import { startIdp, waitFor } from '../lib/harness.js';
import { relyingParty, verifySignature } from '../lib/rp.js';
import { launch, journey } from '../lib/browser.js';
import { signInWithPassword } from '../lib/fixture.js';

const MARKET = 'marketplace';
const SPACE = 'customer-space';
const NEWS = 'news';
const EVENT = 'http://schemas.openid.net/event/backchannel-logout';

const payload = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
const header = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url').toString());

function html(title, body) {
  return `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title><link rel="icon" href="data:,"></head>
<body><main><h1>${title}</h1>${body}</main></body></html>`;
}

// The portals' web server: /<portal>/login, /callback, / (signed in or
// out), /logout, /backchannel-logout (POST) and /frontchannel-logout.
async function startPortals() {
  const rps = {};
  const pending = new Map(); // state -> {portal, req}
  const sessions = new Map(); // cookie -> {portal, sub, sid, idToken}
  const logoutTokens = []; // {portal, token, claims, status}
  const frontchannel = []; // URLs the browser loaded in the provider's frames
  let issuer = null;
  const cookieName = (portal) => `portal_${portal.replace('-', '_')}`;
  const sessionOf = (req, portal) => {
    const m = new RegExp(`(?:^|; )${cookieName(portal)}=([^;]+)`).exec(req.headers.cookie || '');
    const s = m && sessions.get(m[1]);
    return s && s.portal === portal ? [m[1], s] : [null, null];
  };

  // Back-Channel Logout 1.0 §2.6, as a portal checks it.
  async function checkLogoutToken(portal, token) {
    await verifySignature(`${issuer}/jwks`, token);
    const h = header(token);
    const c = payload(token);
    assert.equal(h.typ, 'logout+jwt');
    assert.equal(c.iss, issuer);
    assert.equal(c.aud, portal);
    assert.deepEqual(c.events, { [EVENT]: {} });
    assert.equal(c.nonce, undefined, 'a logout token has no nonce');
    assert.ok(Math.abs(c.iat - Date.now() / 1000) < 300, 'recent iat');
    assert.ok(c.exp > Date.now() / 1000, 'not expired');
    assert.ok(c.jti, 'jti');
    assert.ok(c.sid, 'sid (the portal requires it)');
    return c;
  }

  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const url = new URL(req.url, `http://${req.headers.host}`);
      const [, portal, action = ''] = url.pathname.split('/');
      const rp = rps[portal];
      const page = (status, title, body, headers = {}) => {
        res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', ...headers });
        res.end(html(title, body));
      };
      const redirect = (location, headers = {}) => {
        res.writeHead(303, { location, 'cache-control': 'no-store', ...headers });
        res.end();
      };
      try {
        if (!rp) return page(404, 'Not found', '');
        if (action === 'login') {
          const r = await rp.start();
          pending.set(r.state, { portal, req: r });
          return redirect(r.url);
        }
        if (action === 'callback') {
          const p = pending.get(url.searchParams.get('state'));
          pending.delete(url.searchParams.get('state'));
          if (!p || p.portal !== portal) return page(400, 'Unknown state', '');
          const tokens = await rp.finish(url.toString(), p.req);
          const claims = tokens.claims();
          const cookie = randomBytes(16).toString('base64url');
          sessions.set(cookie, { portal, sub: claims.sub, sid: claims.sid, idToken: tokens.id_token });
          return redirect(`/${portal}/`, {
            'set-cookie': `${cookieName(portal)}=${cookie}; Path=/${portal}/; HttpOnly; SameSite=Lax`,
          });
        }
        if (action === 'logout') {
          const [cookie, s] = sessionOf(req, portal);
          if (!s) return redirect(`/${portal}/`);
          sessions.delete(cookie);
          return redirect(rp.logoutUrl(s.idToken));
        }
        if (action === 'backchannel-logout' && req.method === 'POST') {
          assert.equal(req.headers['content-type'], 'application/x-www-form-urlencoded');
          const token = new URLSearchParams(Buffer.concat(chunks).toString('utf8')).get('logout_token');
          let claims;
          try {
            claims = await checkLogoutToken(portal, token);
          } catch (e) {
            logoutTokens.push({ portal, token, error: e.message, status: 400 });
            res.writeHead(400, { 'content-type': 'application/json', 'cache-control': 'no-store' });
            return res.end(JSON.stringify({ error: 'invalid_request' }));
          }
          for (const [cookie, s] of sessions) {
            if (s.portal === portal && s.sid === claims.sid) sessions.delete(cookie);
          }
          logoutTokens.push({ portal, token, claims, status: 200 });
          res.writeHead(200, { 'cache-control': 'no-store' });
          return res.end();
        }
        if (action === 'frontchannel-logout') {
          frontchannel.push(url.toString());
          return page(200, 'Signing out', '<p>Signed out.</p>');
        }
        if (action === '') {
          const [, s] = sessionOf(req, portal);
          return s
            ? page(200, `${portal}: signed in`, `<p id="status">Signed in as ${s.sub}</p><a href="/${portal}/logout">Sign out</a>`)
            : page(200, `${portal}: signed out`, `<p id="status">Signed out</p><a href="/${portal}/login">Sign in</a>`);
        }
        return page(404, 'Not found', '');
      } catch (e) {
        return page(500, 'Portal error', `<pre>${String(e.message).replace(/</g, '&lt;')}</pre>`);
      }
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;
  return {
    base,
    rps,
    sessions,
    logoutTokens,
    frontchannel,
    setIssuer(i) { issuer = i; },
    uris: (id) => ({ redirectUri: `${base}/${id}/callback`, postLogoutRedirectUri: `${base}/${id}/` }),
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
  };
}

describe('single logout across portals', () => {
  let portals;
  let idp;
  let browser;
  let user;

  before(async () => {
    portals = await startPortals();
    const backchannel = (id) => ({
      backchannel_logout_uri: `${portals.base}/${id}/backchannel-logout`,
      backchannel_logout_session_required: true,
    });
    idp = await startIdp({
      clients: [
        { id: MARKET, name: 'Marketplace', ...portals.uris(MARKET), settings: backchannel(MARKET) },
        { id: SPACE, name: 'Customer space', ...portals.uris(SPACE), settings: backchannel(SPACE) },
        {
          id: NEWS,
          name: 'News',
          ...portals.uris(NEWS),
          settings: {
            frontchannel_logout_uri: `${portals.base}/${NEWS}/frontchannel-logout`,
            frontchannel_logout_session_required: true,
          },
        },
      ],
      // Logout tokens go out within a second.
      config: ['[webhook_delivery]', 'poll_interval_secs = 1'],
    });
    portals.setIssuer(idp.issuer);
    for (const id of [MARKET, SPACE, NEWS]) portals.rps[id] = await relyingParty(idp.issuer, idp.clients[id]);
    browser = await launch();
    user = await idp.createUser(`single-logout-${randomBytes(4).toString('hex')}@example.test`, `e2e-${randomBytes(9).toString('base64url')}`);
  });

  after(async () => {
    await browser?.close();
    await idp?.stop();
    await portals?.close();
  });

  it('a sign-out at the marketplace signs the customer space out (back-channel)', async () => {
    const j = await journey(browser, 'single-logout-backchannel');
    await j.run(async () => {
      const { page } = j;
      const status = async (portal) => {
        await page.goto(`${portals.base}/${portal}/`);
        return page.locator('#status').innerText();
      };
      await page.goto(`${portals.base}/${MARKET}/login`);
      await signInWithPassword(j, user);
      await page.waitForURL(`${portals.base}/${MARKET}/`);
      assert.match(await status(MARKET), /^Signed in/);
      // Single sign-on at the customer space: no login page.
      await page.goto(`${portals.base}/${SPACE}/login`);
      await page.waitForURL(`${portals.base}/${SPACE}/`);
      assert.match(await status(SPACE), /^Signed in/);
      const sids = [...portals.sessions.values()].map((s) => s.sid);
      assert.equal(sids.length, 2);
      assert.equal(sids[0], sids[1], 'one sid across the portals');

      // Sign out at the marketplace: RP-initiated logout, back to it.
      await page.goto(`${portals.base}/${MARKET}/`);
      await page.click('text=Sign out');
      await page.waitForURL(`${portals.base}/${MARKET}/`);
      assert.equal(await status(MARKET), 'Signed out');

      // The customer space heard of it: signed out on reload.
      await waitFor('the customer space to be signed out', async () => (await status(SPACE)) === 'Signed out');
      const got = portals.logoutTokens.filter((t) => t.status === 200);
      assert.deepEqual(got.map((t) => t.portal).sort(), [SPACE, MARKET].sort());
      assert.equal(portals.logoutTokens.filter((t) => t.status !== 200).length, 0, JSON.stringify(portals.logoutTokens));
      for (const t of got) assert.equal(t.claims.sid, sids[0]);
      assert.notEqual(got[0].claims.jti, got[1].claims.jti, 'a jti per token');
      assert.equal(portals.sessions.size, 0);
      // The provider's session is over too: signing in again asks for the password.
      await page.goto(`${portals.base}/${SPACE}/login`);
      await page.locator('#identifier').waitFor();
    });
  });

  it('the logout page frames the front-channel portal, then goes on (front-channel)', async () => {
    const j = await journey(browser, 'single-logout-frontchannel');
    await j.run(async () => {
      const { page } = j;
      await page.goto(`${portals.base}/${NEWS}/login`);
      await signInWithPassword(j, user);
      await page.waitForURL(`${portals.base}/${NEWS}/`);
      const [s] = [...portals.sessions.values()].filter((x) => x.portal === NEWS);
      const framed = portals.frontchannel.length;
      const logoutPage = page.waitForResponse((r) => r.url().startsWith(`${idp.issuer}/logout`));
      await page.click('text=Sign out');
      const res = await logoutPage;
      const csp = res.headers()['content-security-policy'];
      assert.match(csp, new RegExp(`frame-src ${portals.base.replace(/[.:/]/g, '\\$&')}(;|$)`), csp);
      // The frame loaded (with iss and sid), then the page went on by itself.
      await page.waitForURL(`${portals.base}/${NEWS}/`);
      assert.equal(portals.frontchannel.length, framed + 1);
      const frame = new URL(portals.frontchannel.at(-1));
      assert.equal(frame.searchParams.get('iss'), idp.issuer);
      assert.equal(frame.searchParams.get('sid'), s.sid);
    });
  });
});
