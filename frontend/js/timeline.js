// "Where the time went": one stacked bar per stage of the chain, on one scale, and a table of the
// links (injected delay, transport, bytes). Every figure is the server's: the page adds nothing up
// except the sums of the one-line summary.
import { $, el } from "./dom.js";
import { fmt, fmtBytes, fmtDuration, fmtLayers, isNum } from "./format.js";

// Segments of the bars, in drawing order. [kind, legend label]
const SEGMENTS = [
  ["injected", "Injected link latency"],
  ["transport", "Link transport"],
  ["compute", "Worker compute"],
  ["recovery", "Waiting for a worker to return"],
  ["other", "Root and the rest"],
];

// Rows: one per worker (its incoming link, then its compute), the link back to the root, the time
// spent waiting for a failed worker (metrics.recovery_wait_ms) and "root and the rest"
// (metrics.root_other_ms: tokenizer, embedding, sampling, queueing; computed by the server).
export function timelineRows(metrics) {
  const rows = [];
  const stages = Array.isArray(metrics.stages) ? metrics.stages : [];
  stages.forEach((stage, i) => {
    const link = stage.link_in || {};
    rows.push({
      key: `worker-${i + 1}`, label: stage.name || `worker ${i + 1}`, sub: fmtLayers(stage.layers),
      parts: { injected: link.injected_ms, transport: link.transport_ms, compute: stage.compute_ms },
    });
  });
  const out = metrics.link_out || null;
  if (out) {
    rows.push({ key: "link-out", label: "link back to root", sub: "", parts: { injected: out.injected_ms, transport: out.transport_ms } });
  }
  if (isNum(metrics.recovery_wait_ms) && metrics.recovery_wait_ms > 0) {
    rows.push({ key: "recovery", label: "waiting for a worker", sub: `${metrics.recoveries ?? "?"}× restarted`,
                parts: { recovery: metrics.recovery_wait_ms } });
  }
  if (isNum(metrics.root_other_ms)) {
    rows.push({ key: "root", label: "root and the rest", sub: "", parts: { other: metrics.root_other_ms } });
  }
  return rows;
}

// One row per link of the chain: root -> worker-1 -> ... -> worker-N -> root.
export function linkRows(metrics) {
  const stages = Array.isArray(metrics.stages) ? metrics.stages : [];
  const names = stages.map((s, i) => s.name || `worker-${i + 1}`);
  const rows = stages.map((s, i) => ({ key: `link-${i + 1}`, from: i === 0 ? "root" : names[i - 1], to: names[i], link: s.link_in || {} }));
  if (metrics.link_out) rows.push({ key: "link-out", from: names[names.length - 1] || "root", to: "root", link: metrics.link_out });
  return rows;
}

const totalOf = (parts) => Object.values(parts).reduce((a, b) => a + (isNum(b) ? b : 0), 0);

export function clearTimeline(text) {
  $("timeline").replaceChildren(el("p", { class: "empty", text }));
}

export function renderTimeline(metrics) {
  const rows = timelineRows(metrics);
  if (rows.length === 0) {
    clearTimeline("The server sent no per-stage timings.");
    return;
  }
  const scale = Math.max(...rows.map((row) => totalOf(row.parts)), 1e-9);

  // Whole-request split, the one line a reader needs first.
  const sums = Object.fromEntries(SEGMENTS.map(([kind]) => [kind, 0]));
  for (const row of rows) for (const [kind, ms] of Object.entries(row.parts)) if (isNum(ms)) sums[kind] += ms;
  const grand = Object.values(sums).reduce((a, b) => a + b, 0) || 1;
  const shown = SEGMENTS.filter(([kind]) => sums[kind] > 0);
  const summary = el("p", { class: "timeline-summary" },
    "Of the whole reply: ",
    ...shown.flatMap(([kind, label], i) => [
      el("span", { class: `swatch seg-${kind}`, "aria-hidden": "true" }),
      `${label.toLowerCase()} ${(100 * sums[kind] / grand).toFixed(0)}% (${fmtDuration(sums[kind])})`,
      i < shown.length - 1 ? " · " : ".",
    ]));

  const list = el("ol", { class: "timeline-rows" });
  for (const row of rows) {
    const total = totalOf(row.parts);
    const described = SEGMENTS.filter(([kind]) => isNum(row.parts[kind]))
      .map(([kind, label]) => `${label.toLowerCase()} ${fmt(row.parts[kind], 1)} ms`).join(", ");
    const bar = el("div", { class: "bar", role: "img", "aria-label": `${row.label}: ${described}; total ${fmt(total, 1)} ms` });
    for (const [kind, label] of SEGMENTS) {
      const ms = row.parts[kind];
      if (!isNum(ms) || ms <= 0) continue;
      const seg = el("span", { class: `seg seg-${kind}`, title: `${label}: ${fmt(ms, 1)} ms`, "data-kind": kind, "data-ms": String(ms) });
      seg.style.width = `${(100 * ms / scale).toFixed(3)}%`;
      bar.append(seg);
    }
    const attrs = { class: "timeline-row", "data-stage": row.key };
    for (const [kind, ms] of Object.entries(row.parts)) if (isNum(ms)) attrs[`data-${kind}-ms`] = String(ms);
    list.append(el("li", attrs,
      el("span", { class: "stage-label" }, el("strong", { text: row.label }), row.sub ? el("small", { text: row.sub }) : null),
      bar,
      el("span", { class: "stage-total", text: fmtDuration(total) })));
  }

  const legend = el("ul", { class: "legend", "aria-label": "Legend" },
    ...SEGMENTS.filter(([kind]) => kind !== "recovery" || sums.recovery > 0)
      .map(([kind, label]) => el("li", {}, el("span", { class: `swatch seg-${kind}`, "aria-hidden": "true" }), label)));
  const note = el("p", { class: "hint", text: "Totals over the whole reply (all tokens), on one scale; hover a segment for its value." });
  $("timeline").replaceChildren(el("div", { class: "timeline-grid" },
    el("div", { class: "timeline-bars" }, summary, list, legend, note), linkTable(metrics)));
}

function linkTable(metrics) {
  const rows = linkRows(metrics);
  const num = (text) => el("td", { class: "num", text });
  return el("table", { class: "links", id: "link-table" },
    el("caption", { text: "Links, over the whole reply" }),
    el("thead", {}, el("tr", {}, ...["Link", "Injected", "Transport", "Bytes"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...rows.map((r) => el("tr", {
      "data-link": r.key, "data-injected-ms": String(r.link.injected_ms ?? ""), "data-transport-ms": String(r.link.transport_ms ?? ""),
      "data-bytes": String(r.link.bytes ?? ""),
    }, el("th", { scope: "row", text: `${r.from} → ${r.to}` }),
    num(`${fmt(r.link.injected_ms, 1)} ms`), num(`${fmt(r.link.transport_ms, 1)} ms`), num(fmtBytes(r.link.bytes))))));
}
