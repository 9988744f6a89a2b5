// What the signed-in user can do from the page: the action buttons, their confirmations,
// and which of them are enabled.
//
// Owns: every mutating request the page sends, and role gating. Which actions a token may
// use comes only from whoami's `allowed` list (state.me.allowed); there is no role matrix
// here. The server enforces it anyway.
// Exports: pipelineActions, pipelineSwitch, releaseActions, approveComment, afterEachAction.
//
// Buttons are rebuilt with every update and patched onto the page (state.js): what keeps a
// click from acting twice is `busy`, the actions under way by key, which every rebuilt
// button of that key reads.

import { api } from './api.js';
import { $, announce, clear, clearBanner, h, showBanner, state } from './state.js';

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

// Actions under way, by key ("approve release/12"): their buttons stay disabled until the
// answer, however often the page is patched meanwhile.
const busy = new Set();

async function act(button, key, what, fn) {
  busy.add(key);
  button.disabled = true;
  try {
    await fn();
    clearBanner('action');
    announce(`${what}: done`);
  } catch (e) {
    showBanner(`${button.textContent} failed: ${e.message}`, 'action');
  } finally {
    busy.delete(key);
    button.disabled = false;
    await reload().catch(() => {});
  }
}

// `target` names what the action is for ("pipeline/monolith", "release/12"): the key of
// the button among the page's buttons, and of the action while it is under way.
function actionButton(action, target, text, onClick, extra = {}) {
  const allowed = can(action);
  const key = `${action} ${target}`;
  const title = allowed ? extra.title : (state.me && state.me.role
    ? `your role (${state.me.role}) may not ${action}`
    : 'your role is unknown, so actions are disabled');
  return h('button', {
    type: 'button',
    key,
    class: extra.danger ? 'danger' : extra.primary ? 'primary' : undefined,
    dataset: { action },
    disabled: !allowed || busy.has(key),
    'aria-describedby': extra.describedby,
    title,
    onclick: (ev, b) => {
      if (can(action) && !busy.has(key) && !b.disabled) onClick(b, key);
    },
  }, text);
}

// The buttons of a pipeline card: pause or resume, freeze or unfreeze, roll back.
export function pipelineActions(p) {
  return h('div', { class: 'actions', key: 'actions' },
    pipelineSwitch(p, p.paused ? 'resume' : 'pause'),
    pipelineSwitch(p, p.frozen ? 'unfreeze' : 'freeze'),
    actionButton('rollback', `pipeline/${p.pipeline}`, 'Roll back…', (b, key) => rollback(b, key, p), { danger: true }),
  );
}

// One of pipeline `p`'s switches: 'pause', 'resume', 'freeze' (asks for a reason) or
// 'unfreeze'. The caller decides which one the pipeline's state calls for.
export function pipelineSwitch(p, action) {
  const path = `/pipelines/${encodeURIComponent(p.pipeline)}`;
  const target = `pipeline/${p.pipeline}`;
  if (action === 'freeze') return actionButton('freeze', target, 'Freeze…', (b, key) => freeze(b, key, p));
  const text = { pause: 'Pause', resume: 'Resume', unfreeze: 'Unfreeze' }[action];
  const done = { pause: 'Paused', resume: 'Resumed', unfreeze: 'Unfroze' }[action];
  return actionButton(action, target, text, (b, key) => act(b, key, `${done} ${p.pipeline}`, () => api('POST', `${path}/${action}`)));
}

// The optional comment typed for approving release `id`'s waiting wave (kept across
// updates; sent with the approval, to the audit log).
const comments = new Map();
const COMMENT_MAX = 500;

