// The dashboard's model: streamguard events in, calls / tracks / alerts out.
//
// A pure core in the daemon's own style: `apply(event)` changes the model and says whether
// anything visible changed; no DOM, no sockets, no clocks. app.js owns the connection and the
// rendering. Event fields are the ones documented in README "Events".

export const MAX_ENDED_CALLS = 100;
export const MAX_ALERTS = 200;
const MAX_SCORES_PER_TRACK = 4 * 3600; // 4 h at a 1 s hop ([limits] max_call_seconds)
const MAX_SEEN = 20000;

export class Track {
  constructor(name) {
    this.name = name;
    this.scores = []; // {start, end, p, s, ts}
    this.spans = []; // alert spans: {start, end|null}
    this.raised = false;
    this.first = null; // the track's first score seen: {start, end} in call seconds
  }

  get latest() {
    return this.scores.length ? this.scores[this.scores.length - 1] : null;
  }

  get callSeconds() {
    const last = this.latest;
    return last ? last.end : 0;
  }

  addScore(event) {
    const point = { start: event.start, end: event.end, p: event.p_fake, s: event.smoothed, ts: event.ts };
    if (this.first === null || point.start < this.first.start) this.first = { start: point.start, end: point.end };
    const last = this.latest;
    if (last && point.start <= last.start) {
      // replayed after a reconnect: keep one point per window start
      const at = this.scores.findIndex((x) => x.start >= point.start);
      if (this.scores[at].start === point.start) this.scores[at] = point;
      else this.scores.splice(at, 0, point);
      return;
    }
    this.scores.push(point);
    if (this.scores.length > MAX_SCORES_PER_TRACK) this.scores.shift();
  }

  addAlert(event) {
    if (event.state === "raised") {
      this.raised = true;
      this.spans.push({ start: event.start, end: null });
    } else {
      this.raised = false;
      const open = this.spans.findLast((span) => span.end === null);
      if (open) open.end = event.end;
      else this.spans.push({ start: event.start, end: event.end }); // raised before our history
    }
  }
}

export class Call {
  constructor(id, source) {
    this.id = id;
    this.source = source;
    this.startedTs = null; // wall clock of call_started (ISO), null if it was before our history
    this.sampleRate = null;
    this.metadata = {};
    this.tracks = new Map();
    this.open = 0; // sessions open under this call id (Twilio may send one stream per track)
    this.ended = null; // {ts, reason, summary, tracks} once every session of the call ended
    this.endings = []; // the call_ended events so far (one per session)
    this.lastTs = null;
    this.alerts = 0; // alerts raised over the call
    this.labels = new Map(); // track name ("" for the whole call) -> its last label event
    this.clips = new Map(); // evidence clip id -> {clip, track, start, end, bytes} (evidence_saved)
    this.clipsVersion = 0; // bumped when clips are saved or deleted: the page lists them again
    this.version = 0; // bumped on every change: the view redraws what changed
  }

  track(name) {
    let track = this.tracks.get(name);
    if (!track) {
      track = new Track(name);
      this.tracks.set(name, track);
    }
    return track;
  }

  get alerting() {
    for (const track of this.tracks.values()) if (track.raised) return true;
    return false;
  }

  get callSeconds() {
    let best = this.ended ? this.ended.summary.duration : 0;
    for (const track of this.tracks.values()) best = Math.max(best, track.callSeconds);
    return best;
  }

  get isOpen() {
    return this.ended === null;
  }

  /** The analyst's label of the whole call (the last `label` event without a track), or null. */
  get label() {
    return this.labels.get("") ?? null;
  }

  addLabel(event) {
    const key = event.track ?? "";
    const last = this.labels.get(key);
    if (!last || last.seq < event.seq) this.labels.set(key, event); // the last label wins
  }

  /**
   * Call time at which a track's first verdict (its first score) was possible: the end of its
   * first scored window. The events do not say when speech began, so this counts from the
   * call's first audio; null unless the call's start is in our history (else the first score
   * we hold may not be the track's first).
   */
  firstVerdict(track) {
    return this.startedTs !== null && track.first !== null ? track.first.end : null;
  }
}

/** Events about a call that already happened: they never open a call of their own. */
const AFTERWORD = new Set(["label", "evidence_saved", "evidence_deleted"]);

export class DashboardState {
  constructor() {
    this.calls = new Map(); // call id -> Call, open and recently ended
    this.alerts = []; // newest first: {seq, ts, call_id, track, state, smoothed, threshold, start, end}
    this.lastSeq = null;
    this.seen = new Set();
    this.missed = 0; // events lost (dropped notices) that could not be replayed
    this.model = null; // the `model` field of the last event
    this.thresholdsFromAlerts = { on: null, off: null };
  }

  /** Forget everything: the page is about to be rebuilt from the daemon's history. */
  clear() {
    this.calls.clear();
    this.alerts = [];
    this.lastSeq = null;
    this.seen.clear();
    this.missed = 0;
  }

  /** Open calls whose last event is older than `beforeIso` (the daemon's start) never end. */
  endStale(beforeIso, reason) {
    for (const call of this.calls.values()) {
      if (call.isOpen && call.lastTs !== null && call.lastTs < beforeIso) {
        call.ended = { ts: call.lastTs, reason, summary: null, tracks: {} };
        for (const track of call.tracks.values()) track.raised = false;
        call.version++;
      }
    }
  }

