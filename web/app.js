// Lockstep's release dashboard. Plain ES module, no build step, no dependencies.
//
// Safety rule for this file: nothing that came from the server (versions, commit messages,
// authors, hook output, reasons, names) is ever parsed as markup. The DOM is built with
// createElement / createElementNS and text nodes only; there is no innerHTML anywhere.

const API = '/api/v1';
const TOKEN_KEY = 'lockstep.token';
const POLL_MS = 2000;            // polling interval when the event stream is down
const REFRESH_MS = 5000;         // overview refresh (agent connect/lose is not an event)
const RECONNECT_MS = 10000;      // retry the event stream this long after it failed
const HISTORY_LIMIT = 40;
const AUDIT_LIMIT = 50;

// The server's permission matrix (orchestrator/auth/tokens.cc), mirrored so that buttons a
// role may not use are disabled. The server enforces it anyway.
const ALLOWED = {
  approve: ['release-manager', 'admin'],
  pause: ['release-manager', 'on-call', 'admin'],
  resume: ['release-manager', 'on-call', 'admin'],
  abort: ['release-manager', 'on-call', 'admin'],
  rollback: ['release-manager', 'on-call', 'admin'],
  freeze: ['release-manager', 'on-call', 'admin'],
  unfreeze: ['release-manager', 'on-call', 'admin'],
};

// Whether a release is final comes from the server (`final`, `in_flight`), never a list here.

const state = {
  token: null,
  me: null,               // {name, role} or {name: '', role: ''} when unknown
  pipelines: [],
  releases: [],           // newest first, summaries
  details: new Map(),     // id -> full release (with waves/hosts/gates)
  audit: [],
  selected: null,         // release id shown in the release view
  follow: true,           // follow the newest in-flight release
  events: null,
  mode: 'off',            // 'live' | 'polling' | 'off'
  timers: [],
  pollTimer: null,
  reconnectTimer: null,
  refreshQueued: false,
};

// ------------------------------------------------------------------ DOM helpers

const $ = (id) => document.getElementById(id);

// h('tag', {class, dataset, on*, attrs...}, ...children): children are nodes or strings
// (strings always become text nodes).
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  applyProps(el, props);
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function applyProps(el, props) {
  if (!props) return;
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = String(v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// ------------------------------------------------------------------ formatting

function fmtDuration(ms) {
  if (!(ms >= 0)) return '';
  if (ms < 10000) return `${(ms / 1000).toFixed(ms < 1000 ? 2 : 1)}s`;
  const sec = Math.round(ms / 1000);
  if (sec < 60) return `${sec}s`;
  const m = Math.floor(sec / 60);
  const r = sec % 60;
  if (m < 60) return r ? `${m}m ${r}s` : `${m}m`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

function fmtTime(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  return d.toLocaleString(undefined, { hour12: false });
}

function label(stateName) {
  return String(stateName || '').replaceAll('_', ' ');
}

function releaseDuration(r, now = Date.now()) {
  if (!r.started_at_ms) return null;
  return (r.finished_at_ms || now) - r.started_at_ms;
}

function stateClass(name) {
  // A fixed set of class names, never built from arbitrary server text.
  const known = ['queued', 'rolling', 'rolling_back', 'aborting', 'halted', 'succeeded',
    'failed', 'rolled_back', 'aborted', 'superseded', 'pending', 'deploying', 'baking',
    'awaiting_approval', 'done', 'preparing', 'prepared', 'activating', 'reverting',
    'reverted', 'revert_failed', 'converging', 'pass', 'fail', 'inconclusive'];
  return known.includes(name) ? `st-${name}` : 'st-other';
}

function badge(stateName, extra) {
  return h('span', { class: `state ${stateClass(stateName)}`, dataset: { state: stateName || '' } },
    label(stateName) + (extra ? ` ${extra}` : ''));
}

// ------------------------------------------------------------------ API

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, `cannot reach the server (${e.message})`);
  }
  let data = null;
  const text = await res.text();
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    const msg = data && typeof data.error === 'string' ? data.error : `HTTP ${res.status}`;
    if (res.status === 401 && path !== '/whoami') signOut(`Signed out: ${msg}`);
    throw new ApiError(res.status, msg);
  }
  return data;
}

function can(action) {
  const role = state.me && state.me.role;
  return Boolean(role && ALLOWED[action] && ALLOWED[action].includes(role));
}

// ------------------------------------------------------------------ sign in / out

