// The client side of lockstepd's HTTP API (/api/v1): requests with the signed-in bearer
// token, errors as ApiError, and the server-sent event stream.
//
// Owns: how a request is sent and how an answer or a failure is read.
// Exports: ApiError, api, onReachability, onUnauthorized, openEventStream.

import { state } from './state.js';

const API = '/api/v1';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Called with the server's message when a request other than /whoami answers 401 (the
// token was revoked or expired). Set by app.js, which signs the page out.
let unauthorized = () => {};
export function onUnauthorized(fn) {
  unauthorized = fn;
}

// Called with false when a request cannot reach lockstepd at all, and with true when one
// gets any answer (even an error status: the server is there). Set by app.js.
let reachability = () => {};
export function onReachability(fn) {
  reachability = fn;
}

// Resolves with the parsed JSON answer (null if empty); rejects with an ApiError whose
// status is 0 when the server cannot be reached.
export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    reachability(false);
    throw new ApiError(0, `cannot reach the server (${e.message})`);
  }
  reachability(true);
  let data = null;
  const text = await res.text();
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    const msg = data && typeof data.error === 'string' ? data.error : `HTTP ${res.status}`;
    if (res.status === 401 && path !== '/whoami') unauthorized(msg);
    throw new ApiError(res.status, msg);
  }
  return data;
}

// Opens the event stream for the signed-in token and returns it, or null when the browser
// has no EventSource. onOpen(es) when it is up; onRelease(release, type) for each release
// event; onError(es) once it failed, after closing it: the browser would retry by itself,
// but a 401/404 never recovers, so the caller decides when to try again.
export function openEventStream({ onOpen, onRelease, onError }) {
  if (typeof EventSource === 'undefined') return null;
  const es = new EventSource(`${API}/events?token=${encodeURIComponent(state.token)}`);
  es.addEventListener('open', () => onOpen(es));
  es.addEventListener('release', (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    if (msg && msg.release) onRelease(msg.release, msg.type);
  });
  es.addEventListener('error', () => {
    es.close();
    onError(es);
  });
  return es;
}
