// The dashboard page: connection, token, rendering. The model lives in state.js, charts in chart.js.
//
// Data comes only from this daemon: GET /api/status (model, thresholds, health; also how we learn
// that a token is needed) and the /alerts WebSocket (every event). The token, when the daemon
// wants one, is kept in sessionStorage (this tab, this session), sent as "Authorization: Bearer"
// to /api/status and as the WebSocket subprotocol "streamguard.bearer.<base64url>" to /alerts:
// never in a URL, never logged. Every string from an event is put in the page with textContent.

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

async function fetchStatus() {
  const token = storedToken();
  const response = await fetch("/api/status", {
    headers: token ? { Authorization: `Bearer ${token}` } : {},
    cache: "no-store",
    credentials: "omit",
  });
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
}

function trackBlock(call, track, th, { chart = true } = {}) {
  const last = track.latest;
  const lvl = level(last?.s, th.on, th.off);
  const openSpan = track.spans.findLast((s) => s.end === null);
  return h(
    "div",
    {
      class: `track level-${lvl}`,
      "data-track": track.name,
      "data-points": track.scores.length,
      "data-smoothed": last ? last.s : "",
      "data-raised": track.raised ? "true" : "false",
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
      track.raised && call.isOpen ? h("span", { class: "track-alert" }, `ALERT since ${formatCallTime(openSpan?.start ?? 0)}`) : null,
    ),
    chart ? timeline(track, { ...th, duration: call.callSeconds, hop: status?.hop_seconds ?? 1 }) : null,
  );
}

function fillCard(node, call, th) {
  node.replaceChildren(
    h(
      "header",
      { class: "call-head" },
      h("span", { class: "call-id", title: "call id" }, call.id),
      h("span", { class: "badge source" }, call.source ?? "?"),
      call.alerting ? h("span", { class: "badge alert-badge" }, "ALERT") : h("span", { class: "badge watching" }, "monitoring"),
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
  const trackVerdicts = Object.entries(e.tracks).map(([name, t]) => h("span", { class: `track-verdict verdict-${t.verdict}` }, `${name}: ${t.verdict}`));
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
    h("td", {}, verdictBadge(verdict)),
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
    h("td", { colspan: 11 }, h("div", { class: "tracks" }, [...call.tracks.values()].map((t) => trackBlock(call, t, th)))),
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