async function signIn(token) {
  state.token = token;
  // Any read proves the token is valid.
  await api('GET', '/pipelines');
  let me = { name: '', role: '' };
  try {
    const who = await api('GET', '/whoami');
    if (who && typeof who.role === 'string') {
      me = { name: String(who.name || ''), role: who.role };
    }
  } catch (e) {
    if (e.status === 401) throw e;
    // 404 (no whoami on this server) or anything else: unknown role, enable nothing.
  }
  state.me = me;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('signin-section').hidden = true;
  $('app').hidden = false;
  $('signout').hidden = false;
  const who = $('whoami');
  who.hidden = false;
  clear(who).append(
    h('span', { class: 'who-name' }, me.name || 'signed in'),
    ' ',
    h('span', { class: 'role', dataset: { role: me.role || 'unknown' } }, me.role || 'role unknown'),
  );
  if (!me.role) {
    showBanner('This server does not say which role your token has (no /api/v1/whoami), '
      + 'so actions are disabled here; the CLI still works.');
  }
  readHash();
  await refreshAll();
  startEvents();
  state.timers.push(setInterval(() => { if (state.mode === 'live') refreshOverview(); }, REFRESH_MS));
  state.timers.push(setInterval(tick, 1000));
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopEvents();
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  Object.assign(state, {
    token: null, me: null, pipelines: [], releases: [], audit: [], selected: null,
    follow: true,
  });
  state.details.clear();
  $('app').hidden = true;
  $('signout').hidden = true;
  $('whoami').hidden = true;
  $('signin-section').hidden = false;
  $('token-input').value = '';
  $('signin-error').textContent = message || '';
  setMode('off');
}

function showBanner(text) {
  const b = $('banner');
  b.textContent = text;
  b.hidden = !text;
}

// ------------------------------------------------------------------ live updates

function setMode(mode) {
  state.mode = mode;
  const el = $('live');
  el.dataset.mode = mode;
  el.textContent = mode === 'live' ? 'live' : mode === 'polling' ? 'polling every 2 s' : 'offline';
}

function startEvents() {
  stopEvents();
  if (!state.token || typeof EventSource === 'undefined') {
    startPolling();
    return;
  }
  const es = new EventSource(`${API}/events?token=${encodeURIComponent(state.token)}`);
  state.events = es;
  es.addEventListener('open', () => {
    stopPolling();
    setMode('live');
    scheduleRefresh();  // catch up on whatever happened while the stream was down
  });
  es.addEventListener('release', (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    if (msg && msg.release) onRelease(msg.release, msg.type);
  });
  es.addEventListener('error', () => {
    // The browser would retry by itself, but a 401/404 never recovers: poll instead and
    // try the stream again later.
    es.close();
    if (state.events === es) state.events = null;
    startPolling();
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = setTimeout(() => { if (state.token) startEvents(); }, RECONNECT_MS);
  });
}

function stopEvents() {
  if (state.events) state.events.close();
  state.events = null;
  clearTimeout(state.reconnectTimer);
  stopPolling();
}

function startPolling() {
  setMode('polling');
  if (state.pollTimer) return;
  state.pollTimer = setInterval(() => refreshAll().catch(() => {}), POLL_MS);
}

function stopPolling() {
  clearInterval(state.pollTimer);
  state.pollTimer = null;
}

function onRelease(r, type) {
  if (!r || typeof r.id !== 'number') return;
  state.details.set(r.id, r);
  const i = state.releases.findIndex((x) => x.id === r.id);
  if (i >= 0) state.releases[i] = r;
  else state.releases.unshift(r);
  state.releases.sort((a, b) => b.id - a.id);
  if (state.follow && !r.final) state.selected = r.id;
  else if (state.selected === null) state.selected = r.id;
  renderRelease();
  renderHistory();
  // Host versions, the active release and the audit log change with release events.
  scheduleRefresh(type);
}

function scheduleRefresh() {
  if (state.refreshQueued) return;
  state.refreshQueued = true;
  setTimeout(() => {
    state.refreshQueued = false;
    Promise.all([refreshOverview(), refreshAudit()]).catch(() => {});
  }, 250);
}

// ------------------------------------------------------------------ loading

async function refreshAll() {
  if (!state.token) return;
  await Promise.all([refreshOverview(), refreshReleases(), refreshAudit()]);
  await refreshSelected();
}

