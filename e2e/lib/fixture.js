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
  await mkdir(join(ARTIFACTS, BACKEND), { recursive: true });
  const idp = await startIdp({
    host: opts.host,
    port: opts.port,
    config: opts.config,
    files: opts.files,
    logFile: join(ARTIFACTS, BACKEND, `${name}-idp.log`),
    clients: clientSpecs.map((c) => ({ ...c, ...portal.clientUris(c.id) })),
  });
  const rps = {};
  for (const c of clientSpecs) rps[c.id] = await relyingParty(idp.issuer, idp.clients[c.id]);
  const browser = await launch();
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
