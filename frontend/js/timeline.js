// "Where the time went": one stacked bar per stage of the reply, on one scale, and a table of the
// links (injected delay, transport, bytes). Every figure is the server's: the page adds nothing up
// except the sums of the one-line summary (and, in tensor mode, the broadcast and output links as
// the reply's totals minus its syncs').
//
// Pipeline: the stages run one after another, so a row per worker (its incoming link, then its
// compute) and the link home add up to the reply. Tensor (metrics.parallelism "tensor"): the workers
// run side by side, so the rows that add up follow the critical path (compute of the slowest worker
// per step against the synchronisations), and each worker's own compute and time in syncs is shown
// beside them, outside the sum.
import { $, el } from "./dom.js";
import { fmt, fmtBytes, fmtDuration, fmtLayers, isNum, plural } from "./format.js";
import { metricValue } from "./metrics.js";

// Segments of the bars, in drawing order. [kind, legend label]
const SEGMENTS = [
  ["injected", "Injected link latency"],
  ["transport", "Link transport"],
  ["compute", "Worker compute"],
  ["sync-injected", "Sync injected latency"],
  ["sync-transport", "Sync transport"],
  ["sync", "A worker's time in syncs"],
  ["recovery", "Waiting for a worker to return"],
  ["other", "Root and the rest"],
];

// Rows: {key, label, sub, parts: {kind: ms}, side}. A `side` row is drawn on the same scale but is
// not part of the reply's sum (a tensor worker, running beside the others).
export function timelineRows(metrics) {
  const rows = metrics.parallelism === "tensor" ? tensorRows(metrics) : pipelineRows(metrics);
  if (isNum(metrics.recovery_wait_ms) && metrics.recovery_wait_ms > 0) {
    rows.push({ key: "recovery", label: "waiting for a worker", sub: `${metrics.recoveries ?? "?"}× restarted`,
                parts: { recovery: metrics.recovery_wait_ms } });
  }
  if (isNum(metrics.root_other_ms)) {
    rows.push({ key: "root", label: "root and the rest", sub: "", parts: { other: metrics.root_other_ms } });
  }
  return rows;
}

// One per worker (its incoming link, then its compute) and the link back to the root; then the time
// spent waiting for a failed worker (metrics.recovery_wait_ms) and "root and the rest"
// (metrics.root_other_ms: tokenizer, embedding, sampling, queueing; computed by the server).
function pipelineRows(metrics) {
  const rows = stagesOf(metrics).map((stage, i) => {
    const link = stage.link_in || {};
    return { key: `worker-${i + 1}`, label: stage.name || `worker ${i + 1}`, sub: fmtLayers(stage.layers),
             parts: { injected: link.injected_ms, transport: link.transport_ms, compute: stage.compute_ms } };
  });
  const out = metrics.link_out || null;
  if (out) {
    rows.push({ key: "link-out", label: "link back to root", sub: "", parts: { injected: out.injected_ms, transport: out.transport_ms } });
  }
  return rows;
}

// The critical path (compute, syncs, the broadcast and output links), then each worker beside it.
function tensorRows(metrics) {
  const value = (key) => metricValue(metrics, key);
  const minus = (a, b) => (isNum(a) && isNum(b) ? Math.max(0, a - b) : null);
  const p50 = value("sync_p50_ms");
  const rows = [
    { key: "compute", label: "worker compute", sub: "the slowest worker, step by step", parts: { compute: value("compute_ms") } },
    { key: "syncs", label: "synchronisations", sub: `${plural(value("syncs"), "sync")}${isNum(p50) ? `, ${fmt(p50, 2)} ms each (p50)` : ""}`,
      parts: { "sync-injected": value("sync_injected_ms"), "sync-transport": value("sync_transport_ms") } },
    { key: "links", label: "broadcast and output", sub: "root → every worker, worker-1 → root",
      parts: { injected: minus(value("injected_latency_ms"), value("sync_injected_ms")),
               transport: minus(value("transport_ms"), value("sync_transport_ms")) } },
  ];
  stagesOf(metrics).forEach((stage, i) => rows.push({
    key: `worker-${i + 1}`, label: stage.name || `worker ${i + 1}`, sub: "compute, then time in syncs", side: true,
    parts: { compute: stage.compute_ms, sync: stage.sync_ms },
  }));
  return rows;
}

