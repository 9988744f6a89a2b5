// The release view: one release's facts (commit and compare links, artifact, who created,
// approved or rolled back), its wave grid, a timeline of each wave's stages, bring-up
// tracks, gate results with their recent verdicts, and hosts (with a failed hook's output
// tail, and the failure a reverted host went back from).
//
// Owns: #release-view and everything in it, and which hosts' hook output is expanded. Which
// release it shows is state.selected (set by history.js's select and by the live updates).
// Every render builds the view anew and patches it onto the page by key (state.js), so a
// render changes only what changed.
// Exports: refreshSelected, renderRelease, tick, failedHosts, announceChange.

import { releaseActions } from './actions.js';
import { api } from './api.js';
import {
  badge, bringupFlag, commitUrl, fmtClock, fmtDuration, fmtTime, fmtValue, hostFailure, label, link,
  releaseDuration, safeUrl, stateClass, WITHHELD_TEXT,
} from './format.js';
import { $, announce, h, patch, s, state } from './state.js';

// Loads the selected release in full (waves, hosts, gates) and shows it.
export async function refreshSelected() {
  if (!state.token || state.selected === null) {
    renderRelease();
    return;
  }
  const id = state.selected;
  try {
    const r = await api('GET', `/releases/${id}`);
    if (r && typeof r.id === 'number') {
      announceChange(state.details.get(r.id), r);
      state.details.set(r.id, r);
    }
  } catch (e) {
    if (e.status === 404 && state.selected === id) state.selected = null;
  }
  renderRelease();
}

// Says what changed between what the page knew of a release (`before`, maybe nothing) and
// `r`: its state, and the waves of the release on view.
export function announceChange(before, r) {
  if (!before) return;
  const name = `Release #${r.id}, ${r.pipeline} ${r.version}`;
  if (before.state !== r.state) announce(`${name}: ${label(r.state)}${r.final && r.reason ? ` — ${r.reason}` : ''}`);
  if (r.id !== state.selected || !Array.isArray(before.waves) || !Array.isArray(r.waves)) return;
  for (const w of r.waves) {
    const was = before.waves[w.index];
    if (was && was.state !== w.state && w.state !== 'pending') announce(`${name}, wave ${w.name}: ${label(w.state)}`);
  }
}

// The release the view shows, as fully as the page knows it.
function shown() {
  if (state.selected === null) return null;
  return state.details.get(state.selected) || state.releases.find((x) => x.id === state.selected) || null;
}

// Whether release `r`'s rollout is held by its pipeline's pause.
function pausedNow(r) {
  if (r.final) return false;
  if (r.paused) return true;
  const p = state.pipelines.find((x) => x.pipeline === r.pipeline);
  return Boolean(p && p.paused && p.active && p.active.id === r.id);
}

export function renderRelease() {
  const view = $('release-view');
  const r = shown();
  if (!r) {
    view.hidden = true;
    return;
  }
  view.hidden = false;
  if (view.dataset.releaseId !== String(r.id)) view.dataset.releaseId = String(r.id);
  if (view.dataset.state !== r.state) view.dataset.state = r.state;
  const title = `Release #${r.id} — ${r.pipeline} ${r.version}${r.kind === 'rollback' ? ' (rollback)' : ''}`;
  if ($('release-title').textContent !== title) $('release-title').textContent = title;
  const paused = pausedNow(r);
  patch($('release-state'), badge(r.state),
    paused ? h('span', { class: 'flag paused', key: 'paused' }, `paused${r.paused_by ? ` by ${r.paused_by}` : ''}`) : '');

  const waves = r.waves || [];
  const cur = waves[r.current_wave];
  patch($('release-actions'), ...releaseActions(r, cur));
  renderFacts(r, waves, cur, paused);
  renderGrid(r, waves);
  renderTimeline(r, waves);
  renderBringup(r, waves);
  renderGates(r, waves);
  renderHosts(r, waves);
}

// ------------------------------------------------------------------ facts

function short(commit) {
  return /^[0-9a-f]{12,}$/i.test(commit) ? commit.slice(0, 10) : commit;
}

