// Chromium (the system package, /usr/bin/chromium) driven by playwright-core,
// with the checks every visited page must pass: no console error, no failed
// request, every form field labelled, no serious or critical axe-core
// violation; and screenshots at desktop and mobile widths into
// e2e/artifacts/<backend>/<journey>/NN-<name>-<width>.png.
import { chromium } from 'playwright-core';
import { mkdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BACKEND } from './harness.js';

const require = createRequire(import.meta.url);
const AXE_SOURCE = await readFile(require.resolve('axe-core/axe.min.js'), 'utf8');
export const ARTIFACTS = join(dirname(fileURLToPath(import.meta.url)), '..', 'artifacts');
export const CHROMIUM = process.env.E2E_CHROMIUM || '/usr/bin/chromium';

export const DESKTOP = { width: 1280, height: 800 };
export const MOBILE = { width: 390, height: 844 };

export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
}

/**
 * A browser context for one journey. `expectedStatus(url, status)` may accept
 * a response >= 400 the journey provokes on purpose.
 */
export async function journey(browser, name, { expectedStatus = () => false, locale = 'en-US' } = {}) {
  const dir = join(ARTIFACTS, BACKEND, name);
  await mkdir(dir, { recursive: true });
  const context = await browser.newContext({ viewport: DESKTOP, locale });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const problems = [];
  const expectedUrls = new Set();
  const watch = (p) => {
    p.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      // Chromium logs every >= 400 response; the expected ones are not errors.
      if (/^Failed to load resource: the server responded with a status of \d+/.test(msg.text())
        && expectedUrls.has(msg.location()?.url)) return;
      problems.push(`console error on ${p.url()}: ${msg.text()}`);
    });
    p.on('pageerror', (err) => problems.push(`uncaught exception on ${p.url()}: ${err.message}`));
    p.on('requestfailed', (req) => {
      const failure = req.failure()?.errorText || '';
      // A navigation the page itself replaced (a form posted while the
      // previous one loads) is reported as aborted; anything else is a failure.
      if (failure === 'net::ERR_ABORTED' && req.isNavigationRequest()) return;
      problems.push(`request failed: ${req.method()} ${req.url()} ${failure}`);
    });
    p.on('response', (res) => {
      if (res.status() < 400) return;
      if (expectedStatus(res.url(), res.status())) expectedUrls.add(res.url());
      else problems.push(`HTTP ${res.status()} for ${res.request().method()} ${res.url()}`);
    });
  };
  context.on('page', watch);
  watch(page);
  let n = 0;

  const j = {
    page,
    context,
    dir,
    problems,
    // Checks and screenshots the page as it is now.
    async visit(label) {
      await page.waitForLoadState('load');
      n += 1;
      const base = `${String(n).padStart(2, '0')}-${label}`;
      await checkLabels(page, label);
      await checkAxe(page, label);
      for (const vp of [DESKTOP, MOBILE]) {
        await page.setViewportSize(vp);
        // Two animation frames: the layout of the new width is painted.
        await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
        await page.screenshot({ path: join(dir, `${base}-${vp.width}.png`), fullPage: true });
      }
      await page.setViewportSize(DESKTOP);
      j.assertClean();
    },
    assertClean() {
      if (problems.length) {
        const list = problems.splice(0).join('\n  ');
        throw new Error(`journey ${name}: the browser reported:\n  ${list}`);
      }
    },
    // Runs the journey's body; a failure says where the browser was.
    async run(body) {
      try {
        await body();
        j.assertClean();
      } catch (e) {
        let where = page.url();
        try {
          where += ` (h1: ${await page.locator('h1').first().innerText({ timeout: 1000 })})`;
          await page.screenshot({ path: join(dir, 'failure.png'), fullPage: true });
        } catch { /* the page may be gone */ }
        const extra = `\n  browser at: ${where}${problems.length ? `\n  browser reported:\n    ${problems.join('\n    ')}` : ''}`;
        e.message += extra;
        if (typeof e.stack === 'string') e.stack = `${e.stack.split('\n')[0]}${extra}\n${e.stack.split('\n').slice(1).join('\n')}`;
        throw e;
      } finally {
        await context.close();
      }
    },
    async close() {
      await context.close();
    },
  };
  return j;
}

// Every form control a user can fill has a label: a <label>, aria-label or
// aria-labelledby.
async function checkLabels(page, label) {
  const unlabelled = await page.evaluate(() => {
    const out = [];
    for (const el of document.querySelectorAll('input, select, textarea')) {
      if (el.type === 'hidden' || el.type === 'submit' || el.type === 'button' || el.type === 'reset' || el.type === 'image') continue;
      const named = (el.labels && el.labels.length > 0 && [...el.labels].some((l) => l.textContent.trim()))
        || (el.getAttribute('aria-label') || '').trim()
        || (el.getAttribute('aria-labelledby') || '').split(/\s+/).some((id) => id && document.getElementById(id)?.textContent.trim());
      if (!named) out.push(el.outerHTML.slice(0, 160));
    }
    return out;
  });
  if (unlabelled.length) {
    throw new Error(`page ${label} (${page.url()}) has form fields without a label:\n  ${unlabelled.join('\n  ')}`);
  }
}

// axe-core, evaluated through the DevTools protocol (so the page's CSP, which
// forbids inline scripts, stays as it is), then run on the whole document.
async function checkAxe(page, label) {
  const hasAxe = await page.evaluate(() => typeof window.axe !== 'undefined');
  if (!hasAxe) await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => `${n.target.join(' ')}: ${n.failureSummary}`).slice(0, 5),
    }));
  });
  const bad = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  if (bad.length) {
    const text = bad.map((v) => `[${v.impact}] ${v.id}: ${v.help}\n    ${v.nodes.join('\n    ')}`).join('\n  ');
    throw new Error(`page ${label} (${page.url()}) has accessibility violations:\n  ${text}`);
  }
}

/**
 * Rewrites, in the browser, every request of `page` whose URL starts with
 * `prefix` before it leaves: `rewrite(url)` changes the URL object it is
 * given (a query parameter), as an attacker between the browser and the
 * server would. This goes through the DevTools protocol, not `page.route`:
 * Playwright's routes see only the first request of a redirect chain, and
 * the requests tampered with here (an upstream's authorization request,
 * its answer at the callback) are redirects. Returns {count() (requests
 * rewritten so far), stop()}.
 */
export async function rewriteRequests(page, prefix, rewrite) {
  const cdp = await page.context().newCDPSession(page);
  let count = 0;
  cdp.on('Fetch.requestPaused', async (ev) => {
    const url = new URL(ev.request.url);
    rewrite(url);
    count += 1;
    await cdp.send('Fetch.continueRequest', { requestId: ev.requestId, url: url.href }).catch(() => {});
  });
  // In the protocol's patterns `*` and `?` are wildcards, `\` escapes.
  const urlPattern = `${prefix.replace(/[\\*?]/g, '\\$&')}*`;
  await cdp.send('Fetch.enable', { patterns: [{ urlPattern, requestStage: 'Request' }] });
  return {
    count: () => count,
    async stop() {
      await cdp.send('Fetch.disable').catch(() => {});
      await cdp.detach().catch(() => {});
    },
  };
}
