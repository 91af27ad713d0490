// The side panel: the chain of nodes, the model and links, the health line and the cluster's
// problems in #error; /healthz, /api/cluster and /api/stats are polled every second.
import { $, el, setText } from "./dom.js";
import { fmt, fmtBytes, fmtLayers, fmtShare, isNum, plural } from "./format.js";
import { getJson } from "./http.js";
import { clearError, showError } from "./errors.js";
import { applyLiveness, keepSeries, renderStats, statCells } from "./stats.js";

const POLL_INTERVAL_MS = 1000;  // the page promises "live at least once a second"

let clusterKey = null;            // the shape of the cluster the panel was built for
let cluster = null;               // the last /api/cluster body
const lastThreads = new Map();    // worker name -> its last known thread count (kept while it is down)

// What is wrong with the cluster, each thing said once, in the words of its state.
// health: {status (HTTP), body} of /healthz or null; c: the /api/cluster body or null.
export function clusterProblems(health, c) {
  const state = health ? (health.status === 200 ? "ok" : (health.body && health.body.status) || "loading") : null;
  const reason = (health && health.body && health.body.reason) || (c && c.reason) || "";
  const workers = (c && c.workers) || [];
  const said = (name) => reason.includes(name);
  const down = workers.filter((w) => w.status === "down" || w.status === "error");
  const reloading = workers.filter((w) => w.status === "loading");
  const lines = [];
  if (state === "degraded") {
    for (const w of down) lines.push(`${w.name} is down${w.error ? `: ${w.error}` : ""}.`);
    for (const w of reloading) lines.push(`${w.name} is back and reloading its layers.`);
    if (lines.length === 0) lines.push(`A worker is missing${reason ? `: ${reason}` : ""}.`);
    lines.push("New replies wait until the chain is whole again; a restarted worker is reloaded on its own.");
    return lines;
  }
  if (state === "loading") lines.push(`The cluster is still loading${reason ? `: ${reason}` : "."}`);
  else if (state === "failed") lines.push(`The cluster failed to start${reason ? `: ${reason}` : "."}`);
  else if (state !== null && state !== "ok") lines.push(`The health check failed (${health.status})${reason ? `: ${reason}` : "."}`);
  const quiet = state === "loading" || state === "failed";  // the reason already names the worker
  for (const w of down) if (!(quiet && said(w.name))) lines.push(`${w.name} is down${w.error ? `: ${w.error}` : "."}`);
  return lines;
}

// The header's health line: [data-state, text].
export function healthLine(health, c) {
  if (!health) return ["down", "Not ready"];
  const state = health.status === 200 ? "ok" : (health.body && health.body.status) || "loading";
  const workers = (c && c.workers) || [];
  if (state === "ok") return ["ok", c && c.model ? `Ready · ${c.model.name} on ${workers.length} workers` : "Ready"];
  if (state === "degraded") {
    const missing = workers.filter((w) => w.status !== "ready").map((w) => w.name);
    return ["degraded", `Degraded${missing.length ? `: ${missing.join(", ")} not ready` : ""}`];
  }
  if (state === "failed") return ["down", "Failed to start"];
  if (state === "loading") return ["loading", "Loading…"];
  return ["down", "Not ready"];
}

// The cluster's shape: when it changes (a different model or worker set), the panel is rebuilt.
function clusterShape(c) {
  return JSON.stringify((c.workers || []).map((w) => [w.name, w.layers, w.memory_limit_bytes, w.estimate && w.estimate.total_bytes]));
}

function nodeEntry(key, title, sub, meta) {
  return el("li", { class: "node", "data-node": key, "data-status": "unknown" },
    el("div", { class: "node-head" },
      el("strong", { class: "node-name", text: title }),
      sub ? el("span", { class: "node-layers", text: sub }) : null,
      el("span", { class: "status", text: "…" })),
    el("p", { class: "node-meta", text: meta }),
    ...statCells(key, title),
    el("p", { class: "node-error", hidden: true }));
}

function threadsOf(w) {
  if (isNum(w.threads)) lastThreads.set(w.name, w.threads);
  return lastThreads.get(w.name) ?? null;
}

