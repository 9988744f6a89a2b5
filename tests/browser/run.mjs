// Browser tests of the release managers' dashboard (web/), in Debian's headless Chromium
// driven by playwright-core, against a real lockstepd, real agents and a real artifact
// server, all started here as child processes and all stopped in `finally`.
//
//   LOCKSTEP_BIN_DIR=build/bin node tests/browser/run.mjs
//
// Environment: LOCKSTEP_BIN_DIR (default build/bin), CHROMIUM (default /usr/bin/chromium),
// LOCKSTEP_KEEP_WORK=1 keeps the temp directory (logs, screenshots). Prints
// "N passed, M failed" last and exits non-zero if any test failed.
//
// The gated pipeline's metric gate asks a real Prometheus (/usr/bin/prometheus, Debian
// package `prometheus`) started here, which scrapes a tiny exporter served by this script
// every second, so that gate verdicts and values are real ones reported by a real agent.
// axe-core (pinned in package.json) checks the page's accessibility in light and dark mode.

import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const BIN = path.resolve(ROOT, process.env.LOCKSTEP_BIN_DIR || 'build/bin');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// The serving regions of both pipelines. monolith has one more region, in bring-up (its own
// hosts, no gated ones); gated's eu-west-1 keeps its hooks' output (hook_output: none).
const REGIONS = ['us-east-1', 'eu-west-1', 'ap-southeast-2'];
const BRINGUP = 'sa-east-1';
const WITHHELD = 'eu-west-1';
const MONOLITH_HOSTS = 2 * (REGIONS.length + 1);
const XSS = '<img src=x onerror="window.__xss=1">';
const AXE = fs.readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');
// The commit and compare links of monolith's releases.
const COMMIT_LINK = 'https://git.example.com/shop/monolith/commit/{sha}';
const COMPARE_LINK = 'https://git.example.com/shop/monolith/compare/{from}...{to}';
// What the failing check hooks print: found on the page where the region lets it leave
// (after the XSS string), nowhere where it does not.
const BRINGUP_MARKER = 'marker-7d41: check failed in bring-up';
const WITHHELD_MARKER = 'marker-93c2: check failed, output kept';

const WORK = fs.mkdtempSync(path.join(os.tmpdir(), 'lockstep-browser-'));
const LOGS = path.join(WORK, 'logs');
const SHOTS = path.join(WORK, 'screenshots');
fs.mkdirSync(LOGS, { recursive: true });
fs.mkdirSync(SHOTS, { recursive: true });

const children = [];  // {name, proc}
let browser = null;

function log(...args) {
  console.log(`[${new Date().toISOString().slice(11, 23)}]`, ...args);
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

// Polls `fn` until it returns a truthy value; throws naming `what` after `ms`.
async function waitFor(what, ms, fn, every = 100) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      if (e.fatal) throw e;
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await sleep(every);
  }
}

function start(name, file, args, env = {}) {
  const out = fs.openSync(path.join(LOGS, `${name}.log`), 'a');
  const proc = spawn(file, args, { stdio: ['ignore', out, out], env: { ...process.env, ...env } });
  fs.closeSync(out);
  proc.on('error', (e) => log(`${name}: ${e.message}`));
  children.push({ name, proc });
  return proc;
}

async function stopAll() {
  for (const { proc } of children) {
    if (proc.exitCode === null && proc.signalCode === null) {
      try { process.kill(proc.pid, 'SIGTERM'); } catch { /* already gone */ }
    }
  }
  const deadline = Date.now() + 5000;
  for (const { name, proc } of children) {
    while (proc.exitCode === null && proc.signalCode === null && Date.now() < deadline) await sleep(50);
    if (proc.exitCode === null && proc.signalCode === null) {
      log(`${name} (pid ${proc.pid}) did not stop on SIGTERM; killing it`);
      try { process.kill(proc.pid, 'SIGKILL'); } catch { /* already gone */ }
    }
  }
}

function tail(file, n = 40) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-n).join('\n');
  } catch {
    return '';
  }
}

// ------------------------------------------------------------------ the fleet

const HEALTHY_CHECK = '#!/bin/sh\necho "healthy: $LOCKSTEP_VERSION"\nexit 0\n';

// A check hook that fails on host `agent` only, printing `lines` first.
function checkFailingOn(agent, lines) {
  const print = lines.map((l) => `  printf '%s\\n' '${l}'\n`).join('');
  return `#!/bin/sh\necho "checking $LOCKSTEP_VERSION on $LOCKSTEP_AGENT"\n`
    + `if [ "$LOCKSTEP_AGENT" = "${agent}" ]; then\n${print}  exit 1\nfi\nexit 0\n`;
}

function makeArtifact(dir, version, check = HEALTHY_CHECK) {
  const staging = path.join(WORK, 'staging', version);
  fs.mkdirSync(path.join(staging, 'deploy'), { recursive: true });
  fs.writeFileSync(path.join(staging, 'VERSION'), `${version}\n`);
  fs.writeFileSync(path.join(staging, 'deploy', 'start'),
    '#!/bin/sh\necho "started $LOCKSTEP_VERSION in $LOCKSTEP_REGION on $LOCKSTEP_AGENT"\nsleep 0.3\n', { mode: 0o755 });
  fs.writeFileSync(path.join(staging, 'deploy', 'check'), check, { mode: 0o755 });
  const file = path.join(dir, `app-${version}.tar.gz`);
  execFileSync('tar', ['-C', staging, '-czf', file, '.'], { timeout: 20000 });
  return { version, file: path.basename(file), sha256: createHash('sha256').update(fs.readFileSync(file)).digest('hex') };
}

const MONOLITH = `pipeline: monolith
regions:
  - us-east-1
  - eu-west-1
  - ap-southeast-2
  - {name: ${BRINGUP}, stage: bringup}
waves:
  - name: canary
    select: {per_region: 1}
    bake: 3s
  - name: all
    select: {per_region: "100%"}
    bake: 1s
concurrency: {per_region: 10}
health:
  check_hook: true
timeouts: {hook: 30s, fetch: 30s, agent_lost: 30s}
rollback: {automatic: true, tolerate_failed_hosts: 0}
links:
  commit: "${COMMIT_LINK}"
  compare: "${COMPARE_LINK}"
`;

// A failed wave of gated halts it (on_failure: pause), so that a failed host stays failed
// until it is aborted. Its metric gate is judged in us-east-1, from `prometheus`.
const GATED = (prometheus) => `pipeline: gated
regions: [us-east-1, {name: ${WITHHELD}, hook_output: none}, ap-southeast-2]
waves:
  - name: canary
    select: {per_region: 1}
    bake: 1s
  - name: all
    select: {per_region: "100%"}
    approval: manual
concurrency: {per_region: 10}
health:
  check_hook: true
gates:
  - metric:
      name: error-rate
      prometheus: "${prometheus}"
      query: 'sum(rate(http_errors_total{region="{region}"}[{window}]))'
      max: 0.05
      regions: [us-east-1]
      interval: 1s
      delay: 3s
      passes: 3
      inconclusive_deadline: 60s
timeouts: {hook: 30s, fetch: 30s, agent_lost: 30s, approval: 30m}
rollback: {automatic: true, tolerate_failed_hosts: 0, on_failure: pause}
`;

// A pipeline without hosts whose deploy window is shut all day today: its releases queue.
const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
const NIGHTLY = `pipeline: nightly
regions: [us-east-1]
waves:
  - name: all
    select: {per_region: "100%"}
window: {start: "00:00", end: "24:00", days: [${DAYS[(new Date().getUTCDay() + 2) % 7]}]}
`;

