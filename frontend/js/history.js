// The runs of this session: a record per run (kept in sessionStorage), the table, the TTFT/TTLT
// chart, and the CSV and JSON exports. Columns come from metrics.js.
import { $, cssVar, el } from "./dom.js";
import { fmt, isNum } from "./format.js";
import { timeAxis } from "./axes.js";
import { renderChart } from "./charts.js";
import { CSV_COLUMNS, historyColumns, metricFields } from "./metrics.js";

export const HISTORY_KEY = "ddllm.history.v1";  // sessionStorage: the runs of this tab survive a reload

let history = [];  // one record per finished run (see historyRecord), oldest first

// A finished run -> its record. `metrics`: the `done` metrics, or a failed reply's partial metrics.
export function historyRecord(run, finish, metrics) {
  const body = run.body;
  const fields = metricFields(metrics);
  fields.prompt_tokens ??= run.promptTokens;   // a run stopped before `done` still knows these two
  fields.completion_tokens ??= run.tokens;
  return {
    run: run.number,
    started_at: run.startedAt.toISOString(),
    request_id: run.requestId,
    mode: body.chat ? "chat" : "raw",
    max_tokens: body.max_tokens,
    temperature: body.temperature ?? null,
    top_p: body.top_p ?? null,
    top_k: body.top_k ?? null,
    seed: body.seed ?? null,
    finish_reason: finish,
    ...fields,
    prompt: body.prompt,
    text: run.text,
    metrics: metrics || null,  // the full object (stages, containers) for the JSON export
  };
}

export function lastRunNumber() {
  return history.reduce((n, r) => Math.max(n, r.run || 0), 0);
}

export function addHistory(record) {
  history.push(record);
  save();
  renderHistory();
}

function save() {
  try { sessionStorage.setItem(HISTORY_KEY, JSON.stringify(history)); } catch (_) { /* storage full or off: keep it in memory */ }
}

export function loadHistory() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(HISTORY_KEY) || "[]");
    history = Array.isArray(saved) ? saved.filter((r) => r && typeof r === "object") : [];
  } catch (_) { history = []; }
}

export function clearHistory() {
  history = [];
  save();
  renderHistory();
}

// The columns follow the runs held (a tensor run adds its sync columns): rebuilt with the rows.
function buildHistoryHead(columns) {
  $("history").tHead.replaceChildren(el("tr", {},
    ...columns.map(([key, header, digits]) =>
      el("th", { scope: "col", "data-col": key, class: digits === null ? null : "num", text: header }))));
}

// Large figures lose their decimals in the table (the CSV keeps them all): "136000" not "136000.0".
function cellDigits(value, digits) {
  return isNum(value) && Math.abs(value) >= 1000 ? 0 : digits;
}

export function renderHistory() {
  const columns = historyColumns(history);
  buildHistoryHead(columns);
  const rows = history.map((record) => el("tr", { "data-run": String(record.run), "data-finish": record.finish_reason },
    ...columns.map(([key, , digits]) => {
      const value = record[key];
      if (key === "prompt") {
        const text = String(value || "");
        return el("td", { class: "prompt-cell", "data-col": key, title: text, text });
      }
      if (digits === null) return el("td", { "data-col": key, text: value ?? "—" });
      return el("td", { class: "num", "data-col": key, text: fmt(value, cellDigits(value, digits)) });
    })));
  $("history").tBodies[0].replaceChildren(...rows);
  const empty = history.length === 0;
  $("history-empty").hidden = !empty;
  for (const id of ["export-csv", "export-json", "clear-history"]) $(id).disabled = empty;
  drawHistoryChart();
}

export function drawHistoryChart() {
  const keys = [["ttft_ms", cssVar("--ttft")], ["ttlt_ms", cssVar("--ttlt")]];
  const values = history.flatMap((r) => keys.map(([key]) => r[key])).filter(isNum);
  const n = history.length;
  const at = (i) => (n === 1 ? 0.5 : i / (n - 1));
  const every = Math.max(1, Math.ceil(n / 12));  // run numbers thinned out when there are many runs
  renderChart($("history-chart"), {
    yAxis: timeAxis(Math.max(0, ...values)),
    xTicks: history.map((r, i) => ({ at: at(i), text: `#${r.run}`, keep: i % every === 0 || i === n - 1 })).filter((t) => t.keep),
    series: keys.map(([key, color]) => ({
      color,
      // A failed run is drawn hollow: its figures cover only what it produced.
      points: history.map((r, i) => ({ at: at(i), value: r[key], hollow: r.finish_reason === "error" })),
    })),
    empty: "TTFT and TTLT of every run will be drawn here.",
  });
}

function csvCell(value) {
  if (value === null || value === undefined) return "";
  let text = String(value);
  // A prompt typed as "=1+1" must not run as a formula in a spreadsheet.
  if (typeof value === "string" && /^[=+\-@]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function historyCsv() {
  const lines = [CSV_COLUMNS.join(",")];
  for (const record of history) lines.push(CSV_COLUMNS.map((key) => csvCell(record[key])).join(","));
  return `${lines.join("\r\n")}\r\n`;
}

export function historyJson() {
  return `${JSON.stringify(history, null, 2)}\n`;
}

export function download(filename, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = el("a", { href: url, download: filename });
  link.style.display = "none";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export function exportName(ext) {
  return `ddllm-runs-${new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19)}.${ext}`;
}
