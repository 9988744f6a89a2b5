// Keeping the page current: loading everything, following the server's event stream while
// it works, and polling while it does not (retrying the stream every RECONNECT_MS).
//
// Owns: #live (the mode indicator), state.mode, state.events and the poll and reconnect
// timers.
// Exports: refreshAll, startEvents, stopEvents, setMode.

import { openEventStream } from './api.js';
import { refreshAudit } from './audit.js';
import { refreshOverview } from './fleet.js';
import { refreshReleases, renderHistory } from './history.js';
import { refreshSelected, renderRelease } from './release.js';
import { $, state } from './state.js';

const POLL_MS = 2000;            // polling interval when the event stream is down
const RECONNECT_MS = 10000;      // retry the event stream this long after it failed

export async function refreshAll() {
  if (!state.token) return;
  await Promise.all([refreshOverview(), refreshReleases(), refreshAudit()]);
  await refreshSelected();
}

export function setMode(mode) {
  state.mode = mode;
  const el = $('live');
  el.dataset.mode = mode;
  el.textContent = mode === 'live' ? 'live' : mode === 'polling' ? 'polling every 2 s' : 'offline';
}

export function startEvents() {
  stopEvents();
  const es = state.token ? openEventStream({
    onOpen: () => {
      stopPolling();
      setMode('live');
      scheduleRefresh();  // catch up on whatever happened while the stream was down
    },
    onRelease,
    onError: (failed) => {
      // Poll instead, and try the stream again later.
      if (state.events === failed) state.events = null;
      startPolling();
      clearTimeout(state.reconnectTimer);
      state.reconnectTimer = setTimeout(() => { if (state.token) startEvents(); }, RECONNECT_MS);
    },
  }) : null;
  if (!es) {
    startPolling();
    return;
  }
  state.events = es;
}

export function stopEvents() {
  if (state.events) state.events.close();
  state.events = null;
  clearTimeout(state.reconnectTimer);
  stopPolling();
}

function startPolling() {
  setMode('polling');
  if (state.pollTimer) return;
  state.pollTimer = setInterval(() => refreshAll().catch(() => {}), POLL_MS);
}

function stopPolling() {
  clearInterval(state.pollTimer);
  state.pollTimer = null;
}

function onRelease(r) {
  if (!r || typeof r.id !== 'number') return;
  state.details.set(r.id, r);
  const i = state.releases.findIndex((x) => x.id === r.id);
  if (i >= 0) state.releases[i] = r;
  else state.releases.unshift(r);
  state.releases.sort((a, b) => b.id - a.id);
  if (state.follow && !r.final) state.selected = r.id;
  else if (state.selected === null) state.selected = r.id;
  renderRelease();
  renderHistory();
  // Host versions, the active release and the audit log change with release events.
  scheduleRefresh();
}

function scheduleRefresh() {
  if (state.refreshQueued) return;
  state.refreshQueued = true;
  setTimeout(() => {
    state.refreshQueued = false;
    Promise.all([refreshOverview(), refreshAudit()]).catch(() => {});
  }, 250);
}
