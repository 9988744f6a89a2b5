// What the signed-in user can do from the page: the action buttons, their confirmations,
// and which of them are enabled.
//
// Owns: every mutating request the page sends, and role gating. Which actions a token may
// use comes only from whoami's `allowed` list (state.me.allowed); there is no role matrix
// here. The server enforces it anyway.
// Exports: pipelineActions, releaseActions, afterEachAction.

import { api } from './api.js';
import { $, clear, clearBanner, h, showBanner, state } from './state.js';

// The operation each button performs, spelled as whoami's `allowed` spells it
// (AllowedOperations in orchestrator/server/operations.cc): one name per operation, so no
// rule of the server's is repeated here.
const PERMISSION = {
  approve: 'release.approve',
  pause: 'pipeline.pause',
  resume: 'pipeline.resume',
  abort: 'release.abort',
  rollback: 'pipeline.rollback',
  freeze: 'pipeline.freeze',
  unfreeze: 'pipeline.unfreeze',
};

function can(action) {
  const allowed = state.me && state.me.allowed;
  return Boolean(allowed && PERMISSION[action] && allowed.includes(PERMISSION[action]));
}

// Called after every action, whether it worked or not, to reload what the page shows. Set
// by app.js (the loaders import this module, so it cannot import them).
let reload = async () => {};
export function afterEachAction(fn) {
  reload = fn;
}

async function act(button, fn) {
  button.disabled = true;
  try {
    await fn();
    clearBanner('action');
  } catch (e) {
    showBanner(`${button.textContent} failed: ${e.message}`, 'action');
  } finally {
    button.disabled = false;
    await reload().catch(() => {});
  }
}

function actionButton(action, text, onClick, extra = {}) {
  const allowed = can(action);
  const title = allowed ? extra.title : (state.me && state.me.role
    ? `your role (${state.me.role}) may not ${action}`
    : 'your role is unknown, so actions are disabled');
  const b = h('button', {
    type: 'button',
    class: extra.danger ? 'danger' : undefined,
    dataset: { action },
    disabled: !allowed,
    title,
  }, text);
  b.addEventListener('click', () => { if (can(action)) onClick(b); });
  return b;
}

// The buttons of a pipeline card: pause or resume, freeze or unfreeze, roll back.
export function pipelineActions(p) {
  const path = `/pipelines/${encodeURIComponent(p.pipeline)}`;
  return h('div', { class: 'actions' },
    p.paused
      ? actionButton('resume', 'Resume', (b) => act(b, () => api('POST', `${path}/resume`)))
      : actionButton('pause', 'Pause', (b) => act(b, () => api('POST', `${path}/pause`))),
    p.frozen
      ? actionButton('unfreeze', 'Unfreeze', (b) => act(b, () => api('POST', `${path}/unfreeze`)))
      : actionButton('freeze', 'Freeze…', (b) => freeze(b, p)),
    actionButton('rollback', 'Roll back…', (b) => rollback(b, p), { danger: true }),
  );
}

// The buttons of the release view for release `r` whose current wave is `cur`: approve
// (disabled until the wave waits for it) and abort; none once the release is final.
export function releaseActions(r, cur) {
  const buttons = [];
  if (!r.final) {
    const waiting = cur && cur.state === 'awaiting_approval';
    if (waiting || (cur && cur.manual_approval && !cur.approved_by)) {
      const b = actionButton('approve', `Approve ${cur.name}`, (btn) => act(btn, () => api('POST', `/releases/${r.id}/approve`)));
      if (!waiting) b.disabled = true;
      buttons.push(b);
    }
    buttons.push(actionButton('abort', 'Abort…', (b) => abort(b, r), { danger: true }));
  }
  return buttons;
}

// A modal confirmation. `body` is a list of nodes; resolves with true when confirmed.
// `validate` may return an error string that keeps the dialog open.
function confirmDialog(title, body, okText, validate) {
  const dlg = $('confirm-dialog');
  $('confirm-title').textContent = title;
  clear($('confirm-body')).append(...body);
  $('confirm-error').textContent = '';
  $('confirm-ok').textContent = okText;
  return new Promise((resolve) => {
    const done = (ok) => {
      $('confirm-form').removeEventListener('submit', onSubmit);
      $('confirm-cancel').removeEventListener('click', onCancel);
      dlg.removeEventListener('cancel', onCancel);
      if (dlg.open) dlg.close();
      resolve(ok);
    };
    const onSubmit = (ev) => {
      ev.preventDefault();
      const err = validate ? validate() : '';
      if (err) {
        $('confirm-error').textContent = err;
        return;
      }
      done(true);
    };
    const onCancel = (ev) => { if (ev) ev.preventDefault(); done(false); };
    $('confirm-form').addEventListener('submit', onSubmit);
    $('confirm-cancel').addEventListener('click', onCancel);
    dlg.addEventListener('cancel', onCancel);
    dlg.showModal();
  });
}

