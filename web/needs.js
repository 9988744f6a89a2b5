// "Needs you": what waits for a human, at the top of the page — a wave awaiting approval
// (with its deadline and an optional comment), a release queued behind a freeze, a pause or
// the deploy window, a halted release, a release in flight whose pipeline is paused. The
// tab's title counts them ("(2) Lockstep — …"), and a new one is announced.
//
// Owns: #needs-you and document.title.
// Exports: renderNeeds.
//
// Everything here is derived from typed fields the page already loaded (pipelines' switches
// and active release, the releases' states and waves); server text (reasons) is shown, never
// parsed. Its buttons are the release view's and the pipeline cards' own (actions.js), so
// what may be done here is decided in one place.

import { approveComment, pipelineSwitch, releaseActions } from './actions.js';
import { badge, fmtClock, fmtDuration, label } from './format.js';
import { $, announce, h, patch, state } from './state.js';

const TITLE = 'Lockstep — release dashboard';

// The newest thing the page knows about release `r`: a full read or event if there was
// one (they carry waves), else the summary.
function latest(r) {
  return { ...r, ...state.details.get(r.id) };
}

// Who switched pipeline `p` off, and why: "frozen by alice: incident 42", "paused by bob".
function holdReason(p) {
  const why = [];
  if (p.frozen) why.push(`frozen${p.frozen_by ? ` by ${p.frozen_by}` : ''}${p.freeze_reason ? `: ${p.freeze_reason}` : ''}`);
  if (p.paused) why.push(`paused${p.paused_by ? ` by ${p.paused_by}` : ''}`);
  return why.join(' and ');
}

// The list of needs, each {kind, release, text, extra, actions}.
function collect() {
  const out = [];
  const byName = new Map(state.pipelines.map((p) => [p.pipeline, p]));
  // Releases not final: the pipelines' active ones first (always full), then any other
  // release the page knows (a halted one, queued ones).
  const seen = new Set();
  const releases = [];
  for (const p of state.pipelines) {
    if (p.active && typeof p.active.id === 'number') {
      seen.add(p.active.id);
      releases.push(latest(p.active));
    }
  }
  for (const r of state.releases) {
    if (!seen.has(r.id)) {
      seen.add(r.id);
      releases.push(latest(r));
    }
  }
  for (const r of releases) {
    if (r.final) continue;
    const p = byName.get(r.pipeline);
    const waves = r.waves || [];
    const cur = waves[r.current_wave];
    const name = `${r.pipeline} ${r.version}`;
    if (cur && cur.state === 'awaiting_approval' && r.state === 'rolling') {
      out.push({ kind: 'approval', release: r, text: `${name}: wave ${cur.name} awaits approval`,
        extra: [deadline(cur), approveComment(r, cur)],
        actions: releaseActions(r, cur) });
    } else if (r.state === 'halted') {
      out.push({ kind: 'halted', release: r,
        text: `${name} is halted${r.reason ? `: ${r.reason}` : ''} — abort it, queue a fix or roll back`,
        actions: releaseActions(r, cur) });
    } else if (r.state === 'queued' && p && (p.frozen || p.paused)) {
      out.push({ kind: 'queued', release: r, text: `${r.version} waits: ${r.pipeline} ${holdReason(p)}`,
        actions: [p.frozen ? pipelineSwitch(p, 'unfreeze') : null, p.paused ? pipelineSwitch(p, 'resume') : null] });
    } else if (r.state === 'queued' && p && (!p.active || p.active.state === 'halted') && r.reason) {
      // Nothing in flight holds it, and the pipeline is not switched off: the server says
      // what it waits for (the deploy window).
      out.push({ kind: 'queued', release: r, text: `${r.version} is queued: ${r.reason}`, actions: releaseActions(r, cur) });
    } else if (r.in_flight && r.kind === 'rollout' && p && p.paused) {
      const where = cur ? ` in wave ${cur.name} (${cur.state === 'baking' ? 'bake paused' : label(cur.state)})` : '';
      out.push({ kind: 'paused', release: r, text: `${name} is held${where}: ${r.pipeline} ${holdReason(p)}`,
        actions: [pipelineSwitch(p, 'resume')] });
    }
  }
  return out;
}

// How long the approval may still wait, kept current by release.js's tick().
function deadline(w) {
  if (!(w.approval_deadline_ms > 0)) return '';
  const left = w.approval_deadline_ms - Date.now();
  return h('span', { class: 'need-deadline' }, 'deadline ',
    h('span', { class: 'countdown', dataset: { kind: 'deadline', until: String(w.approval_deadline_ms), paused: '0' } },
      left > 0 ? `${fmtDuration(left)} left to approve (until ${fmtClock(w.approval_deadline_ms)})` : 'approval time is up'));
}

const announced = new Set();

export function renderNeeds() {
  const box = $('needs-you');
  if (!box) return;
  const needs = state.token ? collect() : [];
  const title = needs.length ? `(${needs.length}) ${TITLE}` : TITLE;
  if (document.title !== title) document.title = title;
  box.hidden = !needs.length;
  const keys = new Set();
  patch($('needs-list'), ...needs.map((n) => {
    const key = `${n.kind}-${n.release.id}`;
    keys.add(key);
    if (!announced.has(key)) {
      announced.add(key);
      announce(`Needs you: ${n.text}`);
    }
    const by = n.release.created_by ? h('span', { class: 'need-by' }, `created by ${n.release.created_by}`) : '';
    return h('li', { key, class: `need need-${n.kind}`, dataset: { need: n.kind, release: String(n.release.id) } },
      h('div', { class: 'need-main' },
        h('a', { href: `#release=${n.release.id}`, class: 'need-link' }, `#${n.release.id}`), ' ',
        badge(n.release.state), ' ',
        h('span', { class: 'need-text' }, n.text), ' ', by),
      (n.extra || []).filter(Boolean).length ? h('div', { class: 'need-extra' }, n.extra) : '',
      h('span', { class: 'actions' }, ...n.actions.filter(Boolean)));
  }));
  for (const k of [...announced]) if (!keys.has(k)) announced.delete(k);
}
