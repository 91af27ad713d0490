// Container load in the side panel: CPU and memory per node from /api/stats, each with a small chart
// on a labelled scale (CPU as a percent of the container's limit, memory in bytes) over a fixed
// window, and a larger view of either in a dialog on click.
import { $, cssVar, el, setText } from "./dom.js";
import { fmt, fmtBytes, isNum } from "./format.js";
import { bytesAxis, percentAxis } from "./axes.js";
import { renderChart } from "./charts.js";

const WINDOW_S = 60;  // the charts show the last minute of samples (the root samples about once a second)

const series = new Map();  // node key -> {cpu: [{t, v}], mem: [{t, v}], cores, memLimit}
let statsTime = null;      // `time` of the last /api/stats sample counted
let statsSamples = 0;      // number of distinct stats samples received
let view = null;           // the dialog's {key, kind, title}, or null when closed

// A node whose process is gone shows no live figures: its last CPU and memory are not its load now.
const DEAD = new Set(["down", "unreachable"]);

export function statCells(key, title) {
  const cell = (kind, label) => el("div", { class: "node-stat", "data-kind": kind },
    el("span", { class: "stat-label", text: label }),
    el("span", { class: kind, text: "—" }),
    el("button", { type: "button", class: "spark-button", "data-kind": kind,
                   "aria-label": `${title} ${label} over the last minute: open a larger view` },
      el("span", { class: `chart spark ${kind}-spark` }, el("canvas", { "aria-hidden": "true" }))));
  const cells = [cell("cpu", "CPU"), cell("mem", "Mem")];
  for (const c of cells) c.querySelector(".spark-button").addEventListener("click", () => openView(key, c.dataset.kind, title));
  return cells;
}

// Drops the history of nodes that left the panel (a rebuild keeps it for the nodes that stay).
export function keepSeries(keys) {
  for (const key of [...series.keys()]) if (!keys.includes(key)) series.delete(key);
}

// Called when a node's status changes: a dead node's figures are cleared and its charts greyed.
export function applyLiveness(node) {
  const dead = DEAD.has(node.dataset.status);
  node.classList.toggle("stale", dead);
  if (!dead) return;
  for (const kind of ["cpu", "mem"]) {
    const cell = node.querySelector(`.${kind}`);
    setText(cell, `— (${node.dataset.status})`);
    cell.title = "no live figures: the process is not answering";
  }
  delete node.dataset.cpu;
  delete node.dataset.mem;
}

// Which node of the chain a stats container is: by role for the root; by name, then by the URL's
// host, then by order for the workers (container names are e.g. "worker-1" or "project-worker1-1").
export function matchContainers(containers, workers) {
  const byNode = new Map();
  const root = containers.find((c) => c.role === "root");
  if (root) byNode.set("root", root);
  const pool = containers.filter((c) => c.role === "worker");
  const used = new Set();
  const take = (i, pred) => {
    const c = pool.find((cand) => !used.has(cand) && pred(cand));
    if (c) { used.add(c); byNode.set(`worker-${i + 1}`, c); }
    return c;
  };
  const host = (url) => { try { return new URL(url).hostname; } catch (_) { return ""; } };
  const rules = [
    (w, c) => c.name === w.name,                       // local mode: "worker-1"
    (w, c) => !!host(w.url) && c.name === host(w.url),  // compose: the URL's host is the container name
    (w, c) => !!host(w.url) && c.name.includes(host(w.url)),
    (w, c) => !!w.name && c.name.includes(w.name),
    () => true,                                         // last resort: the order of the chain
  ];
  for (const rule of rules) {
    workers.forEach((w, i) => byNode.has(`worker-${i + 1}`) || take(i, (c) => rule(w, c)));
  }
  return byNode;
}

// CPU as a share of the container's CPU limit (cpu_limit_cores); without a limit, of one core.
function cpuShare(c) {
  const cores = isNum(c.cpu_limit_cores) && c.cpu_limit_cores > 0 ? c.cpu_limit_cores : null;
  if (isNum(c.cpu_limit_percent) && cores) return { share: c.cpu_limit_percent, cores };
  return { share: isNum(c.cpu_percent) ? c.cpu_percent / (cores || 1) : 0, cores };
}