async function refreshOverview() {
  if (!state.token) return;
  const list = await api('GET', '/pipelines');
  state.pipelines = Array.isArray(list) ? list : [];
  for (const p of state.pipelines) {
    if (p.active && typeof p.active.id === 'number') {
      state.details.set(p.active.id, p.active);
      if (state.follow && state.selected !== p.active.id && !p.active.final) {
        state.selected = p.active.id;
      }
    }
  }
  renderOverview();
  renderRelease();
}

async function refreshReleases() {
  if (!state.token) return;
  const list = await api('GET', `/releases?limit=${HISTORY_LIMIT}`);
  state.releases = (Array.isArray(list) ? list : []).sort((a, b) => b.id - a.id);
  if (state.selected === null && state.releases.length) {
    const inflight = state.releases.find((r) => !r.final);
    state.selected = (inflight || state.releases[0]).id;
  }
  renderHistory();
}

async function refreshAudit() {
  if (!state.token) return;
  const list = await api('GET', `/audit?limit=${AUDIT_LIMIT}`);
  state.audit = Array.isArray(list) ? list : [];
  renderAudit();
}

async function refreshSelected() {
  if (!state.token || state.selected === null) {
    renderRelease();
    return;
  }
  try {
    const r = await api('GET', `/releases/${state.selected}`);
    if (r && typeof r.id === 'number') state.details.set(r.id, r);
  } catch (e) {
    if (e.status === 404) state.selected = null;
  }
  renderRelease();
}

function select(id, follow) {
  state.selected = id;
  state.follow = follow;
  history.replaceState(null, '', follow ? '#' : `#release=${id}`);
  refreshSelected();
  renderHistory();
  const view = $('release-view');
  if (view.scrollIntoView) view.scrollIntoView({ block: 'start', behavior: 'smooth' });
}

function readHash() {
  const m = /^#release=(\d+)$/.exec(location.hash);
  if (m) {
    state.selected = Number(m[1]);
    state.follow = false;
  }
}

// ------------------------------------------------------------------ actions

async function act(button, fn) {
  button.disabled = true;
  showBanner('');
  try {
    await fn();
  } catch (e) {
    showBanner(`${button.textContent} failed: ${e.message}`);
  } finally {
    button.disabled = false;
    await refreshAll().catch(() => {});
  }
}

function actionButton(action, text, onClick, extra = {}) {
  const allowed = can(action);
  const title = allowed ? extra.title : (state.me && state.me.role
    ? `your role (${state.me.role}) may not ${action}`
    : 'your role is unknown, so actions are disabled');
  const b = h('button', {
    type: 'button',
    class: extra.danger ? 'danger' : undefined,
    dataset: { action },
    disabled: !allowed,
    title,
  }, text);
  b.addEventListener('click', () => { if (can(action)) onClick(b); });
  return b;
}

// A modal confirmation. `body` is a list of nodes; resolves with true when confirmed.
// `validate` may return an error string that keeps the dialog open.
function confirmDialog(title, body, okText, validate) {
  const dlg = $('confirm-dialog');
  $('confirm-title').textContent = title;
  clear($('confirm-body')).append(...body);
  $('confirm-error').textContent = '';
  $('confirm-ok').textContent = okText;
  return new Promise((resolve) => {
    const done = (ok) => {
      $('confirm-form').removeEventListener('submit', onSubmit);
      $('confirm-cancel').removeEventListener('click', onCancel);
      dlg.removeEventListener('cancel', onCancel);
      if (dlg.open) dlg.close();
      resolve(ok);
    };
    const onSubmit = (ev) => {
      ev.preventDefault();
      const err = validate ? validate() : '';
      if (err) {
        $('confirm-error').textContent = err;
        return;
      }
      done(true);
    };
    const onCancel = (ev) => { if (ev) ev.preventDefault(); done(false); };
    $('confirm-form').addEventListener('submit', onSubmit);
    $('confirm-cancel').addEventListener('click', onCancel);
    dlg.addEventListener('cancel', onCancel);
    dlg.showModal();
  });
}

// The engine's default rollback target (orchestrator/engine/engine.cc, RollbackTarget): the
// newest succeeded rollout older than the one that introduced what the fleet is on or moving
// to. The page computes it to name it in the confirmation and then asks for it explicitly,
// so what is confirmed is what is done.
function rollbackChoices(pipeline) {
  const list = state.releases.filter((r) => r.pipeline === pipeline).sort((a, b) => b.id - a.id);
  const current = list.find((r) => r.state === 'succeeded' || (!r.final && r.state !== 'queued'));
  const succeededRollouts = list.filter((r) => r.state === 'succeeded' && r.kind === 'rollout');
  let target = null;
  if (current) {
    let before = current.id;
    if (current.kind === 'rollback') {
      const origin = succeededRollouts.find((r) => r.version === current.version);
      before = origin ? origin.id : current.id;
    }
    target = succeededRollouts.find((r) => r.id < before && r.version !== current.version) || null;
  }
  const versions = [];
  for (const r of succeededRollouts) {
    if (!versions.includes(r.version) && (!current || r.version !== current.version)) versions.push(r.version);
  }
  return { current, target: target ? target.version : (versions[0] || ''), versions };
}

