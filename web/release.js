// The release view: one release's facts, wave grid, bring-up tracks, gate results and hosts
// (with a failed hook's output tail), and the bake countdowns.
//
// Owns: #release-view and everything in it, and which hosts' hook output is expanded. Which
// release it shows is state.selected (set by history.js's select and by the live updates).
// Exports: refreshSelected, renderRelease, tick.

import { releaseActions } from './actions.js';
import { api } from './api.js';
import {
  badge, bringupFlag, fmtDuration, fmtTime, label, releaseDuration, stateClass, WITHHELD_TEXT,
} from './format.js';
import { $, clear, h, state } from './state.js';

// Loads the selected release in full (waves, hosts, gates) and shows it.
export async function refreshSelected() {
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

export function renderRelease() {
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
  clear($('release-actions')).append(...releaseActions(r, cur));

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
  renderBringup(r, waves);
  renderGates(r, waves);
  renderHosts(r, waves);
  tick();
}

// The regions that took release `r` in tracks of their own (bring-up regions).
function bringupRegions(r) {
  return new Set((Array.isArray(r.bringup) ? r.bringup : []).map((t) => t.region));
}

// The grid's columns: the serving regions (a bring-up region has its own table).
function regionsOf(r, waves) {
  const out = [];
  const own = bringupRegions(r);
  for (const w of waves) for (const rp of w.regions) if (!out.includes(rp.region)) out.push(rp.region);
  for (const x of r.hosts || []) if (!out.includes(x.region) && !own.has(x.region)) out.push(x.region);
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
      const st = cellState(r, w, rp);
      row.append(gridCell(name, st, rp));
    }
    body.append(row);
  }
  if (r.kind === 'rollback' && (r.hosts || []).length) {
    const row = h('tr', { class: 'wave', dataset: { wave: 'rollback', state: r.state } },
      h('th', { scope: 'row' }, 'all hosts'), h('td', {}, badge(r.state)));
    for (const name of regions) {
      const hs = r.hosts.filter((x) => x.region === name);
      const done = hs.filter((x) => x.state === 'done').length;
      const failed = hs.filter((x) => x.state === 'failed').length;
      const st = done === hs.length ? 'done' : !r.final ? 'deploying' : failed ? 'failed' : 'stopped';
      row.append(gridCell(name, st, { done, selected: hs.length, failed }));
    }
    body.append(row);
  }
  grid.append(body);
  // Progress bars: widths set through the CSSOM (allowed by the page's CSP), not markup.
  for (const f of grid.querySelectorAll('.fill')) f.style.width = `${f.dataset.pct}%`;
}

// What one region's cell of one wave says. A wave that has not started is empty (its
// counts would be earlier waves' hosts, which the server counts cumulatively). A final
// release shows only end states: nothing in it is still deploying.
function cellState(r, w, rp) {
  if (w.state === 'pending') return 'pending';
  if (rp.failed) return 'failed';
  if (w.state === 'reverted' || (r.final && w.state === 'failed')) return w.state;
  if (rp.done >= rp.selected) return 'done';
  if (!r.final) return 'deploying';
  // Ended part-way: its hosts went back when the release was rolled back or aborted.
  return r.state === 'rolled_back' || r.state === 'aborted' ? 'reverted' : 'stopped';
}

// Counts and a bar only where they describe work of this wave: deploying or done.
function gridCell(region, st, rp) {
  const cls = `cell ${st === 'pending' ? 'empty' : stateClass(st)}`;
  const td = h('td', { class: cls, dataset: { region, state: st } });
  if (st === 'deploying' || st === 'done') {
    td.append(h('span', { class: 'count' }, `${rp.done}/${rp.selected}`),
      rp.failed ? h('span', { class: 'failed-count' }, ` ${rp.failed} failed`) : '',
      h('span', { class: 'bar', 'aria-hidden': 'true' },
        h('span', { class: 'fill', dataset: { pct: String(Math.round(100 * rp.done / rp.selected)) } })));
  } else {
    td.append(h('span', { class: 'cell-label' }, label(st)),
      rp.failed ? h('span', { class: 'failed-count' }, ` ${rp.failed} failed`) : '');
  }
  return td;
}

