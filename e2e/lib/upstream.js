// Upstream OpenID providers for the federation journeys, none written by
// this project:
//
// - panva's oidc-provider (the npm package), in this process, on
//   127.0.0.1:<free port> (issuer http://127.0.0.1:<port>): one static
//   confidential client (client_secret_basic, authorization code, PKCE
//   required, RS256 ID tokens), `findAccount` over a fixture of accounts the
//   test adds (`email`, `email_verified`, `name`; scope claims go to UserInfo
//   only, oidc-provider's default in code flow), and its login (with a
//   "cancel" link: access_denied) and consent interactions as HTML pages the
//   browser fills. Those pages are ours, not
//   oidc-provider's `devInteractions`: the development pages import a font
//   from fonts.googleapis.com (nothing here may leave the loopback), and
//   their fields have no labels nor their document a language, so they
//   would fail the checks every page of a journey passes. The error and
//   logout pages are replaced for the same reason;
// - a "mix-up" proxy: a tiny HTTP server whose discovery documents claim
//   the proxy as their issuer while every endpoint (authorization, token,
//   JWKS, UserInfo) is another oidc-provider's: the answers and ID tokens
//   then name that other issuer.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import Provider from 'oidc-provider';
import { freePort } from './harness.js';

function escape(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

// A page of the upstream: its own look (so screenshots show where the
// browser is), a language, a main landmark, a heading, labelled fields.
function html(brand, title, body) {
  return `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(title)} · ${escape(brand)}</title><link rel="icon" href="data:,">
<style>
body{font-family:system-ui,sans-serif;background:#1f2937;color:#111827;margin:0;padding:2rem 1rem}
main{max-width:24rem;margin:0 auto;background:#fff;border-radius:.5rem;padding:1.5rem}
.brand{color:#fff;text-align:center;font-weight:600;margin:0 0 1rem}
label{display:block;font-weight:600;margin:.75rem 0 .25rem}
input{box-sizing:border-box;width:100%;padding:.5rem;font-size:1rem;border:1px solid #6b7280;border-radius:.25rem}
button{margin-top:1rem;width:100%;padding:.6rem;font-size:1rem;background:#1d4ed8;color:#fff;border:0;border-radius:.25rem}
.error{color:#b91c1c}
</style></head>
<body><p class="brand">${escape(brand)}</p><main><h1>${escape(title)}</h1>${body}</main></body></html>`;
}

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(body);
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c) => {
      body += c;
      if (body.length > 65536) reject(new Error('body too large'));
    });
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

function sameText(a, b) {
  const x = Buffer.from(String(a));
  const y = Buffer.from(String(b));
  return x.length === y.length && timingSafeEqual(x, y);
}

async function listen(server) {
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return server.address().port;
}

/**
 * Starts oidc-provider. `brand` names it on its pages; `tag` keeps its
 * cookie names apart from another instance on the same host (cookies do not
 * isolate ports); `client`: {id, secret, redirectUris}. Returns {issuer,
 * addAccount({email, password, email_verified, name}) -> account (its `sub`),
 * logins (the accounts signed in, in order), close()}.
 */