async function rollback(button, p) {
  const { current, target, versions } = rollbackChoices(p.pipeline);
  if (!versions.length) {
    showBanner(`Pipeline ${p.pipeline} has no earlier release that succeeded to roll back to.`);
    return;
  }
  const hosts = p.regions.flatMap((r) => r.hosts);
  const select = h('select', { id: 'rollback-version' },
    versions.map((v) => h('option', { value: v }, v)));
  select.value = target;
  const summary = h('p', { id: 'rollback-summary' });
  const describe = () => {
    const v = select.value;
    const moving = hosts.filter((x) => x.current_version !== v).length;
    const regions = p.regions.map((r) => r.region);
    clear(summary).append(
      'Every host of ', h('strong', {}, p.pipeline), ' goes to version ',
      h('strong', { id: 'rollback-target' }, v), ' at once: ',
      h('strong', { id: 'rollback-hosts' }, `${hosts.length} host${hosts.length === 1 ? '' : 's'}`),
      ` (${moving} not on it now) in `,
      h('strong', { id: 'rollback-regions' }, `${regions.length} region${regions.length === 1 ? '' : 's'}: ${regions.join(', ')}`),
      '.',
    );
  };
  select.addEventListener('change', describe);
  describe();
  const body = [
    h('p', {}, 'Now on or moving to: ', h('strong', {}, current ? current.version : '(nothing succeeded yet)'),
      current && !current.final ? ' — the release in flight is preempted.' : ''),
    h('label', { for: 'rollback-version' }, 'Roll back to '),
    select,
    summary,
  ];
  const ok = await confirmDialog(`Roll back ${p.pipeline}?`, body, 'Roll back');
  if (!ok) return;
  await act(button, () => api('POST', `/pipelines/${encodeURIComponent(p.pipeline)}/rollback`, { to: select.value }));
}

async function freeze(button, p) {
  const input = h('input', { id: 'freeze-reason', type: 'text', required: true, maxlength: '500',
    placeholder: 'e.g. holiday change freeze' });
  const body = [
    h('p', {}, 'No new release of ', h('strong', {}, p.pipeline), ' starts while it is frozen.'),
    h('label', { for: 'freeze-reason' }, 'Reason'), input,
  ];
  const ok = await confirmDialog(`Freeze ${p.pipeline}?`, body, 'Freeze',
    () => (input.value.trim() ? '' : 'A reason is required.'));
  if (!ok) return;
  await act(button, () => api('POST', `/pipelines/${encodeURIComponent(p.pipeline)}/freeze`, { reason: input.value.trim() }));
}

async function abort(button, r) {
  const ok = await confirmDialog(`Abort release ${r.id}?`, [
    h('p', {}, 'Release ', h('strong', {}, r.version), ' of ', h('strong', {}, r.pipeline),
      ' stops, and every host that took it goes back to ',
      h('strong', {}, r.previous_version || 'the previous release'), '.'),
  ], 'Abort');
  if (!ok) return;
  await act(button, () => api('POST', `/releases/${r.id}/abort`));
}

// ------------------------------------------------------------------ rendering: overview

function renderOverview() {
  const root = clear($('pipelines'));
  if (!state.pipelines.length) {
    root.append(h('p', { class: 'empty' }, 'No pipelines.'));
    return;
  }
  for (const p of state.pipelines) root.append(pipelineCard(p));
}

