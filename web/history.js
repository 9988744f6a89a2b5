// History: releases as a table and a duration chart, filtered by pipeline, version, state,
// actor and time and read a page at a time; and the choice of which release the release
// view shows.
//
// Owns: #history-filter, #chart, #releases, #releases-pager, state.history, and the
// #release=<id> hash (select, readHash). state.releases (the newest releases, whatever the
// filter) is loaded here too: "Needs you", the live updates and the rollback dialog use it.
// Exports: refreshReleases, renderHistory, select, readHash, wireHistory.

import { api } from './api.js';
import {
  badge, commitUrl, fmtDuration, fmtTime, label, link, parseZoned, releaseDuration, stateClass, zoneName,
} from './format.js';
import { renderNeeds } from './needs.js';
import { refreshSelected } from './release.js';
import { $, h, patch, s, state } from './state.js';

const RECENT = 100;  // releases kept in state.releases
const STATES = ['waiting_for_artifact', 'queued', 'rolling', 'rolling_back', 'aborting', 'halted',
  'succeeded', 'failed', 'rolled_back', 'aborted', 'superseded'];

function query(q, limit, before) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== '' && v !== undefined && v !== null) p.set(k, String(v));
  p.set('limit', String(limit));
  if (before) p.set('before_id', String(before));
  return p.toString();
}

// The filter applied again here, so that a page from a server that ignores a filter still
// shows only what was asked for.
function matches(r, q) {
  if (q.pipeline && r.pipeline !== q.pipeline) return false;
  if (q.state && r.state !== q.state) return false;
  if (q.kind && r.kind !== q.kind) return false;
  if (q.version && r.version !== q.version) return false;
  if (q.actor && r.author !== q.actor && r.created_by !== q.actor) return false;
  if (q.since_ms && !(r.created_at_ms >= q.since_ms)) return false;
  if (q.until_ms && !(r.created_at_ms <= q.until_ms)) return false;
  return true;
}

export async function refreshReleases() {
  if (!state.token) return;
  const hv = state.history;
  const filtered = Object.keys(hv.query).length > 0 || hv.before.length > 0;
  // Reads overlap (a filter applied while an update is under way): only the newest counts.
  hv.seq = (hv.seq || 0) + 1;
  const seq = hv.seq;
  const [list, page] = await Promise.all([
    api('GET', `/releases?limit=${RECENT}`),
    filtered ? api('GET', `/releases?${query(hv.query, hv.limit, hv.before[hv.before.length - 1])}`) : null,
  ]);
  if (seq !== hv.seq) return;
  state.releases = (Array.isArray(list) ? list : []).sort((a, b) => b.id - a.id);
  if (filtered) {
    const got = (Array.isArray(page) ? page : []).sort((a, b) => b.id - a.id);
    const before = hv.before[hv.before.length - 1];
    // A server that does not page answers the first page again.
    hv.paged = !before || got.every((r) => r.id < before);
    hv.rows = got.filter((r) => matches(r, hv.query) && (!before || r.id < before));
    hv.more = hv.paged && got.length >= hv.limit;
    hv.lastId = got.length ? got[got.length - 1].id : null;
  } else {
    hv.rows = null;
    hv.more = state.releases.length > hv.limit;
    hv.lastId = state.releases.length >= hv.limit ? state.releases[hv.limit - 1].id : null;
    hv.paged = true;
  }
  if (state.selected === null && state.releases.length) {
    const inflight = state.releases.find((r) => !r.final);
    state.selected = (inflight || state.releases[0]).id;
  }
  renderHistory();
}

// The rows the table shows: the filtered page, or the newest releases; each as the page
// knows it now (events update releases between reads).
function rows() {
  const hv = state.history;
  if (!hv.rows) return state.releases.slice(0, hv.limit);
  const known = new Map(state.releases.map((r) => [r.id, r]));
  return hv.rows.map((r) => known.get(r.id) || r);
}

// Shows release `id`; `follow`: keep following the newest in-flight release from now on.
export function select(id, follow) {
  state.selected = id;
  state.follow = follow;
  history.replaceState(null, '', follow ? '#' : `#release=${id}`);
  refreshSelected();
  renderHistory();
  const view = $('release-view');
  if (view.scrollIntoView) view.scrollIntoView({ block: 'start' });
}

// The hash names the release on view; without one, the view follows the newest release in
// flight.
export function readHash() {
  const m = /^#release=(\d+)$/.exec(location.hash);
  if (m) {
    state.selected = Number(m[1]);
    state.follow = false;
  } else if (!location.hash || location.hash === '#') {
    state.follow = true;
  }
}