function workerMeta(w) {
  const parts = [plural(threadsOf(w), "thread")];
  if (isNum(w.memory_limit_bytes)) parts.push(`limit ${fmtBytes(w.memory_limit_bytes)}`);
  const est = w.estimate;
  if (est && isNum(est.total_bytes)) {
    parts.push(`needs ≈ ${fmtBytes(est.total_bytes)} (weights ${fmtBytes(est.weight_bytes)} + KV ${fmtBytes(est.kv_bytes)})`);
  }
  parts.push(w.url || "");
  return parts.join(" · ");
}

function buildClusterPanel(c) {
  const workers = c.workers || [];
  const lat = c.latency || {};
  const linkText = isNum(lat.min_ms) ? `link: ${fmt(lat.min_ms, 0)}–${fmt(lat.max_ms, 0)} ms injected` : "link";
  const items = [nodeEntry("root", "root", "", `tokenizer, embedding, sampling · ${plural(c.threads_root, "thread")}`)];
  // Idle workers (placement "fit") hold no layers and are not on the chain: listed after it.
  workers.forEach((w, i) => {
    if (w.idle) return;
    items.push(el("li", { class: "link", "aria-hidden": "true", text: `↓ ${linkText}` }));
    items.push(nodeEntry(`worker-${i + 1}`, w.name || `worker ${i + 1}`, fmtShare(w.share) || fmtLayers(w.layers),
                         workerMeta(w)));
  });
  items.push(el("li", { class: "link", "aria-hidden": "true", text: `↩ back to root · ${linkText}` }));
  workers.forEach((w, i) => {
    if (w.idle) items.push(nodeEntry(`worker-${i + 1}`, w.name || `worker ${i + 1}`, "idle: no layers", workerMeta(w)));
  });
  $("cluster").replaceChildren(...items);
  keepSeries(["root", ...workers.map((_, i) => `worker-${i + 1}`)]);
}

function setNodeStatus(key, status, error) {
  const node = $("cluster").querySelector(`[data-node="${key}"]`);
  if (!node) return;
  const changed = node.dataset.status !== status;
  node.dataset.status = status;
  setText(node.querySelector(".status"), status);
  const note = node.querySelector(".node-error");
  setText(note, error || "");
  note.hidden = !error;
  if (changed) applyLiveness(node);
}

function renderCluster(c, rootStatus, rootNote) {
  cluster = c;
  const shape = clusterShape(c);
  if (shape !== clusterKey) {
    clusterKey = shape;
    buildClusterPanel(c);
  }
  setNodeStatus("root", rootStatus, rootNote);
  (c.workers || []).forEach((w, i) => {
    setNodeStatus(`worker-${i + 1}`, w.status || "unknown", w.error || "");
    const meta = $("cluster").querySelector(`[data-node="worker-${i + 1}"] .node-meta`);
    if (meta) setText(meta, workerMeta(w));
  });
  const modelled = c.compute === "modelled";
  $("modelled-banner").hidden = !modelled;
  // The synthetic banner says the timings are real: with modelled compute its own banner says what is.
  $("synthetic-banner").hidden = modelled || !(c.model && c.model.synthetic);
  renderModelInfo(c);
}

// "3.0–8.0 ms per hop (uniform, seed 0)"; docs/api.md promises min_ms, max_ms and seed, the rest is optional.
function latencyText(lat) {
  if (!isNum(lat.min_ms)) return "—";
  const range = lat.min_ms === lat.max_ms ? `${fmt(lat.min_ms, 1)} ms` : `${fmt(lat.min_ms, 1)}–${fmt(lat.max_ms, 1)} ms`;
  const how = [];
  if (lat.distribution && lat.distribution !== "uniform" && isNum(lat.mean_ms) && lat.mean_ms > 0) {
    how.push(`${lat.distribution} ${fmt(lat.mean_ms, 1)} ± ${fmt(lat.std_ms, 1)} ms`);
  } else if (lat.distribution) {
    how.push(lat.distribution);
  }
  if (lat.seed !== undefined && lat.seed !== null) how.push(`seed ${lat.seed}`);
  return `${range} per hop${how.length ? ` (${how.join(", ")})` : ""}`;
}

