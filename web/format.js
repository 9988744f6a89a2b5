// How values are shown: durations, times, state names, state badges and region flags.
//
// Owns: the fixed set of state class names (never built from server text), the words
// that explain a bring-up region and a region that keeps its hook output, and the time
// zone times are shown in (state.zone: 'utc' or 'local', kept in localStorage).
// Exports: fmtDuration, fmtTime, fmtClock, fmtValue, zoneName, setZone, parseZoned,
// toZonedInput, label, releaseDuration, stateClass, badge, bringupFlag, withheldFlag,
// WITHHELD_TEXT, safeUrl, link, hostFailure, commitUrl.

import { h, state } from './state.js';

const ZONE_KEY = 'lockstep.zone';

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

// Every shown time names its zone: "2025-01-31 14:02:11 UTC", or in local time with its
// offset from UTC, "2025-01-31 15:02:11 UTC+01:00" (the offset of that moment, so times
// either side of a daylight-saving change each say theirs).
export function fmtTime(ms) {
  if (!ms) return '';
  const p = parts(ms);
  return `${p.date} ${p.clock} ${p.zone}`;
}

// Only the time of day, with its zone: "14:02:11 UTC".
export function fmtClock(ms) {
  if (!ms) return '';
  const p = parts(ms);
  return `${p.clock} ${p.zone}`;
}

// 'utc' or 'local': the zone times are shown in. Read from localStorage on first use.
export function zoneName() {
  if (!state.zone) {
    let saved = '';
    try { saved = localStorage.getItem(ZONE_KEY) || ''; } catch { /* storage unavailable */ }
    state.zone = saved === 'local' ? 'local' : 'utc';
  }
  return state.zone;
}

export function setZone(zone) {
  state.zone = zone === 'local' ? 'local' : 'utc';
  try { localStorage.setItem(ZONE_KEY, state.zone); } catch { /* kept for this page only */ }
}

function parts(ms) {
  const d = new Date(ms);
  const two = (n) => String(n).padStart(2, '0');
  const utc = zoneName() === 'utc';
  const [y, mo, day, hh, mi, ss] = utc
    ? [d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()]
    : [d.getFullYear(), d.getMonth() + 1, d.getDate(), d.getHours(), d.getMinutes(), d.getSeconds()];
  let zone = 'UTC';
  if (!utc) {
    const off = -d.getTimezoneOffset();  // minutes east of UTC
    const a = Math.abs(off);
    zone = `UTC${off < 0 ? '-' : '+'}${two(Math.floor(a / 60))}:${two(a % 60)}`;
  }
  return { date: `${y}-${two(mo)}-${two(day)}`, clock: `${two(hh)}:${two(mi)}:${two(ss)}`, zone };
}

// A datetime-local input's value ("2025-01-31T14:02") read in the zone times are shown
// in; NaN when empty or malformed.
export function parseZoned(value) {
  const m = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d))?$/.exec(String(value || ''));
  if (!m) return NaN;
  const [y, mo, d, hh, mi, ss] = m.slice(1).map((x) => Number(x || 0));
  return zoneName() === 'utc' ? Date.UTC(y, mo - 1, d, hh, mi, ss) : new Date(y, mo - 1, d, hh, mi, ss).getTime();
}

// The other way: `ms` as a datetime-local value in the zone times are shown in.
export function toZonedInput(ms) {
  if (!ms) return '';
  const p = parts(ms);
  return `${p.date}T${p.clock.slice(0, 5)}`;
}

// A metric's value, short: at most 6 significant digits.
export function fmtValue(v) {
  return typeof v === 'number' && Number.isFinite(v) ? String(Number(v.toPrecision(6))) : '';
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
    'reverting', 'reverted', 'revert_failed', 'converging', 'pass', 'fail', 'inconclusive',
    'paused', 'stopped'];
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

// `url` if it is an http(s) URL, else ''. Links are made only from these (a server field
// could hold anything, e.g. "javascript:").
export function safeUrl(url) {
  const u = String(url || '');
  return /^https?:\/\//i.test(u) ? u : '';
}

// A link to `url` showing `text`, or the text alone when the URL is not http(s) or empty.
export function link(url, text, props = {}) {
  const u = safeUrl(url);
  return u ? h('a', { ...props, href: u, rel: 'noreferrer' }, text) : h('span', props, text);
}

// How a host that failed in this release ended, or null if it never failed: the step it
// failed at ("check", from the server's failure text, when it says) and its state now.
// "failed at check → reverted".
export function hostFailure(x) {
  const failure = String(x.failure || '');
  if (!failure && x.state !== 'failed' && x.state !== 'revert_failed') return null;
  const m = /\bfailed at ([a-z_]+)/.exec(failure);
  const at = m ? ` at ${m[1]}` : '';
  const now = x.state === 'failed' ? '' : ` → ${label(x.state)}`;
  return { text: `failed${at}${now}`, failure: failure || String(x.detail || '') };
}

// Where release `r`'s commit is shown: the server's commit_url (a full read has it), else
// the pipeline's `links.commit` template (`pipelines`: the pipelines as loaded) filled in
// here, else ''.
export function commitUrl(r, pipelines) {
  if (r.commit_url) return safeUrl(r.commit_url);
  const p = (pipelines || []).find((x) => x.pipeline === r.pipeline);
  const t = p && p.links && typeof p.links.commit === 'string' ? p.links.commit : '';
  if (!t || !r.commit || !t.includes('{sha}')) return '';
  return safeUrl(t.replaceAll('{sha}', encodeURIComponent(r.commit)));
}