  /** Apply one event; returns the call it touched (or true for a global change), else null. */
  apply(event) {
    if (event.type === "dropped") {
      this.missed += event.count;
      return true;
    }
    if (this.seen.has(event.seq)) return null; // replay overlap after a reconnect
    this.seen.add(event.seq);
    if (this.seen.size > MAX_SEEN) this.seen.delete(this.seen.values().next().value);
    this.lastSeq = Math.max(this.lastSeq ?? 0, event.seq);
    if (event.model) this.model = event.model;

    if (event.call_id === null || event.call_id === undefined) return true; // model_changed...
    let call = this.calls.get(event.call_id);
    if (AFTERWORD.has(event.type)) return call ? this.applyAfterword(call, event) : null;
    if (event.type === "call_started") {
      if (call && !call.isOpen) {
        // the same id again after it ended: keep the old one under another key
        this.calls.delete(call.id);
        this.calls.set(`${call.id} (ended ${call.ended.ts ?? ""})`, call);
        call = undefined;
      }
      if (!call) {
        call = new Call(event.call_id, event.source);
        this.calls.set(call.id, call);
      }
      call.open += 1;
      call.startedTs = call.startedTs ?? event.ts;
      call.sampleRate = event.sample_rate ?? call.sampleRate;
      call.metadata = event.metadata ?? {};
    } else if (!call) {
      // its call_started is older than the daemon's history: show it from here on
      call = new Call(event.call_id, event.source);
      call.open = 1;
      this.calls.set(call.id, call);
    }
    call.lastTs = event.ts;
    call.version++;

    switch (event.type) {
      case "score":
        call.track(event.track).addScore(event);
        break;
      case "alert": {
        call.track(event.track).addAlert(event);
        if (event.state === "raised") call.alerts += 1;
        this.thresholdsFromAlerts[event.state === "raised" ? "on" : "off"] = event.threshold;
        this.alerts.unshift({ ...event });
        if (this.alerts.length > MAX_ALERTS) this.alerts.pop();
        break;
      }
      case "call_ended": {
        call.open -= 1;
        for (const name of Object.keys(event.tracks ?? {})) call.track(name);
        call.endings.push(event);
        if (call.open <= 0) {
          const tracks = Object.assign({}, ...call.endings.map((e) => e.tracks ?? {}));
          const summary = combineSummaries(call.endings.map((e) => e.summary));
          call.ended = { ts: event.ts, reason: event.reason, summary, tracks };
          for (const track of call.tracks.values()) track.raised = false;
        }
        this.pruneEnded();
        break;
      }
      default:
        break;
    }
    return call;
  }

  /** A label or evidence event of a call we hold (they do not count as the call's activity). */
  applyAfterword(call, event) {
    if (event.type === "label") call.addLabel(event);
    else if (event.type === "evidence_saved") {
      const { clip, track, start, end, bytes } = event;
      call.clips.set(clip, { clip, track, start, end, bytes });
      call.clipsVersion++;
    } else {
      for (const clip of event.clips) call.clips.delete(clip);
      call.clipsVersion++;
    }
    call.version++;
    return call;
  }

  pruneEnded() {
    const ended = [...this.calls.values()].filter((c) => !c.isOpen);
    for (const call of ended.slice(0, Math.max(0, ended.length - MAX_ENDED_CALLS))) {
      for (const [key, value] of this.calls) if (value === call) this.calls.delete(key);
    }
  }

  openCalls() {
    return [...this.calls.values()].filter((c) => c.isOpen);
  }

  endedCalls() {
    // most recently ended first
    return [...this.calls.values()]
      .filter((c) => !c.isOpen)
      .sort((a, b) => String(b.ended.ts ?? "").localeCompare(String(a.ended.ts ?? "")));
  }
}

/** Fold the summaries of several sessions of one call id, as the daemon folds tracks. */
export function combineSummaries(summaries) {
  if (summaries.length === 1) return summaries[0];
  const verdicts = new Set(summaries.map((s) => s.verdict));
  const verdict = verdicts.has("fake") ? "fake" : verdicts.has("real") ? "real" : "inconclusive";
  const sum = (key) => summaries.reduce((total, s) => total + (s[key] ?? 0), 0);
  const scored = summaries.filter((s) => s.windows_scored && s.mean_smoothed !== null);
  const nScored = scored.reduce((total, s) => total + s.windows_scored, 0);
  return {
    duration: Math.max(...summaries.map((s) => s.duration)),
    speech_seconds: sum("speech_seconds"),
    windows_scored: sum("windows_scored"),
    windows_skipped: sum("windows_skipped"),
    windows_dropped: sum("windows_dropped"),
    windows_failed: sum("windows_failed"),
    max_smoothed: scored.length ? Math.max(...scored.map((s) => s.max_smoothed)) : null,
    mean_smoothed: nScored ? scored.reduce((t, s) => t + s.mean_smoothed * s.windows_scored, 0) / nScored : null,
    verdict,
  };
}

/** A call's verdict once it ended: fake | real | inconclusive, or "unknown" (never saw its end). */
export function callVerdict(call) {
  if (!call.ended) return null;
  return call.ended.summary ? call.ended.summary.verdict : "unknown";
}
