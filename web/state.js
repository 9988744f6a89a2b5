// The page's shared state and the DOM helpers every view uses.
//
// Owns: `state` (what the page knows: token, signed-in principal, loaded data, selection,
// live-update timers), the only way modules build DOM, the only way they put it on the
// page (patch: by key, in place), and the page's one live region (#announcer).
// Exports: state, $, h, s, patch, clear, showBanner, clearBanner, announce.
//
// Safety rule for every module: nothing that came from the server (versions, commit
// messages, authors, hook output, reasons, names) is ever parsed as markup. The DOM is built
// with h / s (createElement / createElementNS) and text nodes only; there is no innerHTML
// anywhere.
//
// Updates keep the reader's place: a view builds what it wants to show as detached nodes
// and patch() changes the page to match, keeping every element whose key (data-key, or id)
// or position still matches, and touching only the attributes and text that differ. So an
// element that has focus, holds a text selection or is under a pending click stays the
// same element, and handlers are found when the event happens (one listener per event
// type on the document, see `on*` props), never bound to a node that may be swapped.
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
  zone: '',               // 'utc' | 'local': how times are shown (format.js); '' until read
  history: { query: {}, limit: 25, before: [], rows: null, more: false, paged: true },
  auditView: { query: {}, limit: 50, before: [], more: false, paged: true },
};

export const $ = (id) => document.getElementById(id);

// h('tag', {class, key, dataset, style, on*, attrs...}, ...children): children are nodes or
// strings (strings always become text nodes). `key` names the element among its siblings
// for patch(); `style` is an object applied through the CSSOM (the page's CSP allows no
// style attributes); `onclick` etc. are looked up when the event happens.
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
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') setHandler(el, k.slice(2), v);
    else if (k === 'key') el.setAttribute('data-key', String(v));
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function applyProps(el, props) {
  if (!props) return;
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'key') el.dataset.key = String(v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'style') {
      el.__style = { ...v };
      for (const [p, x] of Object.entries(v)) el.style[p] = x;
    } else if (k.startsWith('on') && typeof v === 'function') setHandler(el, k.slice(2), v);
    else if (k === 'text') el.textContent = String(v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false || c === '') continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// ---------------------------------------------------------------- events

// Handlers live on the element (el.__on) and one listener per type on the document calls
// them, from the target up, as the event would bubble, as fn(event, element). patch() moves a new node's handlers
// onto the element it keeps, so a click always runs the newest handler exactly once.
const DELEGATED = new Set();
function setHandler(el, type, fn) {
  if (!el.__on) el.__on = {};
  el.__on[type] = fn;
  if (DELEGATED.has(type)) return;
  DELEGATED.add(type);
  // toggle does not bubble: listen in the capture phase and call the target only.
  const capture = type === 'toggle';
  document.addEventListener(type, (ev) => {
    for (let n = ev.target; n && n !== document; n = n.parentNode) {
      const f = n.__on && n.__on[type];
      if (f) {
        f.call(n, ev, n);
        if (ev.cancelBubble) return;
      }
      if (capture) return;
    }
  }, capture);
}

// ---------------------------------------------------------------- patching

function keyOf(n) {
  if (n.nodeType !== 1) return null;
  const k = n.getAttribute('data-key');
  if (k !== null) return `k:${k}`;
  return n.id ? `#${n.id}` : null;
}

// Attributes the reader (or the browser) owns once the element is on the page: a
// <details>' open state, and the style set through the CSSOM (synced from __style).
function ownedAttr(el, name) {
  return name === 'style' || (name === 'open' && el.nodeName === 'DETAILS');
}

function syncElement(live, next) {
  for (const a of [...live.attributes]) {
    if (!next.hasAttribute(a.name) && !ownedAttr(live, a.name)) live.removeAttribute(a.name);
  }
  for (const a of next.attributes) {
    if (ownedAttr(live, a.name)) continue;
    if (live.getAttribute(a.name) !== a.value) live.setAttribute(a.name, a.value);
  }
  live.__on = next.__on;
  const want = next.__style || {};
  for (const [p, v] of Object.entries(want)) if (live.style[p] !== v) live.style[p] = v;
  for (const p of Object.keys(live.__style || {})) if (!(p in want)) live.style[p] = '';
  live.__style = next.__style;
  // A form control's value is the reader's: it is set only when the element is created.
  syncChildren(live, next);
}

function syncChildren(live, next) {
  const keyed = new Map();
  for (const c of live.childNodes) {
    const k = keyOf(c);
    if (k !== null) keyed.set(k, c);
  }
  let cursor = live.firstChild;
  for (const n of [...next.childNodes]) {
    if (n.nodeType === 8) continue;
    const k = keyOf(n);
    let match = null;
    if (k !== null) {
      const c = keyed.get(k);
      if (c && c.nodeName === n.nodeName) {
        match = c;
        keyed.delete(k);
      }
    } else if (cursor && keyOf(cursor) === null && cursor.nodeName === n.nodeName) {
      match = cursor;
    }
    if (!match) {
      live.insertBefore(n, cursor);
      continue;
    }
    if (match === cursor) {
      cursor = cursor.nextSibling;
    } else if (match.contains(document.activeElement)) {
      // Moving a focused element would blur it: move what stands before it instead.
      const after = match.nextSibling;
      for (let x = cursor; x && x !== match;) {
        const nx = x.nextSibling;
        live.insertBefore(x, after);
        x = nx;
      }
      cursor = match.nextSibling;
    } else {
      live.insertBefore(match, cursor);
    }
    if (match.nodeType === 3) {
      if (match.nodeValue !== n.nodeValue) match.nodeValue = n.nodeValue;
    } else if (match.nodeType === 1) {
      syncElement(match, n);
    }
  }
  while (cursor) {
    const nx = cursor.nextSibling;
    live.removeChild(cursor);
    cursor = nx;
  }
}

// Makes `container`'s children those given (nodes or strings), changing the page only where
// they differ. The container itself (its id, class, attributes) is left as it is.
export function patch(container, ...children) {
  const next = container.cloneNode(false);
  append(next, children);
  syncChildren(container, next);
  return container;
}

// ---------------------------------------------------------------- messages

// The banner above the views: one message at a time; '' hides it. `kind` says what put it
// there, so that clearBanner(kind) removes only that message (a failed action's message
// goes when a later action works or the page reconnects; a notice stays). It is not a live
// region of its own: its message is announced through #announcer.
export function showBanner(text, kind = 'notice') {
  const b = $('banner');
  if (b.textContent !== text) b.textContent = text;
  b.hidden = !text;
  b.dataset.kind = text ? kind : '';
  state.bannerKind = text ? kind : '';
  if (text) announce(text);
}

export function clearBanner(kind) {
  if (state.bannerKind === kind) showBanner('');
}

// Says `text` through the page's one aria-live region. Messages of the same moment are
// read together; the region keeps the last few (newest last) so none is cut off.
const pending = [];
let flushTimer = null;
export function announce(text) {
  if (!text) return;
  pending.push(String(text));
  if (flushTimer) return;
  flushTimer = setTimeout(() => {
    flushTimer = null;
    const el = $('announcer');
    if (!el) return;
    const lines = pending.splice(0).slice(-4);
    patch(el, ...lines.map((l, i) => h('p', { key: `${Date.now()}-${i}` }, l)));
  }, 300);
}