// How the cluster splits the model and, in tensor mode, where its synchronisations go (SYNC_TOPOLOGY).
function parallelismText(c) {
  const q80 = c.sync_dtype === "q80" ? ", hidden states as q80" : "";
  if (c.parallelism !== "tensor") return `pipeline (a run of layers per worker)${q80}`;
  const syncs = c.sync_topology === "mesh" ? "worker to worker (mesh)" : "through the root (star)";
  return `tensor (a share of every layer), syncs ${syncs}${q80}`;
}

function renderModelInfo(c) {
  const m = c.model || {};
  const lat = c.latency || {};
  // A down worker keeps its thread count here: it still holds its share of the machine's cores.
  const threads = (c.workers || []).map((w) => threadsOf(w)).filter(isNum);
  const rows = [
    ["Model", `${m.name || "?"}${m.synthetic ? " (synthetic)" : ""}`],
    ["Path", m.path || "—"],
    ["Dtype", m.dtype || "—"],
    ["Compute", c.compute === "modelled" ? `modelled, not real tokens (LM head on ${c.root_device || "?"})` : "real"],
    ["Parallelism", parallelismText(c)],
    ["Layers", m.n_layers ?? "—"],
    ["Hidden size", m.hidden_size ?? "—"],
    ["Vocabulary", m.vocab_size ?? "—"],
    ["Threads", `root ${c.threads_root ?? "?"}${threads.length ? `, workers ${threads.join(", ")}` : ""}`],
    ["Link latency", latencyText(lat)],
  ];
  if (isNum(lat.bandwidth_mbps) && lat.bandwidth_mbps > 0) rows.push(["Link bandwidth", `${fmt(lat.bandwidth_mbps, 1)} Mbit/s`]);
  if (isNum(lat.loss) && lat.loss > 0) rows.push(["Packet loss", `${fmt(100 * lat.loss, 1)}%`]);
  const box = $("model-info");
  const next = rows.map(([k, v]) => `${k}\u0000${v}`).join("\u0001");
  if (box.dataset.rendered === next) return;  // unchanged: leave the DOM alone
  box.dataset.rendered = next;
  box.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { "data-row": k, text: String(v) })]));
}

function renderHealth([kind, text]) {
  const health = $("health");
  health.dataset.state = kind;
  setText(health, text);
}

async function pollOnce() {
  const [health, clusterResp, stats] = await Promise.allSettled([getJson("/healthz"), getJson("/api/cluster"), getJson("/api/stats")]);
  const reached = [health, clusterResp, stats].filter((r) => r.status === "fulfilled");
  if (reached.length === 0) {
    const why = health.reason && health.reason.name === "AbortError" ? "no answer in time" : "network error";
    showError("cluster", `Cannot reach the root service at ${location.origin} (${why}). Retrying every second.`);
    renderHealth(["down", "Root service unreachable"]);
    for (const node of $("cluster").querySelectorAll(".node")) setNodeStatus(node.dataset.node, "unreachable", "");
    return;
  }

  const h = health.status === "fulfilled" ? health.value : null;
  const c = clusterResp.status === "fulfilled" && clusterResp.value.ok ? clusterResp.value.body : null;
  const problems = clusterProblems(h, c);
  const [kind] = healthLine(h, c);
  if (c) {
    // The root itself runs while degraded; while loading or failed, its note is the reason.
    const rootStatus = kind === "ok" || kind === "degraded" ? "ready" : kind === "loading" ? "loading" : "not ready";
    const note = rootStatus === "ready" ? "" : (h && h.body && h.body.reason) || c.reason || "";
    renderCluster(c, rootStatus, note);
  } else if (clusterResp.status === "fulfilled") {
    problems.push(`The cluster description is unavailable (${clusterResp.value.status}).`);
  }
  if (stats.status === "fulfilled" && stats.value.ok && stats.value.body) renderStats(stats.value.body, (cluster && cluster.workers) || []);

  if (problems.length) showError("cluster", problems.join(" "));
  else clearError("cluster");
  renderHealth(healthLine(h, c));
}

export function startPolling() {
  const tick = async () => {
    const started = performance.now();
    try { await pollOnce(); } catch (err) { showError("cluster", `The side panel failed to update: ${err.message}`); }
    setTimeout(tick, Math.max(0, POLL_INTERVAL_MS - (performance.now() - started)));
  };
  tick();
}
