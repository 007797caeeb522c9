// The relying party: panva's openid-client (a certified RP library) for the
// protocol, and a small HTTP server on 127.0.0.1 that the provider redirects
// the browser to (callbacks and post-logout landing pages). The test reads the
// callback URL from the browser and hands it to openid-client, which checks
// state, iss, the code exchange, PKCE and the ID token.
import { createServer } from 'node:http';
import { createPublicKey, verify } from 'node:crypto';
import * as oidc from 'openid-client';

function html(title, body) {
  return `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title><link rel="icon" href="data:,"></head>
<body><main><h1>${title}</h1>${body}</main></body></html>`;
}

// The portal's web server: every path answers a small page; `hits` lists
// the URLs it received, and `posts` the POST requests with their bodies
// ({url, contentType, body}): the Form Post Response Mode delivers the
// authorization response as a POST to the callback. The body is recorded
// before the page is answered, so a test whose browser has loaded the
// callback finds it there.
export async function startPortalServer() {
  const hits = [];
  const posts = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url, `http://${req.headers.host}`);
    hits.push(url.toString());
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      if (req.method === 'POST') {
        posts.push({
          url: url.toString(),
          contentType: req.headers['content-type'] || '',
          body: Buffer.concat(chunks).toString('utf8'),
        });
      }
      const callback = url.pathname.endsWith('/callback');
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(callback
        ? html('Portal callback', '<p>The portal received the authorization response.</p>')
        : html('Portal home', '<p>Signed out of the portal.</p>'));
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;
  return {
    base,
    hits,
    posts,
    // The last POST received at `url`, as the Fetch API Request the portal
    // got (what openid-client's authorizationCodeGrant takes for a posted
    // response).
    postedRequest(url) {
      const p = posts.filter((x) => x.url === url).at(-1);
      if (!p) throw new Error(`the portal received no POST at ${url}`);
      return new Request(p.url, { method: 'POST', headers: { 'content-type': p.contentType }, body: p.body });
    },
    clientUris: (id) => ({ redirectUri: `${base}/${id}/callback`, postLogoutRedirectUri: `${base}/${id}/` }),
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
  };
}

// Checks a compact JWS (ES256 or RS256) against the key of its `kid` in the
// provider's JWKS.
export async function verifySignature(jwksUri, jws) {
  const [head, payload, sig] = jws.split('.');
  const header = JSON.parse(Buffer.from(head, 'base64url').toString());
  const { keys } = await (await fetch(jwksUri)).json();
  const jwk = keys.find((k) => k.kid === header.kid);
  if (!jwk) throw new Error(`no key ${header.kid} in ${jwksUri}`);
  const key = createPublicKey({ key: jwk, format: 'jwk' });
  const data = Buffer.from(`${head}.${payload}`);
  const signature = Buffer.from(sig, 'base64url');
  const ok = header.alg === 'ES256'
    ? verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, signature)
    : header.alg === 'RS256' && verify('sha256', data, key, signature);
  if (!ok) throw new Error(`bad ${header.alg} signature on a token (kid ${header.kid})`);
}

// An openid-client RP for a registered client ({id, secret, redirectUri,
// postLogoutRedirectUri}); discovery happens here.
export async function relyingParty(issuer, c) {
  const config = await oidc.discovery(new URL(issuer), c.id, c.secret, oidc.ClientSecretBasic(c.secret), {
    execute: [oidc.allowInsecureRequests], // http issuer on loopback only
  });
  return {
    config,
    client: c,
    // A new authorization request: {url, verifier, state, nonce}.
    async start(extra = {}) {
      const verifier = oidc.randomPKCECodeVerifier();
      const state = oidc.randomState();
      const nonce = oidc.randomNonce();
      const url = oidc.buildAuthorizationUrl(config, {
        redirect_uri: c.redirectUri,
        scope: 'openid profile email',
        code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
        state,
        nonce,
        ...extra,
      });
      return { url: url.toString(), verifier, state, nonce };
    },
    // Exchanges the code of `callbackUrl` (the URL the browser landed on).
    // openid-client checks state, iss, PKCE and the ID token's claims (iss,
    // aud, exp, iat, nonce); it leaves the signature of an ID token received
    // from the token endpoint unchecked, so it is verified here against the
    // published JWKS.
    async finish(callbackUrl, req) {
      const tokens = await oidc.authorizationCodeGrant(config, new URL(callbackUrl), {
        pkceCodeVerifier: req.verifier,
        expectedState: req.state,
        expectedNonce: req.nonce,
        idTokenExpected: true,
      });
      await verifySignature(config.serverMetadata().jwks_uri, tokens.id_token);
      return tokens;
    },
    // Userinfo with `accessToken`; openid-client checks its `sub` is `sub`.
    userinfo: (accessToken, sub) => oidc.fetchUserInfo(config, accessToken, sub),
    refresh: (refreshToken) => oidc.refreshTokenGrant(config, refreshToken),
    logoutUrl: (idToken) => oidc.buildEndSessionUrl(config, {
      id_token_hint: idToken,
      post_logout_redirect_uri: c.postLogoutRedirectUri,
    }).toString(),
  };
}

export { oidc };
