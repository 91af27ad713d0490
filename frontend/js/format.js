// Number and text formatting: pure functions, no DOM.

export function isNum(x) {
  return typeof x === "number" && Number.isFinite(x);
}

export function fmt(x, digits = 1) {
  return isNum(x) ? x.toFixed(digits) : "—";
}

export function plural(n, word) {
  return isNum(n) ? `${n} ${word}${n === 1 ? "" : "s"}` : `? ${word}s`;
}

const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

export function fmtBytes(bytes) {
  if (!isNum(bytes)) return "—";
  let value = bytes;
  let i = 0;
  while (Math.abs(value) >= 1024 && i < BYTE_UNITS.length - 1) { value /= 1024; i += 1; }
  return `${value.toFixed(value >= 100 || i === 0 ? 0 : 1)} ${BYTE_UNITS[i]}`;
}

// A duration in the unit a person reads it in: "850 ms", "24 s", "2 min 16 s".
export function fmtDuration(ms) {
  if (!isNum(ms)) return "—";
  if (ms < 1000) return `${ms.toFixed(0)} ms`;
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 120_000) return `${(ms / 1000).toFixed(0)} s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)} min ${s % 60} s`;
}

// Tensor mode: what a worker holds of every layer, e.g. "every layer: heads 2–3, 88 MLP columns".
export function fmtShare(share) {
  if (!share || !isNum(share.n_q_heads)) return "";
  return `every layer: heads ${share.q_heads[0]}–${share.q_heads[1] - 1}, ${share.ffn_width} MLP columns`;
}

// Half-open [start, end) as the people reading the page count layers: "0–5".
export function fmtLayers(layers) {
  if (!Array.isArray(layers) || layers.length !== 2) return "";
  const [start, end] = layers;
  if (end - start <= 0) return "no layers";
  return end - start === 1 ? `layer ${start}` : `layers ${start}–${end - 1}`;
}