function renderFacts(r, waves, cur, paused) {
  const facts = [];
  const fact = (k, v, id) => facts.push(h('div', { key: id || k }, h('dt', {}, k), h('dd', id ? { id } : {}, v)));
  fact('Version', r.version, 'release-version');
  if (r.previous_version) fact('Previous', r.previous_version, 'release-previous');
  fact('Commit', r.commit ? link(commitUrl(r, state.pipelines), r.commit, { class: 'commit' }) : '—', 'release-commit');
  if (safeUrl(r.compare_url)) {
    const from = r.previous_commit || r.previous_version || 'previous';
    fact('Changes', link(r.compare_url, `compare ${short(from)}…${short(r.commit || r.version)}`, { class: 'compare' }), 'release-compare');
  }
  // A rollback carries the author of the version it goes back to; who asked for it is
  // created_by.
  fact(r.kind === 'rollback' ? 'Author of this version' : 'Author', r.author || '—', 'release-author');
  if (r.created_by) fact(r.kind === 'rollback' ? 'Rolled back by' : 'Created by', r.created_by, 'release-created-by');
  const approvals = waves.filter((w) => w.approved_by);
  if (approvals.length) {
    fact('Approved by', approvals.map((w) => `${w.approved_by} (${w.name}${w.approved_at_ms ? `, ${fmtClock(w.approved_at_ms)}` : ''})`).join('; '), 'release-approved-by');
  }
  fact('Created', fmtTime(r.created_at_ms), 'release-created');
  if (r.artifact) {
    fact('Artifact', link(r.artifact, String(r.artifact), { class: 'artifact' }), 'release-artifact');
  }
  if (r.sha256) {
    fact('SHA-256', h('code', { class: 'sha256', title: r.sha256, dataset: { sha256: r.sha256 } },
      `${String(r.sha256).slice(0, 12)}…`), 'release-sha256');
  }
  const dur = releaseDuration(r);
  if (dur !== null) fact(r.final ? 'Took' : 'Running for', fmtDuration(dur), 'release-duration');
  if (r.reason) fact('Reason', linkHosts(r.reason, r), 'release-reason');
  if (cur && !r.final) fact('Current wave', `${r.current_wave + 1}/${waves.length} ${cur.name} (${label(cur.state)}${paused ? ', paused' : ''})`, 'release-current-wave');
  if (cur && !r.final && cur.state === 'baking' && cur.bake_started_at_ms) {
    fact('Bake', countdown('bake-countdown', 'bake', cur.bake_started_at_ms + cur.bake_ms, paused), 'release-bake');
  }
  if (cur && !r.final && cur.state === 'awaiting_approval' && cur.approval_deadline_ms > 0) {
    fact('Approval', countdown('approval-countdown', 'deadline', cur.approval_deadline_ms, false), 'release-approval');
  }
  const windows = waves.filter((w) => w.last_switch_at_ms > 0);
  if (windows.length) {
    fact('Mixed-version window', windows.map((w) => `${w.name} ${fmtDuration(w.mixed_version_window_ms)}`).join(', '), 'mixed-window');
  }
  patch($('release-facts'), ...facts);
}

// A count-down to `until`: a bake's end or an approval's deadline. Its text is kept current
// by tick().
function countdown(id, kind, until, paused) {
  const el = h('span', { class: 'countdown', id, dataset: { kind, until: String(until), paused: paused ? '1' : '0' } });
  el.textContent = countdownText(el);
  return el;
}

function countdownText(el, now = Date.now()) {
  const left = Number(el.dataset.until) - now;
  if (el.dataset.kind === 'deadline') {
    return left > 0 ? `${fmtDuration(left)} left to approve (until ${fmtClock(Number(el.dataset.until))})`
      : 'approval time is up';
  }
  if (el.dataset.paused === '1') return `paused${left > 0 ? ` (${fmtDuration(left)} of bake left)` : ''}: nothing moves until the pipeline is resumed`;
  return left > 0 ? `${fmtDuration(left)} left` : 'bake time over, checking gates';
}