// The table beside the bars: one row per link, root -> worker-1 -> ... -> worker-N -> root; in tensor
// mode root -> each worker (the broadcast), worker-1 -> root (the output) and the syncs together.
export function linkRows(metrics) {
  const stages = stagesOf(metrics);
  const names = stages.map((s, i) => s.name || `worker-${i + 1}`);
  const tensor = metrics.parallelism === "tensor";
  const rows = stages.map((s, i) => ({ key: `link-${i + 1}`, from: i === 0 || tensor ? "root" : names[i - 1], to: names[i], link: s.link_in || {} }));
  const last = tensor ? names[0] : names[names.length - 1];
  if (metrics.link_out) rows.push({ key: "link-out", from: last || "root", to: "root", link: metrics.link_out });
  if (tensor && metrics.sync) rows.push({ key: "syncs", label: "syncs: every worker ⇄ root", link: metrics.sync });
  return rows;
}

const stagesOf = (metrics) => (Array.isArray(metrics.stages) ? metrics.stages : []);
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
  for (const row of rows) if (!row.side) for (const [kind, ms] of Object.entries(row.parts)) if (isNum(ms)) sums[kind] += ms;
  const grand = Object.values(sums).reduce((a, b) => a + b, 0) || 1;
  const shown = SEGMENTS.filter(([kind]) => sums[kind] > 0);
  const summary = el("p", { class: "timeline-summary" },
    "Of the whole reply: ",
    ...shown.flatMap(([kind, label], i) => [
      el("span", { class: `swatch seg-${kind}`, "aria-hidden": "true" }),
      el("span", { "data-summary": kind, "data-ms": String(sums[kind]),
                   text: `${label.toLowerCase()} ${(100 * sums[kind] / grand).toFixed(0)}% (${fmtDuration(sums[kind])})` }),
      i < shown.length - 1 ? " · " : ".",
    ]));

  const along = rows.filter((row) => !row.side);
  const beside = rows.filter((row) => row.side);
  const used = new Set(rows.flatMap((row) => Object.keys(row.parts)));
  const legend = el("ul", { class: "legend", "aria-label": "Legend" },
    ...SEGMENTS.filter(([kind]) => used.has(kind) && (kind !== "recovery" || sums.recovery > 0) || kind === "other")
      .map(([kind, label]) => el("li", {}, el("span", { class: `swatch seg-${kind}`, "aria-hidden": "true" }), label)));
  const note = el("p", { class: "hint", text: "Totals over the whole reply (all tokens), on one scale; hover a segment for its value." });
  const bars = beside.length === 0
    ? [summary, rowList(along, scale), legend, note]
    : [summary, rowList(along, scale),
       el("p", { class: "timeline-beside", text: "Each worker, side by side with the others (its time in syncs includes waiting for the slowest):" }),
       rowList(beside, scale), legend, note];
  const tables = beside.length === 0 ? linkTable(metrics)
    : el("div", { class: "timeline-tables" }, linkTable(metrics), workerTable(metrics));
  $("timeline").replaceChildren(el("div", { class: "timeline-grid" }, el("div", { class: "timeline-bars" }, ...bars), tables));
}

function rowList(rows, scale) {
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
  return list;
}

const num = (text) => el("td", { class: "num", text });

function linkTable(metrics) {
  const rows = linkRows(metrics);
  return el("table", { class: "links", id: "link-table" },
    el("caption", { text: "Links, over the whole reply" }),
    el("thead", {}, el("tr", {}, ...["Link", "Injected", "Transport", "Bytes"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...rows.map((r) => el("tr", {
      "data-link": r.key, "data-injected-ms": String(r.link.injected_ms ?? ""), "data-transport-ms": String(r.link.transport_ms ?? ""),
      "data-bytes": String(r.link.bytes ?? ""),
    }, el("th", { scope: "row", text: r.label || `${r.from} → ${r.to}` }),
    num(`${fmt(r.link.injected_ms, 1)} ms`), num(`${fmt(r.link.transport_ms, 1)} ms`), num(fmtBytes(r.link.bytes))))));
}

// Tensor mode: each worker's own compute and its wall time in syncs (links, delays, waiting).
function workerTable(metrics) {
  return el("table", { class: "links", id: "worker-table" },
    el("caption", { text: "Each worker, over the whole reply" }),
    el("thead", {}, el("tr", {}, ...["Worker", "Compute", "In syncs"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...stagesOf(metrics).map((s, i) => el("tr", {
      "data-worker": s.name || `worker-${i + 1}`, "data-compute-ms": String(s.compute_ms ?? ""), "data-sync-ms": String(s.sync_ms ?? ""),
    }, el("th", { scope: "row", text: s.name || `worker-${i + 1}` }),
    num(`${fmt(s.compute_ms, 1)} ms`), num(`${fmt(s.sync_ms, 1)} ms`)))));
}
