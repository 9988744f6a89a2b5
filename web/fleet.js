// The fleet overview: one card per pipeline with its flags, actions, release in flight and
// every host's version and connection, region by region (each with its stage, and whether
// it keeps its hooks' output).
//
// Owns: #pipelines, and following the newest in-flight release as pipelines report it.
// Exports: refreshOverview, renderOverview.

import { pipelineActions } from './actions.js';
import { api } from './api.js';
import { badge, bringupFlag, withheldFlag } from './format.js';
import { select } from './history.js';
import { renderNeeds } from './needs.js';
import { renderRelease } from './release.js';
import { $, h, patch, state } from './state.js';

export async function refreshOverview() {
  if (!state.token) return;
  const list = await api('GET', '/pipelines');
  state.pipelines = Array.isArray(list) ? list : [];
  for (const p of state.pipelines) {
    if (p.active && typeof p.active.id === 'number') {
      state.details.set(p.active.id, { ...state.details.get(p.active.id), ...p.active });
      if (state.follow && state.selected !== p.active.id && !p.active.final) {
        state.selected = p.active.id;
      }
    }
  }
  renderOverview();
  renderNeeds();
  renderRelease();
}

export function renderOverview() {
  const root = $('pipelines');
  if (!state.pipelines.length) {
    patch(root, h('p', { class: 'empty', key: 'empty' }, 'No pipelines.'));
    return;
  }
  patch(root, ...state.pipelines.map(pipelineCard));
}

function pipelineCard(p) {
  const flags = [];
  if (p.paused) flags.push(h('span', { class: 'flag paused' }, `paused${p.paused_by ? ` by ${p.paused_by}` : ''}`));
  if (p.frozen) {
    flags.push(h('span', { class: 'flag frozen' },
      `frozen${p.frozen_by ? ` by ${p.frozen_by}` : ''}${p.freeze_reason ? `: ${p.freeze_reason}` : ''}`));
  }
  const actions = pipelineActions(p);

  let active = h('p', { class: 'active none', key: 'active' }, 'No release in flight.');
  if (p.active) {
    const a = { ...p.active, ...state.details.get(p.active.id) };
    const waves = a.waves || [];
    const w = waves[a.current_wave];
    const link = h('a', {
      href: `#release=${a.id}`, class: 'active-link',
      onclick: (ev) => { ev.preventDefault(); select(a.id, true); },
    }, `#${a.id} ${a.version}`);
    active = h('p', { class: 'active', key: 'active', dataset: { release: String(a.id) } },
      'In flight: ', link, ' ', badge(a.state),
      w ? [' wave ', h('span', { class: 'active-wave' }, `${a.current_wave + 1}/${waves.length} ${w.name}`), ' ', badge(w.state)] : '',
      a.created_by ? h('span', { class: 'active-by' }, ` ${a.kind === 'rollback' ? 'rolled back' : 'created'} by ${a.created_by}`) : '');
  }

  const regions = h('div', { class: 'regions', key: 'regions' }, p.regions.map((r) => regionBox(p, r)));
  return h('article', { class: 'card pipeline', key: p.pipeline, dataset: { pipeline: p.pipeline } },
    h('div', { class: 'pipeline-head', key: 'head' },
      h('h3', {}, p.pipeline),
      h('span', { class: 'desired' }, 'desired ', h('strong', { class: 'desired-version' }, p.desired_version || '—')),
      flags,
      h('span', { class: 'spacer' }),
      actions),
    active,
    regions);
}

// The server calls a host drifted when it runs anything but the last good version; while
// a release is in flight, its own hosts are moving on purpose, so they are not drift.
function isDrift(p, host) {
  if (!host.drift) return false;
  return !(p.active && !p.active.final && host.current_version === p.active.version);
}

function regionBox(p, r) {
  r = { ...r, hosts: r.hosts.map((x) => ({ ...x, drift: isDrift(p, x) })) };
  const versions = new Set(r.hosts.map((x) => x.current_version));
  const uniform = versions.size === 1 && r.hosts.length > 0;
  const regionVersion = uniform ? [...versions][0] : '';
  const lost = r.hosts.filter((x) => !x.connected).length;
  const drift = r.hosts.filter((x) => x.drift).length;
  const bringup = r.stage === 'bringup';
  return h('section', {
    key: r.region,
    class: `region${bringup ? ' bringup' : ''}${drift ? ' has-drift' : ''}${lost ? ' has-lost' : ''}`,
    dataset: { region: r.region, version: regionVersion, stage: bringup ? 'bringup' : 'serving',
      hookOutput: r.hook_output === 'none' ? 'none' : 'tail' },
  },
  h('h4', {}, r.region, ' ',
    bringup ? bringupFlag() : '',
    h('span', { class: 'region-version' }, regionVersion || (r.hosts.length ? 'mixed' : 'no hosts')),
    drift ? h('span', { class: 'flag drift' }, `${drift} drift`) : '',
    lost ? h('span', { class: 'flag lost' }, `${lost} lost`) : '',
    r.hook_output === 'none' ? withheldFlag() : ''),
  h('ul', { class: 'hosts' }, r.hosts.map((x) => h('li', {
    key: x.name,
    class: `host${x.connected ? ' connected' : ' lost'}${x.drift ? ' drift' : ''}`,
    dataset: { host: x.name, version: x.current_version || '', connected: String(Boolean(x.connected)), agent: x.agent_version || '' },
    title: (x.drift ? `drift: runs ${x.current_version || 'nothing'}, should run ${p.desired_version}`
      : (x.connected ? 'connected' : `lost; last seen ${x.last_seen || 'never'}`))
      + `; lockstep-agent ${x.agent_version || 'unknown'}`,
  },
  h('span', { class: 'dot', 'aria-hidden': 'true' }),
  h('span', { class: 'host-name' }, x.name),
  h('span', { class: 'host-version' }, x.current_version || '—'),
  h('span', { class: 'host-conn' }, x.connected ? 'connected' : 'lost'),
  x.drift ? h('span', { class: 'flag drift' }, 'drift') : ''))));
}
