// Lockstep's release dashboard: the entry module. Plain ES modules, no build step, no
// dependencies; index.html loads this file as <script type="module">.
//
// Owns: signing in and out (the token in session storage, whoami) and wiring the modules
// together. Exports nothing.
//
// The modules, each importing only those listed after it, so no two import each other:
//   app.js      sign in / out, start-up
//   live.js     loading everything, the event stream, polling
//   fleet.js    the pipeline cards (#pipelines)
//   history.js  the releases table and chart, which release is selected
//   audit.js    the audit log
//   needs.js    "Needs you": what waits for a human, and the tab title
//   release.js  the release view
//   actions.js  action buttons, confirmations, gating by whoami's `allowed`
//   api.js      HTTP API client and event stream
//   format.js   durations, times (UTC or local, always with the zone), state badges
//   state.js    the shared state, the DOM helpers (no innerHTML anywhere), patching the
//               page by key, and the one aria-live region
// Calls that go the other way (a 401 signs out, an action reloads) are hooks set here.

import { afterEachAction } from './actions.js';
import { api, onReachability, onUnauthorized } from './api.js';
import { wireAudit } from './audit.js';
import { refreshOverview } from './fleet.js';
import { fmtClock, setZone, zoneName } from './format.js';
import { readHash, wireHistory } from './history.js';
import { refreshAll, renderAll, setMode, setReachable, startEvents, stopEvents } from './live.js';
import { renderNeeds } from './needs.js';
import { refreshSelected, tick } from './release.js';
import { $, clear, h, showBanner, state } from './state.js';

const TOKEN_KEY = 'lockstep.token';
const REFRESH_MS = 5000;         // overview refresh (agent connect/lose is not an event)

async function signIn(token) {
  state.token = token;
  // Any read proves the token is valid.
  await api('GET', '/pipelines');
  // Which actions this token may use comes only from the server's answer; without one,
  // nothing is allowed.
  let me = { name: '', role: '', allowed: [] };
  try {
    const who = await api('GET', '/whoami');
    if (who && typeof who.role === 'string') {
      me = {
        name: String(who.name || ''),
        role: who.role,
        allowed: Array.isArray(who.allowed) ? who.allowed.filter((a) => typeof a === 'string') : [],
      };
    }
  } catch (e) {
    if (e.status === 401) throw e;
    // 404 (no whoami on this server) or anything else: unknown role, enable nothing.
  }
  state.me = me;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('signin-section').hidden = true;
  $('app').hidden = false;
  $('signout').hidden = false;
  const who = $('whoami');
  who.hidden = false;
  clear(who).append(
    h('span', { class: 'who-name' }, me.name || 'signed in'),
    ' ',
    h('span', { class: 'role', dataset: { role: me.role || 'unknown' } }, me.role || 'role unknown'),
  );
  if (!me.role) {
    showBanner('This server does not say which role your token has (no /api/v1/whoami), '
      + 'so actions are disabled here; the CLI still works.');
  }
  readHash();
  await refreshAll();
  startEvents();
  state.timers.push(setInterval(() => { if (state.mode === 'live') refreshOverview(); }, REFRESH_MS));
  state.timers.push(setInterval(tick, 1000));
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopEvents();
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  Object.assign(state, {
    token: null, me: null, pipelines: [], releases: [], audit: [], selected: null,
    follow: true, disconnectedSince: null,
  });
  state.history.rows = null;
  state.details.clear();
  renderNeeds();
  $('app').hidden = true;
  $('signout').hidden = true;
  $('whoami').hidden = true;
  $('signin-section').hidden = false;
  $('token-input').value = '';
  $('signin-error').textContent = message || '';
  setMode('off');
}

// The UTC / local switch in the top bar; the choice is kept in localStorage (format.js).
function renderZoneToggle() {
  const b = $('tz-toggle');
  const zone = zoneName();
  b.dataset.zone = zone;
  b.textContent = zone === 'utc' ? 'Times: UTC' : `Times: local (${fmtClock(Date.now()).split(' ')[1]})`;
}

function main() {
  renderZoneToggle();
  $('tz-toggle').addEventListener('click', () => {
    setZone(zoneName() === 'utc' ? 'local' : 'utc');
    renderZoneToggle();
    // Every view draws its times from format.js: draw them all again, at once.
    renderAll();
  });
  wireHistory(() => refreshAll().catch(() => {}));
  wireAudit();
  onUnauthorized((msg) => signOut(`Signed out: ${msg}`));
  onReachability(setReachable);
  afterEachAction(refreshAll);
  $('signin').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = $('token-input').value.trim();
    $('signin-error').textContent = '';
    $('signin-button').disabled = true;
    try {
      await signIn(token);
    } catch (e) {
      signOut(e.status === 401 ? 'That token is not valid.' : `Sign-in failed: ${e.message}`);
    } finally {
      $('signin-button').disabled = false;
    }
  });
  $('signout').addEventListener('click', () => signOut(''));
  window.addEventListener('hashchange', () => {
    readHash();
    if (state.token) refreshSelected();
  });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    signIn(saved).catch((e) => signOut(e.status === 401 ? 'Your token is no longer valid.' : `Sign-in failed: ${e.message}`));
  }
}

main();
