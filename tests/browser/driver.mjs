#!/usr/bin/env node
// Runs the browser peer (peer.html) in Debian's headless Chromium and bridges it
// to a test over stdin/stdout. Never downloads a browser: playwright-core only
// drives the executable it is given.
//
//   node driver.mjs [--chromium PATH] [--max-seconds S]
//
// It serves this directory's page on 127.0.0.1 (port 0), launches Chromium with
// loopback WebRTC candidates allowed and a fake media device, grants the page
// media permission (Chromium offers host candidates, not mDNS names, only then)
// and prints one JSON object per line on stdout:
//
//   {"event": "driver-ready", "chromium": VERSION, "page": URL}
//   {"event": "done", "id": ID, "result": ...}   a command finished
//   {"event": "failed", "id": ID, "error": TEXT}  a command failed
//   ... and every event the page emits (registered, offer-sent, answer-sent,
//   ready, recv, closed, error, relay-error, relay-closed; see peer.js).
//
// Commands are JSON lines on stdin, {"id": ID, "cmd": ..., ...} (see `run` in
// peer.js); they run concurrently. {"cmd": "quit"} or the end of stdin closes
// the browser and exits 0. The driver exits 1 on a browser crash and after
// --max-seconds (default 600) whatever happens.

import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const FILES = {
  '/peer.html': 'text/html; charset=utf-8',
  '/peer.js': 'text/javascript; charset=utf-8',
  '/chunk.js': 'text/javascript; charset=utf-8',
};

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

const executablePath = option('--chromium', process.env.SWITCHBOARD_CHROMIUM || '/usr/bin/chromium');
const maxSeconds = Number(option('--max-seconds', '600'));

function out(event) {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

function serve() {
  const server = createServer(async (request, response) => {
    const path = new URL(request.url, 'http://127.0.0.1').pathname;
    const type = FILES[path];
    if (path === '/favicon.ico') {
      response.writeHead(204).end();
      return;
    }
    if (type === undefined) {
      response.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(join(HERE, path.slice(1)));
      response.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' }).end(body);
    } catch (error) {
      response.writeHead(500).end(String(error));
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--allow-loopback-in-peer-connection',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
];

async function main() {
  const deadline = setTimeout(() => {
    process.stderr.write(`driver: still running after ${maxSeconds} s, exiting\n`);
    process.exit(1);
  }, maxSeconds * 1000);
  deadline.unref();

  const server = await serve();
  const origin = `http://127.0.0.1:${server.address().port}`;
  // launch() gives Chromium a fresh temporary --user-data-dir and removes it on close.
  const browser = await chromium.launch({ executablePath, headless: true, args: FLAGS });
  let closing = false;
  browser.on('disconnected', () => {
    if (!closing) {
      process.stderr.write('driver: chromium exited\n');
      process.exit(1);
    }
  });
  const context = await browser.newContext();
  await context.grantPermissions(['microphone', 'camera'], { origin });
  const page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') {
      process.stderr.write(`page ${message.type()}: ${message.text()}\n`);
    }
  });
  page.on('pageerror', (error) => process.stderr.write(`page error: ${error.message}\n`));
  await page.exposeFunction('sbEmit', (line) => process.stdout.write(`${line}\n`));
  await page.goto(`${origin}/peer.html`);
  await page.waitForFunction(() => window.sb !== undefined);
  await page.evaluate(() => window.sb.run({ cmd: 'media' }));
  out({ event: 'driver-ready', chromium: browser.version(), page: `${origin}/peer.html` });

  const shutdown = async (code) => {
    if (closing) return;
    closing = true;
    await browser.close().catch(() => {});
    server.close();
    process.exit(code);
  };
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (line.trim() === '') return;
    let command;
    try {
      command = JSON.parse(line);
    } catch (error) {
      out({ event: 'failed', id: null, error: `not JSON: ${error.message}` });
      return;
    }
    if (command.cmd === 'quit') {
      shutdown(0);
      return;
    }
    page.evaluate((c) => window.sb.run(c), command).then(
      (result) => out({ event: 'done', id: command.id ?? null, result }),
      (error) => out({ event: 'failed', id: command.id ?? null, error: error.message }),
    );
  });
  lines.on('close', () => shutdown(0));
}

main().catch((error) => {
  process.stderr.write(`driver: ${error.stack || error}\n`);
  process.exit(1);
});