export function renderHistory() {
  renderNeeds();
  const list = rows();
  renderChart(list);
  renderFilterChoices();
  const hv = state.history;
  if (!list.length) {
    patch($('releases'), h('caption', { key: 'caption' },
      Object.keys(hv.query).length ? 'No release matches the filter.' : 'No releases yet.'));
  } else {
    patch($('releases'),
      h('thead', { key: 'head' }, h('tr', {}, ['#', 'Pipeline', 'Version', 'Kind', 'Outcome', 'Duration', 'Commit', 'Author', 'Created by', 'Created']
        .map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', { key: 'body' }, list.map((r) => {
        const d = releaseDuration(r);
        return h('tr', {
          key: r.id, class: `release-row${r.id === state.selected ? ' selected' : ''}`,
          dataset: { release: String(r.id), state: r.state },
          'aria-current': r.id === state.selected ? 'true' : undefined,
        },
        h('td', {}, h('a', { href: `#release=${r.id}`, onclick: (ev) => { ev.preventDefault(); select(r.id, false); } }, String(r.id))),
        h('td', {}, r.pipeline), h('td', {}, r.version), h('td', {}, r.kind),
        h('td', {}, badge(r.state)), h('td', {}, d === null ? '' : fmtDuration(d)),
        h('td', { class: 'commit' }, r.commit ? link(commitUrl(r, state.pipelines), r.commit.slice(0, 40)) : ''),
        h('td', { class: 'author' }, r.author || ''),
        h('td', { class: 'created-by' }, r.created_by || ''),
        h('td', {}, fmtTime(r.created_at_ms)));
      })));
  }
  const page = hv.before.length + 1;
  $('releases-newer').disabled = !hv.before.length;
  $('releases-older').disabled = !hv.more;
  const text = `Page ${page}${hv.paged ? '' : ' (this server shows one page only)'}`;
  if ($('releases-page').textContent !== text) $('releases-page').textContent = text;
}

// The filter's pipeline choices follow the pipelines; the rest is static markup.
function renderFilterChoices() {
  const sel = $('hf-pipeline');
  const want = ['', ...state.pipelines.map((p) => p.pipeline)];
  patch(sel, ...want.map((p) => h('option', { key: p || '*', value: p }, p || 'all')));
  const st = $('hf-state');
  if (st.options.length <= 1) patch(st, h('option', { key: '*', value: '' }, 'any'), ...STATES.map((x) => h('option', { key: x, value: x }, label(x))));
  const zone = zoneName() === 'utc' ? 'UTC' : 'local';
  for (const el of document.querySelectorAll('.zone-name')) if (el.textContent !== zone) el.textContent = zone;
}

// The filter form and the pager (static markup in index.html) call these.
export function wireHistory(reload) {
  const form = $('history-filter');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const q = {};
    for (const k of ['pipeline', 'version', 'state', 'actor']) {
      const v = String(f.get(k) || '').trim();
      if (v) q[k] = v;
    }
    const since = parseZoned(f.get('since'));
    const until = parseZoned(f.get('until'));
    if (since > 0) q.since_ms = since;
    if (until > 0) q.until_ms = until + 59999;  // to the end of that minute
    state.history.query = q;
    state.history.limit = Number(f.get('limit')) || 25;
    state.history.before = [];
    reload();
  });
  form.addEventListener('reset', () => {
    state.history.query = {};
    state.history.before = [];
    state.history.limit = 25;
    setTimeout(reload, 0);
  });
  $('releases-older').addEventListener('click', () => {
    const hv = state.history;
    if (!hv.more || !hv.lastId) return;
    hv.before.push(hv.lastId);
    reload();
  });
  $('releases-newer').addEventListener('click', () => {
    state.history.before.pop();
    reload();
  });
}

function renderChart(list) {
  const box = $('chart');
  const rowsShown = [...list].filter((r) => r.started_at_ms).slice(0, 30).reverse();
  if (!rowsShown.length) {
    patch(box);
    return;
  }
  const now = Date.now();
  const W = 600;
  const H = 160;
  const pad = { l: 40, b: 18, t: 8 };
  const max = Math.max(1000, ...rowsShown.map((r) => releaseDuration(r, now)));
  const bw = Math.min(48, (W - pad.l) / rowsShown.length);
  // The bars are a picture of the table below (which has the links): clicking one selects
  // its release, but they are not tab stops; the table is the keyboard's way.
  const svg = s('svg', { key: 'svg', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'chart-title', class: 'bars' },
    s('title', { id: 'chart-title' }, `Duration of the ${rowsShown.length} releases in the table, oldest first, coloured by outcome`),
    s('line', { x1: pad.l, y1: H - pad.b, x2: W, y2: H - pad.b, class: 'axis' }),
    s('text', { x: pad.l - 4, y: pad.t + 8, class: 'tick', 'text-anchor': 'end' }, fmtDuration(max)),
    s('text', { x: pad.l - 4, y: H - pad.b, class: 'tick', 'text-anchor': 'end' }, '0'),
    rowsShown.map((r, i) => {
      const d = releaseDuration(r, now);
      const bh = Math.max(2, ((H - pad.b - pad.t) * d) / max);
      const x = pad.l + i * bw + bw * 0.15;
      return [s('rect', {
        key: `r${r.id}`,
        x: x.toFixed(1), y: (H - pad.b - bh).toFixed(1), width: (bw * 0.7).toFixed(1), height: bh.toFixed(1),
        class: `bar ${stateClass(r.state)}`, 'data-release': r.id,
        onclick: () => select(r.id, false),
      }, s('title', {}, `#${r.id} ${r.pipeline} ${r.version}: ${label(r.state)}, ${fmtDuration(d)}`)),
      rowsShown.length <= 15
        ? s('text', { key: `t${r.id}`, x: (x + bw * 0.35).toFixed(1), y: H - 4, class: 'tick', 'text-anchor': 'middle' }, `#${r.id}`)
        : ''];
    }));
  const legend = h('div', { class: 'legend', key: 'legend' },
    ['succeeded', 'rolling', 'rolled_back', 'failed', 'aborted', 'superseded'].map((st) => h('span', { key: st }, h('span', { class: `swatch ${stateClass(st)}` }), label(st))));
  patch(box, svg, legend);
}
