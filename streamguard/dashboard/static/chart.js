// One track's timeline as SVG: scores over call time, the on/off thresholds, the alert spans.
//
// Plain SVG built with the DOM (no library, no innerHTML): x = call seconds, y = score 0..1.
// Raw window P(fake) are dots, the smoothed score is the line the alerts are decided on.

const SVG = "http://www.w3.org/2000/svg";
const W = 640;
const H = 132;
const M = { left: 30, right: 10, top: 8, bottom: 20 };
const MAX_POINTS = 900; // beyond this, one point per bucket (the highest: peaks must stay visible)
const STEPS = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
/** Decimals a threshold is shown with, here as in the CLI (THRESHOLD_DIGITS in
 * streamguard/policy/verdict.py): 0.8949 is 0.895 everywhere. */
export const THRESHOLD_DIGITS = 3;

function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

export function formatCallTime(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

function downsample(points) {
  if (points.length <= MAX_POINTS) return points;
  const size = Math.ceil(points.length / MAX_POINTS);
  const out = [];
  for (let i = 0; i < points.length; i += size) {
    const bucket = points.slice(i, i + size);
    out.push(bucket.reduce((best, p) => (p.s > best.s ? p : best), bucket[0]));
  }
  return out;
}

/** Score level against the thresholds: "high" (>= on), "mid" (>= off), "low" or "none". */
export function level(score, on, off) {
  if (score === null || score === undefined) return "none";
  if (on !== null && score >= on) return "high";
  if (off !== null && score >= off) return "mid";
  return "low";
}

/**
 * @param {import("./state.js").Track} track
 * @param {{on: number|null, off: number|null, duration: number, hop?: number}} opts
 */
export function timeline(track, { on, off, duration, hop = 1 }) {
  const svg = el("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "timeline",
    role: "img",
    "aria-label": `scores of track ${track.name} over call time`,
  });
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const span = Math.max(duration, 20);
  const step = STEPS.find((s) => span / s <= 8) ?? 7200;
  const xMax = Math.ceil(span / step) * step;
  const x = (t) => M.left + (Math.min(Math.max(t, 0), xMax) / xMax) * plotW;
  const y = (v) => M.top + (1 - Math.min(Math.max(v, 0), 1)) * plotH;

  // alert spans first, under everything else
  for (const s of track.spans) {
    const end = s.end ?? Math.max(track.callSeconds, s.start);
    el("rect", {
      class: s.end === null ? "span span-open" : "span",
      x: x(s.start),
      y: M.top,
      width: Math.max(x(end) - x(s.start), 2),
      height: plotH,
    }, svg);
  }

  // grid and axes
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    el("line", { class: v === 0 ? "axis" : "grid", x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }, svg);
    if (v === 0 || v === 0.5 || v === 1) {
      const label = el("text", { class: "tick", x: M.left - 4, y: y(v) + 3, "text-anchor": "end" }, svg);
      label.textContent = v.toFixed(1);
    }
  }
  for (let t = 0; t <= xMax; t += step) {
    el("line", { class: "grid", x1: x(t), x2: x(t), y1: M.top, y2: M.top + plotH }, svg);
    const label = el("text", { class: "tick", x: x(t), y: H - 6, "text-anchor": "middle" }, svg);
    label.textContent = formatCallTime(t);
  }

  // thresholds
  const thresholds = [
    ["on", on],
    ["off", off],
  ];
  for (const [name, value] of thresholds) {
    if (value === null || value === undefined) continue;
    el("line", { class: `threshold threshold-${name}`, x1: M.left, x2: W - M.right, y1: y(value), y2: y(value) }, svg);
    // "on" above its line at the right; "off" below it, or above it at the left when that
    // would leave the plot (thresholds near 0)
    const below = y(value) + 11 <= M.top + plotH;
    const atLeft = name === "off" && !below;
    const label = el("text", {
      class: `threshold-label threshold-${name}`,
      x: atLeft ? M.left + 4 : W - M.right - 2,
      y: name === "on" || atLeft ? y(value) - 3 : y(value) + 11,
      "text-anchor": atLeft ? "start" : "end",
    }, svg);
    label.textContent = `${name} ${value.toFixed(THRESHOLD_DIGITS)}`;
  }

  // scores: raw P(fake) as dots (at the window end), the smoothed score as a line
  const points = downsample(track.scores);
  // all raw dots in one path (zero-length segments with round caps): one element, not hundreds
  if (points.length) {
    el("path", { class: "raw", d: points.map((p) => `M${x(p.end).toFixed(1)} ${y(p.p).toFixed(1)}h0`).join("") }, svg);
  }
  if (points.length) {
    // one line per run of consecutive windows: a silence the VAD skipped is a gap, not a slope
    const runs = [[points[0]]];
    for (let i = 1; i < points.length; i++) {
      if (points[i].end - points[i - 1].end > 2 * hop + 1e-6 && points.length <= MAX_POINTS) runs.push([]);
      runs[runs.length - 1].push(points[i]);
    }
    for (const run of runs) {
      el(run.length > 1 ? "polyline" : "circle", run.length > 1
        ? { class: "smoothed", points: run.map((p) => `${x(p.end).toFixed(1)},${y(p.s).toFixed(1)}`).join(" ") }
        : { class: "smoothed-dot", cx: x(run[0].end), cy: y(run[0].s), r: 2.2 }, svg);
    }
    const last = points[points.length - 1];
    el("circle", { class: `last level-${level(last.s, on, off)}`, cx: x(last.end), cy: y(last.s), r: 4 }, svg);
  }
  return svg;
}