function pipelineCard(p) {
  const path = `/pipelines/${encodeURIComponent(p.pipeline)}`;
  const flags = [];
  if (p.paused) flags.push(h('span', { class: 'flag paused' }, `paused${p.paused_by ? ` by ${p.paused_by}` : ''}`));
  if (p.frozen) {
    flags.push(h('span', { class: 'flag frozen' },
      `frozen${p.frozen_by ? ` by ${p.frozen_by}` : ''}${p.freeze_reason ? `: ${p.freeze_reason}` : ''}`));
  }
  const actions = h('div', { class: 'actions' },
    p.paused
      ? actionButton('resume', 'Resume', (b) => act(b, () => api('POST', `${path}/resume`)))
      : actionButton('pause', 'Pause', (b) => act(b, () => api('POST', `${path}/pause`))),
    p.frozen
      ? actionButton('unfreeze', 'Unfreeze', (b) => act(b, () => api('POST', `${path}/unfreeze`)))
      : actionButton('freeze', 'Freeze…', (b) => freeze(b, p)),
    actionButton('rollback', 'Roll back…', (b) => rollback(b, p), { danger: true }),
  );

  let active = h('p', { class: 'active none' }, 'No release in flight.');
  if (p.active) {
    const a = p.active;
    const waves = a.waves || [];
    const w = waves[a.current_wave];
    const link = h('a', { href: `#release=${a.id}`, class: 'active-link' }, `#${a.id} ${a.version}`);
    link.addEventListener('click', (ev) => { ev.preventDefault(); select(a.id, true); });
    active = h('p', { class: 'active', dataset: { release: String(a.id) } },
      'In flight: ', link, ' ', badge(a.state),
      w ? [' wave ', h('span', { class: 'active-wave' }, `${a.current_wave + 1}/${waves.length} ${w.name}`), ' ', badge(w.state)] : '');
  }

  const regions = h('div', { class: 'regions' }, p.regions.map((r) => regionBox(p, r)));
  return h('article', { class: 'card pipeline', dataset: { pipeline: p.pipeline } },
    h('div', { class: 'pipeline-head' },
      h('h3', {}, p.pipeline),
      h('span', { class: 'desired' }, 'desired ', h('strong', { class: 'desired-version' }, p.desired_version || '—')),
      flags,
      h('span', { class: 'spacer' }),
      actions),
    active,
    regions);
}

// The server calls a host drifted when it runs anything but the last good version; while
// a release is in flight, its own hosts are moving on purpose, so they are not drift.
function isDrift(p, host) {
  if (!host.drift) return false;
  return !(p.active && !p.active.final && host.current_version === p.active.version);
}

function regionBox(p, r) {
  r = { ...r, hosts: r.hosts.map((x) => ({ ...x, drift: isDrift(p, x) })) };
  const versions = new Set(r.hosts.map((x) => x.current_version));
  const uniform = versions.size === 1 && r.hosts.length > 0;
  const regionVersion = uniform ? [...versions][0] : '';
  const lost = r.hosts.filter((x) => !x.connected).length;
  const drift = r.hosts.filter((x) => x.drift).length;
  return h('section', {
    class: `region${drift ? ' has-drift' : ''}${lost ? ' has-lost' : ''}`,
    dataset: { region: r.region, version: regionVersion },
  },
  h('h4', {}, r.region, ' ',
    h('span', { class: 'region-version' }, regionVersion || (r.hosts.length ? 'mixed' : 'no hosts')),
    drift ? h('span', { class: 'flag drift' }, `${drift} drift`) : '',
    lost ? h('span', { class: 'flag lost' }, `${lost} lost`) : ''),
  h('ul', { class: 'hosts' }, r.hosts.map((x) => h('li', {
    class: `host${x.connected ? ' connected' : ' lost'}${x.drift ? ' drift' : ''}`,
    dataset: { host: x.name, version: x.current_version || '', connected: String(Boolean(x.connected)), agent: x.agent_version || '' },
    title: (x.drift ? `drift: runs ${x.current_version || 'nothing'}, should run ${p.desired_version}`
      : (x.connected ? 'connected' : `lost; last seen ${x.last_seen || 'never'}`))
      + `; lockstep-agent ${x.agent_version || 'unknown'}`,
  },
  h('span', { class: 'dot', 'aria-hidden': 'true' }),
  h('span', { class: 'host-name' }, x.name),
  h('span', { class: 'host-version' }, x.current_version || '—'),
  h('span', { class: 'host-conn' }, x.connected ? 'connected' : 'lost'),
  x.drift ? h('span', { class: 'flag drift' }, 'drift') : ''))));
}

// ------------------------------------------------------------------ rendering: release

