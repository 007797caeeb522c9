// The protocol extensions, driven by panva's openid-client v6 through its own
// API (a certified relying-party library, not requests built here): client
// authentication with private_key_jwt (RFC 7523) at the token, introspection
// and revocation endpoints; pushed authorization requests (RFC 9126) for a
// client that must use them; request objects (RFC 9101) by value and pushed;
// JWT-secured authorization responses (JARM) in the query and posted, and
// the Form Post Response Mode; DPoP-bound access tokens (RFC 9449); and a
// client combining PAR, private_key_jwt, DPoP and PKCE as FAPI 2.0 asks;
// resource indicators (RFC 8707) and token exchange (RFC 8693).
// Each client's keys are generated here with WebCrypto; the provider gets
// their public halves in the client file (`jwks`, as an inline table or as
// JSON text: config/README.md allows both).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, webcrypto } from 'node:crypto';
import { setup, signInWithPassword } from '../lib/fixture.js';
import { journey } from '../lib/browser.js';
import { oidc, verifySignature } from '../lib/rp.js';

const PKJ = 'pkj-portal';
const PAR = 'par-portal';
const JAR = 'jar-portal';
const JARM = 'jarm-portal';
const DPOP = 'dpop-portal';
const FAPI = 'fapi-portal';
const RES = 'resource-portal';
// A resource server of idp.toml (RFC 8707), with a lifetime of its own.
const BILLING = 'https://billing.e2e.example/api';
// Under the FAPI 2.0 profile its ID tokens are ES256 (openid-client expects
// RS256 unless told).
const FAPI_METADATA = { id_token_signed_response_alg: 'ES256' };

const { subtle } = webcrypto;

// A signing key pair of the client's: the private key stays a non-extractable
// CryptoKey (openid-client signs with it); the public one is exported as the
// JWK the client file registers (only public members, with kid, alg, use).
async function clientKey(alg, kid) {
  const params = alg === 'ES256'
    ? { name: 'ECDSA', namedCurve: 'P-256' }
    : { name: 'RSA-PSS', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' };
  const { privateKey, publicKey } = await subtle.generateKey(params, false, ['sign', 'verify']);
  const { kty, crv, x, y, n, e } = await subtle.exportKey('jwk', publicKey);
  const jwk = kty === 'EC' ? { kty, crv, x, y } : { kty, n, e };
  return { privateKey, kid, jwk: { ...jwk, kid, alg, use: 'sig' } };
}

// The RFC 7638 thumbprint of a public JWK (what `cnf.jkt` must hold),
// computed here rather than taken from openid-client.
function thumbprint(jwk) {
  const members = jwk.kty === 'EC'
    ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }
    : { e: jwk.e, kty: jwk.kty, n: jwk.n };
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url');
}

const jwtPart = (jwt, i) => JSON.parse(Buffer.from(jwt.split('.')[i], 'base64url').toString());
const header = (jwt) => jwtPart(jwt, 0);
const payload = (jwt) => jwtPart(jwt, 1);