// The reason's text with every host name of the release in it a link to that host's row.
function linkHosts(text, r) {
  const names = [...new Set((r.hosts || []).map((x) => x.agent).filter(Boolean))].sort((a, b) => b.length - a.length);
  if (!names.length) return text;
  const esc = names.map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const re = new RegExp(`(?<![\\w.-])(${esc.join('|')})(?![\\w-])`, 'g');
  const out = [];
  let last = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    const agent = m[1];
    out.push(h('a', {
      href: `#host-${agent}`, class: 'host-link', key: `host-link-${m.index}`, dataset: { host: agent },
      onclick: (ev) => { ev.preventDefault(); showHost(agent); },
    }, agent));
    last = m.index + agent.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

// Scrolls to a host's row, opens its hook output, and moves focus there.
function showHost(agent) {
  const row = document.getElementById(`host-${agent}`);
  if (!row) return;
  const details = row.querySelector('details.hook-output');
  if (details && !details.open) details.open = true;
  row.scrollIntoView({ block: 'center' });
  row.focus({ preventScroll: true });
}

// ------------------------------------------------------------------ wave grid

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

// The hosts of release `r` that failed in it, whatever they did next (a reverted host keeps
// its `failure`); `wave` and `region` narrow it.
export function failedHosts(r, wave, region) {
  return (r.hosts || []).filter((x) => (wave === undefined || x.wave === wave)
    && (region === undefined || x.region === region) && hostFailure(x));
}

function renderGrid(r, waves) {
  const regions = regionsOf(r, waves);
  const parts = [];
  if (!waves.length) {
    parts.push(h('caption', { key: 'caption' }, r.kind === 'rollback'
      ? 'A rollback takes every host to its version at once, without waves.' : 'No wave information.'));
    if (r.kind !== 'rollback') {
      patch($('wave-grid'), ...parts);
      return;
    }
  }
  parts.push(h('thead', { key: 'head' }, h('tr', {}, h('th', { scope: 'col' }, 'Wave'), h('th', { scope: 'col' }, 'State'),
    regions.map((name) => h('th', { scope: 'col', key: name }, name)))));
  const rows = [];
  for (const w of waves) {
    const current = w.index === r.current_wave && !r.final;
    const row = h('tr', { key: `w${w.index}`, class: `wave${current ? ' current' : ''}`, dataset: { wave: String(w.index), state: w.state } },
      h('th', { scope: 'row' }, w.name, w.manual_approval ? h('span', { class: 'flag manual', title: 'manual approval' }, 'manual') : ''),
      h('td', { class: 'wave-state' }, badge(w.state),
        w.approved_by ? h('span', { class: 'approved' }, ` approved by ${w.approved_by}`) : '',
        w.bake_ms ? h('span', { class: 'bake' }, ` bake ${fmtDuration(w.bake_ms)}`) : ''));
    for (const name of regions) {
      const rp = w.regions.find((x) => x.region === name);
      if (!rp || !rp.selected) {
        row.append(h('td', { key: name, class: 'cell none', dataset: { region: name } }, '—'));
        continue;
      }
      const failed = Math.max(rp.failed, failedHosts(r, w.index, name).length);
      row.append(gridCell(name, cellState(r, w, rp), rp, failed));
    }
    rows.push(row);
  }
  if (r.kind === 'rollback' && (r.hosts || []).length) {
    const row = h('tr', { key: 'rollback', class: 'wave', dataset: { wave: 'rollback', state: r.state } },
      h('th', { scope: 'row' }, 'all hosts'), h('td', {}, badge(r.state)));
    for (const name of regions) {
      const hs = r.hosts.filter((x) => x.region === name);
      const done = hs.filter((x) => x.state === 'done').length;
      const failed = hs.filter((x) => hostFailure(x)).length;
      const st = done === hs.length ? 'done' : !r.final ? 'deploying' : failed ? 'failed' : 'stopped';
      row.append(gridCell(name, st, { done, selected: hs.length, failed }, failed));
    }
    rows.push(row);
  }
  parts.push(h('tbody', { key: 'body' }, rows));
  patch($('wave-grid'), ...parts);
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

// Counts and a bar only where they describe work of this wave: deploying or done. A region
// where a host failed says so whatever happened to the host next.
function gridCell(region, st, rp, failed) {
  const cls = `cell ${st === 'pending' ? 'empty' : stateClass(st)}`;
  const marker = failed ? h('span', { class: 'failed-count' }, ` ${failed} failed`) : '';
  if (st === 'deploying' || st === 'done') {
    return h('td', { key: region, class: cls, dataset: { region, state: st } },
      h('span', { class: 'count' }, `${rp.done}/${rp.selected}`), marker,
      h('span', { class: 'bar', 'aria-hidden': 'true' },
        h('span', { class: 'fill', style: { width: `${Math.round(100 * rp.done / rp.selected)}%` } })));
  }
  return h('td', { key: region, class: cls, dataset: { region, state: st } },
    h('span', { class: 'cell-label' }, label(st)), marker);
}

// ------------------------------------------------------------------ timeline

// Each wave as a row of stage bars on one time axis (deploy, the switch, bake, waiting for
// approval), with the same times in words below the bars.
function renderTimeline(r, waves) {
  const now = Date.now();
  const starts = waves.map((w) => w.started_at_ms).filter((x) => x > 0);
  if (!waves.length || !starts.length) {
    patch($('wave-times'), ...waves.map((w) => timelineRow(r, w, 0, 0, now)));
    $('timeline-axis').hidden = true;
    return;
  }
  const t0 = r.started_at_ms > 0 ? Math.min(r.started_at_ms, ...starts) : Math.min(...starts);
  const ends = waves.flatMap((w) => [w.finished_at_ms, w.approved_at_ms, w.bake_started_at_ms, w.last_switch_at_ms]).filter((x) => x > 0);
  const t1 = Math.max(t0 + 1000, r.final ? Math.max(r.finished_at_ms || 0, ...ends) : now);
  patch($('wave-times'), ...waves.map((w) => timelineRow(r, w, t0, t1, now)));
  const axis = $('timeline-axis');
  axis.hidden = false;
  patch(axis,
    h('span', { key: 'from' }, fmtClock(t0)),
    h('span', { key: 'span' }, r.final ? `took ${fmtDuration(t1 - t0)}` : `${fmtDuration(Math.max(0, now - t0))} so far`),
    h('span', { key: 'to' }, r.final ? fmtClock(t1) : 'now'));
}

function timelineRow(r, w, t0, t1, now) {
  const end = r.final ? (w.finished_at_ms || r.finished_at_ms || t1) : now;
  const segs = [];
  const seg = (kind, from, to, text) => {
    if (!(from > 0) || !(t1 > t0)) return;
    const a = Math.max(0, (from - t0) / (t1 - t0));
    const b = Math.min(1, Math.max(a, ((to > 0 ? to : end) - t0) / (t1 - t0)));
    segs.push(h('span', {
      key: kind, class: `seg seg-${kind}`, title: text,
      style: { left: `${(100 * a).toFixed(2)}%`, width: `${Math.max(0.6, 100 * (b - a)).toFixed(2)}%` },
    }));
  };
  const range = (from, to) => `${fmtClock(from)}${to ? ` – ${fmtClock(to)}` : ''}${to >= from ? ` (${fmtDuration(to - from)})` : ''}`;
  seg('deploy', w.started_at_ms, w.bake_started_at_ms || w.finished_at_ms, `deploy ${range(w.started_at_ms, w.bake_started_at_ms || w.finished_at_ms)}`);
  if (w.first_switch_at_ms) seg('switch', w.first_switch_at_ms, w.last_switch_at_ms || w.first_switch_at_ms, `switch ${range(w.first_switch_at_ms, w.last_switch_at_ms)}`);
  const approvalAsked = w.approval_requested_at_ms > 0 ? w.approval_requested_at_ms : 0;
  if (w.bake_started_at_ms) seg('bake', w.bake_started_at_ms, approvalAsked || w.finished_at_ms, `bake ${range(w.bake_started_at_ms, approvalAsked || w.finished_at_ms)}`);
  if (approvalAsked) seg('approval', approvalAsked, w.approved_at_ms || w.finished_at_ms, `waiting for approval ${range(approvalAsked, w.approved_at_ms || w.finished_at_ms)}`);

  const span = (from, to) => (from && to >= from ? ` (${fmtDuration(to - from)})` : '');
  const bits = [];
  if (!w.started_at_ms) {
    bits.push(r.final ? 'never started' : 'not started');
  } else {
    bits.push(`started ${fmtClock(w.started_at_ms)}`);
    if (w.first_switch_at_ms) {
      bits.push(w.last_switch_at_ms && w.last_switch_at_ms !== w.first_switch_at_ms
        ? `switched ${fmtClock(w.first_switch_at_ms)} – ${fmtClock(w.last_switch_at_ms)}${span(w.first_switch_at_ms, w.last_switch_at_ms)}`
        : `switched ${fmtClock(w.first_switch_at_ms)}`);
    }
    if (w.bake_started_at_ms) {
      const bakeEnd = approvalAsked || w.finished_at_ms;
      bits.push(bakeEnd
        ? `bake ${fmtClock(w.bake_started_at_ms)} – ${fmtClock(bakeEnd)}${span(w.bake_started_at_ms, bakeEnd)}`
        : `bake since ${fmtClock(w.bake_started_at_ms)}${r.final ? '' : span(w.bake_started_at_ms, now)}`);
    }
    if (approvalAsked) {
      if (w.approved_at_ms) {
        bits.push(`approved ${fmtClock(w.approved_at_ms)}${w.approved_by ? ` by ${w.approved_by}` : ''} after ${fmtDuration(w.approved_at_ms - approvalAsked)}`);
      } else if (w.state === 'awaiting_approval' && !r.final) {
        bits.push(`awaiting approval since ${fmtClock(approvalAsked)}${w.approval_deadline_ms > 0 ? `, times out ${fmtClock(w.approval_deadline_ms)}` : ''}`);
      } else {
        bits.push(`approval asked ${fmtClock(approvalAsked)}, not given`);
      }
    } else if (w.approved_by && w.approved_at_ms) {
      bits.push(`approved ${fmtClock(w.approved_at_ms)} by ${w.approved_by}`);
    }
    if (w.finished_at_ms) bits.push(`ended ${fmtClock(w.finished_at_ms)}, took ${fmtDuration(w.finished_at_ms - w.started_at_ms)}`);
    else if (!r.final) bits.push(`running for ${fmtDuration(now - w.started_at_ms)}`);
  }
  return h('li', { key: `w${w.index}`, class: 'wave-time', dataset: { wave: String(w.index), state: w.state } },
    h('span', { class: 'wave-time-name' }, w.name),
    h('span', { class: `track${w.started_at_ms ? '' : ' empty'}`, 'aria-hidden': 'true' }, segs),
    h('span', { class: 'wave-time-text' }, bits.join(' · ')));
}

// ------------------------------------------------------------------ bring-up tracks

// One row per bring-up region: where its own walk through the waves is, and why it ended so.
function renderBringup(r, waves) {
  const tracks = Array.isArray(r.bringup) ? r.bringup : [];
  $('bringup-section').hidden = !tracks.length;
  if (!tracks.length) {
    patch($('bringup'));
    return;
  }
  const now = Date.now();
  patch($('bringup'),
    h('thead', { key: 'head' }, h('tr', {}, ['Region', 'State', 'Wave', 'Time', 'Reason'].map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', { key: 'body' }, tracks.map((b) => {
      const w = waves[b.wave];
      const baking = b.state === 'rolling' && b.bake_started_at_ms > 0 && w && w.bake_ms > 0;
      const end = b.finished_at_ms || (r.final ? r.finished_at_ms : now);
      return h('tr', { key: b.region, class: 'bringup-track', dataset: { region: b.region, state: b.state } },
        h('td', {}, b.region),
        h('td', {}, badge(b.state)),
        h('td', { class: 'track-wave' }, b.wave_name || (w ? w.name : ''),
          baking ? [' baking, ', countdown(undefined, 'bake', b.bake_started_at_ms + w.bake_ms, pausedNow(r))] : ''),
        h('td', {}, b.started_at_ms && end ? fmtDuration(end - b.started_at_ms) : ''),
        h('td', { class: 'detail track-reason' }, b.reason ? linkHosts(b.reason, r) : ''));
    })));
}

// ------------------------------------------------------------------ gates

function bounds(g) {
  const out = [];
  if (typeof g.min === 'number') out.push(`≥ ${fmtValue(g.min)}`);
  if (typeof g.max === 'number') out.push(`≤ ${fmtValue(g.max)}`);
  return out.join(', ');
}

function renderGates(r, waves) {
  const gates = r.gates || [];
  if (!gates.length) {
    patch($('gates'), h('caption', { key: 'caption' }, 'No gate results yet.'));
    return;
  }
  patch($('gates'),
    h('thead', { key: 'head' }, h('tr', {}, ['Wave', 'Gate', 'Region', 'Verdict', 'Recent', 'Value', 'Query', 'Detail', 'At']
      .map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', { key: 'body' }, gates.map((g) => h('tr', {
      key: `${g.wave}/${g.gate}/${g.region}`, class: 'gate', dataset: { verdict: g.verdict, gate: g.gate, region: g.region || '' },
    },
    h('td', {}, waves[g.wave] ? waves[g.wave].name : String(g.wave)),
    h('td', {}, g.gate),
    h('td', {}, g.region || 'all'),
    h('td', {}, badge(g.verdict)),
    h('td', { class: 'spark-cell' }, sparkline(g)),
    h('td', { class: 'num' }, fmtValue(g.value), bounds(g) ? h('span', { class: 'bounds' }, ` (${bounds(g)})`) : ''),
    h('td', { class: 'query' }, g.query ? h('code', { class: 'gate-query' }, g.query) : ''),
    h('td', { class: 'detail' }, g.detail),
    h('td', {}, fmtTime(g.at_ms))))));
}