// A labelled text field for that comment.
export function approveComment(r, cur) {
  const id = `approve-comment-${r.id}`;
  const input = h('input', {
    id, type: 'text', class: 'approve-comment', maxlength: String(COMMENT_MAX),
    placeholder: 'why (optional; goes to the audit log)', autocomplete: 'off',
    oninput: (ev) => {
      const v = ev.target.value;
      if (v) comments.set(r.id, v);
      else comments.delete(r.id);
    },
    onkeydown: (ev) => {
      // Enter in the comment approves, as a form would.
      if (ev.key !== 'Enter') return;
      ev.preventDefault();
      const b = ev.target.closest('.need, .release-head')?.querySelector('button[data-action="approve"]');
      if (b && !b.disabled) b.click();
    },
  });
  input.value = comments.get(r.id) || '';
  return h('span', { class: 'comment-field', key: `comment-${r.id}` },
    h('label', { for: id }, `Comment on approving ${cur.name}`), input);
}

// The buttons for release `r` whose current wave is `cur`, only those that make sense in
// its state: Approve (primary) while a wave waits for it; Abort while a rollout is queued,
// rolling or halted (not while it already goes back: rolling back or aborting, and not for
// an on-call rollback); none once it is final. The release view and "Needs you" both show
// these, so the two never disagree about what may be done.
export function releaseActions(r, cur) {
  const buttons = [];
  if (r.final) return buttons;
  const target = `release/${r.id}`;
  if (cur && cur.state === 'awaiting_approval' && r.state === 'rolling') {
    buttons.push(actionButton('approve', target, `Approve ${cur.name}`, (b, key) => {
      const comment = (comments.get(r.id) || '').trim().replace(/\s+/g, ' ').slice(0, COMMENT_MAX);
      return act(b, key, `Approved wave ${cur.name} of ${r.pipeline} ${r.version}`, async () => {
        await api('POST', `/releases/${r.id}/approve`, comment ? { comment } : undefined);
        comments.delete(r.id);
      });
    }, { primary: true }));
  }
  const abortable = r.kind !== 'rollback'
    && ['queued', 'waiting_for_artifact', 'rolling', 'halted'].includes(r.state);
  if (abortable) {
    buttons.push(actionButton('abort', target, 'Abort…', (b, key) => abort(b, key, r), { danger: true }));
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

async function rollback(button, key, p) {
  const { current, target, versions } = rollbackChoices(p.pipeline);
  if (!versions.length) {
    showBanner(`Pipeline ${p.pipeline} has no earlier release that succeeded to roll back to.`, 'action');
    return;
  }
  const hosts = p.regions.flatMap((r) => r.hosts);
  const select = h('select', { id: 'rollback-version', onchange: () => describe() },
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
  const to = select.value;
  await act(button, key, `Rolling ${p.pipeline} back to ${to}`, () => api('POST', `/pipelines/${encodeURIComponent(p.pipeline)}/rollback`, { to }));
}

async function freeze(button, key, p) {
  const input = h('input', { id: 'freeze-reason', type: 'text', required: true, maxlength: '500',
    placeholder: 'e.g. holiday change freeze' });
  const body = [
    h('p', {}, 'No new release of ', h('strong', {}, p.pipeline), ' starts while it is frozen.'),
    h('label', { for: 'freeze-reason' }, 'Reason'), input,
  ];
  const ok = await confirmDialog(`Freeze ${p.pipeline}?`, body, 'Freeze',
    () => (input.value.trim() ? '' : 'A reason is required.'));
  if (!ok) return;
  await act(button, key, `Froze ${p.pipeline}`, () => api('POST', `/pipelines/${encodeURIComponent(p.pipeline)}/freeze`, { reason: input.value.trim() }));
}

async function abort(button, key, r) {
  const ok = await confirmDialog(`Abort release ${r.id}?`, [
    h('p', {}, 'Release ', h('strong', {}, r.version), ' of ', h('strong', {}, r.pipeline),
      ' stops, and every host that took it goes back to ',
      h('strong', {}, r.previous_version || 'the previous release'), '.'),
  ], 'Abort');
  if (!ok) return;
  await act(button, key, `Aborting ${r.pipeline} ${r.version}`, () => api('POST', `/releases/${r.id}/abort`));
}