// The exporter Prometheus scrapes: an error counter of us-east-1 growing 0.012 a second, so
// that the gate's rate() stays below its max.
function startExporter() {
  const t0 = Date.now();
  const server = http.createServer((req, res) => {
    if (new URL(req.url, 'http://localhost').pathname !== '/metrics') {
      res.writeHead(404);
      res.end();
      return;
    }
    const errors = (0.012 * (Date.now() - t0)) / 1000;
    res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' });
    res.end('# TYPE http_errors_total counter\n'
      + `http_errors_total{region="us-east-1"} ${errors.toFixed(6)}\n`);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// A port nobody listens on right now (another process may still take it first).
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

const PROMETHEUS = '/usr/bin/prometheus';

// A real Prometheus scraping `target` ("127.0.0.1:PORT") every second, its config and data in
// WORK; stopped by PID with the other children. Returns its URL once /-/ready answers 200.
// A start that lost its port to another process is tried again on a new one.
async function startPrometheus(target) {
  if (!fs.existsSync(PROMETHEUS)) {
    throw new Error(`${PROMETHEUS} not found: this test needs the real Prometheus server (apt-get install prometheus)`);
  }
  const dir = path.join(WORK, 'prometheus');
  fs.mkdirSync(dir);
  const config = path.join(dir, 'prometheus.yml');
  // Prometheus refuses a scrape_timeout longer than the interval, hence both at 1s.
  fs.writeFileSync(config, `global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: exporter
    metrics_path: /metrics
    static_configs:
      - targets: ["${target}"]
`);
  for (let attempt = 1; ; attempt += 1) {
    const port = await freePort();
    const name = `prometheus-${attempt}`;
    const proc = start(name, PROMETHEUS, [
      `--config.file=${config}`, `--storage.tsdb.path=${path.join(dir, `data-${attempt}`)}`,
      `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn']);
    const url = `http://127.0.0.1:${port}`;
    const exited = () => proc.exitCode !== null || proc.signalCode !== null;
    try {
      await waitFor(`${name} to be ready at ${url}`, 20000, async () => {
        if (exited()) throw Object.assign(new Error(`${name} exited (${proc.exitCode ?? proc.signalCode}):\n${tail(path.join(LOGS, `${name}.log`), 10)}`), { fatal: true });
        const res = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1000) });
        return res.status === 200;
      }, 100);
      return url;
    } catch (e) {
      const lostPort = exited() && /address already in use/.test(tail(path.join(LOGS, `${name}.log`)));
      if (!lostPort || attempt === 3) throw e;
      log(`${name}: port ${port} was taken; starting again on another`);
      children.splice(children.findIndex((c) => c.proc === proc), 1);
    }
  }
}

// Waits until `query` returns at least one series from Prometheus at `url`.
async function waitForSample(url, query, ms) {
  await waitFor(`prometheus to return a sample for ${query}`, ms, async () => {
    const res = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(query)}`, { signal: AbortSignal.timeout(2000) });
    const body = await res.json();
    return body.status === 'success' && Array.isArray(body.data.result) && body.data.result.length > 0;
  }, 100);
}

const fleet = { http: '', grpc: '', admin: '', artifacts: '', exporter: null, prometheus: '', tokens: {} };

async function api(method, p, body, token = fleet.admin) {
  const res = await fetch(`${fleet.http}/api/v1${p}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(10000),
  });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  return { status: res.status, data };
}

function cli(...args) {
  const out = execFileSync(path.join(BIN, 'lockstep'), ['--output', 'json', ...args], {
    env: { ...process.env, LOCKSTEP_SERVER: fleet.grpc, LOCKSTEP_TOKEN: fleet.admin },
    timeout: 20000,
    encoding: 'utf8',
  });
  return JSON.parse(out);
}

async function startFleet() {
  for (const b of ['lockstepd', 'lockstep-agent', 'lockstep', 'lockstep-artifact-server']) {
    if (!fs.existsSync(path.join(BIN, b))) throw new Error(`${path.join(BIN, b)} not found; build it or set LOCKSTEP_BIN_DIR`);
  }
  const artifacts = path.join(WORK, 'artifacts');
  fs.mkdirSync(artifacts);
  const built = {};
  for (const v of ['v1.0.0', 'v1.1.0', 'v1.2.0', 'v1.3.0', 'g1.0.0', 'g1.1.0']) built[v] = makeArtifact(artifacts, v);
  built['v1.4.0'] = makeArtifact(artifacts, 'v1.4.0', checkFailingOn(`${BRINGUP}-2`, [BRINGUP_MARKER, XSS]));
  built['g1.2.0'] = makeArtifact(artifacts, 'g1.2.0', checkFailingOn(`${WITHHELD}-g1`, [WITHHELD_MARKER]));

  const artPort = path.join(WORK, 'artifacts.port');
  start('artifact-server', path.join(BIN, 'lockstep-artifact-server'), ['--dir', artifacts, '--port-file', artPort]);
  await waitFor('the artifact server port file', 10000, () => fs.existsSync(artPort) && fs.readFileSync(artPort, 'utf8').trim());
  fleet.artifacts = `http://127.0.0.1:${fs.readFileSync(artPort, 'utf8').trim()}`;

  fleet.exporter = await startExporter();
  fleet.prometheus = await startPrometheus(`127.0.0.1:${fleet.exporter.address().port}`);
  const prometheus = fleet.prometheus;
  const pipelines = path.join(WORK, 'pipelines');
  fs.mkdirSync(pipelines);
  fs.writeFileSync(path.join(pipelines, 'monolith.yaml'), MONOLITH);
  fs.writeFileSync(path.join(pipelines, 'gated.yaml'), GATED(prometheus));
  fs.writeFileSync(path.join(pipelines, 'nightly.yaml'), NIGHTLY);
  const data = path.join(WORK, 'data');
  const ports = path.join(WORK, 'ports.json');
  const d = start('lockstepd', path.join(BIN, 'lockstepd'), [
    '--data-dir', data, '--pipelines', pipelines, '--grpc-listen', '127.0.0.1:0',
    '--http-listen', '127.0.0.1:0', '--port-file', ports, '--web-dir', path.join(ROOT, 'web')]);
  await waitFor('lockstepd to write its port file', 20000, () => {
    if (d.exitCode !== null) throw Object.assign(new Error(`lockstepd exited with ${d.exitCode}:\n${tail(path.join(LOGS, 'lockstepd.log'))}`), { fatal: true });
    return fs.existsSync(ports);
  });
  const p = JSON.parse(fs.readFileSync(ports, 'utf8'));
  fleet.http = `http://127.0.0.1:${p.http}`;
  fleet.grpc = `127.0.0.1:${p.grpc}`;
  fleet.admin = fs.readFileSync(path.join(data, 'admin-token'), 'utf8').trim();

  fleet.tokens.viewer = cli('tokens', 'create', '--role', 'viewer', '--name', 'vera-viewer').token;
  fleet.tokens.manager = cli('tokens', 'create', '--role', 'release-manager', '--name', 'rita-release-manager').token;
  fleet.tokens.oncall = cli('tokens', 'create', '--role', 'on-call', '--name', 'otto-on-call').token;
  const agents = [];
  for (const region of [...REGIONS, BRINGUP]) {
    const enroll = cli('tokens', 'create', '--role', 'agent', '--region', region, '--name', `enroll-${region}`).token;
    const hosts = [['monolith', `${region}-1`], ['monolith', `${region}-2`]];
    if (region !== BRINGUP) hosts.push(['gated', `${region}-g1`]);
    for (const [pipeline, name] of hosts) {
      start(`agent-${name}`, path.join(BIN, 'lockstep-agent'), [
        '--server', fleet.grpc, '--region', region, '--name', name, '--pipeline', pipeline,
        '--root', path.join(WORK, 'hosts', name), '--token', enroll]);
      agents.push(name);
    }
  }
  await waitFor(`${agents.length} agents to connect`, 30000, async () => {
    const dead = children.find((c) => c.proc.exitCode !== null || c.proc.signalCode !== null);
    if (dead) throw Object.assign(new Error(`${dead.name} exited (${dead.proc.exitCode ?? dead.proc.signalCode}):\n${tail(path.join(LOGS, `${dead.name}.log`), 10)}`), { fatal: true });
    const r = await api('GET', '/agents');
    return r.status === 200 && r.data.filter((a) => a.connected).length >= agents.length;
  }, 200);
  // Prometheus hands static targets to its scrapers only on a 5-second tick: the gate's
  // query answers once two scrapes are in.
  await waitForSample(prometheus, 'sum(rate(http_errors_total{region="us-east-1"}[5s]))', 30000);
  log(`fleet up: ${fleet.http} (http), ${fleet.grpc} (grpc), ${agents.length} agents, artifacts at ${fleet.artifacts}, prometheus at ${prometheus}`);
  return built;
}

async function createRelease(pipeline, a, extra = {}) {
  const r = await api('POST', '/releases', {
    pipeline, version: a.version, artifact: `${fleet.artifacts}/${a.file}`, sha256: a.sha256, ...extra,
  }, fleet.tokens.manager);
  if (r.status !== 201) throw new Error(`creating release ${a.version}: HTTP ${r.status} ${JSON.stringify(r.data)}`);
  return r.data;
}

async function waitRelease(id, states, ms) {
  return waitFor(`release ${id} to reach ${states.join('/')}`, ms, async () => {
    const r = await api('GET', `/releases/${id}`);
    if (r.status !== 200) return null;
    if (['failed', 'rolled_back', 'aborted'].includes(r.data.state) && !states.includes(r.data.state)) {
      throw Object.assign(new Error(`release ${id} ended ${r.data.state}: ${r.data.reason}`), { fatal: true });
    }
    return states.includes(r.data.state) ? r.data : null;
  }, 200);
}

// ------------------------------------------------------------------ the browser

async function launch() {
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--no-first-run'],  // playwright gives each launch a fresh, empty profile directory
    timeout: 30000,
  });
  return browser;
}

// A new tab signed in with `token`. Console errors and page errors are collected.
// `prepare(page)` runs before the page loads, e.g. to route a request.
async function signedInPage(token, { viewport = { width: 1280, height: 900 }, colorScheme = 'light', prepare } = {}) {
  const context = await browser.newContext({ viewport, colorScheme });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') page.errors.push(m.text()); });
  if (prepare) await prepare(page);
  await page.goto(`${fleet.http}/`, { timeout: 15000 });
  await page.fill('#token-input', token);
  await page.click('#signin-button');
  await page.waitForSelector('#app:not([hidden]) .pipeline[data-pipeline="monolith"]', { timeout: 15000 });
  return page;
}

// The action buttons of the pipeline cards, as {action, disabled}.
async function pipelineButtons(page) {
  await page.waitForSelector('.pipeline button[data-action]', { timeout: 10000 });
  return page.$$eval('.pipeline button[data-action]', (bs) => bs.map((b) => ({ action: b.dataset.action, disabled: b.disabled })));
}

// Answers the page's GET /api/v1/whoami with `status` and `body` instead of lockstepd.
function fakeWhoami(status, body) {
  return (page) => page.route('**/api/v1/whoami', (route) => route.fulfill({
    status, contentType: 'application/json', body: JSON.stringify(body),
  }));
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

// The grid cells of the release view for release `id`, as {wave, region, state, text, count, bar}.
async function gridCells(page, id) {
  return page.$$eval(`#release-view[data-release-id="${id}"] #wave-grid tr.wave td.cell`, (tds) => tds.map((td) => ({
    wave: td.closest('tr').dataset.wave,
    region: td.dataset.region,
    state: td.dataset.state || '',
    text: td.textContent,
    count: Boolean(td.querySelector('.count')),
    bar: Boolean(td.querySelector('.bar')),
  })));
}

// Waits until the release view of final release `id` shows only end states: no cell
// deploying, no wave done next to a cell that is not.
async function waitEndStates(page, id) {
  const sel = `#release-view[data-release-id="${id}"]`;
  await page.waitForFunction((s) => {
    const cells = [...document.querySelectorAll(`${s} #wave-grid tr.wave td.cell`)];
    return cells.length > 0 && cells.every((td) => td.classList.contains('none')
      || ['done', 'failed', 'reverted', 'pending', 'stopped'].includes(td.dataset.state));
  }, sel, { timeout: 10000 }).catch(async () => {
    throw new Error(`release ${id} still shows work in progress: ${JSON.stringify(await gridCells(page, id))}`);
  });
  const cells = await gridCells(page, id);
  const bad = cells.filter((c) => /deploying/.test(c.text) || c.state === 'deploying');
  assert(!bad.length, `final release ${id} shows deploying cells: ${JSON.stringify(bad)}`);
}

// Runs axe-core in `page` and throws naming every serious or critical violation. axe is
// evaluated through the DevTools protocol, which the page's CSP does not govern.
async function axeCheck(page, what) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(AXE);
  const found = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.slice(0, 4).map((n) => `${n.target.join(' ')}: ${String(n.failureSummary).replace(/\s+/g, ' ')}`),
    }));
  });
  const bad = found.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const minor = found.filter((v) => !bad.includes(v));
  if (minor.length) log(`axe (${what}), not serious: ${minor.map((v) => `${v.id} (${v.impact})`).join(', ')}`);
  assert(!bad.length, `axe (${what}): ${bad.map((v) => `${v.id} [${v.impact}] ${v.help}: ${v.nodes.join(' | ')}`).join('; ')}`);
}

// Collects what the page's live region says, in window.__said.
async function recordAnnouncements(page) {
  await page.evaluate(() => {
    if (window.__said) return;
    window.__said = [];
    const el = document.getElementById('announcer');
    const seen = new WeakSet();
    new MutationObserver(() => {
      for (const p of el.querySelectorAll('p')) {
        if (!seen.has(p)) {
          seen.add(p);
          window.__said.push(p.textContent);
        }
      }
    }).observe(el, { childList: true, subtree: true });
  });
}

// Counts, in window.__patches[name], the batches of changes made to the element `sel`.
async function countPatches(page, name, sel) {
  await page.evaluate(([n, s]) => {
    window.__patches = window.__patches || {};
    window.__patches[n] = 0;
    new MutationObserver(() => { window.__patches[n] += 1; })
      .observe(document.querySelector(s), { subtree: true, childList: true, characterData: true, attributes: true });
  }, [name, sel]);
}
const patches = (page, name) => page.evaluate((n) => window.__patches[n], name);

// The requests `page` sends whose method and path match, counted from now on.
function countRequests(page, method, pathRe) {
  const c = { n: 0, bodies: [] };
  page.on('request', (req) => {
    if (req.method() === method && pathRe.test(new URL(req.url()).pathname)) {
      c.n += 1;
      c.bodies.push(req.postData() || '');
    }
  });
  return c;
}

const FINAL_HOST_STEPS = ['done', 'failed', 'reverted', 'revert_failed'];

// ------------------------------------------------------------------ tests