// The gate's recent verdicts as a small line of its values, each point coloured by its
// verdict, with the pass bounds as dashed lines; its label says the same in words.
function sparkline(g) {
  const hist = (Array.isArray(g.history) ? g.history : []).filter((x) => x && typeof x.at_ms === 'number');
  if (!hist.length) return '';
  const W = 120;
  const H = 28;
  const P = 4;
  const finite = (v) => typeof v === 'number' && Number.isFinite(v);
  const values = hist.map((x) => (finite(x.value) && x.verdict !== 'inconclusive' ? x.value : null));
  const scale = values.filter((v) => v !== null).concat([g.max, g.min].filter(finite));
  let lo = scale.length ? Math.min(...scale) : 0;
  let hi = scale.length ? Math.max(...scale) : 1;
  if (hi === lo) { hi += Math.abs(hi) * 0.1 || 1; lo -= Math.abs(lo) * 0.1 || 1; }
  const x = (i) => (hist.length === 1 ? W / 2 : P + (i * (W - 2 * P)) / (hist.length - 1));
  const y = (v) => H - P - ((v - lo) / (hi - lo)) * (H - 2 * P);
  const counts = { pass: 0, fail: 0, inconclusive: 0 };
  for (const e of hist) counts[e.verdict] = (counts[e.verdict] || 0) + 1;
  const nums = values.filter((v) => v !== null);
  const words = `${hist.length} recent verdict${hist.length === 1 ? '' : 's'}, oldest first: `
    + ['pass', 'fail', 'inconclusive'].filter((v) => counts[v]).map((v) => `${counts[v]} ${v}`).join(', ')
    + (nums.length ? `; values ${fmtValue(Math.min(...nums))} to ${fmtValue(Math.max(...nums))}` : '')
    + (bounds(g) ? `; passes ${bounds(g)}` : '');
  const line = [];
  hist.forEach((e, i) => { if (values[i] !== null) line.push(`${x(i).toFixed(1)},${y(values[i]).toFixed(1)}`); });
  return s('svg', { class: 'spark', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': words, 'data-points': hist.length },
    s('title', {}, words),
    [g.max, g.min].filter(finite).map((b, i) => s('line', { key: `b${i}`, class: 'spark-bound', x1: 0, x2: W, y1: y(b).toFixed(1), y2: y(b).toFixed(1) })),
    line.length > 1 ? s('polyline', { key: 'line', class: 'spark-line', points: line.join(' ') }) : '',
    hist.map((e, i) => s('circle', {
      key: `p${i}`, class: `spark-point v-${['pass', 'fail'].includes(e.verdict) ? e.verdict : 'inconclusive'}`,
      cx: x(i).toFixed(1), cy: (values[i] === null ? H - P : y(values[i])).toFixed(1), r: 2.5,
    })));
}

// ------------------------------------------------------------------ hosts

function renderHosts(r, waves) {
  const hosts = r.hosts || [];
  if (!hosts.length) {
    patch($('hosts'), h('caption', { key: 'caption' }, 'No host has started yet.'));
    return;
  }
  const own = bringupRegions(r);
  const pipeline = state.pipelines.find((p) => p.pipeline === r.pipeline);
  const keeps = (region) => Boolean(pipeline && pipeline.regions.some((x) => x.region === region && x.hook_output === 'none'));
  const now = Date.now();
  const sorted = [...hosts].sort((a, b) => a.wave - b.wave || a.region.localeCompare(b.region) || a.agent.localeCompare(b.agent));
  patch($('hosts'),
    h('thead', { key: 'head' }, h('tr', {}, ['Host', 'Region', 'Wave', 'Step', 'From', 'Time', 'Detail / hook output'].map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', { key: 'body' }, sorted.map((x) => {
      const failed = hostFailure(x);
      // A host that has not reported its end by the time the release ended stops there.
      const end = x.finished_at_ms || (r.final ? r.finished_at_ms : now);
      return h('tr', {
        key: x.agent, id: `host-${x.agent}`, tabindex: '-1',
        class: `host-row${own.has(x.region) ? ' bringup' : ''}${failed ? ' was-failed' : ''}`,
        dataset: { host: x.agent, state: x.state, stage: own.has(x.region) ? 'bringup' : 'serving', failed: failed ? 'true' : 'false' },
      },
      h('td', {}, x.agent),
      h('td', {}, x.region, own.has(x.region) ? [' ', bringupFlag(false)] : ''),
      h('td', {}, waves[x.wave] ? waves[x.wave].name : (r.kind === 'rollback' ? '—' : String(x.wave))),
      h('td', { class: 'host-step' }, failed && x.state !== 'failed'
        ? [h('span', { class: 'state st-failed was' }, failed.text.split(' → ')[0]), ' → ', badge(x.state)]
        : failed ? badge('failed', failed.text.slice('failed'.length).trim()) : badge(x.state)),
      h('td', {}, x.from_version || ''),
      h('td', {}, x.started_at_ms && end ? fmtDuration(end - x.started_at_ms) : ''),
      h('td', { class: 'detail' },
        failed && failed.failure && failed.failure !== x.detail ? h('p', { class: 'failure' }, failed.failure) : '',
        x.detail ? h('pre', { class: 'host-detail' }, tail(x.detail, 6)) : '',
        hookOutput(r, x, keeps(x.region))));
    })));
}

