// The dashboard page: connection, token, rendering. The model lives in state.js, charts in chart.js.
//
// Data comes only from this daemon: GET /api/status (model, thresholds, health; also how we learn
// that a token is needed), the /alerts WebSocket (every event) and, for the operator, the
// evidence routes (list, WAV, DELETE) and POST /api/labels. The token, when the daemon wants
// one, is kept in sessionStorage (this tab, this session), sent as "Authorization: Bearer" to
// every /api request and as the WebSocket subprotocol "streamguard.bearer.<base64url>" to
// /alerts: never in a URL, never logged. Evidence audio is fetched with the header and played
// from a blob: URL for that reason. Every string from an event is put in the page with
// textContent.

import { callVerdict, DashboardState } from "./state.js";
import { formatCallTime, level, THRESHOLD_DIGITS, timeline } from "./chart.js";

const TOKEN_KEY = "streamguard.token";
const TAIL = 1000; // events replayed on (re)load: the daemon replays at most 1,000 (?tail is capped)
const STATUS_EVERY_MS = 5000;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10000;
const RENDER_EVERY_MS = 150;
const FRESH_MS = 15000; // an alert younger than this flashes

const state = new DashboardState();
let status = null; // last /api/status body
let socket = null;
let socketOpenedAt = 0;
let resumeFrom = null; // seq to resume after (null: tail)
let retryMs = RETRY_MIN_MS;
let retryTimer = null;
let failedHandshakes = 0; // WebSocket handshakes refused in a row (while /api/status answers)
let connectAttempt = 0;
let daemonStarted = null; // ISO time the daemon started, its own clock (restart detection)
let lastRefill = 0; // when the page last re-read a gap it fell behind on
let renderTimer = null;
let thresholdsKey = "";
const views = new Map(); // Call -> {node, version, key}
const expanded = new Set(); // ended calls whose charts are shown
const alertNodes = new Map(); // alert seq -> its <li>
const operatorViews = new Map(); // Call -> its label and evidence controls (kept across redraws)

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ small DOM helpers

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
  }
  return node;
}

function wallClock(ts) {
  if (!ts) return h("span", { class: "when" }, "—");
  const date = new Date(ts);
  return h("time", { class: "when", datetime: ts, title: `${ts} (UTC)` }, date.toLocaleTimeString([], { hour12: false }));
}

const fmt = (v, digits = 2) => (v === null || v === undefined ? "—" : Number(v).toFixed(digits));
const fmtThreshold = (v) => fmt(v, THRESHOLD_DIGITS);
const seconds = (v) => (v === null || v === undefined ? "—" : `${Number(v).toFixed(1)} s`);

// ------------------------------------------------------------------ token

function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function askToken(refused) {
  if (refused) sessionStorage.removeItem(TOKEN_KEY);
  setConnection("token", "Token needed");
  $("token-error").textContent = "That token was refused. Try again.";
  $("token-error").hidden = !refused;
  $("token-dialog").hidden = false;
  $("token-input").value = "";
  $("token-input").focus();
}

function onTokenSubmit(event) {
  event.preventDefault();
  const value = $("token-input").value.trim();
  if (!value) return;
  if (!/^[\x21-\x7e]+$/.test(value)) {
    // an HTTP header cannot carry it as typed (and the daemon's tokens are such strings)
    $("token-error").textContent = "A token is made of visible ASCII characters, no spaces.";
    $("token-error").hidden = false;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token-input").value = "";
  $("token-dialog").hidden = true;
  connect();
}

function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  closeSocket();
  askToken(false);
}

// ------------------------------------------------------------------ connection