function renderRelease() {
  const view = $('release-view');
  const r = state.selected === null ? null : state.details.get(state.selected)
    || state.releases.find((x) => x.id === state.selected);
  if (!r) {
    view.hidden = true;
    return;
  }
  view.hidden = false;
  view.dataset.releaseId = String(r.id);
  view.dataset.state = r.state;
  $('release-title').textContent = `Release #${r.id} — ${r.pipeline} ${r.version}${r.kind === 'rollback' ? ' (rollback)' : ''}`;
  clear($('release-state')).append(badge(r.state));

  const waves = r.waves || [];
  const cur = waves[r.current_wave];
  const actions = clear($('release-actions'));
  if (!r.final) {
    const waiting = cur && cur.state === 'awaiting_approval';
    if (waiting || (cur && cur.manual_approval && !cur.approved_by)) {
      const b = actionButton('approve', `Approve ${cur.name}`, (btn) => act(btn, () => api('POST', `/releases/${r.id}/approve`)));
      if (!waiting) b.disabled = true;
      actions.append(b);
    }
    actions.append(actionButton('abort', 'Abort…', (b) => abort(b, r), { danger: true }));
  }

  const facts = clear($('release-facts'));
  const fact = (k, v, id) => facts.append(h('div', {}, h('dt', {}, k), h('dd', id ? { id } : {}, v)));
  fact('Version', r.version, 'release-version');
  if (r.previous_version) fact('Previous', r.previous_version);
  fact('Commit', r.commit || '—', 'release-commit');
  fact('Author', r.author || '—', 'release-author');
  fact('Created', fmtTime(r.created_at_ms));
  const dur = releaseDuration(r);
  if (dur !== null) fact(r.final ? 'Took' : 'Running for', fmtDuration(dur), 'release-duration');
  if (r.reason) fact('Reason', r.reason, 'release-reason');
  if (cur && !r.final) fact('Current wave', `${r.current_wave + 1}/${waves.length} ${cur.name} (${label(cur.state)})`, 'release-current-wave');
  const bake = cur && cur.state === 'baking' && cur.bake_started_at_ms ? cur : null;
  if (bake) {
    const dd = h('span', { class: 'countdown', id: 'bake-countdown',
      dataset: { until: String(bake.bake_started_at_ms + bake.bake_ms) } });
    fact('Bake', dd);
  }
  const windows = waves.filter((w) => w.last_switch_at_ms > 0);
  if (windows.length) {
    fact('Mixed-version window', windows.map((w) => `${w.name} ${fmtDuration(w.mixed_version_window_ms)}`).join(', '), 'mixed-window');
  }

  renderGrid(r, waves);
  renderGates(r, waves);
  renderHosts(r, waves);
  tick();
}

function regionsOf(r, waves) {
  const out = [];
  for (const w of waves) for (const rp of w.regions) if (!out.includes(rp.region)) out.push(rp.region);
  for (const x of r.hosts || []) if (!out.includes(x.region)) out.push(x.region);
  return out;
}

function renderGrid(r, waves) {
  const grid = clear($('wave-grid'));
  const regions = regionsOf(r, waves);
  if (!waves.length) {
    grid.append(h('caption', {}, r.kind === 'rollback'
      ? 'A rollback takes every host to its version at once, without waves.' : 'No wave information.'));
    if (r.kind !== 'rollback') return;
  }
  grid.append(h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Wave'), h('th', { scope: 'col' }, 'State'),
    regions.map((name) => h('th', { scope: 'col' }, name)))));
  const body = h('tbody');
  for (const w of waves) {
    const current = w.index === r.current_wave && !r.final;
    const row = h('tr', { class: `wave${current ? ' current' : ''}`, dataset: { wave: String(w.index), state: w.state } },
      h('th', { scope: 'row' }, w.name, w.manual_approval ? h('span', { class: 'flag manual', title: 'manual approval' }, 'manual') : ''),
      h('td', { class: 'wave-state' }, badge(w.state),
        w.approved_by ? h('span', { class: 'approved' }, ` approved by ${w.approved_by}`) : '',
        w.bake_ms ? h('span', { class: 'bake' }, ` bake ${fmtDuration(w.bake_ms)}`) : ''));
    for (const name of regions) {
      const rp = w.regions.find((x) => x.region === name);
      if (!rp || !rp.selected) {
        row.append(h('td', { class: 'cell none', dataset: { region: name } }, '—'));
        continue;
      }
      const st = rp.failed ? 'failed' : w.state === 'pending' ? 'pending'
        : rp.done >= rp.selected ? 'done' : 'deploying';
      row.append(h('td', { class: `cell ${stateClass(st)}`, dataset: { region: name, state: st } },
        h('span', { class: 'count' }, `${rp.done}/${rp.selected}`),
        rp.failed ? h('span', { class: 'failed-count' }, ` ${rp.failed} failed`) : '',
        h('span', { class: 'bar', 'aria-hidden': 'true' }, h('span', { class: 'fill', dataset: { pct: String(Math.round(100 * rp.done / rp.selected)) } }))));
    }
    body.append(row);
  }
  if (r.kind === 'rollback' && (r.hosts || []).length) {
    const row = h('tr', { class: 'wave', dataset: { wave: 'rollback', state: r.state } },
      h('th', { scope: 'row' }, 'all hosts'), h('td', {}, badge(r.state)));
    for (const name of regions) {
      const hs = r.hosts.filter((x) => x.region === name);
      const done = hs.filter((x) => x.state === 'done').length;
      const st = done === hs.length ? 'done' : 'deploying';
      row.append(h('td', { class: `cell ${stateClass(st)}`, dataset: { region: name, state: st } }, `${done}/${hs.length}`));
    }
    body.append(row);
  }
  grid.append(body);
  // Progress bars: widths set through the CSSOM (allowed by the page's CSP), not markup.
  for (const f of grid.querySelectorAll('.fill')) f.style.width = `${f.dataset.pct}%`;
}