// Which hosts' hook output the reader opened ("release/host"), kept across re-renders.
const openOutputs = new Set();

// A failed hook's last lines, as text only (hook output is whatever the host printed), folded
// away until asked for. A failed host of a region that keeps its hooks' output says so.
function hookOutput(r, x, keeps) {
  if (x.output_tail) {
    const key = `${r.id}/${x.agent}`;
    return h('details', {
      key: `out-${key}`, class: 'hook-output', open: openOutputs.has(key),
      ontoggle: (ev, el) => {
        if (el.open) openOutputs.add(key);
        else openOutputs.delete(key);
      },
    },
    h('summary', {}, 'hook output'),
    h('pre', { class: 'output-tail', text: x.output_tail }));
  }
  if (keeps && hostFailure(x)) {
    return h('p', { class: 'output-kept' }, WITHHELD_TEXT);
  }
  return '';
}

function tail(text, lines) {
  const all = String(text || '').split('\n');
  while (all.length && all[all.length - 1] === '') all.pop();
  return all.slice(-lines).join('\n');
}

// Once a second: count-downs, and the view of a release in flight (its running times and
// timeline move with the clock).
export function tick() {
  const r = shown();
  if (r && !r.final && !$('release-view').hidden) renderRelease();
  const now = Date.now();
  for (const el of document.querySelectorAll('.countdown')) {
    const text = countdownText(el, now);
    if (el.textContent !== text) el.textContent = text;
  }
}
