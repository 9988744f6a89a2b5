// History: the recent releases as a table and a duration chart, and the choice of which
// release the release view shows.
//
// Owns: #chart, #releases, and the #release=<id> hash (select, readHash).
// Exports: refreshReleases, renderHistory, select, readHash.

import { api } from './api.js';
import { badge, fmtDuration, fmtTime, label, releaseDuration, stateClass } from './format.js';
import { refreshSelected } from './release.js';
import { $, clear, h, s, state } from './state.js';

const HISTORY_LIMIT = 40;

export async function refreshReleases() {
  if (!state.token) return;
  const list = await api('GET', `/releases?limit=${HISTORY_LIMIT}`);
  state.releases = (Array.isArray(list) ? list : []).sort((a, b) => b.id - a.id);
  if (state.selected === null && state.releases.length) {
    const inflight = state.releases.find((r) => !r.final);
    state.selected = (inflight || state.releases[0]).id;
  }
  renderHistory();
}

// Shows release `id`; `follow`: keep following the newest in-flight release from now on.
export function select(id, follow) {
  state.selected = id;
  state.follow = follow;
  history.replaceState(null, '', follow ? '#' : `#release=${id}`);
  refreshSelected();
  renderHistory();
  const view = $('release-view');
  if (view.scrollIntoView) view.scrollIntoView({ block: 'start', behavior: 'smooth' });
}

export function readHash() {
  const m = /^#release=(\d+)$/.exec(location.hash);
  if (m) {
    state.selected = Number(m[1]);
    state.follow = false;
  }
}

export function renderHistory() {
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