describe('protocol extensions with openid-client', () => {
  let env;
  let user;
  // Client keys: private_key_jwt (ES256), request objects (PS256), the
  // combined client's (ES256), and keys registered nowhere.
  let pkjKey;
  let jarKey;
  let fapiKey;
  let strangerEc;
  let strangerRsa;

  before(async () => {
    [pkjKey, jarKey, fapiKey, strangerEc, strangerRsa] = await Promise.all([
      clientKey('ES256', 'pkj-1'),
      clientKey('PS256', 'jar-1'),
      clientKey('ES256', 'fapi-1'),
      clientKey('ES256', 'pkj-1'),
      clientKey('PS256', 'jar-1'),
    ]);
    env = await setup('protocol', [
      {
        id: PKJ,
        name: 'Signed JWT Portal',
        // The JWK Set as an inline TOML table.
        settings: { token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [pkjKey.jwk] } },
      },
      { id: PAR, name: 'Pushed Portal', settings: { require_pushed_authorization_requests: true } },
      {
        id: JAR,
        name: 'Request Object Portal',
        // Keys only for its request objects (it authenticates with its
        // secret), as the JWK Set's JSON text.
        settings: { jwks: JSON.stringify({ keys: [jarKey.jwk] }) },
      },
      {
        id: JARM,
        name: 'JARM Portal',
        settings: {
          response_modes: ['query.jwt', 'form_post', 'form_post.jwt'],
          // Not the default (RS256): openid-client must be told, and checks it.
          authorization_signed_response_alg: 'ES256',
        },
      },
      { id: DPOP, name: 'DPoP Portal', settings: { dpop_bound_access_tokens: true } },
      {
        id: FAPI,
        name: 'FAPI Portal',
        // The FAPI 2.0 Security Profile switch: it implies PAR, PKCE S256,
        // DPoP and ES256 tokens, and needs private_key_jwt.
        settings: {
          security_profile: 'fapi2',
          token_endpoint_auth_method: 'private_key_jwt',
          jwks: { keys: [fapiKey.jwk] },
        },
      },
      {
        id: RES,
        name: 'Resource Portal',
        // It may also exchange its users' tokens for the billing API's (RFC 8693).
        settings: {
          grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:token-exchange'],
        },
      },
    ], {
      config: [
        '[[resource_servers]]',
        `identifier = "${BILLING}"`,
        'name = "Billing API"',
        'access_token_secs = 120',
        `clients = ["${RES}"]`,
        `exchange_clients = ["${RES}"]`,
      ],
    });
    user = await env.idp.createUser(env.newEmail('proto'), env.newPassword());
  });

  after(async () => {
    await env?.teardown();
  });

  // An openid-client configuration for client `id` authenticating with
  // `auth` (PrivateKeyJwt, ClientSecretBasic...), with client `metadata`.
  const discover = (id, auth, metadata = {}, execute = []) => oidc.discovery(
    new URL(env.idp.issuer),
    id,
    metadata,
    auth,
    { execute: [oidc.allowInsecureRequests, ...execute] }, // http issuer on loopback only
  );

  // Fresh authorization request parameters for client `c` (PKCE S256, state,
  // nonce), and the checks openid-client makes on the response with them.
  async function newRequest(c, extra = {}) {
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    return {
      params: {
        redirect_uri: c.redirectUri,
        scope: 'openid profile email',
        code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
        state,
        nonce,
        ...extra,
      },
      checks: { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true },
    };
  }

  // Opens `url` in the journey's browser and signs in; resolves to the URL
  // the browser lands on at the client's callback.
  async function signIn(j, url, c) {
    await j.page.goto(url);
    await signInWithPassword(j, user);
    await j.page.waitForURL((u) => u.href.startsWith(c.redirectUri));
    return j.page.url();
  }

  // Opens `url` where no page is expected on the way (a browser already
  // signed in, or a request refused back to the client); resolves to the
  // callback URL.
  async function landAtCallback(j, url, c) {
    await j.page.goto(url);
    await j.page.waitForURL((u) => u.href.startsWith(c.redirectUri));
    return j.page.url();
  }

  // The code exchange by openid-client (state, iss, PKCE, the ID token's
  // claims and nonce; the JARM response's signature when configured), then
  // the ID token's signature against the JWKS, which openid-client leaves
  // unchecked for a token from the token endpoint. `response`: the callback
  // URL, or the Request the portal received (form post).
  async function exchange(config, response, checks, options) {
    const tokens = await oidc.authorizationCodeGrant(
      config,
      typeof response === 'string' ? new URL(response) : response,
      checks,
      undefined,
      options,
    );
    await verifySignature(config.serverMetadata().jwks_uri, tokens.id_token);
    return tokens;
  }

  it('discovery lists the methods, endpoints and algorithms the clients enable', async () => {
    const meta = env.rps[PAR].config.serverMetadata();
    const issuer = env.idp.issuer;
    assert.equal(meta.pushed_authorization_request_endpoint, `${issuer}/par`);
    // PAR is required per client here, not for all.
    assert.equal(meta.require_pushed_authorization_requests, false);
    for (const endpoint of ['token', 'introspection', 'revocation']) {
      assert.ok(meta[`${endpoint}_endpoint_auth_methods_supported`].includes('private_key_jwt'), `${endpoint}: private_key_jwt`);
      assert.ok(meta[`${endpoint}_endpoint_auth_signing_alg_values_supported`]?.includes('ES256'), `${endpoint}: ES256 assertions`);
    }
    assert.equal(meta.request_parameter_supported, true);
    assert.ok(meta.request_object_signing_alg_values_supported.includes('PS256'));
    assert.ok(!meta.request_object_signing_alg_values_supported.includes('none'), 'unsigned request objects are not offered');
    for (const mode of ['query', 'form_post', 'query.jwt', 'jwt', 'form_post.jwt']) {
      assert.ok(meta.response_modes_supported.includes(mode), `response_modes_supported has ${mode}`);
    }
    assert.ok(!meta.response_modes_supported.includes('fragment'), 'no fragment mode (no implicit flow)');
    assert.ok(meta.authorization_signing_alg_values_supported.includes('ES256'));
    assert.ok(meta.dpop_signing_alg_values_supported.includes('ES256'));
    assert.deepEqual(meta.code_challenge_methods_supported, ['S256']);
  });

  it('private_key_jwt: login, code exchange, refresh, introspection and revocation authenticated with a signed JWT', async () => {
    const c = env.idp.clients[PKJ];
    const config = await discover(PKJ, oidc.PrivateKeyJwt({ key: pkjKey.privateKey, kid: pkjKey.kid }));
    const j = await journey(env.browser, 'pkj');
    await j.run(async () => {
      const { params, checks } = await newRequest(c);
      const callback = await signIn(j, oidc.buildAuthorizationUrl(config, params).href, c);
      await j.visit('callback');

      // The code exchange, authenticated by the client assertion alone.
      const tokens = await exchange(config, callback, checks);
      const claims = tokens.claims();
      assert.equal(claims.aud, PKJ);
      assert.equal(claims.email, user.email);
      assert.equal(claims.sub, user.id);
      assert.equal(tokens.token_type, 'bearer');
      await verifySignature(config.serverMetadata().jwks_uri, tokens.access_token);
      assert.equal(payload(tokens.access_token).client_id, PKJ);
      const info = await oidc.fetchUserInfo(config, tokens.access_token, claims.sub);
      assert.equal(info.email, user.email);

      // Refresh, authenticated the same way: the refresh token rotates.
      const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token);
      assert.ok(refreshed.access_token);
      assert.notEqual(refreshed.refresh_token, tokens.refresh_token, 'refresh tokens rotate');
      assert.equal((await oidc.fetchUserInfo(config, refreshed.access_token, claims.sub)).email, user.email);

      // Introspection: the access token and the refresh token are active and
      // the client's.
      const at = await oidc.tokenIntrospection(config, refreshed.access_token);
      assert.equal(at.active, true);
      assert.equal(at.client_id, PKJ);
      assert.equal(at.sub, claims.sub);
      const rt = await oidc.tokenIntrospection(config, refreshed.refresh_token);
      assert.equal(rt.active, true);
      assert.equal(rt.client_id, PKJ);

      // An assertion signed with another key (same kid) is refused: the
      // signature is what authenticates.
      const impostor = await discover(PKJ, oidc.PrivateKeyJwt({ key: strangerEc.privateKey, kid: pkjKey.kid }));
      await assert.rejects(oidc.tokenIntrospection(impostor, refreshed.access_token), (e) => {
        assert.equal(e.error, 'invalid_client', `${e}`);
        assert.equal(e.status, 401);
        return true;
      });

      // Revocation of the refresh token ends the grant: no more refresh, and
      // its access token is no longer active.
      await oidc.tokenRevocation(config, refreshed.refresh_token);
      await assert.rejects(oidc.refreshTokenGrant(config, refreshed.refresh_token), (e) => {
        assert.equal(e.error, 'invalid_grant', `${e}`);
        return true;
      });
      assert.equal((await oidc.tokenIntrospection(config, refreshed.access_token)).active, false);
    });
  });

  it('PAR: a client that must push its requests signs in through a request_uri; a plain request is refused', async () => {
    const rp = env.rps[PAR];
    const c = rp.client;
    const issuer = env.idp.issuer;
    // The request_uri used a second time: an error page at /authorize (400).
    const j = await journey(env.browser, 'par', {
      expectedStatus: (url, status) => status === 400 && url.startsWith(`${issuer}/authorize?`),
    });
    await j.run(async () => {
      // Straight to /authorize: redirected back with invalid_request (RFC
      // 9126 §5), before any login page; openid-client reports the error.
      const plain = await rp.start();
      await landAtCallback(j, plain.url, c);
      const refused = new URL(j.page.url());
      assert.equal(refused.searchParams.get('error'), 'invalid_request');
      assert.equal(refused.searchParams.get('iss'), issuer);
      assert.equal(refused.searchParams.get('code'), null);
      await assert.rejects(rp.finish(refused.href, plain), (e) => {
        assert.ok(e instanceof oidc.AuthorizationResponseError, `${e}`);
        assert.equal(e.error, 'invalid_request');
        return true;
      });

      // Pushed: the browser carries only client_id and the request_uri.
      const { params, checks } = await newRequest(c);
      const url = await oidc.buildAuthorizationUrlWithPAR(rp.config, params);
      assert.deepEqual([...url.searchParams.keys()].sort(), ['client_id', 'request_uri']);
      assert.match(url.searchParams.get('request_uri'), /^urn:ietf:params:oauth:request_uri:/);
      const callback = await signIn(j, url.href, c);
      await j.visit('callback');
      const tokens = await exchange(rp.config, callback, checks);
      const claims = tokens.claims();
      assert.equal(claims.aud, PAR);
      assert.equal(claims.email, user.email);
      assert.equal((await oidc.fetchUserInfo(rp.config, tokens.access_token, claims.sub)).email, user.email);

      // The request_uri works once: an error page, no redirect.
      const again = await j.page.goto(url.href);
      assert.equal(again.status(), 400);
      assert.ok(j.page.url().startsWith(`${issuer}/authorize?`), `stays on the provider: ${j.page.url()}`);
      assert.match(await j.page.locator('body').innerText(), /request_uri is unknown, expired or already used/);
      await j.visit('request-uri-used');
    });
  });

  it('JAR: a signed request object by value, and pushed through PAR', async () => {
    const rp = env.rps[JAR];
    const c = rp.client;
    const key = { key: jarKey.privateKey, kid: jarKey.kid };
    const j = await journey(env.browser, 'jar');
    await j.run(async () => {
      // By value: the URL holds client_id and the request object only; the
      // state, nonce and code_challenge openid-client checks below were in
      // the signed object and nowhere else.
      const first = await newRequest(c);
      const byValue = await oidc.buildAuthorizationUrlWithJAR(rp.config, first.params, key);
      assert.deepEqual([...byValue.searchParams.keys()].sort(), ['client_id', 'request']);
      const object = byValue.searchParams.get('request');
      assert.equal(header(object).alg, 'PS256');
      assert.equal(header(object).kid, jarKey.kid);
      assert.equal(payload(object).state, first.params.state);
      const callback = await signIn(j, byValue.href, c);
      await j.visit('callback');
      const tokens = await exchange(rp.config, callback, first.checks);
      const claims = tokens.claims();
      assert.equal(claims.aud, JAR);
      assert.equal(claims.email, user.email);

      // The same kind of object pushed through PAR (JAR + PAR): signed in
      // already, the browser gets a code at once.
      const second = await newRequest(c);
      const jar = await oidc.buildAuthorizationUrlWithJAR(rp.config, second.params, key);
      const pushed = await oidc.buildAuthorizationUrlWithPAR(rp.config, jar.searchParams);
      assert.deepEqual([...pushed.searchParams.keys()].sort(), ['client_id', 'request_uri']);
      const callback2 = await landAtCallback(j, pushed.href, c);
      await j.visit('callback-pushed');
      const tokens2 = await exchange(rp.config, callback2, second.checks);
      assert.equal(tokens2.claims().sub, claims.sub);
      assert.equal(tokens2.claims().sid, claims.sid, 'same session');
      assert.equal((await oidc.fetchUserInfo(rp.config, tokens2.access_token, claims.sub)).email, user.email);

      // An object signed with a key the client did not register (same kid)
      // is refused at the PAR endpoint.
      const forged = await oidc.buildAuthorizationUrlWithJAR(
        rp.config,
        (await newRequest(c)).params,
        { key: strangerRsa.privateKey, kid: jarKey.kid },
      );
      await assert.rejects(oidc.buildAuthorizationUrlWithPAR(rp.config, forged.searchParams), (e) => {
        assert.equal(e.error, 'invalid_request_object', `${e}`);
        assert.equal(e.status, 400);
        return true;
      });
    });
  });

  it('JARM and form_post: jwt, query.jwt, form_post and form_post.jwt responses, checked by openid-client', async () => {
    const rp = env.rps[JARM];
    const c = rp.client;
    const issuer = env.idp.issuer;
    // The same client twice: `plain` (the suite's configuration, no JARM)
    // builds requests with an explicit response_mode and reads form_post
    // responses; `jarm` (useJwtResponseMode, ES256 as the client file says)
    // asks response_mode=jwt itself and verifies every JWT response.
    const plain = rp.config;
    const jarm = await discover(JARM, oidc.ClientSecretBasic(c.secret),
      { authorization_signed_response_alg: 'ES256' }, [oidc.useJwtResponseMode]);
    const { keys } = await (await fetch(plain.serverMetadata().jwks_uri)).json();

    // A JARM response JWT as JARM §2.1 describes it.
    const checkResponseJwt = (jwt, state) => {
      const h = header(jwt);
      assert.equal(h.alg, 'ES256');
      assert.equal(keys.find((k) => k.kid === h.kid)?.kty, 'EC', 'signed with an EC key of the JWKS');
      const p = payload(jwt);
      assert.equal(p.iss, issuer);
      assert.equal(p.aud, JARM);
      assert.equal(p.state, state);
      assert.ok(p.code, 'the code is inside');
      assert.equal(p.exp - p.iat, 60, 'short-lived');
    };

    const j = await journey(env.browser, 'jarm');
    await j.run(async () => {
      // response_mode=jwt, as openid-client's JARM configuration asks it.
      const first = await newRequest(c);
      const url = oidc.buildAuthorizationUrl(jarm, first.params);
      assert.equal(url.searchParams.get('response_mode'), 'jwt');
      const callback = new URL(await signIn(j, url.href, c));
      await j.visit('callback-jwt');
      assert.deepEqual([...callback.searchParams.keys()], ['response'], 'only the JWT in the query');
      checkResponseJwt(callback.searchParams.get('response'), first.params.state);
      const tokens = await exchange(jarm, callback.href, first.checks);
      const claims = tokens.claims();
      assert.equal(claims.email, user.email);
      assert.equal((await oidc.fetchUserInfo(jarm, tokens.access_token, claims.sub)).email, user.email);

      // response_mode=query.jwt (the name `jwt` stands for).
      const second = await newRequest(c, { response_mode: 'query.jwt' });
      const callback2 = new URL(await landAtCallback(j, oidc.buildAuthorizationUrl(plain, second.params).href, c));
      assert.deepEqual([...callback2.searchParams.keys()], ['response']);
      checkResponseJwt(callback2.searchParams.get('response'), second.params.state);
      const tokens2 = await exchange(jarm, callback2.href, second.checks);
      assert.equal(tokens2.claims().sub, claims.sub);

      // form_post: the provider's page posts code, state and iss to the
      // callback; the URL carries nothing.
      const posts = env.portal.posts.length;
      const third = await newRequest(c, { response_mode: 'form_post' });
      const landed = new URL(await landAtCallback(j, oidc.buildAuthorizationUrl(plain, third.params).href, c));
      assert.equal(landed.href, c.redirectUri, 'nothing in the callback URL');
      assert.equal(env.portal.posts.length, posts + 1, 'one POST at the callback');
      const post = env.portal.posts.at(-1);
      assert.match(post.contentType, /^application\/x-www-form-urlencoded/);
      const form = new URLSearchParams(post.body);
      assert.deepEqual([...form.keys()].sort(), ['code', 'iss', 'state']);
      assert.equal(form.get('iss'), issuer);
      assert.equal(form.get('state'), third.params.state);
      await j.visit('callback-form-post');
      const tokens3 = await exchange(plain, env.portal.postedRequest(c.redirectUri), third.checks);
      assert.equal(tokens3.claims().sub, claims.sub);

      // form_post.jwt: the JWT posted.
      const fourth = await newRequest(c, { response_mode: 'form_post.jwt' });
      const landed4 = new URL(await landAtCallback(j, oidc.buildAuthorizationUrl(plain, fourth.params).href, c));
      assert.equal(landed4.href, c.redirectUri);
      assert.equal(env.portal.posts.length, posts + 2);
      const form4 = new URLSearchParams(env.portal.posts.at(-1).body);
      assert.deepEqual([...form4.keys()], ['response']);
      checkResponseJwt(form4.get('response'), fourth.params.state);
      const tokens4 = await exchange(jarm, env.portal.postedRequest(c.redirectUri), fourth.checks);
      assert.equal(tokens4.claims().sub, claims.sub);
      assert.equal((await oidc.fetchUserInfo(jarm, tokens4.access_token, claims.sub)).email, user.email);
    });
  });

  it('DPoP: a bound access token (cnf.jkt), userinfo in the DPoP scheme, bearer use refused, refresh bound', async () => {
    const rp = env.rps[DPOP];
    const c = rp.client;
    const meta = rp.config.serverMetadata();
    const userinfoUrl = new URL(meta.userinfo_endpoint);
    const keyPair = await oidc.randomDPoPKeyPair('ES256');
    const jkt = thumbprint(await subtle.exportKey('jwk', keyPair.publicKey));
    const DPoP = oidc.getDPoPHandle(rp.config, keyPair);
    const j = await journey(env.browser, 'dpop');
    await j.run(async () => {
      const req = await rp.start();
      const callback = await signIn(j, req.url, c);
      await j.visit('callback');
      const tokens = await exchange(rp.config, callback, {
        pkceCodeVerifier: req.verifier,
        expectedState: req.state,
        expectedNonce: req.nonce,
        idTokenExpected: true,
      }, { DPoP });
      const claims = tokens.claims();
      assert.equal(claims.email, user.email);
      assert.equal(tokens.token_type, 'dpop', 'token_type DPoP');
      // The JWT access token is bound to the key's thumbprint...
      await verifySignature(meta.jwks_uri, tokens.access_token);
      assert.equal(payload(tokens.access_token).cnf?.jkt, jkt);
      // ...and introspection says so to resource servers.
      const intro = await oidc.tokenIntrospection(rp.config, tokens.access_token);
      assert.equal(intro.active, true);
      assert.equal(intro.token_type, 'DPoP');
      assert.equal(intro.cnf?.jkt, jkt);

      // Userinfo with the token in the DPoP scheme and a proof (ath).
      assert.equal((await oidc.fetchUserInfo(rp.config, tokens.access_token, claims.sub, { DPoP })).email, user.email);
      const res = await oidc.fetchProtectedResource(rp.config, tokens.access_token, userinfoUrl, 'GET', null, undefined, { DPoP });
      assert.equal(res.status, 200);
      assert.equal((await res.json()).sub, claims.sub);

      // The same token as a bearer token: 401 invalid_token.
      await assert.rejects(oidc.fetchProtectedResource(rp.config, tokens.access_token, userinfoUrl, 'GET'), (e) => {
        assert.equal(e.response?.status, 401, `${e}`);
        assert.equal(e.cause?.[0]?.parameters?.error, 'invalid_token');
        return true;
      });
      // With a proof of another key: 401, with a DPoP challenge.
      const otherKey = oidc.getDPoPHandle(rp.config, await oidc.randomDPoPKeyPair('ES256'));
      await assert.rejects(oidc.fetchUserInfo(rp.config, tokens.access_token, claims.sub, { DPoP: otherKey }), (e) => {
        assert.equal(e.response?.status, 401, `${e}`);
        assert.equal(e.cause?.[0]?.scheme, 'dpop');
        return true;
      });

      // A token request without a proof is refused (and the refresh token
      // stays usable)...
      await assert.rejects(oidc.refreshTokenGrant(rp.config, tokens.refresh_token), (e) => {
        assert.equal(e.error, 'invalid_dpop_proof', `${e}`);
        assert.equal(e.status, 400);
        return true;
      });
      // ...with one, the new access token is bound to the same key.
      const refreshed = await oidc.refreshTokenGrant(rp.config, tokens.refresh_token, undefined, { DPoP });
      assert.equal(refreshed.token_type, 'dpop');
      assert.equal(payload(refreshed.access_token).cnf?.jkt, jkt);
      assert.notEqual(refreshed.refresh_token, tokens.refresh_token);
      assert.equal((await oidc.fetchUserInfo(rp.config, refreshed.access_token, claims.sub, { DPoP })).email, user.email);
    });
  });

  it('resource indicators: the access token is for the resource asked for, and lives as long as it says (RFC 8707)', async () => {
    const rp = env.rps[RES];
    const c = rp.client;
    const j = await journey(env.browser, 'resource');
    await j.run(async () => {
      const { params, checks } = await newRequest(c, { resource: BILLING });
      const url = oidc.buildAuthorizationUrl(rp.config, params);
      const callback = await signIn(j, url.href, c);
      await j.visit('callback');
      // A resource beyond the authorization: invalid_target, and the code
      // stays usable.
      await assert.rejects(
        oidc.authorizationCodeGrant(rp.config, new URL(callback), checks, { resource: 'https://other.e2e.example/' }),
        (e) => {
          assert.equal(e.error, 'invalid_target', `${e}`);
          return true;
        },
      );
      const tokens = await exchange(rp.config, callback, checks);
      assert.equal(payload(tokens.access_token).aud, BILLING);
      assert.equal(tokens.expires_in, 120);
      assert.equal(tokens.claims().aud, RES, 'the ID token is still for the client');
      const refreshed = await oidc.refreshTokenGrant(rp.config, tokens.refresh_token);
      assert.equal(payload(refreshed.access_token).aud, BILLING);
    });
  });

  it('token exchange: the portal trades its user\'s token for one meant for the billing API, acting for the user (RFC 8693)', async () => {
    const rp = env.rps[RES];
    const c = rp.client;
    const meta = rp.config.serverMetadata();
    assert.ok(meta.grant_types_supported.includes('urn:ietf:params:oauth:grant-type:token-exchange'));
    const j = await journey(env.browser, 'exchange');
    await j.run(async () => {
      const { params, checks } = await newRequest(c);
      const callback = await signIn(j, oidc.buildAuthorizationUrl(rp.config, params).href, c);
      await j.visit('callback');
      const tokens = await exchange(rp.config, callback, checks);
      const subject = tokens.claims().sub;
      const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
      const exchanged = await oidc.genericGrantRequest(rp.config, 'urn:ietf:params:oauth:grant-type:token-exchange', {
        subject_token: tokens.access_token,
        subject_token_type: ACCESS_TOKEN,
        audience: 'Billing API',
        scope: 'openid email',
      });
      assert.equal(exchanged.issued_token_type, ACCESS_TOKEN);
      assert.equal(exchanged.token_type, 'bearer');
      assert.equal(exchanged.refresh_token, undefined);
      assert.ok(exchanged.expires_in <= 120, `${exchanged.expires_in}`);
      const claims = payload(exchanged.access_token);
      assert.equal(claims.aud, BILLING);
      assert.equal(claims.sub, subject);
      assert.equal(claims.scope, 'openid email');
      assert.deepEqual(claims.act, { sub: RES });
      await verifySignature(meta.jwks_uri, exchanged.access_token);
      // A resource no one declared: refused.
      await assert.rejects(
        oidc.genericGrantRequest(rp.config, 'urn:ietf:params:oauth:grant-type:token-exchange', {
          subject_token: tokens.access_token,
          subject_token_type: ACCESS_TOKEN,
          resource: 'https://other.e2e.example/',
        }),
        (e) => {
          assert.equal(e.error, 'invalid_target', `${e}`);
          return true;
        },
      );
    });
  });

  it('FAPI 2.0 client (security_profile = fapi2): PAR + private_key_jwt + DPoP + PKCE S256 in one login', async () => {
    const c = env.idp.clients[FAPI];
    const config = await discover(FAPI, oidc.PrivateKeyJwt({ key: fapiKey.privateKey, kid: fapiKey.kid }), FAPI_METADATA);
    const keyPair = await oidc.randomDPoPKeyPair('ES256');
    const jkt = thumbprint(await subtle.exportKey('jwk', keyPair.publicKey));
    const DPoP = oidc.getDPoPHandle(config, keyPair);
    const j = await journey(env.browser, 'fapi');
    await j.run(async () => {
      const { params, checks } = await newRequest(c);
      // PKCE is required: a pushed request without code_challenge is refused
      // at the PAR endpoint.
      const { code_challenge: _c, code_challenge_method: _m, ...withoutPkce } = params;
      await assert.rejects(oidc.buildAuthorizationUrlWithPAR(config, withoutPkce, { DPoP }), (e) => {
        assert.equal(e.error, 'invalid_request', `${e}`);
        assert.equal(e.status, 400);
        return true;
      });

      // The request pushed with the client's assertion (and a DPoP proof, as
      // a FAPI client attaches one to every request to the provider).
      const url = await oidc.buildAuthorizationUrlWithPAR(config, params, { DPoP });
      assert.deepEqual([...url.searchParams.keys()].sort(), ['client_id', 'request_uri']);
      const callback = await signIn(j, url.href, c);
      await j.visit('callback');

      const tokens = await exchange(config, callback, checks, { DPoP });
      const claims = tokens.claims();
      assert.equal(claims.aud, FAPI);
      assert.equal(claims.email, user.email);
      assert.equal(tokens.token_type, 'dpop');
      assert.equal(payload(tokens.access_token).cnf?.jkt, jkt);
      const intro = await oidc.tokenIntrospection(config, tokens.access_token);
      assert.equal(intro.active, true);
      assert.equal(intro.cnf?.jkt, jkt);
      assert.equal((await oidc.fetchUserInfo(config, tokens.access_token, claims.sub, { DPoP })).email, user.email);
      // Never a bearer token.
      const bearer = await fetch(`${env.idp.issuer}/userinfo`, {
        headers: { authorization: `Bearer ${tokens.access_token}` },
      });
      assert.equal(bearer.status, 401);

      const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP });
      assert.equal(refreshed.token_type, 'dpop');
      assert.equal(payload(refreshed.access_token).cnf?.jkt, jkt);
      assert.equal((await oidc.fetchUserInfo(config, refreshed.access_token, claims.sub, { DPoP })).email, user.email);

      await oidc.tokenRevocation(config, refreshed.refresh_token);
      assert.equal((await oidc.tokenIntrospection(config, refreshed.access_token)).active, false);
    });
  });

  // RFC 9449 §10.1: "Both mechanisms MUST be supported by an authorization
  // server that supports PAR and DPoP": a DPoP proof sent with the pushed
  // request, or a dpop_jkt parameter in it, binds the authorization code to
  // that key, and a token request proving another key is rejected. (An
  // intercepted code cannot then be redeemed with the attacker's own key.)
  it('DPoP with PAR: a proof sent with the pushed request binds the code to its key (RFC 9449 §10.1)', async () => {
    const c = env.idp.clients[FAPI];
    const config = await discover(FAPI, oidc.PrivateKeyJwt({ key: fapiKey.privateKey, kid: fapiKey.kid }), FAPI_METADATA);
    const pushedWith = oidc.getDPoPHandle(config, await oidc.randomDPoPKeyPair('ES256'));
    const another = oidc.getDPoPHandle(config, await oidc.randomDPoPKeyPair('ES256'));
    const j = await journey(env.browser, 'dpop-par-binding');
    await j.run(async () => {
      const { params, checks } = await newRequest(c);
      const url = await oidc.buildAuthorizationUrlWithPAR(config, params, { DPoP: pushedWith });
      const callback = await signIn(j, url.href, c);
      await j.visit('callback');
      await assert.rejects(exchange(config, callback, checks, { DPoP: another }), (e) => {
        assert.equal(e.status, 400, `${e}`);
        assert.ok(['invalid_grant', 'invalid_dpop_proof'].includes(e.error), `${e.error}`);
        return true;
      }, 'the code of a request pushed with a DPoP proof was redeemed with a proof of another key');
    });
  });

  it('DPoP with PAR: dpop_jkt in the pushed request binds the code to that key (RFC 9449 §10)', async () => {
    const c = env.idp.clients[FAPI];
    const config = await discover(FAPI, oidc.PrivateKeyJwt({ key: fapiKey.privateKey, kid: fapiKey.kid }), FAPI_METADATA);
    const named = await oidc.randomDPoPKeyPair('ES256');
    const another = oidc.getDPoPHandle(config, await oidc.randomDPoPKeyPair('ES256'));
    const j = await journey(env.browser, 'dpop-jkt-binding');
    await j.run(async () => {
      const { params, checks } = await newRequest(c, {
        dpop_jkt: thumbprint(await subtle.exportKey('jwk', named.publicKey)),
      });
      const url = await oidc.buildAuthorizationUrlWithPAR(config, params);
      const callback = await signIn(j, url.href, c);
      await j.visit('callback');
      await assert.rejects(exchange(config, callback, checks, { DPoP: another }), (e) => {
        assert.equal(e.status, 400, `${e}`);
        assert.ok(['invalid_grant', 'invalid_dpop_proof'].includes(e.error), `${e.error}`);
        return true;
      }, 'the code of a request naming dpop_jkt was redeemed with a proof of another key');
    });
  });
});
