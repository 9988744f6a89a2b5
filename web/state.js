// The page's shared state and the DOM helpers every view uses.
//
// Owns: `state` (what the page knows: token, signed-in principal, loaded data, selection,
// live-update timers) and the only way modules build DOM.
// Exports: state, $, h, s, clear, showBanner, clearBanner.
//
// Safety rule for every module: nothing that came from the server (versions, commit
// messages, authors, hook output, reasons, names) is ever parsed as markup. The DOM is built
// with h / s (createElement / createElementNS) and text nodes only; there is no innerHTML
// anywhere.
//
// Whether a release is final comes from the server (`final`, `in_flight`), never a list here.

export const state = {
  token: null,
  me: null,               // {name, role, allowed: [action names]} from whoami; all empty when unknown
  pipelines: [],
  releases: [],           // newest first, summaries
  details: new Map(),     // id -> full release (with waves/hosts/gates)
  audit: [],
  selected: null,         // release id shown in the release view
  follow: true,           // follow the newest in-flight release
  events: null,
  mode: 'off',            // 'live' | 'polling' | 'off'
  disconnectedSince: null, // ms when a request last found lockstepd unreachable; null when reachable
  bannerKind: '',         // what the banner shows: '' | 'action' (a failed action) | 'notice'
  timers: [],
  pollTimer: null,
  reconnectTimer: null,
  afterFinalTimer: null,  // the re-read of the selected release after it became final
  rereading: false,       // a re-read of the selected release is under way
  rereadAgain: false,     // and another was asked for meanwhile
  refreshQueued: false,
};

export const $ = (id) => document.getElementById(id);

// h('tag', {class, dataset, on*, attrs...}, ...children): children are nodes or strings
// (strings always become text nodes).
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  applyProps(el, props);
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
export function s(tag, attrs, ...children) {
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

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// The banner above the views: one message at a time; '' hides it. `kind` says what put it
// there, so that clearBanner(kind) removes only that message (a failed action's message
// goes when a later action works or the page reconnects; a notice stays).
export function showBanner(text, kind = 'notice') {
  const b = $('banner');
  b.textContent = text;
  b.hidden = !text;
  b.dataset.kind = text ? kind : '';
  state.bannerKind = text ? kind : '';
}

export function clearBanner(kind) {
  if (state.bannerKind === kind) showBanner('');
}