function authHeaders(extra = {}) {
  const token = storedToken();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function fetchStatus() {
  const response = await fetch("/api/status", { headers: authHeaders(), cache: "no-store", credentials: "omit" });
  // 401: no token sent; 403: a wrong one. Either way the page asks for it.
  if (response.status === 401 || response.status === 403) return null;
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

function setConnection(kind, text) {
  const pill = $("connection");
  pill.dataset.state = kind;
  pill.textContent = text;
  $("forget-token").hidden = !storedToken();
}

function closeSocket() {
  const ws = socket;
  socket = null;
  if (ws) ws.close();
}

function retry() {
  clearTimeout(retryTimer);
  setConnection("reconnecting", `Reconnecting in ${Math.round(retryMs / 100) / 10} s`);
  retryTimer = setTimeout(connect, retryMs);
  retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
}

/** When the daemon started (ISO, its own clock) per a /api/status body. */
function startedAt(body) {
  return new Date(Date.parse(body.time) - body.health.uptime_seconds * 1000).toISOString();
}

async function connect() {
  const attempt = ++connectAttempt;
  clearTimeout(retryTimer);
  closeSocket();
  setConnection("connecting", "Connecting…");
  let body;
  try {
    body = await fetchStatus();
  } catch {
    if (attempt === connectAttempt) retry();
    return;
  }
  if (attempt !== connectAttempt) return; // a newer connect() took over meanwhile
  if (body === null) {
    askToken(Boolean(storedToken()));
    return;
  }
  const started = startedAt(body);
  const restarted =
    (daemonStarted !== null && Date.parse(started) - Date.parse(daemonStarted) > 5000) ||
    (resumeFrom !== null && body.last_seq < resumeFrom);
  daemonStarted = started;
  if (restarted) {
    // Rebuild from what the new run holds (its seqs may have begun again); calls it never
    // ended are marked as lost once they are older than its start.
    state.clear();
    views.clear();
    alertNodes.clear();
    for (const ops of operatorViews.values()) dropPlayers(ops, new Set());
    operatorViews.clear();
    resumeFrom = null;
    showBanner(`The daemon restarted (${new Date(started).toLocaleTimeString([], { hour12: false })}): the page was rebuilt from its history.`);
  }
  applyStatus(body);
  const query = resumeFrom === null ? `tail=${TAIL}` : `since=${resumeFrom}`;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const protocols = ["streamguard.v1"];
  const token = storedToken();
  if (token) protocols.push(`streamguard.bearer.${base64url(token)}`);
  const ws = new WebSocket(`${scheme}//${location.host}${body.alerts_path}?${query}`, protocols);
  socket = ws;
  let opened = false;
  ws.addEventListener("open", () => {
    if (socket !== ws) return;
    opened = true;
    failedHandshakes = 0;
    socketOpenedAt = Date.now();
    retryMs = RETRY_MIN_MS;
    setConnection("live", "Live");
  });
  ws.addEventListener("message", (message) => {
    if (socket === ws) onEvent(JSON.parse(message.data));
  });
  ws.addEventListener("close", () => {
    if (socket !== ws) return;
    socket = null;
    if (!opened && ++failedHandshakes === 3) {
      // /api/status answered but the WebSocket never opens: almost always a proxy in between
      const where = 'docs/operations.md, "The dashboard"';
      showBanner(
        "The daemon answers, but its /alerts WebSocket cannot be opened from this page. Behind a " +
          `reverse proxy, pass the Host header and WebSocket upgrades through (${where}).`,
      );
    }
    retry();
  });
}

function onEvent(event) {
  if (event.type === "dropped") {
    if (Date.now() - socketOpenedAt > 1000 && Date.now() - lastRefill > 10000) {
      // we fell behind while live: refill the gap from the daemon's history (at most every 10 s)
      lastRefill = Date.now();
      resumeFrom = event.first_seq - 1;
      connect();
      return;
    }
    state.apply(event); // older than the daemon's history: lost for good
    showBanner(`${state.missed} event(s) were lost before this page could receive them.`);
  } else if (state.apply(event)) {
    resumeFrom = state.lastSeq;
  }
  scheduleRender();
}

async function refreshStatus() {
  if (!$("token-dialog").hidden) return;
  try {
    const body = await fetchStatus();
    if (body === null) {
      closeSocket();
      askToken(true);
      return;
    }
    applyStatus(body);
  } catch {
    // the WebSocket's own reconnect loop reports the outage
  }
}

function applyStatus(body) {
  status = body;
  if (daemonStarted !== null) state.endStale(daemonStarted, "daemon restarted");
  const model = body.model;
  const sm = body.smoothing;
  $("model").replaceChildren(
    h("span", { class: "model-name", title: model ? `${model.architecture}, ${model.window_seconds} s windows` : "" }, model ? model.name : "—"),
    h("span", { class: "model-detail" }, model ? ` threshold ${fmtThreshold(model.threshold)}` : ""),
    h("span", { class: "model-detail" }, ` · alert ≥ ${fmtThreshold(sm.on_threshold)} ×${sm.raise_after}, clears < ${fmtThreshold(sm.off_threshold)} ×${sm.clear_after}`),
  );
  const health = body.health;
  const util = health.engine_utilization;
  $("health").replaceChildren(
    h("span", { class: `daemon-${health.status}` }, health.status),
    util === undefined ? "" : ` · engine ${Math.round(util * 100)} %`,
    health.windows_dropped ? h("span", { class: "warn" }, ` · ${health.windows_dropped} windows dropped`) : "",
    health.windows_failed ? h("span", { class: "warn" }, ` · ${health.windows_failed} failed`) : "",
    health.device ? ` · ${health.device}` : "",
  );
  $("version").textContent = body.version ? `streamguard ${body.version}` : "streamguard";
  scheduleRender();
}

// ------------------------------------------------------------------ rendering

function thresholds() {
  const sm = status?.smoothing;
  return {
    on: sm?.on_threshold ?? state.thresholdsFromAlerts.on ?? status?.model?.threshold ?? null,
    off: sm?.off_threshold ?? state.thresholdsFromAlerts.off ?? null,
  };
}

let renderCostMs = 0; // how long the last render took: a busy daemon's page renders less often

function scheduleRender() {
  if (renderTimer === null) renderTimer = setTimeout(render, Math.max(RENDER_EVERY_MS, 4 * renderCostMs));
}

function filterText() {
  return $("filter").value.trim().toLowerCase();
}

function matches(callId, filter) {
  return !filter || String(callId ?? "").toLowerCase().includes(filter);
}

function render() {
  const began = performance.now();
  try {
    renderAll();
  } finally {
    renderCostMs = performance.now() - began;
    document.body.dataset.renderMs = renderCostMs.toFixed(1); // for benchmarks and curious eyes
    renderTimer = null;
  }
}

function renderAll() {
  const th = thresholds();
  const key = `${th.on}/${th.off}`;
  if (key !== thresholdsKey) {
    thresholdsKey = key;
    for (const view of views.values()) view.version = -1; // redraw every chart
  }
  const filter = filterText();
  renderOpen(filter, th);
  renderAlerts(filter);
  renderEnded(filter, th);
  const alerting = state.openCalls().filter((c) => c.alerting).length;
  document.title = alerting ? `(${alerting}) ALERT · streamguard` : "streamguard";
  $("last-seq").textContent = state.lastSeq === null ? "no events yet" : `events up to seq ${state.lastSeq}`;
  // drop views of calls that are gone
  const live = new Set(state.calls.values());
  for (const call of views.keys()) if (!live.has(call)) views.delete(call);
  for (const [call, ops] of operatorViews) {
    if (live.has(call)) continue;
    dropPlayers(ops, new Set());
    operatorViews.delete(call);
  }
}

function trackBlock(call, track, th, { chart = true } = {}) {
  const last = track.latest;
  const lvl = level(last?.s, th.on, th.off);
  const openSpan = track.spans.findLast((s) => s.end === null);
  const first = call.firstVerdict(track);
  return h(
    "div",
    {
      class: `track level-${lvl}`,
      "data-track": track.name,
      "data-points": track.scores.length,
      "data-smoothed": last ? last.s : "",
      "data-raised": track.raised ? "true" : "false",
      "data-first-verdict": first ?? "",
    },
    h(
      "div",
      { class: "track-head" },
      h("span", { class: "track-name" }, track.name),
      h("span", { class: `score level-${lvl}`, title: "smoothed score (what alerts are decided on)" }, last ? fmt(last.s) : "—"),
      h(
        "span",
        { class: "track-detail" },
        last ? `P(fake) ${fmt(last.p)} · window ${formatCallTime(last.start)}–${formatCallTime(last.end)}` : "waiting for speech",
      ),
      first === null ? null : h("span", { class: "first-verdict", title: FIRST_VERDICT_TITLE }, `first verdict ${seconds(first)}`),
      track.raised && call.isOpen ? h("span", { class: "track-alert" }, `ALERT since ${formatCallTime(openSpan?.start ?? 0)}`) : null,
    ),
    chart ? timeline(track, { ...th, duration: call.callSeconds, hop: status?.hop_seconds ?? 1 }) : null,
  );
}

const FIRST_VERDICT_TITLE =
  "Call time of this track's first score: the end of its first scored window, counted from the " +
  "call's first audio. The events do not say when the caller began to speak, so silence before " +
  "the first words is included.";

function fillCard(node, call, th) {
  node.replaceChildren(
    h(
      "header",
      { class: "call-head" },
      h("span", { class: "call-id", title: "call id" }, call.id),
      h("span", { class: "badge source" }, call.source ?? "?"),
      call.alerting ? h("span", { class: "badge alert-badge" }, "ALERT") : h("span", { class: "badge watching" }, "monitoring"),
      labelBadge(call.label),
      h(
        "span",
        { class: "call-times" },
        "started ",
        wallClock(call.startedTs),
        ` · ${formatCallTime(call.callSeconds)} of call`,
        call.sampleRate ? ` · ${call.sampleRate / 1000} kHz` : "",
      ),
    ),
    call.tracks.size
      ? h("div", { class: "tracks" }, [...call.tracks.values()].map((t) => trackBlock(call, t, th)))
      : h("p", { class: "empty" }, "No audio yet."),
    call.alerts || call.clips.size ? operatorPanel(call) : null,
  );
}

// Cards off screen keep their last drawing until they scroll into view: with hundreds of open
// calls, redrawing every chart on every score would be most of the page's work.
const onScreen = new IntersectionObserver(
  (entries) => {
    for (const entry of entries) {
      const view = viewsByNode.get(entry.target);
      if (!view) continue;
      view.visible = entry.isIntersecting;
      if (view.visible) scheduleRender();
    }
  },
  { rootMargin: "300px" },
);
const viewsByNode = new WeakMap();

function renderOpen(filter, th) {
  const calls = state
    .openCalls()
    .filter((c) => matches(c.id, filter))
    .sort((a, b) => Number(b.alerting) - Number(a.alerting) || String(a.startedTs ?? "").localeCompare(String(b.startedTs ?? "")));
  const nodes = calls.map((call) => {
    let view = views.get(call);
    if (!view || view.kind !== "open") {
      view = { node: h("article", { "data-call-id": call.id }), version: -1, kind: "open", visible: true };
      views.set(call, view);
      viewsByNode.set(view.node, view);
      onScreen.observe(view.node);
    }
    const alerting = call.alerting;
    view.node.className = `call${alerting ? " alerting" : ""}`;
    view.node.dataset.alert = alerting ? "true" : "false";
    if (view.version !== call.version && (view.visible || view.version === -1)) {
      fillCard(view.node, call, th);
      view.version = call.version;
    }
    return view.node;
  });
  const keep = new Set(nodes);
  for (const node of $("open-calls").children) if (!keep.has(node)) onScreen.unobserve(node);
  syncChildren($("open-calls"), nodes);
  $("open-count").textContent = String(state.openCalls().length);
  $("open-empty").hidden = nodes.length > 0;
}

function syncChildren(parent, nodes) {
  const current = [...parent.children];
  if (current.length === nodes.length && current.every((n, i) => n === nodes[i])) return;
  parent.replaceChildren(...nodes);
}

function alertItem(a) {
  const comparison = a.state === "raised" ? "≥" : "<";
  return h(
    "li",
    {
      class: `alert alert-${a.state}`,
      "data-call-id": a.call_id,
      "data-seq": a.seq,
      title: "show only this call",
      onclick: () => setFilter(a.call_id),
    },
    wallClock(a.ts),
    h("span", { class: "alert-state" }, a.state === "raised" ? "RAISED" : "cleared"),
    h("span", { class: "alert-call" }, `${a.call_id} / ${a.track}`),
    h(
      "span",
      { class: "alert-detail" },
      `smoothed ${fmt(a.smoothed)} ${comparison} ${fmtThreshold(a.threshold)} · call time ${formatCallTime(a.start)}–${formatCallTime(a.end)}`,
    ),
  );
}

function renderAlerts(filter) {
  const items = state.alerts.filter((a) => matches(a.call_id, filter)).slice(0, 50);
  const now = Date.now();
  const nodes = items.map((a) => {
    // one node per alert for its whole life, so its highlight animation runs once
    let node = alertNodes.get(a.seq);
    if (!node) {
      node = alertItem(a);
      alertNodes.set(a.seq, node);
    }
    node.classList.toggle("fresh", a.state === "raised" && now - Date.parse(a.ts) < FRESH_MS);
    return node;
  });
  for (const seq of alertNodes.keys()) if (!state.alerts.some((a) => a.seq === seq)) alertNodes.delete(seq);
  syncChildren($("alerts"), nodes);
  $("alert-count").textContent = String(state.alerts.filter((a) => a.state === "raised").length);
  $("alerts-empty").hidden = items.length > 0;
}

function verdictBadge(verdict) {
  return h("span", { class: `verdict verdict-${verdict}` }, verdict === "unknown" ? "no verdict" : verdict.toUpperCase());
}

function endedRows(call, th) {
  const e = call.ended;
  const s = e.summary;
  const verdict = callVerdict(call);
  const isOpen = expanded.has(call.id);
  const trackVerdicts = Object.entries(e.tracks).map(([name, t]) => {
    const label = call.labels.get(name);
    return h("span", { class: `track-verdict verdict-${t.verdict}` }, `${name}: ${t.verdict}`, label ? ` · labelled ${label.label}` : "");
  });
  const row = h(
    "tr",
    {
      class: `ended-row${isOpen ? " expanded" : ""}`,
      "data-call-id": call.id,
      "data-verdict": verdict,
      title: "show or hide the timelines",
      onclick: () => {
        if (expanded.has(call.id)) expanded.delete(call.id);
        else expanded.add(call.id);
        const view = views.get(call);
        if (view) view.version = -1;
        scheduleRender();
      },
    },
    h("td", { class: "verdict-cell" }, verdictBadge(verdict), labelBadge(call.label)),
    h("td", { class: "call-id" }, call.id),
    h("td", {}, call.source ?? ""),
    h("td", {}, wallClock(e.ts)),
    h("td", { class: "num" }, s ? formatCallTime(s.duration) : "—"),
    h("td", { class: "num" }, s ? seconds(s.speech_seconds) : "—"),
    h(
      "td",
      { class: "num", title: "scored / skipped (little speech) / dropped (capacity) / failed (model)" },
      s ? `${s.windows_scored} / ${s.windows_skipped} / ${s.windows_dropped} / ${s.windows_failed}` : "—",
    ),
    h("td", { class: "num" }, s ? `${fmt(s.max_smoothed)} / ${fmt(s.mean_smoothed)}` : "—"),
    h("td", { class: "num" }, String(call.alerts)),
    h("td", {}, e.reason ?? ""),
    h("td", { class: "track-verdicts" }, trackVerdicts),
  );
  if (!isOpen) return [row];
  const detail = h(
    "tr",
    { class: "ended-detail", "data-call-id": call.id },
    h(
      "td",
      { colspan: 11 },
      h("div", { class: "tracks" }, [...call.tracks.values()].map((t) => trackBlock(call, t, th))),
      operatorPanel(call),
    ),
  );
  return [row, detail];
}

function renderEnded(filter, th) {
  const calls = state.endedCalls().filter((c) => matches(c.id, filter));
  const rows = calls.flatMap((call) => {
    let view = views.get(call);
    if (!view || view.version !== call.version || view.kind !== "ended") {
      view = { nodes: endedRows(call, th), version: call.version, kind: "ended" };
      views.set(call, view);
    }
    return view.nodes;
  });
  syncChildren($("ended-calls"), rows);
  $("ended-count").textContent = String(state.endedCalls().length);
  $("ended-empty").hidden = rows.length > 0;
}

// ------------------------------------------------------------------ labels and evidence audio
//
// One panel per call, built once and updated in place, so a note being typed and a clip being
// played survive the redraws of the card around them. Labels go to POST /api/labels; what the
// page shows is the `label` event that comes back over /alerts (and replays after a reload).
// Evidence is listed with GET /api/calls/{id}/evidence when the call alerted or an
// `evidence_saved` names it (again after each evidence event), each clip fetched with the token
// in the Authorization header and played from a blob: URL (an <audio src> cannot send a header,
// and a token in a URL would land in logs and history).

const LABELS = ["fake", "real", "unsure"];
const MAX_NOTE_CHARS = 1000; // Label.note in streamguard/alerts/events.py

function labelBadge(label) {
  if (!label) return null;
  const by = `labelled ${label.label} by ${label.who} at ${label.ts} (UTC)`;
  return h(
    "span",
    { class: `label label-${label.label}`, "data-label": label.label, title: label.note ? `${by}: ${label.note}` : by },
    `labelled ${label.label}`,
  );
}

/** Send an /api request with the token; a refusal throws one line (the daemon's own words). */
async function api(method, path, body) {
  const init = { method, headers: authHeaders(), cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.ok) return response;
  let detail = (await response.text().catch(() => "")).trim();
  try {
    detail = JSON.parse(detail).error ?? detail;
  } catch {
    // a plain-text refusal (the guard's 401/403 lines)
  }
  const what = response.status === 401 || response.status === 403 ? " (the alerts token)" : "";
  throw new Error(`${method} ${path.split("/")[2]}: HTTP ${response.status}${what}${detail ? `: ${detail}` : ""}`.slice(0, 300));
}

function operatorFor(call) {
  let ops = operatorViews.get(call);
  if (!ops) {
    ops = {
      node: h("div", { class: "operator", "data-call-id": call.id }),
      note: h("input", { class: "label-note", type: "text", maxlength: MAX_NOTE_CHARS, placeholder: "note (optional)", "aria-label": "note for the label" }),
      error: "",
      busy: false,
      listedVersion: -1, // call.clipsVersion the clips below were listed at
      listing: false,
      clips: [], // as GET .../evidence lists them
      players: new Map(), // clip id -> {node, audio, url (blob:)}
    };
    operatorViews.set(call, ops);
  }
  return ops;
}

function redraw(call) {
  const view = views.get(call);
  if (view) view.version = -1;
  scheduleRender();
}

function operatorPanel(call) {
  const ops = operatorFor(call);
  if ((call.alerts || call.clips.size) && ops.listedVersion !== call.clipsVersion && !ops.listing) listEvidence(call, ops);
  const parts = [];
  if (!call.isOpen) {
    const current = call.label;
    parts.push(
      h(
        "div",
        { class: "label-bar" },
        h("span", { class: "operator-title" }, "Label this call"),
        LABELS.map((value) =>
          h(
            "button",
            {
              type: "button",
              class: `label-button label-${value}${current?.label === value ? " chosen" : ""}`,
              "data-label": value,
              disabled: ops.busy,
              onclick: () => sendLabel(call, ops, value),
            },
            value,
          ),
        ),
        ops.note,
        current ? h("span", { class: "label-current" }, `last: ${current.label} by ${current.who}`, current.note ? ` (“${current.note}”)` : "") : null,
      ),
    );
  }
  const playing = ops.clips.filter((clip) => ops.players.has(clip.clip));
  if (playing.length) {
    parts.push(
      h(
        "div",
        { class: "evidence" },
        h("span", { class: "operator-title" }, "Evidence audio"),
        playing.map((clip) => ops.players.get(clip.clip).node),
        h("button", { type: "button", class: "evidence-delete", disabled: ops.busy, onclick: () => deleteEvidence(call, ops) }, "Delete evidence"),
      ),
    );
  } else if (!call.isOpen && call.alerts && ops.listedVersion === call.clipsVersion) {
    parts.push(h("p", { class: "evidence-none" }, "No evidence audio listed for this call (see [evidence] keep)."));
  }
  if (ops.error) parts.push(h("p", { class: "operator-error", role: "alert" }, ops.error));
  ops.node.replaceChildren(...parts);
  return ops.node;
}

async function sendLabel(call, ops, value) {
  ops.busy = true;
  ops.error = "";
  redraw(call);
  try {
    const note = ops.note.value.trim();
    await api("POST", "/api/labels", { call_id: call.id, label: value, ...(note ? { note } : {}) });
    ops.note.value = ""; // the label itself shows when its event arrives over /alerts
  } catch (error) {
    ops.error = `Label not saved: ${error.message}`;
  } finally {
    ops.busy = false;
    redraw(call);
  }
}

async function listEvidence(call, ops) {
  const version = call.clipsVersion;
  ops.listing = true;
  try {
    const response = await api("GET", `/api/calls/${encodeURIComponent(call.id)}/evidence`);
    ops.clips = (await response.json()).clips;
    ops.listedVersion = version;
    if (ops.error.startsWith("Evidence")) ops.error = "";
    dropPlayers(ops, new Set(ops.clips.map((clip) => clip.clip)));
    for (const clip of ops.clips) if (!ops.players.has(clip.clip)) loadClip(call, ops, clip);
  } catch (error) {
    ops.listedVersion = version; // said once; the next evidence event lists again
    ops.error = `Evidence could not be listed: ${error.message}`;
  } finally {
    ops.listing = false;
    redraw(call);
  }
}

function loadClip(call, ops, clip) {
  const audio = h("audio", { controls: true, preload: "auto", "data-clip": clip.clip });
  const kb = Math.max(1, Math.round(clip.bytes / 1024));
  const node = h(
    "figure",
    { class: "clip", "data-clip": clip.clip, "data-track": clip.track },
    h("figcaption", { title: "the flagged seconds of the alert, with 1 s of context on each side" }, `${clip.track} ${formatCallTime(clip.start)}–${formatCallTime(clip.end)} · ${kb} KB`),
    audio,
  );
  const player = { node, audio, url: null };
  ops.players.set(clip.clip, player);
  api("GET", clip.url)
    .then((response) => response.blob())
    .then((blob) => {
      if (ops.players.get(clip.clip) !== player) return; // deleted meanwhile
      player.url = URL.createObjectURL(blob);
      audio.src = player.url;
    })
    .catch((error) => {
      ops.error = `Evidence audio not loaded: ${error.message}`;
      redraw(call);
    });
}

/** Forget the players of clips that are gone (deleted), freeing their blobs. */
function dropPlayers(ops, keep) {
  for (const [clip, player] of ops.players) {
    if (keep.has(clip)) continue;
    player.audio.pause();
    if (player.url) URL.revokeObjectURL(player.url);
    ops.players.delete(clip);
  }
}

async function deleteEvidence(call, ops) {
  if (!confirm(`Delete the evidence audio of call ${call.id}? This cannot be undone.`)) return;
  ops.busy = true;
  ops.error = "";
  redraw(call);
  try {
    await api("DELETE", `/api/calls/${encodeURIComponent(call.id)}/evidence`);
    // the players go when its evidence_deleted event arrives (state.js bumps clipsVersion)
  } catch (error) {
    ops.error = `Evidence not deleted: ${error.message}`;
  } finally {
    ops.busy = false;
    redraw(call);
  }
}

// ------------------------------------------------------------------ banner and filter

function showBanner(text) {
  const banner = $("banner");
  banner.textContent = text;
  banner.hidden = false;
}

function setFilter(value) {
  $("filter").value = value;
  onFilter();
}

function onFilter() {
  const value = $("filter").value.trim();
  history.replaceState(null, "", value ? `#call=${encodeURIComponent(value)}` : location.pathname);
  scheduleRender();
}

function start() {
  $("token-form").addEventListener("submit", onTokenSubmit);
  $("forget-token").addEventListener("click", forgetToken);
  $("filter").addEventListener("input", onFilter);
  $("banner").addEventListener("click", () => ($("banner").hidden = true));
  const match = location.hash.match(/^#call=(.*)$/);
  if (match) $("filter").value = decodeURIComponent(match[1]);
  setInterval(refreshStatus, STATUS_EVERY_MS);
  setInterval(scheduleRender, 1000); // fresh alerts stop flashing, "x s of call" advances
  connect();
}

start();