function renderGates(r, waves) {
  const t = clear($('gates'));
  const gates = r.gates || [];
  if (!gates.length) {
    t.append(h('caption', {}, 'No gate results yet.'));
    return;
  }
  t.append(h('thead', {}, h('tr', {}, ['Wave', 'Gate', 'Region', 'Verdict', 'Value', 'Detail', 'At'].map((x) => h('th', { scope: 'col' }, x)))));
  t.append(h('tbody', {}, gates.map((g) => h('tr', { class: 'gate', dataset: { verdict: g.verdict } },
    h('td', {}, waves[g.wave] ? waves[g.wave].name : String(g.wave)),
    h('td', {}, g.gate),
    h('td', {}, g.region || 'all'),
    h('td', {}, badge(g.verdict)),
    h('td', { class: 'num' }, typeof g.value === 'number' ? String(Number(g.value.toPrecision(6))) : ''),
    h('td', { class: 'detail' }, g.detail),
    h('td', {}, fmtTime(g.at_ms))))));
}

function renderHosts(r, waves) {
  const t = clear($('hosts'));
  const hosts = r.hosts || [];
  if (!hosts.length) {
    t.append(h('caption', {}, 'No host has started yet.'));
    return;
  }
  t.append(h('thead', {}, h('tr', {}, ['Host', 'Region', 'Wave', 'Step', 'From', 'Time', 'Detail / hook output'].map((x) => h('th', { scope: 'col' }, x)))));
  const sorted = [...hosts].sort((a, b) => a.wave - b.wave || a.region.localeCompare(b.region) || a.agent.localeCompare(b.agent));
  t.append(h('tbody', {}, sorted.map((x) => h('tr', { class: 'host-row', dataset: { host: x.agent, state: x.state } },
    h('td', {}, x.agent),
    h('td', {}, x.region),
    h('td', {}, waves[x.wave] ? waves[x.wave].name : (r.kind === 'rollback' ? '—' : String(x.wave))),
    h('td', {}, badge(x.state)),
    h('td', {}, x.from_version || ''),
    h('td', {}, x.started_at_ms ? fmtDuration((x.finished_at_ms || Date.now()) - x.started_at_ms) : ''),
    h('td', { class: 'detail' }, h('pre', {}, tail(x.detail, 6)))))));
}

function tail(text, lines) {
  const all = String(text || '').split('\n');
  while (all.length && all[all.length - 1] === '') all.pop();
  return all.slice(-lines).join('\n');
}

// Once a second: bake countdowns.
function tick() {
  const now = Date.now();
  for (const el of document.querySelectorAll('.countdown')) {
    const left = Number(el.dataset.until) - now;
    el.textContent = left > 0 ? `${fmtDuration(left)} left` : 'bake time over, checking gates';
  }
}

// ------------------------------------------------------------------ rendering: history

