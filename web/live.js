// Keeping the page current: loading everything, following the server's event stream while
// it works, and polling while it does not (retrying the stream every RECONNECT_MS). When
// lockstepd cannot be reached at all, the page says since when and greys out what it shows
// (it is the last the page heard, not news that hosts were lost) until a request gets
// through again.
//
// Changes of state (a release's, the selected release's waves', the connection's) are
// announced through the page's live region.
//
// Owns: #live (the mode indicator), state.mode, state.disconnectedSince, state.events, the
// `stale` class of #pipelines and #hosts, and the poll, reconnect and re-read timers.
// Exports: refreshAll, renderAll, startEvents, stopEvents, setMode, setReachable.

import { openEventStream } from './api.js';
import { refreshAudit, renderAudit } from './audit.js';
import { fmtClock } from './format.js';
import { refreshOverview, renderOverview } from './fleet.js';
import { refreshReleases, renderHistory } from './history.js';
import { renderNeeds } from './needs.js';
import { announceChange, refreshSelected, renderRelease } from './release.js';
import { $, announce, clearBanner, state } from './state.js';

const POLL_MS = 2000;            // polling interval when the event stream is down
const RECONNECT_MS = 10000;      // retry the event stream this long after it failed
// A release's final event can come before its last hosts report (e.g. reverted hosts of an
// aborted release); the selected release is read once more this long after it is final.
const AFTER_FINAL_MS = 2000;

export async function refreshAll() {
  if (!state.token) return;
  await Promise.all([refreshOverview(), refreshReleases(), refreshAudit()]);
  await refreshSelected();
}

// Shows everything again from what the page knows, e.g. after the time zone changed.
export function renderAll() {
  renderLive();
  if (!state.token) return;
  renderOverview();
  renderHistory();
  renderAudit();
  renderNeeds();
  renderRelease();
}

export function setMode(mode) {
  state.mode = mode;
  renderLive();
}

function renderLive() {
  const el = $('live');
  const mode = state.mode;
  if (el.dataset.mode !== mode) el.dataset.mode = mode;
  const down = state.disconnectedSince !== null && mode !== 'off';
  el.classList.toggle('disconnected', down);
  const text = down ? `Disconnected since ${fmtClock(state.disconnectedSince)} — data may be stale`
    : mode === 'live' ? 'live' : mode === 'polling' ? 'polling every 2 s' : 'offline';
  if (el.textContent !== text) el.textContent = text;
  for (const id of ['pipelines', 'hosts']) $(id).classList.toggle('stale', down);
}

// Told by api.js whether the last request reached lockstepd. Coming back reloads
// everything and clears a failed action's banner (the failure may be what the outage was).
export function setReachable(ok) {
  if (!ok) {
    if (state.disconnectedSince === null && state.token) {
      state.disconnectedSince = Date.now();
      renderLive();
      announce(`Disconnected from lockstepd since ${fmtClock(state.disconnectedSince)}; what the page shows may be stale.`);
    }
    return;
  }
  if (state.disconnectedSince === null) return;
  state.disconnectedSince = null;
  renderLive();
  announce('Connected to lockstepd again.');
  clearBanner('action');
  if (state.token) refreshAll().catch(() => {});
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
  clearTimeout(state.afterFinalTimer);
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
  const before = state.details.get(r.id) || state.releases.find((x) => x.id === r.id);
  announceChange(before, r);
  // Keep what the last full read knew (hosts, gates) until the re-read below replaces it.
  state.details.set(r.id, { ...state.details.get(r.id), ...r });
  const i = state.releases.findIndex((x) => x.id === r.id);
  if (i >= 0) state.releases[i] = r;
  else state.releases.unshift(r);
  state.releases.sort((a, b) => b.id - a.id);
  if (state.follow && !r.final) state.selected = r.id;
  else if (state.selected === null) state.selected = r.id;
  renderRelease();
  renderHistory();
  // The event carries the release, not every host's latest step: read it in full, and once
  // more after it is final, for hosts that report after the final event.
  if (r.id === state.selected) {
    rereadSelected();
    if (r.final) {
      clearTimeout(state.afterFinalTimer);
      state.afterFinalTimer = setTimeout(() => { if (state.selected === r.id) rereadSelected(); }, AFTER_FINAL_MS);
    }
  }
  // Host versions, the active release and the audit log change with release events.
  scheduleRefresh();
}

// Coalesces bursts of events into one read of the selected release in flight at a time, plus
// one more if events arrived while it was under way.
function rereadSelected() {
  if (state.rereading) {
    state.rereadAgain = true;
    return;
  }
  state.rereading = true;
  refreshSelected().catch(() => {}).finally(() => {
    state.rereading = false;
    if (state.rereadAgain) {
      state.rereadAgain = false;
      rereadSelected();
    }
  });
}

function scheduleRefresh() {
  if (state.refreshQueued) return;
  state.refreshQueued = true;
  setTimeout(() => {
    state.refreshQueued = false;
    Promise.all([refreshOverview(), refreshAudit()]).catch(() => {});
  }, 250);
}