// The engine's default rollback target (orchestrator/engine/engine.cc, RollbackTarget): the
// newest succeeded rollout older than the one that introduced what the fleet is on or moving
// to. The page computes it to name it in the confirmation and then asks for it explicitly,
// so what is confirmed is what is done.
function rollbackChoices(pipeline) {
  const list = state.releases.filter((r) => r.pipeline === pipeline).sort((a, b) => b.id - a.id);
  const current = list.find((r) => r.state === 'succeeded' || r.in_flight);
  const succeededRollouts = list.filter((r) => r.state === 'succeeded' && r.kind === 'rollout');
  let target = null;
  if (current) {
    let before = current.id;
    if (current.kind === 'rollback') {
      const origin = succeededRollouts.find((r) => r.version === current.version);
      before = origin ? origin.id : current.id;
    }
    target = succeededRollouts.find((r) => r.id < before && r.version !== current.version) || null;
  }
  const versions = [];
  for (const r of succeededRollouts) {
    if (!versions.includes(r.version) && (!current || r.version !== current.version)) versions.push(r.version);
  }
  return { current, target: target ? target.version : (versions[0] || ''), versions };
}

async function rollback(button, p) {
  const { current, target, versions } = rollbackChoices(p.pipeline);
  if (!versions.length) {
    showBanner(`Pipeline ${p.pipeline} has no earlier release that succeeded to roll back to.`, 'action');
    return;
  }
  const hosts = p.regions.flatMap((r) => r.hosts);
  const select = h('select', { id: 'rollback-version' },
    versions.map((v) => h('option', { value: v }, v)));
  select.value = target;
  const summary = h('p', { id: 'rollback-summary' });
  const describe = () => {
    const v = select.value;
    const moving = hosts.filter((x) => x.current_version !== v).length;
    const regions = p.regions.map((r) => r.region);
    clear(summary).append(
      'Every host of ', h('strong', {}, p.pipeline), ' goes to version ',
      h('strong', { id: 'rollback-target' }, v), ' at once: ',
      h('strong', { id: 'rollback-hosts' }, `${hosts.length} host${hosts.length === 1 ? '' : 's'}`),
      ` (${moving} not on it now) in `,
      h('strong', { id: 'rollback-regions' }, `${regions.length} region${regions.length === 1 ? '' : 's'}: ${regions.join(', ')}`),
      '.',
    );
  };
  select.addEventListener('change', describe);
  describe();
  const body = [
    h('p', {}, 'Now on or moving to: ', h('strong', {}, current ? current.version : '(nothing succeeded yet)'),
      current && !current.final ? ' — the release in flight is preempted.' : ''),
    h('label', { for: 'rollback-version' }, 'Roll back to '),
    select,
    summary,
  ];
  const ok = await confirmDialog(`Roll back ${p.pipeline}?`, body, 'Roll back');
  if (!ok) return;
  await act(button, () => api('POST', `/pipelines/${encodeURIComponent(p.pipeline)}/rollback`, { to: select.value }));
}

async function freeze(button, p) {
  const input = h('input', { id: 'freeze-reason', type: 'text', required: true, maxlength: '500',
    placeholder: 'e.g. holiday change freeze' });
  const body = [
    h('p', {}, 'No new release of ', h('strong', {}, p.pipeline), ' starts while it is frozen.'),
    h('label', { for: 'freeze-reason' }, 'Reason'), input,
  ];
  const ok = await confirmDialog(`Freeze ${p.pipeline}?`, body, 'Freeze',
    () => (input.value.trim() ? '' : 'A reason is required.'));
  if (!ok) return;
  await act(button, () => api('POST', `/pipelines/${encodeURIComponent(p.pipeline)}/freeze`, { reason: input.value.trim() }));
}

async function abort(button, r) {
  const ok = await confirmDialog(`Abort release ${r.id}?`, [
    h('p', {}, 'Release ', h('strong', {}, r.version), ' of ', h('strong', {}, r.pipeline),
      ' stops, and every host that took it goes back to ',
      h('strong', {}, r.previous_version || 'the previous release'), '.'),
  ], 'Abort');
  if (!ok) return;
  await act(button, () => api('POST', `/releases/${r.id}/abort`));
}
