// One provider, one portal server and one Chromium for a test file.
import { randomBytes } from 'node:crypto';
import { startIdp, BACKEND } from './harness.js';
import { startPortalServer, relyingParty } from './rp.js';
import { launch, ARTIFACTS } from './browser.js';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

// `name` names the provider's log: e2e/artifacts/<backend>/<name>-idp.log.
// `opts`: {host, port, config, files} of startIdp (lib/harness.js).
export async function setup(name, clientSpecs, opts = {}) {
  const portal = await startPortalServer();
  let idp;
  let browser;
  const rps = {};
  try {
    await mkdir(join(ARTIFACTS, BACKEND), { recursive: true });
    idp = await startIdp({
      host: opts.host,
      port: opts.port,
      config: opts.config,
      files: opts.files,
      logFile: join(ARTIFACTS, BACKEND, `${name}-idp.log`),
      clients: clientSpecs.map((c) => ({ ...c, ...portal.clientUris(c.id) })),
    });
    // A client authenticating with a signed JWT has no secret: its test
    // builds its own openid-client configuration with its key.
    for (const c of clientSpecs) {
      if (idp.clients[c.id].secret) rps[c.id] = await relyingParty(idp.issuer, idp.clients[c.id]);
    }
    browser = await launch();
  } catch (e) {
    // The test file's after() cannot stop what it never received: stop it
    // here, or the servers and processes started so far keep the file's
    // process (and the run) alive.
    await browser?.close().catch(() => {});
    await idp?.stop().catch(() => {});
    await portal.close().catch(() => {});
    throw e;
  }
  return {
    idp,
    portal,
    rps,
    browser,
    newPassword: () => `e2e-${randomBytes(9).toString('base64url')}`,
    newEmail: (tag) => `${tag}-${randomBytes(4).toString('hex')}@example.test`,
    async teardown() {
      await browser?.close();
      await idp?.stop();
      await portal?.close();
    },
  };
}

// Fills the identifier and password pages, visiting (checking and
// screenshotting) each. Ends wherever the provider sends the browser next.
export async function signInWithPassword(j, user, { lang = 'en' } = {}) {
  const { page } = j;
  await page.locator('#identifier').waitFor();
  await j.visit(`identifier-${lang}`);
  await page.fill('#identifier', user.email);
  await page.click('button[type=submit]');
  await page.locator('#password').waitFor();
  await j.visit(`password-${lang}`);
  await page.fill('#password', user.password);
  await page.click('button[type=submit]');
}