function renderHistory() {
  renderChart();
  const t = clear($('releases'));
  if (!state.releases.length) {
    t.append(h('caption', {}, 'No releases yet.'));
    return;
  }
  t.append(h('thead', {}, h('tr', {}, ['#', 'Pipeline', 'Version', 'Kind', 'Outcome', 'Duration', 'Commit', 'Author', 'Created'].map((x) => h('th', { scope: 'col' }, x)))));
  t.append(h('tbody', {}, state.releases.map((r) => {
    const link = h('a', { href: `#release=${r.id}` }, String(r.id));
    link.addEventListener('click', (ev) => { ev.preventDefault(); select(r.id, false); });
    const d = releaseDuration(r);
    return h('tr', { class: `release-row${r.id === state.selected ? ' selected' : ''}`, dataset: { release: String(r.id), state: r.state } },
      h('td', {}, link), h('td', {}, r.pipeline), h('td', {}, r.version), h('td', {}, r.kind),
      h('td', {}, badge(r.state)), h('td', {}, d === null ? '' : fmtDuration(d)),
      h('td', { class: 'commit' }, r.commit ? r.commit.slice(0, 40) : ''),
      h('td', {}, r.author || ''), h('td', {}, fmtTime(r.created_at_ms)));
  })));
}

function renderChart() {
  const box = clear($('chart'));
  const rows = [...state.releases].filter((r) => r.started_at_ms).slice(0, 30).reverse();
  if (!rows.length) return;
  const now = Date.now();
  const W = 600;
  const H = 160;
  const pad = { l: 40, b: 18, t: 8 };
  const max = Math.max(1000, ...rows.map((r) => releaseDuration(r, now)));
  const bw = Math.min(48, (W - pad.l) / rows.length);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'chart-title', class: 'bars' },
    s('title', { id: 'chart-title' }, 'Duration of recent releases, coloured by outcome'),
    s('line', { x1: pad.l, y1: H - pad.b, x2: W, y2: H - pad.b, class: 'axis' }),
    s('text', { x: pad.l - 4, y: pad.t + 8, class: 'tick', 'text-anchor': 'end' }, fmtDuration(max)),
    s('text', { x: pad.l - 4, y: H - pad.b, class: 'tick', 'text-anchor': 'end' }, '0'));
  rows.forEach((r, i) => {
    const d = releaseDuration(r, now);
    const bh = Math.max(2, ((H - pad.b - pad.t) * d) / max);
    const x = pad.l + i * bw + bw * 0.15;
    const bar = s('rect', {
      x: x.toFixed(1), y: (H - pad.b - bh).toFixed(1), width: (bw * 0.7).toFixed(1), height: bh.toFixed(1),
      class: `bar ${stateClass(r.state)}`, 'data-release': r.id, tabindex: '0',
    }, s('title', {}, `#${r.id} ${r.pipeline} ${r.version}: ${label(r.state)}, ${fmtDuration(d)}`));
    bar.addEventListener('click', () => select(r.id, false));
    svg.append(bar);
    if (rows.length <= 15) {
      svg.append(s('text', { x: (x + bw * 0.35).toFixed(1), y: H - 4, class: 'tick', 'text-anchor': 'middle' }, `#${r.id}`));
    }
  });
  const legend = h('div', { class: 'legend' },
    ['succeeded', 'rolling', 'rolled_back', 'failed', 'aborted', 'superseded'].map((st) => h('span', {}, h('span', { class: `swatch ${stateClass(st)}` }), label(st))));
  box.append(svg, legend);
}

function renderAudit() {
  const t = clear($('audit'));
  if (!state.audit.length) {
    t.append(h('caption', {}, 'The audit log is empty.'));
    return;
  }
  t.append(h('thead', {}, h('tr', {}, ['When', 'Who', 'Action', 'Target', 'Detail', 'Outcome'].map((x) => h('th', { scope: 'col' }, x)))));
  t.append(h('tbody', {}, state.audit.map((e) => h('tr', { class: 'audit-row', dataset: { action: e.action } },
    h('td', {}, fmtTime(e.at_ms)), h('td', {}, e.actor), h('td', {}, e.action), h('td', {}, e.target),
    h('td', { class: 'detail' }, e.detail), h('td', {}, e.outcome)))));
}

// ------------------------------------------------------------------ start

function main() {
  $('signin').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = $('token-input').value.trim();
    $('signin-error').textContent = '';
    $('signin-button').disabled = true;
    try {
      await signIn(token);
    } catch (e) {
      signOut(e.status === 401 ? 'That token is not valid.' : `Sign-in failed: ${e.message}`);
    } finally {
      $('signin-button').disabled = false;
    }
  });
  $('signout').addEventListener('click', () => signOut(''));
  window.addEventListener('hashchange', () => {
    readHash();
    if (state.token) refreshSelected();
  });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    signIn(saved).catch((e) => signOut(e.status === 401 ? 'Your token is no longer valid.' : `Sign-in failed: ${e.message}`));
  }
}

main();
