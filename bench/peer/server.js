// The benchmark's peer: panva's oidc-provider configured like our provider
// for the benchmark client (see bench/README.md, "The peer").
//
// - one confidential client (client_secret_basic, the same id and secret as
//   ours), grants authorization_code (PKCE S256 honoured), refresh_token
//   (rotated on every use, issued without offline_access as ours does) and
//   client_credentials; ES256 signing key; introspection, userinfo,
//   revocation;
// - client_credentials tokens are ES256 JWTs (RFC 9068, through a resource
//   indicator defaulted for that grant), as ours are; tokens of a login are
//   opaque, the only kind oidc-provider accepts at userinfo;
// - a login interaction with two pages like ours: identifier, then password,
//   checked with argon2id at the same parameters (m=19456 KiB, t=2, p=1, on
//   libuv's thread pool); consent is implicit (first-party), as ours;
// - an in-process store without the size limit of oidc-provider's
//   development MemoryAdapter (an LRU of 1000 entries that would drop the
//   benchmark's pre-minted codes), the counterpart of our in-process store;
// - when BENCH_DPOP_CLIENT_ID and BENCH_DPOP_CLIENT_JWKS are set, a second
//   client as ours for the private_key_jwt + DPoP row: private_key_jwt
//   (RFC 7523) with the public keys given, dpop_bound_access_tokens (RFC
//   9449, features.dPoP on, no server nonces, as ours), grants
//   authorization_code and refresh_token.
//
// Settings come from the environment: PEER_PORT, BENCH_CLIENT_ID,
// BENCH_CLIENT_SECRET, BENCH_REDIRECT_URI, BENCH_USER_EMAIL,
// BENCH_USER_PASSWORD, optionally BENCH_DPOP_CLIENT_ID and
// BENCH_DPOP_CLIENT_JWKS (a JWK Set, JSON). Listens on 127.0.0.1 only.

import http from 'node:http';
import crypto from 'node:crypto';
import { hash, verify, Algorithm } from '@node-rs/argon2';
import Provider, { errors } from 'oidc-provider';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is required`);
  return v;
};
const PORT = Number(env('PEER_PORT'));
const ISSUER = `http://127.0.0.1:${PORT}`;
const CLIENT_ID = env('BENCH_CLIENT_ID');
const USER_EMAIL = env('BENCH_USER_EMAIL').toLowerCase();
const ACCOUNT_ID = 'bench-user';
const API = 'urn:idp-bench:api';
const ARGON2 = { algorithm: Algorithm.Argon2id, memoryCost: 19456, timeCost: 2, parallelism: 1 };

const passwordHash = await hash(env('BENCH_USER_PASSWORD'), ARGON2);
// An unknown identifier costs the same work, as on our side.
const dummyHash = await hash(crypto.randomBytes(16).toString('hex'), ARGON2);

const signingKey = {
  ...crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }),
  kid: 'bench-es256',
  alg: 'ES256',
  use: 'sig',
};

// --- In-process store ----------------------------------------------------
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest']);
const entries = new Map(); // "Model:id" -> { payload, exp (ms) }
const grantMembers = new Map(); // grantId -> Set of keys
const sessionUids = new Map();
const userCodes = new Map();

class StoreAdapter {
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    entries.set(key, { payload, exp: expiresIn ? Date.now() + expiresIn * 1000 : Infinity });
    if (this.model === 'Session') sessionUids.set(payload.uid, id);
    if (payload.userCode) userCodes.set(payload.userCode, id);
    if (payload.grantId && GRANTABLE.has(this.model)) {
      let members = grantMembers.get(payload.grantId);
      if (!members) grantMembers.set(payload.grantId, (members = new Set()));
      members.add(key);
    }
  }
  async find(id) {
    const key = this.key(id);
    const e = entries.get(key);
    if (!e) return undefined;
    if (e.exp <= Date.now()) { entries.delete(key); return undefined; }
    return e.payload;
  }
  async findByUid(uid) { const id = sessionUids.get(uid); return id ? this.find(id) : undefined; }
  async findByUserCode(code) { const id = userCodes.get(code); return id ? this.find(id) : undefined; }
  async consume(id) {
    const e = entries.get(this.key(id));
    if (e) e.payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) { entries.delete(this.key(id)); }
  async revokeByGrantId(grantId) {
    for (const key of grantMembers.get(grantId) ?? []) entries.delete(key);
    grantMembers.delete(grantId);
  }
}
// Expired entries leave once a minute (bounded work, like a TTL store).
setInterval(() => {
  const now = Date.now();
  for (const [k, e] of entries) if (e.exp <= now) entries.delete(k);
}, 60_000).unref();

// --- The account -------------------------------------------------------------
const account = {
  accountId: ACCOUNT_ID,
  async claims() {
    return {
      sub: ACCOUNT_ID,
      email: USER_EMAIL,
      email_verified: true,
      name: 'Bench User',
      preferred_username: 'bench',
      locale: 'en',
      updated_at: 1_700_000_000,
    };
  },
};

