// Starts what a journey needs, outside the test process: an SMTP server
// (Python's aiosmtpd, writing a Maildir), an HTTP server standing in for the
// SMS provider, the built `idp serve` with a fresh config folder (themes from
// the repository's themes/), data folder and database, and test users created
// with the `idp user create` command. Everything listens on 127.0.0.1.
//
// Environment:
//   IDP_BIN       the idp binary (e2e/run.sh builds and sets it)
//   E2E_BACKEND   sqlite (SQLite + in-process store) or postgres (PostgreSQL + Redis)
//   E2E_POSTGRES_URL  admin URL of the PostgreSQL server (default postgres://postgres@127.0.0.1:5432/postgres)
//   E2E_REDIS_URL     default redis://127.0.0.1:6379
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, mkdir, writeFile, readdir, readFile, rm } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { createServer as createHttpServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';

const run = promisify(execFile);
const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export const BACKEND = process.env.E2E_BACKEND || 'sqlite';
const IDP_BIN = process.env.IDP_BIN;
const PG_URL = process.env.E2E_POSTGRES_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.E2E_REDIS_URL || 'redis://127.0.0.1:6379';

// Ports handed out by freePort(), still bound until releasePort().
const heldPorts = new Map();

// A free port on 127.0.0.1 for a server started later. It stays bound here
// until releasePort(port), called right before that server starts: a port
// closed at once could be handed by the system to another listen(0) in the
// meantime (an upstream started between choosing the provider's port and
// starting the provider), and the provider's health check would then reach
// the wrong server.
export async function freePort() {
  const srv = createServer();
  await new Promise((resolve, reject) => {
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  // Holding a port must not keep a test process alive.
  srv.unref();
  const { port } = srv.address();
  heldPorts.set(port, srv);
  return port;
}

// Unbinds a port of freePort() for the server about to listen on it.
export async function releasePort(port) {
  const srv = heldPorts.get(port);
  if (!srv) return;
  heldPorts.delete(port);
  await new Promise((resolve) => srv.close(resolve));
}

// Polls `check` (async, truthy when done) every 50 ms until `timeoutMs`.
export async function waitFor(what, check, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function tcpOpen(port) {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.on('connect', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

function spawnLogged(cmd, args, opts) {
  const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
  const chunks = [];
  child.stdout.on('data', (d) => chunks.push(d));
  child.stderr.on('data', (d) => chunks.push(d));
  child.logs = () => Buffer.concat(chunks).toString();
  child.exited = new Promise((resolve) => child.on('exit', (code, sig) => resolve({ code, sig })));
  return child;
}

async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  await child.exited;
}

// A running aiosmtpd; `messages()` parses every received email.
async function startSmtp(dir) {
  const port = await freePort();
  const maildir = join(dir, 'maildir');
  await releasePort(port);
  const child = spawnLogged('python3',
    ['-m', 'aiosmtpd', '-n', '-l', `127.0.0.1:${port}`, '-c', 'aiosmtpd.handlers.Mailbox', maildir],
    {});
  await waitFor('aiosmtpd to accept connections', async () => {
    if (child.exitCode !== null) throw new Error(`aiosmtpd exited: ${child.logs()} (python3 -m pip install aiosmtpd)`);
    return tcpOpen(port);
  });
  return {
    port,
    child,
    async messages() {
      const out = [];
      for (const sub of ['new', 'cur']) {
        let names = [];
        try { names = await readdir(join(maildir, sub)); } catch { continue; }
        for (const n of names.sort()) out.push(parseEmail(await readFile(join(maildir, sub, n), 'utf8')));
      }
      return out;
    },
  };
}

// A stand-in for an HTTP SMS provider (the provider's `[sms] transport =
// "http"`): accepts `POST /messages` carrying the API key given, with the
// default JSON body {"to", "text"}; `messages()` lists what it accepted.
// Anything else gets a 401 or 404, which the provider reports as a failed
// delivery.
async function startSmsProvider() {
  const apiKey = randomBytes(16).toString('hex');
  const received = [];
  const server = createHttpServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/messages') {
        res.writeHead(404).end();
        return;
      }
      if (req.headers['x-api-key'] !== apiKey) {
        res.writeHead(401).end();
        return;
      }
      try {
        const { to, text } = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        received.push({ to, text, contentType: req.headers['content-type'] });
        res.writeHead(202, { 'content-type': 'application/json' }).end('{"status":"queued"}');
      } catch {
        res.writeHead(400).end();
      }
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}/messages`,
    apiKey,
    messages: () => [...received],
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
  };
}

// Headers and decoded text of a (possibly multipart, quoted-printable or
// base64) email, enough to read codes and links.
export function parseEmail(raw) {
  const [head, ...rest] = raw.replace(/\r\n/g, '\n').split('\n\n');
  const headers = {};
  for (const line of head.replace(/\n[ \t]+/g, ' ').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
  }
  const body = rest.join('\n\n');
  const parts = [];
  const boundary = /boundary="?([^";]+)"?/i.exec(headers['content-type'] || '');
  const decode = (h, b) => {
    const enc = (/content-transfer-encoding:\s*(\S+)/i.exec(h) || [])[1]?.toLowerCase();
    if (enc === 'base64') return Buffer.from(b.replace(/\s+/g, ''), 'base64').toString('utf8');
    if (enc === 'quoted-printable') {
      return Buffer.from(b.replace(/=\n/g, '').replace(/=([0-9A-F]{2})/gi, (_, h2) => String.fromCharCode(parseInt(h2, 16))), 'latin1').toString('utf8');
    }
    return b;
  };
  if (boundary) {
    const walk = (text, bnd) => {
      for (const chunk of text.split(`--${bnd}`).slice(1)) {
        if (chunk.startsWith('--')) break;
        const [ph, ...pb] = chunk.replace(/^\n/, '').split('\n\n');
        const inner = /boundary="?([^";\n]+)"?/i.exec(ph);
        if (inner) walk(pb.join('\n\n'), inner[1]);
        else parts.push({ type: (/content-type:\s*([^;\n]+)/i.exec(ph) || [])[1] || 'text/plain', text: decode(ph, pb.join('\n\n')) });
      }
    };
    walk(body, boundary[1]);
  } else {
    parts.push({ type: headers['content-type'] || 'text/plain', text: decode(head, body) });
  }
  const text = (parts.find((p) => p.type.startsWith('text/plain')) || parts[0] || { text: '' }).text;
  // RFC 2047 encoded words (non-ASCII subjects).
  const words = (v) => v.replace(/=\?([^?]+)\?([bq])\?([^?]*)\?=\s*/gi, (_, _cs, enc, data) => (enc.toLowerCase() === 'b'
    ? Buffer.from(data, 'base64')
    : Buffer.from(data.replace(/_/g, ' ').replace(/=([0-9A-F]{2})/gi, (__, h2) => String.fromCharCode(parseInt(h2, 16))), 'latin1')).toString('utf8'));
  return { headers, to: headers.to || '', subject: words(headers.subject || ''), text, parts };
}

async function createDatabase() {
  const name = `e2e_${randomBytes(6).toString('hex')}`;
  try {
    await run('psql', [PG_URL, '-v', 'ON_ERROR_STOP=1', '-qc', `CREATE DATABASE ${name}`]);
  } catch (e) {
    throw new Error(`cannot create a PostgreSQL database at ${PG_URL} (needs 127.0.0.1:5432, trust auth): ${e.stderr || e.message}`);
  }
  const url = new URL(PG_URL);
  url.pathname = `/${name}`;
  return { name, url: url.toString() };
}

// Deletes the keys under `prefix` (one EVAL over a bare RESP connection).
async function redisDeletePrefix(prefix) {
  const url = new URL(REDIS_URL);
  const args = ['EVAL', "for _,k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end return 1", '0', `${prefix}*`];
  const cmd = `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
  await new Promise((resolve) => {
    const s = connect(Number(url.port || 6379), url.hostname);
    s.on('connect', () => {
      if (url.password) s.write(`*2\r\n$4\r\nAUTH\r\n$${url.password.length}\r\n${url.password}\r\n`);
      s.write(cmd);
    });
    let got = '';
    s.on('data', (d) => { got += d; if (got.includes(':1\r\n') || got.startsWith('-')) s.end(); });
    s.on('close', resolve);
    s.on('error', resolve);
  });
}

async function dropDatabase(name) {
  await run('psql', [PG_URL, '-qc', `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]).catch(() => {});
}

// A TOML value (string, boolean, integer, list, or object as an inline
// table), for the client file keys of `settings` below.
function tomlValue(v) {
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(', ')}]`;
  if (v !== null && typeof v === 'object') {
    const key = (k) => (/^[A-Za-z0-9_-]+$/.test(k) ? k : JSON.stringify(k));
    return `{ ${Object.entries(v).map(([k, x]) => `${key(k)} = ${tomlValue(x)}`).join(', ')} }`;
  }
  // A JSON string is a valid TOML basic string (same escapes).
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'boolean' || Number.isInteger(v)) return String(v);
  throw new Error(`no TOML form for ${JSON.stringify(v)}`);
}

// Whether a client authenticates with a secret checked against secret_hash
// (the default): one authenticating with a signed JWT has no secret_hash.
function usesSecretHash(c) {
  return !['private_key_jwt', 'client_secret_jwt'].includes(c.settings?.token_endpoint_auth_method);
}

// A client file body. `flows` is a list of step lists (first is the default);
// `grantTypes` replaces the default grant types.
// `settings`: more top-level keys of the client file, as config/README.md
// spells them ({token_endpoint_auth_method, jwks (an object, written as an
// inline table, or its JSON text), response_modes, dpop_bound_access_tokens,
// ...}).
function clientToml(c) {
  const lines = [
    `client_id = "${c.id}"`,
    `name = "${c.name}"`,
    'type = "confidential"',
    ...(usesSecretHash(c) ? [`secret_hash = "${c.secretHash}"`] : []),
    `redirect_uris = ["${c.redirectUri}"]`,
    `post_logout_redirect_uris = ["${c.postLogoutRedirectUri}"]`,
    // Unless `settings` names its own (e.g. with token exchange).
    ...(c.settings?.grant_types
      ? []
      : [`grant_types = ${JSON.stringify(c.grantTypes || ['authorization_code', 'refresh_token'])}`]),
    'scopes = ["openid", "profile", "email"]',
    'require_pkce = true',
    ...Object.entries(c.settings || {}).map(([k, v]) => `${k} = ${tomlValue(v)}`),
  ];
  if (c.allowOrgCreation) lines.push('', '[account]', 'allow_org_creation = true');
  // A flow is a list of steps (named f<i>, level i + 1), or {name, acr, steps}.
  (c.flows || []).forEach((flow, i) => {
    const f = Array.isArray(flow) ? { name: `f${i}`, acr: `${i + 1}`, steps: flow } : flow;
    lines.push('', '[[login.flows]]', `name = "${f.name}"`, `acr = "${f.acr}"`,
      `steps = ${JSON.stringify(f.steps)}`);
  });
  return lines.join('\n') + '\n';
}

// An example client file of config/clients/ as it is (flows, account
// settings, theme), with this test's secret and portal URIs.
async function exampleToml(c) {
  const path = join(REPO_ROOT, 'config', 'clients', c.example);
  let text = await readFile(path, 'utf8');
  const set = (key, value) => {
    const re = new RegExp(`^${key} = .*$`, 'm');
    if (!re.test(text)) throw new Error(`${path} has no ${key}`);
    text = text.replace(re, `${key} = ${value}`);
  };
  if (!new RegExp(`^client_id = "${c.id}"$`, 'm').test(text)) throw new Error(`${path} is not client ${c.id}`);
  set('secret_hash', JSON.stringify(c.secretHash));
  set('redirect_uris', JSON.stringify([c.redirectUri]));
  set('post_logout_redirect_uris', JSON.stringify([c.postLogoutRedirectUri]));
  return text;
}

async function newSecret() {
  const { stdout } = await run(IDP_BIN, ['client', 'secret']);
  const secret = /relying party, it is not stored\):\s*(\S+)/.exec(stdout)?.[1];
  const hash = /secret_hash = "([^"]+)"/.exec(stdout)?.[1];
  if (!secret || !hash) throw new Error(`unexpected output of idp client secret: ${stdout}`);
  return { secret, hash };
}

/**
 * Starts aiosmtpd, the SMS provider's stand-in and `idp serve`. `clients`:
 * [{id, name, redirectUri, postLogoutRedirectUri, flows?, settings?}] or
 * [{id, example: 'marketplace.toml', ...}] (a file of config/clients/, whose
 * theme comes from the repository's themes/); each gets a fresh secret
 * (`client.secret`), but for a client whose `settings` choose
 * `private_key_jwt` or `client_secret_jwt`.
 * `host`: the issuer's host (127.0.0.1, or localhost for WebAuthn and for
 * a provider whose cookies must stay apart from another one on 127.0.0.1);
 * `port`: its port (default: a free one); `config`: more lines for idp.toml,
 * after every other table (`[[upstreams]]`); `files`: {name: content} written
 * next to idp.toml (secret files).
 * Returns {issuer, clients, smtp, sms, createUser(email, password),
 * users(), waitForEmail(to, pattern), waitForSms(to, pattern, after),
 * cli(...args), stop()}.
 */
export async function startIdp({ clients, host = '127.0.0.1', port: chosenPort, config = [], files = {}, logFile }) {
  if (!IDP_BIN) throw new Error('IDP_BIN is not set: run the suite with `bash e2e/run.sh`');
  const dir = await mkdtemp(join(tmpdir(), 'idp-e2e-'));
  const confDir = join(dir, 'config');
  await mkdir(join(confDir, 'clients'), { recursive: true });
  const smtp = await startSmtp(dir);
  const sms = await startSmsProvider();
  const port = chosenPort || await freePort();
  const issuer = `http://${host}:${port}`;
  for (const [name, content] of Object.entries(files)) await writeFile(join(confDir, name), content, { mode: 0o600 });

  const registered = [];
  for (const c of clients) {
    // (No secret for a client authenticating with a signed JWT.)
    const { secret, hash } = c.example || usesSecretHash(c) ? await newSecret() : {};
    const full = { ...c, secret, secretHash: hash };
    await writeFile(join(confDir, 'clients', `${c.id}.toml`), c.example ? await exampleToml(full) : clientToml(full));
    registered.push(full);
  }

  let database = null;
  let redisPrefix = null;
  const conf = [
    `issuer = "${issuer}"`,
    `listen = "127.0.0.1:${port}"`,
    `data_dir = "${join(dir, 'data')}"`,
    'clients_dir = "clients"',
    `themes_dir = "${join(REPO_ROOT, 'themes')}"`,
    'log_format = "text"',
  ];
  if (BACKEND === 'postgres') {
    database = await createDatabase();
    conf.push(`database_url = "${database.url}"`);
    conf.push(`redis_url = "${REDIS_URL}"`);
    redisPrefix = `e2e:${randomBytes(6).toString('hex')}:`;
    conf.push(`redis_key_prefix = "${redisPrefix}"`);
    conf.push(`key_encryption_key = "${randomBytes(32).toString('base64url')}"`);
  } else if (BACKEND !== 'sqlite') {
    throw new Error(`E2E_BACKEND must be sqlite or postgres, not ${BACKEND}`);
  }
  conf.push('', '[mail]', 'transport = "smtp"', 'from = "Sign-in <no-reply@example.test>"',
    'smtp_host = "127.0.0.1"', `smtp_port = ${smtp.port}`, 'smtp_tls = "none"');
  conf.push('', '[sms]', 'transport = "http"', `url = "${sms.url}"`,
    'auth_header_name = "X-Api-Key"', `auth_header_value = "${sms.apiKey}"`);
  if (config.length) conf.push('', ...config);
  const configPath = join(confDir, 'idp.toml');
  await writeFile(configPath, conf.join('\n') + '\n');

  const env = { ...process.env, IDP_CONFIG: configPath, IDP_LOG: 'info,sqlx=warn,sea_orm=warn' };
  for (const k of Object.keys(env)) if (k.startsWith('IDP_') && !['IDP_CONFIG', 'IDP_LOG'].includes(k)) delete env[k];

  await releasePort(port);
  const server = spawnLogged(IDP_BIN, ['serve'], { env, cwd: dir });
  await waitFor(`idp serve on ${issuer}`, async () => {
    if (server.exitCode !== null) throw new Error(`idp serve exited (${server.exitCode}):\n${server.logs()}`);
    const r = await fetch(`${issuer}/healthz`);
    return r.ok;
  }, 60000);

  return {
    issuer,
    dir,
    clients: Object.fromEntries(registered.map((c) => [c.id, c])),
    smtp,
    sms,
    serverLogs: () => server.logs(),
    // Runs an `idp` command against this provider's configuration; its stdout.
    async cli(...args) {
      try {
        return (await run(IDP_BIN, args, { env, cwd: dir })).stdout;
      } catch (e) {
        throw new Error(`idp ${args.join(' ')} failed: ${e.stderr || e.message}`);
      }
    },
    async createUser(email, password) {
      const child = spawn(IDP_BIN, ['user', 'create', '--email', email, '--password-stdin'], { env, cwd: dir });
      let out = '';
      child.stdout.on('data', (d) => { out += d; });
      child.stderr.on('data', (d) => { out += d; });
      child.stdin.end(password);
      const code = await new Promise((r) => child.on('exit', r));
      if (code !== 0) throw new Error(`idp user create failed (${code}): ${out}`);
      const customerId = /\b([a-z]{2}\d{5}-[a-z0-9]+)\b/.exec(out)?.[1];
      // The user's id: the `sub` of its ID tokens.
      const id = /created user (\S+)/.exec(out)?.[1];
      return { email, password, customerId, id, output: out };
    },
    // Every account ({id, customerId, status, email}), from `idp user list`.
    async users() {
      const out = await this.cli('user', 'list', '--limit', '1000');
      return out.trim().split('\n').slice(1).map((line) => {
        const [id, customerId, status, email] = line.trim().split(/\s+/);
        return { id, customerId, status, email };
      });
    },
    // Waits for an email to `to` whose subject or text matches `pattern`.
    async waitForEmail(to, pattern = /./) {
      return waitFor(`an email to ${to} matching ${pattern}`, async () => {
        const msgs = await smtp.messages();
        return msgs.reverse().find((m) => m.to.includes(to) && (pattern.test(m.subject) || pattern.test(m.text)));
      });
    },
    // Waits for a text message to `to` (E.164) whose text matches `pattern`,
    // received after the `after`-th message (to skip older ones).
    async waitForSms(to, pattern = /./, after = 0) {
      return waitFor(`a text message to ${to} matching ${pattern}`, async () => sms.messages()
        .slice(after).reverse().find((m) => m.to === to && pattern.test(m.text)));
    },
    async stop() {
      await stop(server);
      await stop(smtp.child);
      await sms.close();
      if (logFile) await writeFile(logFile, server.logs()).catch(() => {});
      if (database) await dropDatabase(database.name);
      if (redisPrefix) await redisDeletePrefix(redisPrefix);
      if (!process.env.E2E_KEEP) await rm(dir, { recursive: true, force: true });
    },
  };
}
