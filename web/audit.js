// The audit log: who did what, newest first, filtered by pipeline, actor, action, text and
// time, a page at a time.
//
// Owns: #audit, #audit-filter, #audit-pager and state.auditView.
// Exports: refreshAudit, renderAudit, wireAudit.

import { api } from './api.js';
import { fmtTime, parseZoned } from './format.js';
import { $, h, patch, state } from './state.js';

// Which pipeline an entry's target belongs to, when the page can tell; null when not.
function pipelineOf(target) {
  if (state.pipelines.some((p) => p.pipeline === target)) return target;
  const m = /^pipeline\/(.+)$/.exec(target);
  if (m) return m[1];
  const r = /^release\/(\d+)$/.exec(target);
  if (r) {
    const rel = state.releases.find((x) => x.id === Number(r[1]));
    return rel ? rel.pipeline : null;
  }
  return null;
}

// The filter applied again here, for a server that ignores one (what the page cannot tell
// is left to the server).
function matches(e, q) {
  if (q.pipeline) {
    const p = pipelineOf(String(e.target || ''));
    if (p !== null && p !== q.pipeline) return false;
  }
  if (q.actor && e.actor !== q.actor) return false;
  if (q.action && !String(e.action || '').startsWith(q.action)) return false;
  if (q.q) {
    const needle = q.q.toLowerCase();
    if (![e.actor, e.action, e.target, e.detail].some((x) => String(x || '').toLowerCase().includes(needle))) return false;
  }
  if (q.since_ms && !(e.at_ms >= q.since_ms)) return false;
  if (q.until_ms && !(e.at_ms <= q.until_ms)) return false;
  return true;
}

export async function refreshAudit() {
  if (!state.token) return;
  const v = state.auditView;
  const p = new URLSearchParams();
  for (const [k, x] of Object.entries(v.query)) p.set(k, String(x));
  p.set('limit', String(v.limit));
  const before = v.before[v.before.length - 1];
  if (before) p.set('before_id', String(before));
  // Reads overlap (a filter applied while an update is under way): only the newest counts.
  v.seq = (v.seq || 0) + 1;
  const seq = v.seq;
  const list = await api('GET', `/audit?${p}`);
  if (seq !== v.seq) return;
  const got = Array.isArray(list) ? list : [];
  v.paged = !before || got.every((e) => e.id < before);
  state.audit = got.filter((e) => matches(e, v.query) && (!before || e.id < before));
  v.more = v.paged && got.length >= v.limit;
  v.lastId = got.length ? got[got.length - 1].id : null;
  renderAudit();
}

export function renderAudit() {
  const v = state.auditView;
  if (!state.audit.length) {
    patch($('audit'), h('caption', { key: 'caption' },
      Object.keys(v.query).length ? 'No audit entry matches the filter.' : 'The audit log is empty.'));
  } else {
    patch($('audit'),
      h('thead', { key: 'head' }, h('tr', {}, ['When', 'Who', 'Action', 'Target', 'Detail', 'Outcome'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', { key: 'body' }, state.audit.map((e) => h('tr', { key: e.id ?? `${e.at_ms}-${e.action}-${e.target}`, class: 'audit-row', dataset: { action: e.action } },
        h('td', {}, fmtTime(e.at_ms)), h('td', { class: 'actor' }, e.actor), h('td', {}, e.action), h('td', {}, e.target),
        h('td', { class: 'detail' }, e.detail), h('td', {}, e.outcome)))));
  }
  $('audit-newer').disabled = !v.before.length;
  $('audit-older').disabled = !v.more;
  const text = `Page ${v.before.length + 1}${v.paged ? '' : ' (this server shows one page only)'}`;
  if ($('audit-page').textContent !== text) $('audit-page').textContent = text;
  const sel = $('af-pipeline');
  patch(sel, ...['', ...state.pipelines.map((p) => p.pipeline)].map((p) => h('option', { key: p || '*', value: p }, p || 'all')));
}

export function wireAudit() {
  const form = $('audit-filter');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const q = {};
    for (const k of ['pipeline', 'actor', 'action', 'q']) {
      const x = String(f.get(k) || '').trim();
      if (x) q[k] = x;
    }
    const since = parseZoned(f.get('since'));
    const until = parseZoned(f.get('until'));
    if (since > 0) q.since_ms = since;
    if (until > 0) q.until_ms = until + 59999;
    state.auditView.query = q;
    state.auditView.limit = Number(f.get('limit')) || 50;
    state.auditView.before = [];
    refreshAudit().catch(() => {});
  });
  form.addEventListener('reset', () => {
    Object.assign(state.auditView, { query: {}, before: [], limit: 50 });
    setTimeout(() => refreshAudit().catch(() => {}), 0);
  });
  $('audit-older').addEventListener('click', () => {
    const v = state.auditView;
    if (!v.more || !v.lastId) return;
    v.before.push(v.lastId);
    refreshAudit().catch(() => {});
  });
  $('audit-newer').addEventListener('click', () => {
    state.auditView.before.pop();
    refreshAudit().catch(() => {});
  });
}