// The private_key_jwt + DPoP client, as ours (bench/config.sh).
const dpopClients = process.env.BENCH_DPOP_CLIENT_ID ? [{
  client_id: process.env.BENCH_DPOP_CLIENT_ID,
  redirect_uris: [env('BENCH_REDIRECT_URI')],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'private_key_jwt',
  jwks: JSON.parse(env('BENCH_DPOP_CLIENT_JWKS')),
  dpop_bound_access_tokens: true,
  id_token_signed_response_alg: 'ES256',
  scope: 'openid profile email',
}] : [];

const provider = new Provider(ISSUER, {
  adapter: StoreAdapter,
  clients: [{
    client_id: CLIENT_ID,
    client_secret: env('BENCH_CLIENT_SECRET'),
    redirect_uris: [env('BENCH_REDIRECT_URI')],
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
    scope: 'openid profile email api',
  }, ...dpopClients],
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  scopes: ['openid', 'profile', 'email', 'api'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username', 'locale', 'updated_at'],
  },
  // ID tokens carry the scope's claims, as ours do.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false },
    introspection: { enabled: true },
    revocation: { enabled: true },
    userinfo: { enabled: true },
    clientCredentials: { enabled: true },
    // RFC 9449, without server-provided nonces (no nonceSecret), as ours.
    dPoP: { enabled: true },
    resourceIndicators: {
      enabled: true,
      async defaultResource(ctx, client, oneOf) {
        if (oneOf) return oneOf;
        return ctx.oidc.params?.grant_type === 'client_credentials' ? API : undefined;
      },
      async getResourceServerInfo(ctx, resource) {
        if (resource !== API) throw new errors.InvalidTarget();
        return {
          scope: 'api',
          audience: CLIENT_ID,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
      async useGrantedResource() { return false; },
    },
  },
  pkce: { required: () => false },
  async findAccount(ctx, id) { return id === ACCOUNT_ID ? account : undefined; },
  // First-party portal: consent is implicit, as ours.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const grant = await ctx.oidc.provider.Grant.find(grantId);
      if (grant) return grant;
    }
    const grant = new ctx.oidc.provider.Grant({
      accountId: ctx.oidc.session.accountId,
      clientId: ctx.oidc.client.clientId,
    });
    grant.addOIDCScope('openid profile email');
    await grant.save();
    return grant;
  },
  async issueRefreshToken(ctx, client) { return client.grantTypeAllowed('refresh_token'); },
  rotateRefreshToken: true,
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: {
    AccessToken: 600,
    AuthorizationCode: 600,
    ClientCredentials: 600,
    IdToken: 600,
    RefreshToken: 30 * 24 * 3600,
    Interaction: 1800,
    Session: 36000,
    Grant: 30 * 24 * 3600,
  },
});

// --- The login interaction: identifier page, then password page ----------------
const page = (title, action, field, type, error) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${title}</title></head>
<body><main><h1>${title}</h1>${error ? `<p role="alert">${error}</p>` : ''}
<form method="post" action="${action}">
<input type="${type}" name="${field}" required autofocus>
<button type="submit">Continue</button>
</form></main></body></html>`;

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', ...headers });
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

async function interaction(req, res) {
  const [, , uid, step] = new URL(req.url, ISSUER).pathname.split('/');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid || details.prompt.name !== 'login') {
    return send(res, 400, 'unexpected interaction');
  }
  const identifier = details.result?.bench?.identifier;
  if (req.method === 'GET' && !step) {
    return identifier === undefined
      ? send(res, 200, page('Sign in', `/interaction/${uid}/identifier`, 'identifier', 'text'))
      : send(res, 200, page('Password', `/interaction/${uid}/password`, 'password', 'password'));
  }
  if (req.method === 'POST' && step === 'identifier') {
    const form = await readForm(req);
    await provider.interactionResult(req, res, { bench: { identifier: form.get('identifier') ?? '' } });
    return send(res, 303, '', { location: `/interaction/${uid}` });
  }
  if (req.method === 'POST' && step === 'password' && identifier !== undefined) {
    const form = await readForm(req);
    const known = identifier.toLowerCase() === USER_EMAIL;
    const ok = await verify(known ? passwordHash : dummyHash, form.get('password') ?? '');
    if (!(known && ok)) {
      return send(res, 401, page('Password', `/interaction/${uid}/password`, 'password', 'password', 'Wrong identifier or password.'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: ACCOUNT_ID } }, { mergeWithLastSubmission: false });
  }
  return send(res, 404, 'not found');
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      if (!res.headersSent) send(res, 400, `interaction failed: ${err.message}`);
    });
  } else {
    callback(req, res);
  }
});
server.keepAliveTimeout = 65_000;
server.listen(PORT, '127.0.0.1', () => {
  console.log(`peer: oidc-provider listening on ${ISSUER}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
