// How values are shown: durations, times, state names and state badges.
//
// Owns: the fixed set of state class names (never built from server text).
// Exports: fmtDuration, fmtTime, label, releaseDuration, stateClass, badge.

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