const results = [];
async function test(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    log(`PASS ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    results.push({ name, ok: false });
    log(`FAIL ${name}: ${e.stack || e}`);
  }
}

async function main() {
  const built = await startFleet();
  // A first release, so that later ones have a previous version to roll back to.
  const first = await createRelease('monolith', built['v1.0.0'], { commit: 'a1b2c3d', author: 'dev@example.com' });
  const firstG = await createRelease('gated', built['g1.0.0']);
  await waitRelease(first.id, ['succeeded'], 60000);
  const g = await waitFor('g1.0.0 to wait for approval', 60000, async () => {
    const r = await api('GET', `/releases/${firstG.id}`);
    return r.data && r.data.state !== 'queued' && r.data.waves && r.data.waves[1] && r.data.waves[1].state === 'awaiting_approval' ? r.data : null;
  }, 200);
  const approved = await api('POST', `/releases/${g.id}/approve`, undefined, fleet.tokens.manager);
  assert(approved.status === 200, `approving g1.0.0 over the API: HTTP ${approved.status}`);
  await waitRelease(firstG.id, ['succeeded'], 60000);
  const whoami = await api('GET', '/whoami', undefined, fleet.tokens.viewer);
  const hasWhoami = whoami.status === 200;
  if (!hasWhoami) log(`note: GET /api/v1/whoami answers ${whoami.status}; the page cannot learn its role and disables every action`);

  await launch();
  const page = await signedInPage(fleet.tokens.manager);
  await page.evaluate(() => { window.__sameDocument = true; });

  await test('the grid and the timeline follow a real rollout live to success, and its changes are announced', async () => {
    await page.waitForSelector('#live[data-mode="live"]', { timeout: 10000 });
    await recordAnnouncements(page);
    const rel = await createRelease('monolith', built['v1.1.0'], { commit: 'feedbeef', author: 'ana@example.com' });
    const view = `#release-view[data-release-id="${rel.id}"]`;
    await page.waitForSelector(view, { timeout: 15000 });
    const seen = new Set();
    const watch = setInterval(async () => {
      try { seen.add(await page.getAttribute(view, 'data-state', { timeout: 500 })); } catch { /* between renders */ }
    }, 100);
    try {
      await page.waitForSelector(`${view} #wave-grid tr.wave[data-wave="0"][data-state="baking"]`, { timeout: 30000 });
      await page.waitForSelector('#bake-countdown', { timeout: 5000 });
      // The next wave has not started: its cells are empty and neutral, not earlier counts.
      const later = (await gridCells(page, rel.id)).filter((c) => c.wave === '1');
      assert(later.length === REGIONS.length, `wave 1 has ${later.length} cells`);
      for (const c of later) {
        assert(c.state === 'pending' && !c.count && !c.bar && c.text.trim() === 'pending',
          `unstarted wave 1 in ${c.region} shows ${JSON.stringify(c)}`);
      }
      // The timeline: the first wave's deploy and bake as bars, the second one empty.
      const line = await page.$$eval(`${view} #wave-times li.wave-time`, (ls) => ls.map((l) => ({
        wave: l.dataset.wave,
        segs: [...l.querySelectorAll('.seg')].map((x) => `${x.classList[1]}:${x.getBoundingClientRect().width > 0}`),
        empty: l.querySelector('.track').classList.contains('empty'),
        text: l.querySelector('.wave-time-text').textContent,
      })));
      assert(line.length === 2, `the timeline has ${line.length} rows`);
      for (const seg of ['seg-deploy:true', 'seg-bake:true']) {
        assert(line[0].segs.includes(seg), `the first wave's bars are ${line[0].segs.join(', ')}, lacking ${seg}`);
      }
      assert(line[1].empty && !line[1].segs.length && line[1].text === 'not started', `the second wave's row: ${JSON.stringify(line[1])}`);
      await page.screenshot({ path: path.join(SHOTS, 'release-view.png'), fullPage: true });
      for (const w of [0, 1]) {
        await page.waitForSelector(`${view} #wave-grid tr.wave[data-wave="${w}"][data-state="done"]`, { timeout: 60000 });
        for (const region of REGIONS) {
          const cell = await page.textContent(`${view} #wave-grid tr.wave[data-wave="${w}"] td.cell[data-region="${region}"] .count`);
          const expected = w === 0 ? '1/1' : '2/2';
          assert(cell === expected, `wave ${w} in ${region} shows ${cell}, expected ${expected}`);
        }
      }
      await page.waitForSelector(`${view}[data-state="succeeded"]`, { timeout: 60000 });
      await waitEndStates(page, rel.id);
      const cells = await gridCells(page, rel.id);
      assert(cells.every((c) => c.state === 'done'), `succeeded release shows ${JSON.stringify(cells)}`);
    } finally {
      clearInterval(watch);
    }
    assert(seen.has('rolling'), `the page never showed the release rolling (saw ${[...seen].join(', ')})`);
    // One live region says what changed: the release's end and its waves' steps.
    const said = await waitFor('the release\'s success to be announced', 10000, async () => {
      const all = await page.evaluate(() => window.__said);
      return all.some((t) => t.startsWith(`Release #${rel.id}, monolith v1.1.0: succeeded`)) ? all : null;
    });
    assert(said.some((t) => t === `Release #${rel.id}, monolith v1.1.0, wave canary: baking`), `announced: ${JSON.stringify(said)}`);
    const live = await page.$$eval('[aria-live], [role="status"], [role="alert"], [role="log"]', (es) => es.map((e) => e.id));
    assert(live.join() === 'announcer,signin-error,confirm-error', `live regions: ${live.join(', ')}`);
    assert(await page.evaluate(() => window.__sameDocument === true), 'the page was reloaded');
    await page.waitForFunction(() => [...document.querySelectorAll('.pipeline[data-pipeline="monolith"] .host')]
      .every((h) => h.dataset.version === 'v1.1.0'), null, { timeout: 15000 });
    const mixed = await page.textContent('#mixed-window');
    assert(/canary/.test(mixed), `mixed-version window not shown: ${mixed}`);
  });

  await test('the fleet view marks the bring-up region, and only it, and the region that keeps its hook output', async () => {
    const status = await api('GET', '/pipelines/monolith');
    const stages = Object.fromEntries(status.data.regions.map((r) => [r.region, r.stage]));
    assert(stages[BRINGUP] === 'bringup' && REGIONS.every((r) => stages[r] === 'serving'), `the server reports stages ${JSON.stringify(stages)}`);
    const region = `.pipeline[data-pipeline="monolith"] .region[data-region="${BRINGUP}"]`;
    await page.waitForSelector(`${region}[data-stage="bringup"] .flag.bringup`, { state: 'visible', timeout: 10000 });
    const flag = await page.$eval(`${region} .flag.bringup`, (e) => ({ text: e.textContent, title: e.title }));
    assert(flag.text.startsWith('bring-up'), `the bring-up flag says ${JSON.stringify(flag.text)}`);
    for (const words of ['takes every release in waves of its own', 'its failures never hold the serving regions']) {
      assert(flag.title.includes(words) && flag.text.includes(words), `the bring-up flag does not explain "${words}": ${JSON.stringify(flag)}`);
    }
    const hosts = await page.$$eval(`${region} .host`, (hs) => hs.map((x) => x.dataset.host));
    assert(hosts.length === 2, `the bring-up region lists hosts ${hosts.join(', ')}`);
    for (const p of ['monolith', 'gated']) {
      for (const r of REGIONS) {
        const box = `.pipeline[data-pipeline="${p}"] .region[data-region="${r}"]`;
        assert(await page.getAttribute(box, 'data-stage') === 'serving', `${p} ${r} is not shown serving`);
        assert(!(await page.$(`${box} .flag.bringup`)), `${p} ${r} is flagged bring-up`);
        const withheld = await page.$(`${box} .withheld`);
        const keeps = p === 'gated' && r === WITHHELD;
        assert(Boolean(withheld) === keeps, `${p} ${r} ${keeps ? 'does not say' : 'says'} its hook output is withheld`);
        if (keeps) assert(await withheld.textContent() === 'output withheld', `the hint says ${await withheld.textContent()}`);
      }
    }
  });

  await test('the release view shows the commit and compare links, the artifact and its sha256, who created it, and each wave\'s stages on a timeline', async () => {
    const newest = (await api('GET', '/releases?pipeline=monolith&limit=1')).data[0];
    assert(newest && newest.version === 'v1.1.0', `newest monolith release is ${newest && newest.version}`);
    const rel = (await api('GET', `/releases/${newest.id}`)).data;
    // What the server renders from the pipeline's links, and who it says created it.
    const commitUrl = COMMIT_LINK.replace('{sha}', 'feedbeef');
    const compareUrl = COMPARE_LINK.replace('{from}', 'a1b2c3d').replace('{to}', 'feedbeef');
    assert(rel.commit_url === commitUrl, `the server's commit_url is ${JSON.stringify(rel.commit_url)}, expected ${commitUrl}`);
    assert(rel.compare_url === compareUrl, `the server's compare_url is ${JSON.stringify(rel.compare_url)}, expected ${compareUrl}`);
    assert(rel.created_by === 'rita-release-manager', `the server's created_by is ${JSON.stringify(rel.created_by)}`);
    const view = `#release-view[data-release-id="${rel.id}"]`;
    await page.waitForSelector(view, { timeout: 10000 });
    const artifact = await page.textContent(`${view} #release-artifact`);
    assert(artifact === `${fleet.artifacts}/${built['v1.1.0'].file}`, `artifact shown as ${artifact}`);
    const sha = built['v1.1.0'].sha256;
    const shown = await page.textContent(`${view} #release-sha256 .sha256`);
    const title = await page.getAttribute(`${view} #release-sha256 .sha256`, 'title');
    assert(shown === `${sha.slice(0, 12)}…`, `sha256 shown as ${shown}`);
    assert(title === sha, `sha256 title is ${title}`);
    const author = await page.textContent(`${view} #release-author`);
    assert(author === 'ana@example.com', `author shown as ${author}`);
    const by = await page.textContent(`${view} #release-created-by`);
    assert(by === 'rita-release-manager', `created by shown as ${by}`);
    const commit = await page.$eval(`${view} #release-commit a.commit`, (a) => ({ href: a.href, text: a.textContent }));
    assert(commit.href === commitUrl && commit.text === 'feedbeef', `the commit link is ${JSON.stringify(commit)}`);
    const compare = await page.$eval(`${view} #release-compare a.compare`, (a) => ({ href: a.href, text: a.textContent }));
    assert(compare.href === compareUrl && compare.text === 'compare a1b2c3d…feedbeef', `the compare link is ${JSON.stringify(compare)}`);
    const row = `#releases tr.release-row[data-release="${rel.id}"]`;
    assert(await page.textContent(`${row} td.created-by`) === 'rita-release-manager', 'the history table does not say who created it');
    assert(await page.getAttribute(`${row} td.commit a`, 'href') === commitUrl, 'the history table does not link the commit');
    // Each wave's bars lie on one axis, in order: deploy starts where the wave starts, the
    // bake follows the deploy, and the second wave starts after the first.
    const bars = await page.$$eval(`${view} #wave-times li.wave-time`, (ls) => ls.map((l) => Object.fromEntries(
      [...l.querySelectorAll('.seg')].map((x) => [x.classList[1], { left: parseFloat(x.style.left), width: parseFloat(x.style.width) }]))));
    assert(bars.length === 2 && bars.every((b) => b['seg-deploy'] && b['seg-bake'] && b['seg-switch']), `the timeline's bars: ${JSON.stringify(bars)}`);
    assert(bars[0]['seg-deploy'].left < 5, `the first wave starts at ${bars[0]['seg-deploy'].left}%`);
    for (const b of bars) {
      assert(b['seg-bake'].left >= b['seg-deploy'].left + b['seg-deploy'].width - 0.01, `a bake starts before its deploy ends: ${JSON.stringify(b)}`);
    }
    assert(bars[1]['seg-deploy'].left >= bars[0]['seg-bake'].left + bars[0]['seg-bake'].width - 0.01, `the second wave starts before the first ends: ${JSON.stringify(bars)}`);
    const axis = await page.textContent(`${view} #timeline-axis`);
    assert(/^\d\d:\d\d:\d\d UTCtook [\d.]+s\d\d:\d\d:\d\d UTC$/.test(axis), `the timeline's axis reads ${JSON.stringify(axis)}`);
    const lines = await page.$$eval(`${view} #wave-times li.wave-time`, (ls) => ls.map((l) => ({ wave: l.dataset.wave, text: l.textContent })));
    assert(lines.length === 2, `${lines.length} wave time lines: ${JSON.stringify(lines)}`);
    const clock = '\\d\\d:\\d\\d:\\d\\d UTC';
    for (const l of lines) {
      for (const part of [`started ${clock}`, `switched ${clock}`, `bake ${clock}( – ${clock})? \\(`, `ended ${clock}, took `]) {
        assert(new RegExp(part).test(l.text), `wave ${l.wave} line lacks /${part}/: ${l.text}`);
      }
    }
  });

  await test('the UTC/local switch changes every time\'s zone and is remembered', async () => {
    const created = '#release-view #release-created';
    const before = await page.textContent(created);
    assert(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/.test(before), `created shown as ${JSON.stringify(before)}`);
    assert(await page.getAttribute('#tz-toggle', 'data-zone') === 'utc', 'the default zone is not UTC');
    await page.click('#tz-toggle');
    await page.waitForFunction((sel) => /UTC[+-]\d\d:\d\d$/.test(document.querySelector(sel).textContent), created, { timeout: 10000 });
    const audit = await page.$$eval('#audit tr.audit-row td:first-child', (tds) => tds.map((td) => td.textContent));
    assert(audit.length && audit.every((t) => /UTC[+-]\d\d:\d\d$/.test(t)), `audit times after the switch: ${audit.slice(0, 3).join(', ')}`);
    assert(await page.evaluate(() => localStorage.getItem('lockstep.zone')) === 'local', 'the choice is not kept in localStorage');
    await page.click('#tz-toggle');
    await page.waitForFunction((sel) => / UTC$/.test(document.querySelector(sel).textContent), created, { timeout: 10000 });
    assert(await page.evaluate(() => localStorage.getItem('lockstep.zone')) === 'utc', 'switching back is not kept');
  });

  await test('axe-core finds no serious or critical violation at rest, in light and dark mode', async () => {
    await page.waitForSelector('#needs-you[hidden]', { state: 'attached', timeout: 10000 });
    await axeCheck(page, 'light, at rest');
    const dark = await signedInPage(fleet.tokens.manager, { colorScheme: 'dark' });
    try {
      await dark.waitForSelector('#release-view:not([hidden])', { timeout: 10000 });
      await axeCheck(dark, 'dark, at rest');
    } finally {
      await dark.context().close();
    }
  });

  await test('a wave awaiting approval tops "Needs you" with its deadline, its gates\' recent verdicts, and is approved there from the keyboard with a comment', async () => {
    if (!hasWhoami) throw new Error(`GET /api/v1/whoami answers ${whoami.status}, so the page cannot know its role and keeps every action disabled`);
    const approves = countRequests(page, 'POST', /^\/api\/v1\/releases\/\d+\/approve$/);
    const rel = await createRelease('gated', built['g1.1.0'], { commit: 'cafe0001', author: 'max@example.com' });
    try {
      const view = `#release-view[data-release-id="${rel.id}"]`;
      await page.waitForSelector(`${view} #wave-grid tr.wave[data-wave="1"][data-state="awaiting_approval"]`, { timeout: 60000 });
      const state = await page.getAttribute(view, 'data-state');
      assert(state === 'rolling', `release is ${state} before approval`);
      const server = (await api('GET', `/releases/${rel.id}`)).data;
      const wave = server.waves[1];
      assert(wave.approval_requested_at_ms > 0 && wave.approval_deadline_ms > Date.now(),
        `the server's approval times: ${JSON.stringify({ asked: wave.approval_requested_at_ms, deadline: wave.approval_deadline_ms })}`);
      // "Needs you" lists it: a primary Approve, the deadline counting down, a comment field.
      const need = `#needs-you:not([hidden]) li.need[data-need="approval"][data-release="${rel.id}"]`;
      await page.waitForSelector(need, { timeout: 10000 });
      const needText = await page.textContent(`${need} .need-text`);
      assert(/gated g1\.1\.0: wave all awaits approval/.test(needText), `needs-you says ${JSON.stringify(needText)}`);
      assert(await page.textContent(`${need} .need-by`) === 'created by rita-release-manager', 'needs-you does not say who created it');
      await page.waitForSelector(`${need} button[data-action="approve"].primary:not([disabled])`, { timeout: 5000 });
      const actions = await page.$$eval(`${need} button[data-action]`, (bs) => bs.map((b) => b.dataset.action));
      assert(actions.join() === 'approve,abort', `needs-you offers ${actions.join(', ')}`);
      const deadline = `${need} .need-deadline .countdown`;
      const first = await page.textContent(deadline);
      const until = new Date(wave.approval_deadline_ms).toISOString().slice(11, 19);
      assert(new RegExp(`^(29m|30m)( \\d+s)? left to approve \\(until ${until} UTC\\)$`).test(first), `the deadline reads ${JSON.stringify(first)}`);
      await page.waitForFunction(([sel, was]) => document.querySelector(sel).textContent !== was, [deadline, first], { timeout: 5000 });
      assert(/left to approve/.test(await page.textContent(`${view} #approval-countdown`)), 'the release view shows no deadline');
      const title = await page.title();
      assert(/^\(\d+\) /.test(title), `the tab title is ${JSON.stringify(title)}`);
      // The timeline shows the wait for approval after the bake, and says until when.
      const last = `${view} #wave-times li.wave-time[data-wave="1"]`;
      await page.waitForSelector(`${last} .seg-approval`, { timeout: 5000 });
      const lastText = await page.textContent(`${last} .wave-time-text`);
      assert(/ · awaiting approval since \d\d:\d\d:\d\d UTC, times out \d\d:\d\d:\d\d UTC · running for /.test(lastText), `the last wave reads ${JSON.stringify(lastText)}`);
      // The gate's recent verdicts and values, with its query and bound.
      const gate = `${view} #gates tr.gate[data-gate="error-rate"][data-region="us-east-1"]`;
      await page.waitForSelector(`${gate} svg.spark circle.spark-point`, { timeout: 10000 });
      const g = await page.$eval(gate, (tr) => ({
        points: tr.querySelectorAll('svg.spark circle.spark-point.v-pass').length,
        line: Boolean(tr.querySelector('svg.spark polyline.spark-line')),
        bound: Boolean(tr.querySelector('svg.spark line.spark-bound')),
        label: tr.querySelector('svg.spark').getAttribute('aria-label'),
        query: tr.querySelector('code.gate-query') ? tr.querySelector('code.gate-query').textContent : '',
        value: tr.querySelector('td.num').textContent,
      }));
      const serverGate = server.gates.find((x) => x.gate === 'error-rate' && x.region === 'us-east-1');
      assert(g.points >= 2 && g.line && g.bound, `the sparkline: ${JSON.stringify(g)}`);
      assert(/^\d+ recent verdicts, oldest first: \d+ pass; values [\d.]+ to [\d.]+; passes ≤ 0\.05$/.test(g.label), `the sparkline says ${JSON.stringify(g.label)}`);
      assert(g.query === 'sum(rate(http_errors_total{region="us-east-1"}[{window}]))', `the query reads ${JSON.stringify(g.query)} (server: ${JSON.stringify(serverGate && serverGate.query)})`);
      assert(/^0\.0\d+ \(≤ 0\.05\)$/.test(g.value), `the value reads ${JSON.stringify(g.value)}`);
      // Mid-rollout, with something that needs a human: accessible in light and dark mode.
      await axeCheck(page, 'light, mid-rollout');
      const dark = await signedInPage(fleet.tokens.manager, { colorScheme: 'dark' });
      try {
        await dark.waitForSelector(need, { timeout: 10000 });
        await dark.waitForSelector(`${view} #gates svg.spark`, { timeout: 10000 });
        await axeCheck(dark, 'dark, mid-rollout');
      } finally {
        await dark.context().close();
      }
      // The README's picture: what needs you, the fleet, and this release's timeline.
      await page.evaluate(() => window.scrollTo(0, 0));
      const bottom = await page.$eval('#release-view .timeline-legend', (e) => Math.ceil(e.getBoundingClientRect().bottom + window.scrollY + 16));
      await page.screenshot({ path: path.join(SHOTS, 'overview.png'), fullPage: true, clip: { x: 0, y: 0, width: 1280, height: bottom } });
      // Approved from the keyboard: a comment, then Enter.
      const comment = 'canary clean: error rate flat';
      await page.focus(`${need} input.approve-comment`);
      await page.keyboard.type(comment);
      await page.keyboard.press('Enter');
      await page.waitForSelector(`${view} #wave-grid tr.wave[data-wave="1"][data-state="done"]`, { timeout: 60000 });
      await page.waitForSelector(`${view}[data-state="succeeded"]`, { timeout: 60000 });
      await waitEndStates(page, rel.id);
      assert(approves.n === 1, `the page sent ${approves.n} approvals`);
      assert(JSON.parse(approves.bodies[0]).comment === comment, `the approval's body was ${approves.bodies[0]}`);
      const approvedBy = await page.textContent(`${view} #wave-grid tr.wave[data-wave="1"] .approved`);
      assert(approvedBy.includes('rita-release-manager'), `approval not attributed: ${approvedBy}`);
      const facts = await page.textContent(`${view} #release-approved-by`);
      assert(/^rita-release-manager \(all, \d\d:\d\d:\d\d UTC\)$/.test(facts), `approved by reads ${JSON.stringify(facts)}`);
      const approvedLine = await page.textContent(`${last} .wave-time-text`);
      assert(/ · approved \d\d:\d\d:\d\d UTC by rita-release-manager after /.test(approvedLine), `the last wave reads ${JSON.stringify(approvedLine)}`);
      // The comment went to the audit log.
      const entry = `#audit tr.audit-row[data-action="release.approve"]`;
      await page.waitForFunction(([sel, want]) => [...document.querySelectorAll(sel)].some((tr) => tr.textContent.includes(want)),
        [entry, `all; comment: ${comment}`], { timeout: 10000 }).catch(async () => {
        throw new Error(`no audit entry with the comment: ${JSON.stringify(await page.$$eval(entry, (trs) => trs.map((t) => t.textContent)))}`);
      });
      // Nothing waits for anyone now: the section hides and the title loses its count.
      await page.waitForSelector('#needs-you[hidden]', { state: 'attached', timeout: 10000 });
      await page.waitForFunction(() => !document.title.startsWith('('), null, { timeout: 5000 });
    } finally {
      // Never leave it waiting: later releases of gated would queue behind it.
      if (!(await api('GET', `/releases/${rel.id}`)).data.final) {
        await api('POST', `/releases/${rel.id}/approve`, undefined, fleet.tokens.manager);
        await waitRelease(rel.id, ['succeeded'], 60000).catch((e) => log(`release ${rel.id}: ${e.message}`));
      }
    }
  });

  await test('an on-call rollback confirmed in the dialog puts every region back, offers no Approve or Abort while it runs, and names who rolled back', async () => {
    if (!hasWhoami) throw new Error(`GET /api/v1/whoami answers ${whoami.status}, so the page cannot know its role and keeps every action disabled`);
    // The release manager's page watches which actions the release view offers, state by
    // state, while the rollback runs.
    await page.evaluate(() => {
      window.__offered = [];
      const view = document.getElementById('release-view');
      const note = () => {
        if (!/\(rollback\)$/.test(document.getElementById('release-title').textContent)) return;
        window.__offered.push({ state: view.dataset.state,
          actions: [...view.querySelectorAll('#release-actions button')].map((b) => b.dataset.action) });
      };
      new MutationObserver(note).observe(view, { subtree: true, childList: true, characterData: true, attributes: true });
    });
    const oncall = await signedInPage(fleet.tokens.oncall);
    try {
      await oncall.click('.pipeline[data-pipeline="monolith"] button[data-action="rollback"]:not([disabled])', { timeout: 5000 });
      await oncall.waitForSelector('#confirm-dialog[open]', { timeout: 5000 });
      const target = await oncall.textContent('#rollback-target');
      const hosts = await oncall.textContent('#rollback-hosts');
      const regions = await oncall.textContent('#rollback-regions');
      assert(target === 'v1.0.0', `dialog names version ${target}, expected v1.0.0`);
      // Every host of the pipeline, the bring-up region's too.
      assert(hosts === `${MONOLITH_HOSTS} hosts`, `dialog names ${hosts}, expected ${MONOLITH_HOSTS} hosts`);
      for (const r of [...REGIONS, BRINGUP]) assert(regions.includes(r), `dialog does not name region ${r}: ${regions}`);
      await oncall.focus('#confirm-ok');
      await oncall.keyboard.press('Enter');
      await oncall.waitForSelector('#confirm-dialog[open]', { state: 'hidden', timeout: 5000 });
    } finally {
      await oncall.context().close();
    }
    for (const r of [...REGIONS, BRINGUP]) {
      await page.waitForSelector(`.pipeline[data-pipeline="monolith"] .region[data-region="${r}"][data-version="v1.0.0"]`, { timeout: 60000 });
    }
    const versions = await page.$$eval('.pipeline[data-pipeline="monolith"] .host', (hs) => hs.map((h) => h.dataset.version));
    assert(versions.length === MONOLITH_HOSTS && versions.every((v) => v === 'v1.0.0'), `hosts show ${versions.join(', ')}`);
    const status = await api('GET', '/pipelines/monolith');
    const real = status.data.regions.flatMap((r) => r.hosts.map((h) => h.current_version));
    assert(real.every((v) => v === 'v1.0.0'), `the server reports ${real.join(', ')}`);
    // Who rolled back is the on-call person, everywhere; the version's author stays.
    const back = (await api('GET', '/releases?pipeline=monolith&kind=rollback&limit=1')).data[0];
    assert(back && back.created_by === 'otto-on-call', `the server says the rollback was created by ${JSON.stringify(back && back.created_by)}`);
    await page.evaluate((id) => { location.hash = `#release=${id}`; }, back.id);
    const view = `#release-view[data-release-id="${back.id}"]`;
    await page.waitForSelector(`${view}[data-state="succeeded"]`, { timeout: 15000 });
    const facts = await page.$$eval(`${view} #release-facts > div`, (ds) => Object.fromEntries(ds.map((d) => [d.querySelector('dt').textContent, d.querySelector('dd').textContent])));
    assert(facts['Rolled back by'] === 'otto-on-call', `the release view says ${JSON.stringify(facts)}`);
    assert(facts['Author of this version'] === 'dev@example.com', `the release view says ${JSON.stringify(facts)}`);
    await page.waitForSelector(`#releases tr.release-row[data-release="${back.id}"] td.created-by`, { timeout: 10000 });
    assert(await page.textContent(`#releases tr.release-row[data-release="${back.id}"] td.created-by`) === 'otto-on-call', 'the history table does not name the on-call person');
    const offered = await page.evaluate(() => window.__offered);
    const running = offered.filter((o) => !['succeeded', 'failed', 'rolled_back', 'aborted', 'superseded'].includes(o.state));
    assert(running.length > 0, `the page never showed the rollback running: ${JSON.stringify(offered.slice(0, 5))}`);
    const wrong = offered.filter((o) => o.actions.length);
    assert(!wrong.length, `during the rollback the page offered ${JSON.stringify(wrong.slice(0, 3))}`);
    // lockstepd holds the pipeline after an on-call rollback, until someone resumes it.
    await waitFor('the pipeline to be held', 15000, async () => (await api('GET', '/pipelines/monolith')).data.paused === true);
    const held = await api('GET', '/pipelines/monolith');
    assert(String(held.data.paused_by).startsWith('on-call rollback'), `paused by ${held.data.paused_by}`);
    const resumed = await api('POST', '/pipelines/monolith/resume');
    assert(resumed.status === 200, `resume answered ${resumed.status}`);
    await page.evaluate(() => { location.hash = ''; });
  });

  await test('updates patch the page in place: focus and a text selection survive ten updates', async () => {
    const sha = 'c0ffee5e1ec7ed0123456789abcdef0123456789';
    const rel = await createRelease('monolith', built['v1.2.0'], { commit: sha, author: 'pia@example.com' });
    await page.evaluate((id) => { location.hash = `#release=${id}`; }, rel.id);
    const view = `#release-view[data-release-id="${rel.id}"]`;
    await page.waitForSelector(`${view}[data-state="rolling"] #release-actions button[data-action="abort"]`, { timeout: 15000 });
    let reads = 0;
    const onResponse = (res) => {
      if (res.request().method() === 'GET' && new URL(res.url()).pathname === `/api/v1/releases/${rel.id}`) reads += 1;
    };
    page.on('response', onResponse);
    try {
      // The commit selected as a reader would to copy it, and the Abort button focused.
      await page.evaluate(() => {
        const a = document.querySelector('#release-commit .commit');
        const range = document.createRange();
        range.selectNodeContents(a);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        const b = document.querySelector('#release-actions button[data-action="abort"]');
        b.focus();
        window.__kept = { button: b, text: a.firstChild };
      });
      await countPatches(page, 'view', '#release-view');
      const start = reads;
      await waitFor('ten updates of the release view, three of them after reading the release again', 30000, async () => {
        const n = await patches(page, 'view');
        if (n < 10 && await page.getAttribute('#release-view', 'data-state') !== 'rolling') {
          throw Object.assign(new Error(`the release ended after ${n} updates`), { fatal: true });
        }
        return n >= 10 && reads - start >= 3 ? n : null;
      }).then((n) => log(`${n} updates, ${reads - start} of them re-reads`));
      const kept = await page.evaluate(() => ({
        focus: document.activeElement === window.__kept.button,
        connected: window.__kept.button.isConnected && window.__kept.text.isConnected,
        selection: getSelection().toString(),
        active: document.activeElement.outerHTML.slice(0, 80),
      }));
      assert(kept.connected, 'the focused button or the selected text was replaced');
      assert(kept.focus, `focus moved to ${kept.active}`);
      assert(kept.selection === sha, `the selection is ${JSON.stringify(kept.selection)}`);
    } finally {
      page.off('response', onResponse);
    }
    await waitRelease(rel.id, ['succeeded'], 60000);
    await page.waitForSelector(`${view}[data-state="succeeded"]`, { timeout: 15000 });
    await page.evaluate(() => { getSelection().removeAllRanges(); location.hash = ''; });
  });

  await test('a release queued behind a freeze is listed under "Needs you" with the reason', async () => {
    const frozen = await api('POST', '/pipelines/monolith/freeze', { reason: 'incident 42' }, fleet.tokens.manager);
    assert(frozen.status === 200, `freeze answered ${frozen.status}`);
    let rel = null;
    try {
      rel = await createRelease('monolith', built['v1.1.0'], { commit: 'frozen01', author: 'fay@example.com' });
      const need = `#needs-you:not([hidden]) li.need[data-need="queued"][data-release="${rel.id}"]`;
      // The page learns of switches by reading the pipelines (they are not release events).
      const expected = 'v1.1.0 waits: monolith frozen by rita-release-manager: incident 42';
      await page.waitForFunction(([sel, want]) => {
        const el = document.querySelector(`${sel} .need-text`);
        return el && el.textContent === want;
      }, [need, expected], { timeout: 15000 }).catch(async () => {
        throw new Error(`needs-you says ${JSON.stringify(await page.textContent('#needs-you').catch(() => ''))}`);
      });
      // What helps here is unfreezing; approving or aborting is not offered.
      const actions = await page.$$eval(`${need} button[data-action]`, (bs) => bs.map((b) => b.dataset.action));
      assert(actions.join() === 'unfreeze', `needs-you offers ${actions.join(', ')}`);
      assert(/^\(\d+\) /.test(await page.title()), `the tab title is ${JSON.stringify(await page.title())}`);
    } finally {
      if (rel) await api('POST', `/releases/${rel.id}/abort`, undefined, fleet.tokens.manager);
      const thawed = await api('POST', '/pipelines/monolith/unfreeze', undefined, fleet.tokens.manager);
      assert(thawed.status === 200, `unfreeze answered ${thawed.status}`);
    }
    await waitRelease(rel.id, ['aborted'], 15000);
    await page.waitForSelector(`li.need[data-release="${rel.id}"]`, { state: 'detached', timeout: 10000 });
  });

  await test('a release queued outside its pipeline\'s deploy window is listed under "Needs you" with the server\'s reason and only Abort', async () => {
    const rel = await createRelease('nightly', built['v1.0.0'], { commit: 'night001', author: 'nick@example.com' });
    try {
      const r = await waitFor('the release to wait for the window', 15000, async () => {
        const x = (await api('GET', `/releases/${rel.id}`)).data;
        return x.state === 'queued' && x.reason ? x : null;
      }, 100);
      const need = `#needs-you:not([hidden]) li.need[data-need="queued"][data-release="${rel.id}"]`;
      await page.waitForSelector(need, { timeout: 15000 });
      const text = await page.textContent(`${need} .need-text`);
      assert(text === `v1.0.0 is queued: ${r.reason}` && /deploy window/.test(r.reason), `needs-you says ${JSON.stringify(text)}`);
      const actions = await page.$$eval(`${need} button[data-action]`, (bs) => bs.map((b) => b.dataset.action));
      assert(actions.join() === 'abort', `needs-you offers ${actions.join(', ')}`);
    } finally {
      await api('POST', `/releases/${rel.id}/abort`, undefined, fleet.tokens.manager);
    }
    await waitRelease(rel.id, ['aborted'], 15000);
    await page.waitForSelector(`li.need[data-release="${rel.id}"]`, { state: 'detached', timeout: 10000 });
  });

  await test('a Pause clicked between updates acts once; the held bake reads "paused", is listed under "Needs you" and resumed from there', async () => {
    const rel = await createRelease('monolith', built['v1.3.0'], { commit: 'held0001', author: 'hal@example.com' });
    await page.evaluate((id) => { location.hash = `#release=${id}`; }, rel.id);
    const view = `#release-view[data-release-id="${rel.id}"]`;
    const pauses = countRequests(page, 'POST', /^\/api\/v1\/pipelines\/monolith\/pause$/);
    let resumed = false;
    try {
      await page.waitForSelector(`${view} #wave-grid tr.wave[data-wave="0"][data-state="baking"]`, { timeout: 30000 });
      // The button pressed, the page updated under it, then released: one click, one pause.
      const button = '.pipeline[data-pipeline="monolith"] button[data-action="pause"]:not([disabled])';
      const box = await (await page.waitForSelector(button, { timeout: 5000 })).boundingBox();
      // Which element each click lands on (the capture phase sees it first).
      await page.evaluate((sel) => {
        window.__pressed = document.querySelector(sel);
        window.__clicks = [];
        document.addEventListener('click', (ev) => {
          window.__clicks.push(window.__pressed.contains(ev.target) && window.__pressed.isConnected);
        }, true);
      }, button);
      await countPatches(page, 'app', '#app');
      await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
      await page.mouse.down();
      await waitFor('the page to update while the button is held down', 10000, async () => await patches(page, 'app') >= 2);
      await page.mouse.up();
      await waitFor('monolith to be paused', 10000, async () => (await api('GET', '/pipelines/monolith')).data.paused === true);
      const clicks = await page.evaluate(() => window.__clicks);
      assert(clicks.length === 1 && clicks[0], `clicks landed ${JSON.stringify(clicks)} (true: on the button pressed, still on the page)`);
      await page.waitForSelector(`.pipeline[data-pipeline="monolith"] button[data-action="resume"]`, { timeout: 10000 });
      assert(pauses.n === 1, `the page sent ${pauses.n} pause requests`);
      // The paused bake says so, in the release view and under "Needs you".
      await page.waitForFunction((sel) => /^paused/.test((document.querySelector(sel) || {}).textContent || ''), `${view} #bake-countdown`, { timeout: 10000 })
        .catch(async () => { throw new Error(`the bake reads ${JSON.stringify(await page.textContent(`${view} #bake-countdown`).catch(() => null))}`); });
      const current = await page.textContent(`${view} #release-current-wave`);
      assert(current === '1/2 canary (baking, paused)', `the current wave reads ${JSON.stringify(current)}`);
      const need = `#needs-you:not([hidden]) li.need[data-need="paused"][data-release="${rel.id}"]`;
      await page.waitForSelector(need, { timeout: 15000 });
      const text = await page.textContent(`${need} .need-text`);
      assert(text === 'monolith v1.3.0 is held in wave canary (bake paused): monolith paused by rita-release-manager',
        `needs-you says ${JSON.stringify(text)}`);
      const actions = await page.$$eval(`${need} button[data-action]`, (bs) => bs.map((b) => `${b.dataset.action}${b.disabled ? ' disabled' : ''}`));
      assert(actions.join() === 'resume', `needs-you offers ${actions.join(', ')}`);
      await page.click(`${need} button[data-action="resume"]`);
      await waitFor('monolith to be resumed', 10000, async () => (await api('GET', '/pipelines/monolith')).data.paused === false);
      resumed = true;
    } finally {
      if (!resumed) await api('POST', '/pipelines/monolith/resume', undefined, fleet.tokens.manager);
    }
    await waitRelease(rel.id, ['succeeded'], 60000);
    await page.waitForSelector(`li.need[data-release="${rel.id}"]`, { state: 'detached', timeout: 10000 });
    await page.waitForSelector(`${view}[data-state="succeeded"]`, { timeout: 15000 });
    await waitEndStates(page, rel.id);
  });

  await test('a viewer token sees every action disabled', async () => {
    const viewer = await signedInPage(fleet.tokens.viewer);
    try {
      await viewer.waitForSelector('button[data-action]', { timeout: 10000 });
      const buttons = await viewer.$$eval('button[data-action]', (bs) => bs.map((b) => ({ action: b.dataset.action, disabled: b.disabled })));
      assert(buttons.length >= 6, `expected pause/freeze/rollback on both pipelines, found ${buttons.length} buttons`);
      const enabled = buttons.filter((b) => !b.disabled);
      assert(!enabled.length, `enabled for a viewer: ${enabled.map((b) => b.action).join(', ')}`);
      if (hasWhoami) {
        const role = await viewer.textContent('#whoami .role');
        assert(role === 'viewer', `role shown as ${role}`);
      }
      // The server refuses anyway.
      const r = await api('POST', '/pipelines/monolith/pause', undefined, fleet.tokens.viewer);
      assert(r.status === 403, `viewer pause answered ${r.status}`);
    } finally {
      await viewer.context().close();
    }
  });

  await test('an on-call token sees the pipeline actions whoami allows it enabled', async () => {
    if (!hasWhoami) throw new Error(`GET /api/v1/whoami answers ${whoami.status}, so the page cannot know its role and keeps every action disabled`);
    const who = await api('GET', '/whoami', undefined, fleet.tokens.oncall);
    const allowed = who.data.allowed;
    for (const a of ['pipeline.pause', 'pipeline.resume', 'pipeline.freeze', 'pipeline.unfreeze', 'pipeline.rollback']) {
      assert(allowed.includes(a), `whoami does not allow on-call ${a}: ${allowed.join(', ')}`);
    }
    const oncall = await signedInPage(fleet.tokens.oncall);
    try {
      const buttons = await pipelineButtons(oncall);
      assert(buttons.length >= 6, `expected pause/freeze/rollback on both pipelines, found ${buttons.length} buttons`);
      const disabled = buttons.filter((b) => b.disabled);
      assert(!disabled.length, `disabled for on-call: ${disabled.map((b) => b.action).join(', ')}`);
      const role = await oncall.textContent('#whoami .role');
      assert(role === 'on-call', `role shown as ${role}`);
    } finally {
      await oncall.context().close();
    }
  });

  await test('the buttons follow whoami\'s allowed list, not the role name', async () => {
    // A viewer whose whoami says it may pause: only Pause is enabled. (The server would still
    // refuse it; the point is that the page has no role matrix of its own.)
    const viewer = await signedInPage(fleet.tokens.viewer, {
      prepare: fakeWhoami(200, { name: 'vera-viewer', role: 'viewer', allowed: ['pipeline.pause'] }),
    });
    try {
      const buttons = await pipelineButtons(viewer);
      assert(buttons.some((b) => b.action === 'pause'), `no Pause button: ${buttons.map((b) => b.action).join(', ')}`);
      const wrong = buttons.filter((b) => b.disabled !== (b.action !== 'pause'));
      assert(!wrong.length, `wrong state: ${wrong.map((b) => `${b.action} ${b.disabled ? 'disabled' : 'enabled'}`).join(', ')}`);
    } finally {
      await viewer.context().close();
    }
  });

  await test('when whoami fails, every action is disabled even for a release manager', async () => {
    const manager = await signedInPage(fleet.tokens.manager, { prepare: fakeWhoami(500, { error: 'injected failure' }) });
    try {
      const buttons = await pipelineButtons(manager);
      assert(buttons.length >= 6, `expected pause/freeze/rollback on both pipelines, found ${buttons.length} buttons`);
      const enabled = buttons.filter((b) => !b.disabled);
      assert(!enabled.length, `enabled without whoami: ${enabled.map((b) => b.action).join(', ')}`);
      const role = await manager.textContent('#whoami .role');
      assert(role === 'role unknown', `role shown as ${role}`);
      await manager.waitForSelector('#banner:not([hidden])', { timeout: 5000 });
    } finally {
      await manager.context().close();
    }
  });

  await test('markup in a commit message and author is shown as text, never run', async () => {
    const rel = await createRelease('monolith', built['v1.2.0'], { commit: `fix: ${XSS}`, author: `${XSS} <mallory@example.com>` });
    await page.evaluate((id) => { location.hash = `#release=${id}`; }, rel.id);
    const view = `#release-view[data-release-id="${rel.id}"]`;
    await page.waitForSelector(view, { timeout: 15000 });
    const commit = await page.textContent(`${view} #release-commit`);
    const author = await page.textContent(`${view} #release-author`);
    assert(commit === `fix: ${XSS}`, `commit shown as ${JSON.stringify(commit)}`);
    assert(author === `${XSS} <mallory@example.com>`, `author shown as ${JSON.stringify(author)}`);
    await page.waitForSelector(`#releases tr[data-release="${rel.id}"]`, { timeout: 10000 });
    await sleep(1000);  // give any injected onerror a chance to fire
    const imgs = await page.$$eval('img', (is) => is.length);
    assert(imgs === 0, `${imgs} <img> elements in the page`);
    const xss = await page.evaluate(() => typeof window.__xss);
    assert(xss === 'undefined', `window.__xss is ${xss}`);
    await waitRelease(rel.id, ['succeeded'], 60000);
  });

  await test('without the event stream the page polls and still follows a rollout', async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    try {
      const p2 = await context.newPage();
      await p2.route('**/api/v1/events*', (route) => route.abort());
      await p2.goto(`${fleet.http}/`, { timeout: 15000 });
      await p2.fill('#token-input', fleet.tokens.viewer);
      await p2.click('#signin-button');
      await p2.waitForSelector('#live[data-mode="polling"]', { timeout: 10000 });
      const rel = await createRelease('monolith', built['v1.3.0'], { commit: 'poll0001', author: 'pat@example.com' });
      await p2.evaluate((id) => { location.hash = `#release=${id}`; }, rel.id);
      await p2.waitForSelector(`#release-view[data-release-id="${rel.id}"][data-state="succeeded"]`, { timeout: 60000 });
      await p2.waitForSelector('.pipeline[data-pipeline="monolith"] .region[data-region="eu-west-1"][data-version="v1.3.0"]', { timeout: 10000 });
    } finally {
      await context.close();
    }
  });

  await test('a failed check on a bring-up host sends only that region back, and the page shows the track and the hook output as text', async () => {
    const failing = `${BRINGUP}-2`;
    // From a settled fleet: every monolith host on the pipeline's desired version.
    await waitFor('every monolith host to run the desired version', 60000, async () => {
      const s = (await api('GET', '/pipelines/monolith')).data;
      const hosts = s.regions.flatMap((r) => r.hosts);
      return hosts.length === MONOLITH_HOSTS && hosts.every((x) => x.current_version === s.desired_version);
    }, 200);
    const rel = await createRelease('monolith', built['v1.4.0'], { commit: 'b0a7d1ff', author: 'bo@example.com' });
    await waitRelease(rel.id, ['succeeded'], 90000);
    const ended = await waitFor(`the ${BRINGUP} track of release ${rel.id} to end`, 60000, async () => {
      const r = (await api('GET', `/releases/${rel.id}`)).data;
      const t = (r.bringup || []).find((x) => x.region === BRINGUP);
      return t && ['succeeded', 'rolled_back', 'failed', 'superseded'].includes(t.state) ? r : null;
    }, 200);
    const track = ended.bringup.find((x) => x.region === BRINGUP);
    assert(track.state === 'rolled_back', `the ${BRINGUP} track ended ${track.state}: ${track.reason}`);
    const serving = ended.hosts.filter((x) => REGIONS.includes(x.region));
    assert(serving.length === 2 * REGIONS.length && serving.every((x) => x.state === 'done'),
      `serving hosts: ${serving.map((x) => `${x.agent} ${x.state}`).join(', ')}`);

    await page.evaluate((id) => { location.hash = `#release=${id}`; }, rel.id);
    const view = `#release-view[data-release-id="${rel.id}"]`;
    await page.waitForSelector(`${view}[data-state="succeeded"]`, { timeout: 15000 });
    const row = `${view} #bringup tr.bringup-track[data-region="${BRINGUP}"]`;
    await page.waitForSelector(`${row}[data-state="rolled_back"]`, { state: 'visible', timeout: 15000 });
    const shown = await page.$eval(row, (tr) => ({
      state: tr.querySelector('.state').textContent,
      wave: tr.querySelector('.track-wave').textContent,
      reason: tr.querySelector('.track-reason').textContent,
    }));
    assert(shown.state === 'rolled back', `the track's state reads ${JSON.stringify(shown.state)}`);
    assert(shown.wave.includes(track.wave_name), `the track's wave reads ${JSON.stringify(shown.wave)}, expected ${track.wave_name}`);
    assert(shown.reason === track.reason && shown.reason.includes(failing), `the track's reason reads ${JSON.stringify(shown.reason)}, the server says ${JSON.stringify(track.reason)}`);
    // The wave grid is the serving regions'.
    const columns = [...new Set((await gridCells(page, rel.id)).map((c) => c.region))];
    assert(columns.length === REGIONS.length && !columns.includes(BRINGUP), `the grid has columns ${columns.join(', ')}`);

    const host = `${view} #hosts tr.host-row[data-host="${failing}"]`;
    await page.waitForSelector(`${host}[data-stage="bringup"] details.hook-output`, { timeout: 15000 });
    assert(await page.textContent(`${host} .flag.bringup`) === 'bring-up', `${failing} is not marked bring-up`);
    const summary = await page.textContent(`${host} details.hook-output summary`);
    assert(summary === 'hook output', `the summary says ${JSON.stringify(summary)}`);
    // The failure stays on the host after its region went back.
    const server = ended.hosts.find((x) => x.agent === failing);
    assert(/failed at check/.test(server.failure), `the server's failure of ${failing} is ${JSON.stringify(server.failure)}`);
    const step = await page.textContent(`${host} .host-step`);
    const want = server.state === 'failed' ? 'failed at check' : `failed at check → ${server.state.replaceAll('_', ' ')}`;
    assert(step === want, `the step of ${failing} (${server.state}) reads ${JSON.stringify(step)}, expected ${JSON.stringify(want)}`);
    // From the keyboard: the reason's host name leads to the host, its output open.
    await page.focus(`${row} .track-reason a.host-link[data-host="${failing}"]`);
    await page.keyboard.press('Enter');
    await page.waitForFunction((id) => document.activeElement && document.activeElement.id === id, `host-${failing}`, { timeout: 5000 });
    const pre = `${host} details.hook-output[open] pre.output-tail`;
    await page.waitForSelector(pre, { state: 'visible', timeout: 5000 });
    // Its summary folds and unfolds it with Enter.
    await page.focus(`${host} details.hook-output summary`);
    await page.keyboard.press('Enter');
    await page.waitForSelector(`${host} details.hook-output:not([open])`, { timeout: 5000 });
    await page.keyboard.press('Enter');
    await page.waitForSelector(pre, { state: 'visible', timeout: 5000 });
    const out = await page.$eval(pre, (e) => ({ text: e.textContent, elements: e.children.length }));
    assert(out.text.includes(BRINGUP_MARKER), `the hook output does not show the marker: ${JSON.stringify(out.text)}`);
    assert(out.text.includes(XSS), `the hook output does not show the markup as text: ${JSON.stringify(out.text)}`);
    assert(out.elements === 0, `the hook output holds ${out.elements} elements`);
    for (const x of serving) {
      const r = `${view} #hosts tr.host-row[data-host="${x.agent}"]`;
      assert(await page.getAttribute(r, 'data-stage') === 'serving', `${x.agent} is not shown serving`);
      assert(!(await page.$(`${r} details.hook-output`)), `${x.agent} shows hook output`);
    }
    await page.screenshot({ path: path.join(SHOTS, 'bringup-release.png'), fullPage: true });
    const imgs = await page.$$eval('img', (is) => is.length);
    assert(imgs === 0, `${imgs} <img> elements in the page`);
    const xss = await page.evaluate(() => typeof window.__xss);
    assert(xss === 'undefined', `window.__xss is ${xss}`);
  });

  await test('a halted release is listed under "Needs you" with only Abort; its failed host of a hook_output: none region shows no output, and stays marked failed after the abort reverts it', async () => {
    const failing = `${WITHHELD}-g1`;
    const rel = await createRelease('gated', built['g1.2.0'], { commit: 'c0ffee02', author: 'nina@example.com' });
    try {
      await waitRelease(rel.id, ['halted'], 60000);
      const r = (await api('GET', `/releases/${rel.id}`)).data;
      const failed = r.hosts.find((x) => x.agent === failing);
      assert(failed && failed.state === 'failed' && failed.output_tail === '', `the server shows ${JSON.stringify(failed)}`);
      assert(/failed at check/.test(failed.failure), `the server's failure of ${failing} is ${JSON.stringify(failed.failure)}`);
      await page.evaluate((id) => { location.hash = `#release=${id}`; }, rel.id);
      const view = `#release-view[data-release-id="${rel.id}"]`;
      const host = `${view} #hosts tr.host-row[data-host="${failing}"][data-state="failed"]`;
      await page.waitForSelector(`${host} .output-kept`, { state: 'visible', timeout: 15000 });
      const kept = await page.textContent(`${host} .output-kept`);
      assert(kept === 'output kept in the region (hook_output: none)', `the host says ${JSON.stringify(kept)}`);
      assert(!(await page.$(`${host} details`)), `${failing} shows hook output`);
      assert(await page.textContent(`${host} .host-step`) === 'failed at check', `the step reads ${await page.textContent(`${host} .host-step`)}`);
      const text = await page.evaluate(() => document.body.textContent);
      assert(!text.includes(WITHHELD_MARKER), 'the page shows the withheld hook output');
      // The other regions' hosts passed: nothing to say about their output.
      const others = await page.$$eval(`${view} #hosts tr.host-row .output-kept`, (es) => es.length);
      assert(others === 1, `${others} hosts say their output was kept`);
      // The reason names the host: its name leads to its row.
      await page.click(`${view} #release-reason a.host-link[data-host="${failing}"]`);
      await page.waitForFunction((id) => document.activeElement && document.activeElement.id === id, `host-${failing}`, { timeout: 5000 });
      // Halted: "Needs you" says why and offers only Abort, which is done from there.
      const need = `#needs-you:not([hidden]) li.need[data-need="halted"][data-release="${rel.id}"]`;
      await page.waitForSelector(need, { timeout: 10000 });
      assert((await page.textContent(`${need} .need-text`)).startsWith('gated g1.2.0 is halted: '), 'needs-you does not say the release is halted');
      const actions = await page.$$eval(`${need} button[data-action]`, (bs) => bs.map((b) => b.dataset.action));
      assert(actions.join() === 'abort', `needs-you offers ${actions.join(', ')}`);
      await page.click(`${need} button[data-action="abort"]`);
      await page.waitForSelector('#confirm-dialog[open]', { timeout: 5000 });
      await page.click('#confirm-ok');
      await waitRelease(rel.id, ['aborted'], 60000);
      // Final: every host in an end state, and the failed one still marked, after its revert.
      await page.waitForSelector(`${view}[data-state="aborted"]`, { timeout: 15000 });
      await page.waitForFunction(([sel, ends]) => {
        const rows = [...document.querySelectorAll(`${sel} #hosts tr.host-row`)];
        return rows.length > 0 && rows.every((tr) => ends.includes(tr.dataset.state));
      }, [view, FINAL_HOST_STEPS], { timeout: 15000 }).catch(async () => {
        throw new Error(`hosts still moving after the release ended: ${JSON.stringify(await page.$$eval(`${view} #hosts tr.host-row`, (trs) => trs.map((t) => `${t.dataset.host} ${t.dataset.state}`)))}`);
      });
      const after = (await api('GET', `/releases/${rel.id}`)).data.hosts.find((x) => x.agent === failing);
      assert(after.state === 'reverted' && /failed at check/.test(after.failure), `the server shows ${JSON.stringify(after)}`);
      const row = `${view} #hosts tr.host-row[data-host="${failing}"]`;
      await page.waitForSelector(`${row}[data-state="reverted"][data-failed="true"]`, { timeout: 10000 });
      const step = await page.textContent(`${row} .host-step`);
      assert(step === 'failed at check → reverted', `the step reads ${JSON.stringify(step)}`);
      assert((await page.textContent(`${row} p.failure`)) === after.failure, 'the failure is not shown');
      await waitEndStates(page, rel.id);
      const cell = await page.textContent(`${view} #wave-grid tr.wave[data-wave="0"] td.cell[data-region="${WITHHELD}"]`);
      assert(/ 1 failed$/.test(cell), `the failed region's cell reads ${JSON.stringify(cell)}`);
      await page.waitForSelector(`li.need[data-release="${rel.id}"]`, { state: 'detached', timeout: 10000 });
    } finally {
      // Held where it failed until someone acts: abort it, which puts every host back.
      if (!(await api('GET', `/releases/${rel.id}`)).data.final) {
        const aborted = await api('POST', `/releases/${rel.id}/abort`, undefined, fleet.tokens.manager);
        if (aborted.status !== 200) log(`aborting release ${rel.id} answered ${aborted.status}`);
        await waitRelease(rel.id, ['aborted'], 60000);
      }
    }
  });

  await test('when lockstepd cannot be reached the page says since when and greys hosts out, then recovers', async () => {
    const p3 = await signedInPage(fleet.tokens.manager);
    try {
      await p3.waitForSelector('#live[data-mode="live"]', { timeout: 10000 });
      const lostBefore = await p3.$$eval('.pipeline .host.lost', (hs) => hs.length);
      // Every request to lockstepd fails from here on, as if it were down.
      await p3.route('**/api/v1/**', (route) => route.abort('connectionrefused'));
      await p3.waitForSelector('#live.disconnected', { timeout: 15000 });
      const text = await p3.textContent('#live');
      assert(/^Disconnected since \d\d:\d\d:\d\d UTC — data may be stale$/.test(text), `live indicator says ${JSON.stringify(text)}`);
      assert(await p3.$eval('#pipelines', (e) => e.classList.contains('stale')), '#pipelines is not marked stale');
      assert(await p3.$eval('#hosts', (e) => e.classList.contains('stale')), '#hosts is not marked stale');
      const lost = await p3.$$eval('.pipeline .host.lost', (hs) => hs.length);
      assert(lost === lostBefore, `${lost} hosts shown lost while the server is unreachable (${lostBefore} before)`);
      // An action fails while disconnected: its banner stays until the page reconnects.
      await p3.click('.pipeline[data-pipeline="gated"] button[data-action="pause"]:not([disabled])', { timeout: 5000 });
      await p3.waitForSelector('#banner:not([hidden])[data-kind="action"]', { timeout: 5000 });
      const banner = await p3.textContent('#banner');
      assert(/^Pause failed: /.test(banner), `banner says ${JSON.stringify(banner)}`);
      await p3.unroute('**/api/v1/**');
      await p3.waitForSelector('#live:not(.disconnected)', { timeout: 15000 });
      const back = await p3.textContent('#live');
      assert(['live', 'polling every 2 s'].includes(back), `live indicator says ${JSON.stringify(back)} after reconnecting`);
      assert(!(await p3.$eval('#pipelines', (e) => e.classList.contains('stale'))), '#pipelines still stale after reconnecting');
      assert(!(await p3.$eval('#hosts', (e) => e.classList.contains('stale'))), '#hosts still stale after reconnecting');
      await p3.waitForSelector('#banner[hidden]', { state: 'attached', timeout: 5000 });
      const status = await api('GET', '/pipelines/gated');
      assert(status.data.paused === false, 'the failed pause reached the server');
    } finally {
      await p3.context().close();
    }
  });

  await test('a failed action\'s banner clears when a later action succeeds', async () => {
    const p4 = await signedInPage(fleet.tokens.manager);
    try {
      await p4.route('**/api/v1/pipelines/gated/pause', (route) => route.fulfill({
        status: 500, contentType: 'application/json', body: JSON.stringify({ error: 'injected failure' }),
      }));
      const pause = '.pipeline[data-pipeline="gated"] button[data-action="pause"]:not([disabled])';
      await p4.click(pause, { timeout: 5000 });
      await p4.waitForSelector('#banner:not([hidden])[data-kind="action"]', { timeout: 5000 });
      const banner = await p4.textContent('#banner');
      assert(banner === 'Pause failed: injected failure', `banner says ${JSON.stringify(banner)}`);
      await p4.unroute('**/api/v1/pipelines/gated/pause');
      await p4.click(pause, { timeout: 5000 });
      await p4.waitForSelector('#banner[hidden]', { state: 'attached', timeout: 5000 });
      await waitFor('gated to be paused', 10000, async () => (await api('GET', '/pipelines/gated')).data.paused === true);
    } finally {
      await p4.context().close();
      const resumed = await api('POST', '/pipelines/gated/resume');
      assert(resumed.status === 200, `resume answered ${resumed.status}`);
    }
  });

  await test('history and the audit log filter by pipeline, version, state, actor and time, a page at a time, from the keyboard too', async () => {
    await page.evaluate(() => { location.hash = ''; });
    const all = (await api('GET', '/releases?limit=500')).data.sort((a, b) => b.id - a.id);
    assert(all.length >= 12, `only ${all.length} releases`);
    const shown = () => page.$$eval('#releases tr.release-row', (trs) => trs.map((t) => Number(t.dataset.release)));
    const expect = async (what, ids) => {
      await waitFor(`the history to show ${what}: ${ids.join(', ') || 'nothing'}`, 10000, async () => (await shown()).join() === ids.join());
    };
    const apply = async (fields) => {
      await page.click('#hf-clear');
      for (const [sel, v] of Object.entries(fields)) {
        if (sel.startsWith('select')) await page.selectOption(sel.slice(6), v);
        else await page.fill(sel, v);
      }
      await page.click('#hf-apply');
    };
    await apply({ 'select#hf-pipeline': 'gated', 'select#hf-state': 'succeeded' });
    await expect('gated releases that succeeded', all.filter((r) => r.pipeline === 'gated' && r.state === 'succeeded').map((r) => r.id));
    await apply({ 'select#hf-pipeline': 'monolith', '#hf-version': 'v1.1.0' });
    await expect('monolith v1.1.0', all.filter((r) => r.pipeline === 'monolith' && r.version === 'v1.1.0').map((r) => r.id));
    await apply({ '#hf-actor': 'otto-on-call' });
    await expect('what otto-on-call created', all.filter((r) => r.created_by === 'otto-on-call' || r.author === 'otto-on-call').map((r) => r.id));
    await apply({ '#hf-actor': 'ana@example.com' });
    await expect('what ana@example.com wrote', all.filter((r) => r.created_by === 'ana@example.com' || r.author === 'ana@example.com').map((r) => r.id));
    // Times are read in the zone the page shows (UTC here), to the minute.
    const minute = (ms) => new Date(ms).toISOString().slice(0, 16);
    await apply({ '#hf-since': minute(Date.now() + 120000) });
    await expect('nothing created in the future', []);
    assert(await page.textContent('#releases caption') === 'No release matches the filter.', 'an empty result says nothing');
    const cut = all[Math.floor(all.length / 2)].created_at_ms;
    await apply({ '#hf-until': minute(cut - 60000) });
    await expect('what was created before the cut', all.filter((r) => r.created_at_ms <= Math.floor((cut - 60000) / 60000) * 60000 + 59999).map((r) => r.id).slice(0, 25));
    // Paging: ten a page, the next page older, and back.
    await apply({ 'select#hf-limit': '10' });
    await expect('the newest ten', all.slice(0, 10).map((r) => r.id));
    assert(await page.isEnabled('#releases-older') && !(await page.isEnabled('#releases-newer')), 'page 1 cannot go older, or can go newer');
    await page.focus('#releases-older');
    await page.keyboard.press('Enter');
    await expect('the next ten', all.slice(10, 20).map((r) => r.id));
    assert(await page.textContent('#releases-page') === 'Page 2', `the pager says ${await page.textContent('#releases-page')}`);
    await page.click('#releases-newer');
    await expect('the newest ten again', all.slice(0, 10).map((r) => r.id));
    // A release is chosen from the table with the keyboard; the chart's bars are pictures of
    // the same rows, not tab stops.
    const pick = all[3].id;
    await page.focus(`#releases tr.release-row[data-release="${pick}"] a`);
    await page.keyboard.press('Enter');
    await page.waitForSelector(`#release-view[data-release-id="${pick}"]`, { timeout: 10000 });
    assert(await page.$$eval('#chart rect', (rs) => rs.length) > 0, 'the chart has no bars');
    assert(await page.$$eval('#chart [tabindex], [tabindex]:not([tabindex="-1"]):not([tabindex="0"])', (es) => es.length) === 0, 'the chart has tab stops, or something has a positive tabindex');
    await page.click('#hf-clear');

    // The audit log: by action and text, by actor, by pipeline, and a page at a time.
    const audit = async () => page.$$eval('#audit tr.audit-row', (trs) => trs.map((t) => ({
      id: Number(t.dataset.key), action: t.dataset.action, actor: t.querySelector('td.actor').textContent, text: t.textContent,
      target: t.children[3].textContent,
    })));
    const applyAudit = async (fields) => {
      await page.click('#af-clear');
      for (const [sel, v] of Object.entries(fields)) {
        if (sel.startsWith('select')) await page.selectOption(sel.slice(6), v);
        else await page.fill(sel, v);
      }
      await page.click('#af-apply');
    };
    await applyAudit({ '#af-action': 'release.appr', '#af-q': 'CANARY CLEAN' });
    await waitFor('the approval with its comment, alone', 10000, async () => {
      const rows = await audit();
      return rows.length === 1 && rows[0].action === 'release.approve' && rows[0].text.includes('comment: canary clean');
    });
    await applyAudit({ '#af-actor': 'otto-on-call' });
    await waitFor('only what otto-on-call did', 10000, async () => {
      const rows = await audit();
      return rows.length > 0 && rows.every((r) => r.actor === 'otto-on-call');
    });
    const gatedIds = new Set(all.filter((r) => r.pipeline === 'gated').map((r) => `release/${r.id}`));
    await applyAudit({ 'select#af-pipeline': 'gated', 'select#af-limit': '100' });
    await waitFor('only entries about gated', 10000, async () => {
      const rows = await audit();
      return rows.length > 0 && rows.every((r) => r.target === 'gated' || r.target === 'pipeline/gated' || gatedIds.has(r.target));
    });
    await applyAudit({ 'select#af-limit': '10' });
    const first = await waitFor('ten audit entries', 10000, async () => { const r = await audit(); return r.length === 10 ? r : null; });
    await page.click('#audit-older');
    await waitFor('the next ten, all older', 10000, async () => {
      const r = await audit();
      return r.length > 0 && r.every((e) => e.id < Math.min(...first.map((x) => x.id)));
    });
    await page.click('#af-clear');
  });

  await test('the page works at phone width, in dark mode', async () => {
    const phone = await signedInPage(fleet.tokens.manager, { viewport: { width: 390, height: 844 }, colorScheme: 'dark' });
    try {
      const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert(overflow <= 1, `the page is ${overflow}px wider than a phone screen`);
      const bg = await phone.evaluate(() => getComputedStyle(document.body).backgroundColor);
      assert(bg === 'rgb(18, 21, 27)', `dark mode not applied (body background ${bg})`);
      await phone.screenshot({ path: path.join(SHOTS, 'phone-dark.png'), fullPage: true });
    } finally {
      await phone.context().close();
    }
  });

  const errors = page.errors.filter((e) => !/401|403|404|409/.test(e));
  if (errors.length) log(`page errors: ${errors.join('\n')}`);
  await test('no script errors in the page', async () => {
    assert(!errors.length, `${errors.length} errors: ${errors.join('; ')}`);
  });

  // Screenshots stay in a temporary directory; LOCKSTEP_UPDATE_SCREENSHOT=1 refreshes the
  // one the README shows (so an ordinary test run leaves the work tree as it was).
  const overview = path.join(SHOTS, 'overview.png');
  log(`screenshots in ${SHOTS}`);
  if (process.env.LOCKSTEP_UPDATE_SCREENSHOT === '1' && fs.existsSync(overview)) {
    fs.copyFileSync(overview, path.join(ROOT, 'docs', 'dashboard.png'));
    log('overview copied to docs/dashboard.png');
  }
}

let fatal = null;
const hardStop = setTimeout(() => {
  log('the whole run took over 8 minutes; stopping');
  stopAll().finally(() => process.exit(2));
}, 8 * 60 * 1000);
try {
  await main();
} catch (e) {
  fatal = e;
  log(`setup failed: ${e.stack || e}`);
} finally {
  if (browser) await browser.close().catch(() => {});
  await stopAll();
  if (fleet.exporter) {
    fleet.exporter.closeAllConnections();
    fleet.exporter.close();
  }
  clearTimeout(hardStop);
}
const failed = results.filter((r) => !r.ok).length + (fatal ? 1 : 0);
const passed = results.filter((r) => r.ok).length;
if (failed) {
  log(`lockstepd log tail:\n${tail(path.join(LOGS, 'lockstepd.log'))}`);
  log(`work directory kept: ${WORK}`);
} else if (process.env.LOCKSTEP_KEEP_WORK === '1') {
  log(`work directory kept: ${WORK}`);
} else {
  fs.rmSync(WORK, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