// One row per bring-up region: where its own walk through the waves is, and why it ended so.
function renderBringup(r, waves) {
  const tracks = Array.isArray(r.bringup) ? r.bringup : [];
  $('bringup-section').hidden = !tracks.length;
  const t = clear($('bringup'));
  if (!tracks.length) return;
  t.append(h('thead', {}, h('tr', {}, ['Region', 'State', 'Wave', 'Time', 'Reason'].map((x) => h('th', { scope: 'col' }, x)))));
  t.append(h('tbody', {}, tracks.map((b) => {
    const w = waves[b.wave];
    const baking = b.state === 'rolling' && b.bake_started_at_ms > 0 && w && w.bake_ms > 0;
    return h('tr', { class: 'bringup-track', dataset: { region: b.region, state: b.state } },
      h('td', {}, b.region),
      h('td', {}, badge(b.state)),
      h('td', { class: 'track-wave' }, b.wave_name || (w ? w.name : ''),
        baking ? [' baking, ', h('span', { class: 'countdown', dataset: { until: String(b.bake_started_at_ms + w.bake_ms) } })] : ''),
      h('td', {}, b.started_at_ms ? fmtDuration((b.finished_at_ms || Date.now()) - b.started_at_ms) : ''),
      h('td', { class: 'detail track-reason' }, b.reason || ''));
  })));
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
  const own = bringupRegions(r);
  const pipeline = state.pipelines.find((p) => p.pipeline === r.pipeline);
  const keeps = (region) => Boolean(pipeline && pipeline.regions.some((x) => x.region === region && x.hook_output === 'none'));
  const sorted = [...hosts].sort((a, b) => a.wave - b.wave || a.region.localeCompare(b.region) || a.agent.localeCompare(b.agent));
  t.append(h('tbody', {}, sorted.map((x) => h('tr', {
    class: `host-row${own.has(x.region) ? ' bringup' : ''}`,
    dataset: { host: x.agent, state: x.state, stage: own.has(x.region) ? 'bringup' : 'serving' },
  },
  h('td', {}, x.agent),
  h('td', {}, x.region, own.has(x.region) ? [' ', bringupFlag(false)] : ''),
  h('td', {}, waves[x.wave] ? waves[x.wave].name : (r.kind === 'rollback' ? '—' : String(x.wave))),
  h('td', {}, badge(x.state)),
  h('td', {}, x.from_version || ''),
  h('td', {}, x.started_at_ms ? fmtDuration((x.finished_at_ms || Date.now()) - x.started_at_ms) : ''),
  h('td', { class: 'detail' }, h('pre', {}, tail(x.detail, 6)), hookOutput(r, x, keeps(x.region)))))));
}

// Which hosts' hook output the reader opened ("release/host"), kept across re-renders.
const openOutputs = new Set();

// A failed hook's last lines, as text only (hook output is whatever the host printed), folded
// away until asked for. A failed host of a region that keeps its hooks' output says so.
function hookOutput(r, x, keeps) {
  if (x.output_tail) {
    const key = `${r.id}/${x.agent}`;
    const details = h('details', { class: 'hook-output', open: openOutputs.has(key) },
      h('summary', {}, 'hook output'),
      h('pre', { class: 'output-tail', text: x.output_tail }));
    details.addEventListener('toggle', () => {
      if (details.open) openOutputs.add(key);
      else openOutputs.delete(key);
    });
    return details;
  }
  if (keeps && (x.state === 'failed' || x.state === 'revert_failed')) {
    return h('p', { class: 'output-kept' }, WITHHELD_TEXT);
  }
  return '';
}

function tail(text, lines) {
  const all = String(text || '').split('\n');
  while (all.length && all[all.length - 1] === '') all.pop();
  return all.slice(-lines).join('\n');
}

// Once a second: bake countdowns.
export function tick() {
  const now = Date.now();
  for (const el of document.querySelectorAll('.countdown')) {
    const left = Number(el.dataset.until) - now;
    el.textContent = left > 0 ? `${fmtDuration(left)} left` : 'bake time over, checking gates';
  }
}
