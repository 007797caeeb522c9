// The page checks themselves: each kind of problem a journey must fail on is
// caught, and a clean page passes. Served by a throwaway local server, no
// provider needed.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { launch, journey } from '../lib/browser.js';

const page = (body, head = '') => `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>Check</title><link rel="icon" href="data:,">${head}</head><body><main><h1>Check</h1>${body}</main></body></html>`;

const PAGES = {
  '/clean': page('<form><label for="a">Name</label><input id="a" name="a"></form>'),
  '/unlabelled': page('<form><input id="a" name="a"></form>'),
  '/axe': page('<p><img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" width="1" height="1"></p>'),
  '/console': page('<p>x</p>', '<script>console.error("boom")</script>'),
  '/missing': page('<p><img src="/nope.png" alt="nothing"></p>'),
  '/crash': page('<p>x</p>', '<script>null.f()</script>'),
};

describe('page checks', () => {
  let server;
  let base;
  let browser;
  before(async () => {
    server = createServer((req, res) => {
      const body = PAGES[req.url];
      res.writeHead(body ? 200 : 404, { 'content-type': 'text/html; charset=utf-8' });
      res.end(body || 'not found');
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${server.address().port}`;
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
    server?.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  const cases = [
    ['/clean', null],
    ['/unlabelled', /form fields without a label/],
    ['/axe', /accessibility violations:[\s\S]*image-alt/],
    ['/console', /console error .*boom/],
    ['/missing', /HTTP 404 for GET .*\/nope\.png/],
    ['/crash', /uncaught exception/],
  ];
  for (const [path, expected] of cases) {
    it(`${path}: ${expected ? `fails with ${expected}` : 'passes'}`, async () => {
      const j = await journey(browser, `checks${path.replace('/', '-')}`);
      try {
        await j.page.goto(`${base}${path}`);
        if (expected) await assert.rejects(j.visit('page'), expected);
        else await j.visit('page');
      } finally {
        await j.close();
      }
    });
  }
});
