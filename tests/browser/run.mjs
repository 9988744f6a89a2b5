// Browser tests of the release managers' dashboard (web/), in Debian's headless Chromium
// driven by playwright-core, against a real lockstepd, real agents and a real artifact
// server, all started here as child processes and all stopped in `finally`.
//
//   LOCKSTEP_BIN_DIR=build/bin node tests/browser/run.mjs
//
// Environment: LOCKSTEP_BIN_DIR (default build/bin), CHROMIUM (default /usr/bin/chromium),
// LOCKSTEP_KEEP_WORK=1 keeps the temp directory (logs, screenshots). Prints
// "N passed, M failed" last and exits non-zero if any test failed.

import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
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
`;

// A failed wave of gated halts it (on_failure: pause), so that a failed host stays failed
// until it is aborted.
const GATED = `pipeline: gated
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
timeouts: {hook: 30s, fetch: 30s, agent_lost: 30s}
rollback: {automatic: true, tolerate_failed_hosts: 0, on_failure: pause}
`;

const fleet = { http: '', grpc: '', admin: '', artifacts: '', tokens: {} };

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

  const pipelines = path.join(WORK, 'pipelines');
  fs.mkdirSync(pipelines);
  fs.writeFileSync(path.join(pipelines, 'monolith.yaml'), MONOLITH);
  fs.writeFileSync(path.join(pipelines, 'gated.yaml'), GATED);
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
  log(`fleet up: ${fleet.http} (http), ${fleet.grpc} (grpc), ${agents.length} agents, artifacts at ${fleet.artifacts}`);
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

  await test('the grid follows a real rollout live to success', async () => {
    await page.waitForSelector('#live[data-mode="live"]', { timeout: 10000 });
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
    assert(await page.evaluate(() => window.__sameDocument === true), 'the page was reloaded');
    await page.waitForFunction(() => [...document.querySelectorAll('.pipeline[data-pipeline="monolith"] .host')]
      .every((h) => h.dataset.version === 'v1.1.0'), null, { timeout: 15000 });
    const mixed = await page.textContent('#mixed-window');
    assert(/canary/.test(mixed), `mixed-version window not shown: ${mixed}`);
    await page.screenshot({ path: path.join(SHOTS, 'overview.png'), fullPage: true });
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

  await test('a manual approval is clicked in the page and the wave proceeds', async () => {
    if (!hasWhoami) throw new Error(`GET /api/v1/whoami answers ${whoami.status}, so the page cannot know its role and keeps every action disabled`);
    const rel = await createRelease('gated', built['g1.1.0'], { commit: 'cafe0001', author: 'max@example.com' });
    const view = `#release-view[data-release-id="${rel.id}"]`;
    await page.waitForSelector(`${view} #wave-grid tr.wave[data-wave="1"][data-state="awaiting_approval"]`, { timeout: 60000 });
    const state = await page.getAttribute(view, 'data-state');
    assert(state === 'rolling', `release is ${state} before approval`);
    const button = `${view} #release-actions button[data-action="approve"]`;
    await page.waitForSelector(`${button}:not([disabled])`, { timeout: 5000 });
    await page.click(button);
    await page.waitForSelector(`${view} #wave-grid tr.wave[data-wave="1"][data-state="done"]`, { timeout: 60000 });
    await page.waitForSelector(`${view}[data-state="succeeded"]`, { timeout: 60000 });
    await waitEndStates(page, rel.id);
    const approvedBy = await page.textContent(`${view} #wave-grid tr.wave[data-wave="1"] .approved`);
    assert(approvedBy.includes('rita-release-manager'), `approval not attributed: ${approvedBy}`);
  });

  await test('a rollback confirmed in the dialog puts every region back on the previous version', async () => {
    if (!hasWhoami) throw new Error(`GET /api/v1/whoami answers ${whoami.status}, so the page cannot know its role and keeps every action disabled`);
    await page.click('.pipeline[data-pipeline="monolith"] button[data-action="rollback"]:not([disabled])', { timeout: 5000 });
    await page.waitForSelector('#confirm-dialog[open]', { timeout: 5000 });
    const target = await page.textContent('#rollback-target');
    const hosts = await page.textContent('#rollback-hosts');
    const regions = await page.textContent('#rollback-regions');
    assert(target === 'v1.0.0', `dialog names version ${target}, expected v1.0.0`);
    // Every host of the pipeline, the bring-up region's too.
    assert(hosts === `${MONOLITH_HOSTS} hosts`, `dialog names ${hosts}, expected ${MONOLITH_HOSTS} hosts`);
    for (const r of [...REGIONS, BRINGUP]) assert(regions.includes(r), `dialog does not name region ${r}: ${regions}`);
    await page.click('#confirm-ok');
    await page.waitForSelector('#confirm-dialog[open]', { state: 'hidden', timeout: 5000 });
    for (const r of [...REGIONS, BRINGUP]) {
      await page.waitForSelector(`.pipeline[data-pipeline="monolith"] .region[data-region="${r}"][data-version="v1.0.0"]`, { timeout: 60000 });
    }
    const versions = await page.$$eval('.pipeline[data-pipeline="monolith"] .host', (hs) => hs.map((h) => h.dataset.version));
    assert(versions.length === MONOLITH_HOSTS && versions.every((v) => v === 'v1.0.0'), `hosts show ${versions.join(', ')}`);
    const status = await api('GET', '/pipelines/monolith');
    const real = status.data.regions.flatMap((r) => r.hosts.map((h) => h.current_version));
    assert(real.every((v) => v === 'v1.0.0'), `the server reports ${real.join(', ')}`);
    // lockstepd holds the pipeline after an on-call rollback, until someone resumes it.
    await waitFor('the pipeline to be held', 15000, async () => (await api('GET', '/pipelines/monolith')).data.paused === true);
    const held = await api('GET', '/pipelines/monolith');
    assert(String(held.data.paused_by).startsWith('on-call rollback'), `paused by ${held.data.paused_by}`);
    const resumed = await api('POST', '/pipelines/monolith/resume');
    assert(resumed.status === 200, `resume answered ${resumed.status}`);
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
    await page.click(`${host} details.hook-output summary`);
    const pre = `${host} details.hook-output[open] pre.output-tail`;
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

  await test('a failed host of a hook_output: none region says its output stayed there and shows none', async () => {
    const failing = `${WITHHELD}-g1`;
    const rel = await createRelease('gated', built['g1.2.0'], { commit: 'c0ffee02', author: 'nina@example.com' });
    try {
      await waitRelease(rel.id, ['halted'], 60000);
      const r = (await api('GET', `/releases/${rel.id}`)).data;
      const failed = r.hosts.find((x) => x.agent === failing);
      assert(failed && failed.state === 'failed' && failed.output_tail === '', `the server shows ${JSON.stringify(failed)}`);
      await page.evaluate((id) => { location.hash = `#release=${id}`; }, rel.id);
      const view = `#release-view[data-release-id="${rel.id}"]`;
      const host = `${view} #hosts tr.host-row[data-host="${failing}"][data-state="failed"]`;
      await page.waitForSelector(`${host} .output-kept`, { state: 'visible', timeout: 15000 });
      const kept = await page.textContent(`${host} .output-kept`);
      assert(kept === 'output kept in the region (hook_output: none)', `the host says ${JSON.stringify(kept)}`);
      assert(!(await page.$(`${host} details`)), `${failing} shows hook output`);
      const text = await page.evaluate(() => document.body.textContent);
      assert(!text.includes(WITHHELD_MARKER), 'the page shows the withheld hook output');
      // The other regions' hosts passed: nothing to say about their output.
      const others = await page.$$eval(`${view} #hosts tr.host-row .output-kept`, (es) => es.length);
      assert(others === 1, `${others} hosts say their output was kept`);
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
      assert(/^Disconnected since \d\d:\d\d:\d\d — data may be stale$/.test(text), `live indicator says ${JSON.stringify(text)}`);
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