export function renderStats(stats, workers) {
  if (stats.time !== undefined && stats.time === statsTime) return;  // the same sample again
  statsTime = stats.time;
  statsSamples += 1;
  $("stats-samples").textContent = String(statsSamples);
  $("stats-source").textContent = `stats: ${stats.source || "?"}`;
  const now = isNum(stats.time) ? stats.time : Date.now() / 1000;
  const byNode = matchContainers(stats.containers || [], workers);
  for (const node of $("cluster").querySelectorAll(".node")) {
    const key = node.dataset.node;
    const c = byNode.get(key);
    const s = series.get(key) || { cpu: [], mem: [], cores: null, memLimit: null };
    series.set(key, s);
    const dead = DEAD.has(node.dataset.status);  // its figures were cleared by applyLiveness
    if (c && !dead) {
      const t = isNum(c.time) ? c.time : now;
      const { share, cores } = cpuShare(c);
      s.cpu.push({ t, v: share });
      s.mem.push({ t, v: isNum(c.mem_bytes) ? c.mem_bytes : null });
      s.cores = cores;
      s.memLimit = isNum(c.mem_limit_bytes) && c.mem_limit_bytes > 0 ? c.mem_limit_bytes : null;
      showFigures(node, key, c, s, workers);
    } else if (!c && !dead) {
      for (const kind of ["cpu", "mem"]) setText(node.querySelector(`.${kind}`), "no stats");
    }
    for (const kind of ["cpu", "mem"]) while (s[kind].length && s[kind][0].t < now - WINDOW_S) s[kind].shift();
    node.dataset.samples = String(s.cpu.length);
    drawSpark(node.querySelector(".cpu-spark"), s, "cpu", now, true);
    drawSpark(node.querySelector(".mem-spark"), s, "mem", now, true);
  }
  if (view) drawView(now);
}

function showFigures(node, key, c, s, workers) {
  node.dataset.container = c.name;
  node.dataset.cpu = String(c.cpu_percent);
  node.dataset.mem = String(c.mem_bytes);
  // cpu_percent: 100 = one core busy; the share is the same load against the container's CPU limit.
  let cpuText = `${fmt(c.cpu_percent, 0)}%`;
  if (s.cores === 1) cpuText += " of 1 core";
  else if (s.cores) cpuText += ` (${fmt(s.cpu[s.cpu.length - 1].v, 0)}% of ${fmt(s.cores, s.cores % 1 ? 1 : 0)} cores)`;
  const cpu = node.querySelector(".cpu");
  setText(cpu, cpuText);
  cpu.title = "100% = one core fully busy";
  const idx = key.startsWith("worker-") ? Number(key.slice(7)) - 1 : -1;
  const est = idx >= 0 && workers[idx] && workers[idx].estimate;
  const estText = est && isNum(est.total_bytes) ? ` · est. ${fmtBytes(est.total_bytes)}` : "";
  const mem = node.querySelector(".mem");
  setText(mem, `${fmtBytes(c.mem_bytes)}${s.memLimit ? ` of ${fmtBytes(s.memLimit)}` : ""}${estText}`);
  mem.title = "";
}

// The chart spec of one series over the window ending `now`. compact: the side panel's small chart.
function chartSpec(s, kind, now, compact) {
  const points = s[kind].map((p) => ({ at: 1 - (now - p.t) / WINDOW_S, value: p.v }));
  const peak = Math.max(0, ...s[kind].map((p) => p.v).filter(isNum));
  const target = compact ? 1 : 4;
  // CPU against the whole limit (100%); memory against its own peak: against the limit a slice's
  // few MiB would be a flat line (the limit is in the text beside it).
  const yAxis = kind === "cpu" ? percentAxis(peak, 100, target) : bytesAxis(peak || 1, compact ? 1 : 4);
  const step = compact ? WINDOW_S : 15;
  const xTicks = [];
  for (let ago = WINDOW_S; ago >= 0; ago -= step) xTicks.push({ at: 1 - ago / WINDOW_S, text: ago === 0 ? "now" : `−${ago} s` });
  return { yAxis, xTicks, series: [{ color: cssVar(kind === "cpu" ? "--cpu" : "--mem"), points, fill: true }], empty: compact ? "" : "No samples yet." };
}

function drawSpark(wrap, s, kind, now) {
  if (!wrap) return;
  renderChart(wrap, chartSpec(s, kind, now, true));
}

function openView(key, kind, title) {
  view = { key, kind, title };
  const dialog = $("stat-view");
  $("stat-view-title").textContent = `${title}: ${kind === "cpu" ? "CPU" : "memory"}, last ${WINDOW_S} s`;
  dialog.dataset.node = key;
  dialog.dataset.kind = kind;
  if (!dialog.open) dialog.showModal();
  drawView(statsTime ?? Date.now() / 1000);
}

export function closeView() {
  view = null;
  const dialog = $("stat-view");
  if (dialog.open) dialog.close();
}

function drawView(now) {
  const s = series.get(view.key) || { cpu: [], mem: [], cores: null, memLimit: null };
  renderChart($("stat-view-chart"), chartSpec(s, view.kind, now, false));
  const note = view.kind === "cpu"
    ? (s.cores ? `Percent of the container's CPU limit (${fmt(s.cores, s.cores % 1 ? 1 : 0)} cores): 100% is the whole limit.`
      : "No CPU limit: percent of one core (100% = one core fully busy).")
    : `Memory in use (as docker stats counts it)${s.memLimit ? `; the limit is ${fmtBytes(s.memLimit)}` : ""}.`;
  $("stat-view-note").textContent = `${note} One sample per second, the newest on the right.`;
}