export async function startOidcProvider({ brand, tag, client }) {
  const accounts = new Map(); // sub -> account
  const logins = [];
  const server = createServer();
  const port = await listen(server);
  const issuer = `http://127.0.0.1:${port}`;

  const signingKey = {
    ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
    kid: `${tag}-rs256`,
    alg: 'RS256',
    use: 'sig',
  };
  const provider = new Provider(issuer, {
    clients: [{
      client_id: client.id,
      client_secret: client.secret,
      client_name: 'The provider under test',
      redirect_uris: client.redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    }],
    jwks: { keys: [signingKey] },
    cookies: {
      keys: [randomBytes(32).toString('base64url')],
      names: { session: `${tag}_session`, interaction: `${tag}_interaction`, resume: `${tag}_resume` },
    },
    claims: {
      // amr with the openid scope: the login's amr (the interaction sets it)
      // goes into ID tokens (a claim of no scope would need the claims
      // parameter).
      openid: ['sub', 'amr'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    pkce: { required: () => true },
    // Lifetimes set (oidc-provider's defaults are functions that log a
    // notice when called).
    ttl: { AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 900, Session: 3600, Grant: 3600 },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(ctx, sub) {
      const a = accounts.get(sub);
      if (!a) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { sub, email: a.email, email_verified: a.email_verified, name: a.name };
        },
      };
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = html(brand, 'Sign-in error', `<p class="error">${escape(out.error)}: ${escape(out.error_description || '')}</p>`);
    },
    async logoutSource(ctx, form) {
      ctx.type = 'html';
      ctx.body = html(brand, 'Sign out', `${form}<button type="submit" form="op.logoutForm" name="logout" value="yes">Sign out</button>`);
    },
  });

  // The interactions: the login form (email and password of an account of
  // the fixture), then the consent to the scopes the client asked for.
  async function interaction(req, res) {
    const [, , uid, action] = new URL(req.url, issuer).pathname.split('/');
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) return send(res, 400, html(brand, 'Sign-in error', '<p>Unknown interaction.</p>'));
    const { prompt, params } = details;
    const loginPage = (error) => html(brand, 'Sign in', `${error ? `<p class="error" role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${uid}/login">
<label for="email">Email</label><input id="email" name="email" type="email" autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>
<p><a href="/interaction/${uid}/abort">Cancel and go back</a></p>`);
    if (req.method === 'GET' && !action) {
      if (prompt.name === 'login') return send(res, 200, loginPage());
      if (prompt.name === 'consent') {
        const scopes = (prompt.details.missingOIDCScope || []).filter((s) => s !== 'openid');
        return send(res, 200, html(brand, 'Allow access', `<p>${escape(params.client_id)} asks to know your
${scopes.map((s) => `<strong>${escape(s)}</strong>`).join(' and ') || 'identity'}.</p>
<form method="post" action="/interaction/${uid}/consent"><button type="submit">Allow</button></form>`));
      }
      return send(res, 400, html(brand, 'Sign-in error', `<p>Unexpected prompt ${escape(prompt.name)}.</p>`));
    }
    if (req.method === 'GET' && action === 'abort') {
      return provider.interactionFinished(req, res,
        { error: 'access_denied', error_description: 'End-User aborted interaction' },
        { mergeWithLastSubmission: false });
    }
    if (req.method === 'POST' && action === 'login' && prompt.name === 'login') {
      const form = await readForm(req);
      const email = (form.get('email') || '').toLowerCase();
      const a = [...accounts.values()].find((x) => x.email.toLowerCase() === email);
      if (!a || !sameText(a.password, form.get('password') || '')) {
        return send(res, 401, loginPage('Wrong email or password.'));
      }
      logins.push(a);
      return provider.interactionFinished(req, res, { login: { accountId: a.sub, amr: ['pwd'] } },
        { mergeWithLastSubmission: false });
    }
    if (req.method === 'POST' && action === 'consent' && prompt.name === 'consent') {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
      if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
      if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
      const grantId = await grant.save();
      return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    return send(res, 404, html(brand, 'Not found', '<p>Nothing here.</p>'));
  }

  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (req.url.startsWith('/interaction/')) {
      interaction(req, res).catch((err) => {
        if (!res.headersSent) send(res, 400, html(brand, 'Sign-in error', `<p>${escape(err.message)}</p>`));
      });
    } else {
      callback(req, res);
    }
  });

  return {
    issuer,
    brand,
    logins,
    addAccount({ email, password, email_verified: verified, name }) {
      const sub = `${tag}-${randomBytes(6).toString('hex')}`;
      const a = { sub, email, password, email_verified: verified, name };
      accounts.set(sub, a);
      return a;
    },
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
  };
}

/**
 * A proxy lying about who it is: `GET <base>/<path>/.well-known/openid-configuration`
 * answers `target`'s discovery document with `issuer: <base>/<path>` and
 * the target's endpoints, for each of `paths` ({path: {iss: boolean}}: with
 * `iss: false` the document also drops
 * `authorization_response_iss_parameter_supported`, so the provider under
 * test cannot expect an `iss` parameter and relies on the ID token's `iss`).
 * Returns {issuer(path), close()}.
 */
// config/idp.toml's "Partner SSO" upstream, played by panva's oidc-provider,
// for the example customer space (`clientId`, its client_id in the test),
// whose file has a "Continue with Partner SSO" flow that the provider
// accepts only with that upstream. Returns the running partner and the
// `setup` options (host, port, secret file, [[upstreams]] entry) that use it.
export async function startPartnerSso(clientId) {
  const port = await freePort();
  const secret = randomBytes(24).toString('base64url');
  const partner = await startOidcProvider({
    brand: 'Partner SSO',
    tag: 'partner',
    client: {
      id: 'cloud-idp',
      secret,
      redirectUris: [`http://localhost:${port}/login/upstream/partner-sso/callback`],
    },
  });
  const options = {
    host: 'localhost',
    port,
    files: { 'partner-sso.secret': `${secret}\n` },
    config: [
      '[[upstreams]]',
      'name = "partner-sso"',
      'display_name = "Partner SSO"',
      `issuer = "${partner.issuer}"`,
      'client_id = "cloud-idp"',
      'client_secret_file = "partner-sso.secret"',
      `clients = ["${clientId}"]`,
      'create_accounts = true',
    ],
  };
  return { partner, options };
}

export async function startMixupProxy(targetIssuer, paths) {
  const res0 = await fetch(`${targetIssuer}/.well-known/openid-configuration`);
  if (!res0.ok) throw new Error(`discovery of ${targetIssuer}: ${res0.status}`);
  const target = await res0.json();
  const server = createServer();
  const port = await listen(server);
  const base = `http://127.0.0.1:${port}`;
  server.on('request', (req, res) => {
    const m = /^\/([a-z-]+)\/\.well-known\/openid-configuration$/.exec(new URL(req.url, base).pathname);
    const opts = m && paths[m[1]];
    if (req.method !== 'GET' || !opts) {
      res.writeHead(404).end();
      return;
    }
    const doc = { ...target, issuer: `${base}/${m[1]}` };
    if (!opts.iss) delete doc.authorization_response_iss_parameter_supported;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(doc));
  });
  return {
    issuer: (path) => `${base}/${path}`,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
  };
}

/** `s` as a literal in a regular expression. */
export const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * At an oidc-provider started by startOidcProvider (`up`), in journey `j`:
 * its login page (the account's email and password), then its consent page,
 * each checked and screenshotted as `<label>-login`, `<label>-consent`. The
 * browser then goes back to the provider under test's callback.
 */
export async function signInAtUpstream(j, up, account, label) {
  const { page } = j;
  await page.waitForURL((u) => u.href.startsWith(`${up.issuer}/interaction/`));
  await page.locator('#email').waitFor();
  assert.match(await page.locator('.brand').innerText(), new RegExp(escapeRe(up.brand)));
  await j.visit(`${label}-login`);
  await page.fill('#email', account.email);
  await page.fill('#password', account.password);
  await page.click('button[type=submit]');
  await page.locator('form[action$="/consent"]').waitFor();
  assert.match(await page.locator('main').innerText(), /email and profile/);
  await j.visit(`${label}-consent`);
  await page.click('button[type=submit]');
}
