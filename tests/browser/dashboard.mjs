#!/usr/bin/env node
// Drives the admin dashboard (served by the relay's admin listener) in
// Debian's headless Chromium for tests/dashboard.rs. Never downloads a
// browser: playwright-core only drives the executable it is given.
//
//   node dashboard.mjs [--chromium PATH] [--max-seconds S]
//
// Prints {"event": "driver-ready", "chromium": VERSION} once Chromium runs,
// then reads one JSON command per line on stdin and runs them one at a time,
// answering each with {"event": "done", "id": ID, "result": ...} or
// {"event": "failed", "id": ID, "error": TEXT}:
//
//   {"cmd": "goto", "url": URL}                  load a page (and wait for it)
//   {"cmd": "eval", "expr": JS}                   the value of a JS expression in the page
//   {"cmd": "wait", "expr": JS, "timeout_ms": N}  until the expression is truthy
//   {"cmd": "fill", "selector": CSS, "value": V}  type into an input (fires input)
//   {"cmd": "click", "selector": CSS}             click an element
//   {"cmd": "select", "selector": CSS, "value": V} choose an <option>
//   {"cmd": "screenshot", "path": FILE}           save the whole page as PNG
//   {"cmd": "errors"}                             uncaught page errors so far
//   {"cmd": "quit"}                               close the browser and exit 0
//
// The end of stdin quits too; after --max-seconds (default 300) it exits 1.

import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

const executablePath = option('--chromium', process.env.SWITCHBOARD_CHROMIUM || '/usr/bin/chromium');
const maxSeconds = Number(option('--max-seconds', '300'));
const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--hide-scrollbars',
  '--font-render-hinting=none',
];

function out(event) {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

async function main() {
  const deadline = setTimeout(() => {
    process.stderr.write(`dashboard driver: still running after ${maxSeconds} s, exiting\n`);
    process.exit(1);
  }, maxSeconds * 1000);
  deadline.unref();

  const browser = await chromium.launch({ executablePath, headless: true, args: FLAGS });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => {
    errors.push(error.message);
    process.stderr.write(`page error: ${error.message}\n`);
  });
  const commands = {
    goto: async (c) => (await page.goto(c.url, { waitUntil: 'load' }))?.status() ?? null,
    eval: (c) => page.evaluate(c.expr),
    // Polled from here: waitForFunction would eval inside the page, which
    // the dashboard's Content-Security-Policy forbids.
    wait: async (c) => {
      const until = Date.now() + (c.timeout_ms ?? 10000);
      for (;;) {
        if (await page.evaluate(c.expr)) return true;
        if (Date.now() > until) throw new Error(`not true within ${c.timeout_ms} ms: ${c.expr}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    fill: async (c) => { await page.fill(c.selector, c.value); return true; },
    click: async (c) => { await page.click(c.selector); return true; },
    select: async (c) => { await page.selectOption(c.selector, c.value); return true; },
    screenshot: async (c) => { await page.screenshot({ path: c.path, fullPage: true }); return c.path; },
    errors: async () => errors,
  };
  out({ event: 'driver-ready', chromium: browser.version() });

  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line.trim() === '') continue;
    let command;
    try {
      command = JSON.parse(line);
    } catch (error) {
      out({ event: 'failed', id: null, error: `not JSON: ${error.message}` });
      continue;
    }
    if (command.cmd === 'quit') break;
    const run = commands[command.cmd];
    if (run === undefined) {
      out({ event: 'failed', id: command.id ?? null, error: `unknown command ${command.cmd}` });
      continue;
    }
    try {
      out({ event: 'done', id: command.id ?? null, result: (await run(command)) ?? null });
    } catch (error) {
      out({ event: 'failed', id: command.id ?? null, error: error.message });
    }
  }
  await browser.close().catch(() => {});
  process.exit(0);
}

main().catch((error) => {
  process.stderr.write(`dashboard driver: ${error.stack || error}\n`);
  process.exit(1);
});
