// The audit log: who did what, newest first.
//
// Owns: #audit.
// Exports: refreshAudit.

import { api } from './api.js';
import { fmtTime } from './format.js';
import { $, clear, h, state } from './state.js';

const AUDIT_LIMIT = 50;

export async function refreshAudit() {
  if (!state.token) return;
  const list = await api('GET', `/audit?limit=${AUDIT_LIMIT}`);
  state.audit = Array.isArray(list) ? list : [];
  renderAudit();
}

function renderAudit() {
  const t = clear($('audit'));
  if (!state.audit.length) {
    t.append(h('caption', {}, 'The audit log is empty.'));
    return;
  }
  t.append(h('thead', {}, h('tr', {}, ['When', 'Who', 'Action', 'Target', 'Detail', 'Outcome'].map((x) => h('th', { scope: 'col' }, x)))));
  t.append(h('tbody', {}, state.audit.map((e) => h('tr', { class: 'audit-row', dataset: { action: e.action } },
    h('td', {}, fmtTime(e.at_ms)), h('td', {}, e.actor), h('td', {}, e.action), h('td', {}, e.target),
    h('td', { class: 'detail' }, e.detail), h('td', {}, e.outcome)))));
}
