// The page of the distributed LLM inference simulator: wiring of the modules.
// It talks only to the root service (docs/api.md): POST /api/generate streamed as SSE, the Stop
// button's POST /api/requests/<id>/cancel, POST /api/tokenize for the prompt's token count, and a
// 1 s poll of /healthz, /api/cluster and /api/stats. Plain DOM, ES modules, hand-drawn canvas:
// no build step, no library, nothing from the network.
//
// Modules, by concern:
//   metrics.js   the table of a run's figures: drives the metric tiles, the history table and the CSV
//   reply.js     a generation: the SSE stream, Stop, worker_down / recovered / error notices, tiles
//   stream.js    reading text/event-stream off a fetch body
//   timeline.js  "Where the time went": stage bars and the per-link table
//   history.js   the runs of this session: table, TTFT/TTLT chart, CSV and JSON export
//   cluster.js   the side panel, the health line and the cluster's problems; the 1 s poll
//   stats.js     container CPU/memory with scaled charts and the larger view
//   form.js      reading and checking the form; the prompt's token count
//   charts.js, axes.js   canvas charts with DOM tick labels; pure axis choices
//   format.js, dom.js, http.js, errors.js   small shared helpers
import { $ } from "./dom.js";
import { clearError } from "./errors.js";
import { clearInvalid, scheduleTokenCount } from "./form.js";
import { clearHistory, download, drawHistoryChart, exportName, historyCsv, historyJson, loadHistory, renderHistory } from "./history.js";
import { buildMetrics, isRunning, startGeneration, stopGeneration } from "./reply.js";
import { startPolling } from "./cluster.js";
import { closeView } from "./stats.js";

function init() {
  buildMetrics();
  loadHistory();
  renderHistory();

  $("generate-form").addEventListener("submit", (event) => {
    event.preventDefault();
    startGeneration();
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("generate-form").requestSubmit();
    }
  });
  $("prompt").addEventListener("input", scheduleTokenCount);
  for (const radio of document.querySelectorAll('input[name="mode"]')) radio.addEventListener("change", scheduleTokenCount);
  $("max-tokens").addEventListener("input", () => {
    if ($("max-tokens").getAttribute("aria-invalid")) { clearInvalid(); clearError("input"); }
  });
  $("stop").addEventListener("click", stopGeneration);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && isRunning()) stopGeneration();
  });
  $("export-csv").addEventListener("click", () => download(exportName("csv"), historyCsv(), "text/csv;charset=utf-8"));
  $("export-json").addEventListener("click", () => download(exportName("json"), historyJson(), "application/json"));
  $("clear-history").addEventListener("click", clearHistory);
  $("stat-view-close").addEventListener("click", closeView);
  $("stat-view").addEventListener("close", closeView);
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(drawHistoryChart, 100);
  });
  startPolling();
  if ($("prompt").value) scheduleTokenCount();  // a prompt the browser restored after a reload
}

init();
