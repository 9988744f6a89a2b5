// How values are shown: durations, times, state names, state badges and region flags.
//
// Owns: the fixed set of state class names (never built from server text), and the words
// that explain a bring-up region and a region that keeps its hook output.
// Exports: fmtDuration, fmtTime, label, releaseDuration, stateClass, badge, bringupFlag,
// withheldFlag, WITHHELD_TEXT.

import { h } from './state.js';

export function fmtDuration(ms) {
  if (!(ms >= 0)) return '';
  if (ms < 10000) return `${(ms / 1000).toFixed(ms < 1000 ? 2 : 1)}s`;
  const sec = Math.round(ms / 1000);
  if (sec < 60) return `${sec}s`;
  const m = Math.floor(sec / 60);
  const r = sec % 60;
  if (m < 60) return r ? `${m}m ${r}s` : `${m}m`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

export function fmtTime(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  return d.toLocaleString(undefined, { hour12: false });
}

export function label(stateName) {
  return String(stateName || '').replaceAll('_', ' ');
}

export function releaseDuration(r, now = Date.now()) {
  if (!r.started_at_ms) return null;
  return (r.finished_at_ms || now) - r.started_at_ms;
}

export function stateClass(name) {
  // A fixed set of class names, never built from arbitrary server text.
  const known = ['waiting_for_artifact', 'queued', 'rolling', 'rolling_back', 'aborting',
    'halted', 'succeeded', 'failed', 'rolled_back', 'aborted', 'superseded', 'pending',
    'deploying', 'baking', 'awaiting_approval', 'done', 'preparing', 'prepared', 'activating',
    'reverting', 'reverted', 'revert_failed', 'converging', 'pass', 'fail', 'inconclusive'];
  return known.includes(name) ? `st-${name}` : 'st-other';
}

export function badge(stateName, extra) {
  return h('span', { class: `state ${stateClass(stateName)}`, dataset: { state: stateName || '' } },
    label(stateName) + (extra ? ` ${extra}` : ''));
}

const BRINGUP_TITLE = 'Bring-up region: takes every release in waves of its own; '
  + 'its failures never hold the serving regions';

// The "bring-up" flag of a region or host. `explain`: also say what it means to screen
// readers (once per region, not on every host row).
export function bringupFlag(explain = true) {
  return h('span', { class: 'flag bringup', title: BRINGUP_TITLE },
    'bring-up', explain ? h('span', { class: 'visually-hidden' }, ` (${BRINGUP_TITLE})`) : '');
}

// Said where a failed host's hook output is not shown because its region keeps it.
export const WITHHELD_TEXT = 'output kept in the region (hook_output: none)';

export function withheldFlag() {
  return h('span', {
    class: 'withheld',
    title: 'hook_output: none — a failed hook\'s output stays in the region, in the host\'s own log; only verdicts leave it',
  }, 'output withheld');
}
