// The figures of a run, defined once. This table drives the metric tiles under the reply, the
// history table and the CSV export: a new metric is one new row here.
//
// key:    the field of the server's `metrics` object (docs/api.md); itl_* are read from metrics.itl_ms
// label, unit, digits: how a tile shows it
// tile:   "main" (the headline numbers), "more" (smaller tiles) or null (not a tile)
// column: its header in the history table, or null (still in the CSV and the JSON export)
export const METRICS = [
  { key: "ttft_ms", label: "TTFT", unit: "ms", digits: 1, tile: "main", column: "TTFT ms" },
  { key: "ttlt_ms", label: "TTLT", unit: "ms", digits: 1, tile: "main", column: "TTLT ms" },
  { key: "completion_tokens", label: "Tokens", unit: "", digits: 0, tile: "main", column: "Tokens" },
  { key: "decode_tok_s", label: "Decode", unit: "tokens/s", digits: 1, tile: "main", column: "Decode tok/s" },
  { key: "tpot_ms", label: "TPOT", unit: "ms/token", digits: 2, tile: "main", column: "TPOT ms" },
  { key: "injected_latency_ms", label: "Injected latency", unit: "ms", digits: 1, tile: "main", column: "Injected ms" },
  { key: "prompt_tokens", label: "Prompt tokens", unit: "", digits: 0, tile: "more", column: "Prompt tok." },
  { key: "prefill_tok_s", label: "Prefill", unit: "tokens/s", digits: 1, tile: "more", column: null },
  { key: "itl_p50_ms", label: "ITL p50", unit: "ms", digits: 2, tile: "more", column: null },
  { key: "itl_p90_ms", label: "ITL p90", unit: "ms", digits: 2, tile: "more", column: null },
  { key: "itl_p99_ms", label: "ITL p99", unit: "ms", digits: 2, tile: "more", column: null },
  { key: "transport_ms", label: "Transport", unit: "ms", digits: 1, tile: "more", column: "Transport ms" },
  { key: "compute_ms", label: "Compute", unit: "ms", digits: 1, tile: "more", column: "Compute ms" },
  { key: "recoveries", label: "Recoveries", unit: "", digits: 0, tile: "more", column: null },
  { key: "recovery_wait_ms", label: "Waiting for workers", unit: "ms", digits: 1, tile: "more", column: null },
];

// What a run was asked for, written before its metrics in the CSV. column as above.
const RUN_FIELDS = [
  { key: "run", column: "Run" },
  { key: "started_at", column: null },
  { key: "request_id", column: null },
  { key: "mode", column: null },
  { key: "max_tokens", column: null },
  { key: "temperature", column: null },
  { key: "top_p", column: null },
  { key: "top_k", column: null },
  { key: "seed", column: null },
  { key: "finish_reason", column: "Finish" },
];
const PROMPT_FIELD = { key: "prompt", column: "Prompt" };

export const CSV_COLUMNS = [...RUN_FIELDS, ...METRICS, PROMPT_FIELD].map((f) => f.key);

// Columns of the history table: [key, header, digits]; digits null for text.
export const HISTORY_COLUMNS = [
  ["run", "Run", 0],
  ["prompt", "Prompt", null],
  ["finish_reason", "Finish", null],
  ...METRICS.filter((m) => m.column).map((m) => [m.key, m.column, m.digits]),
];

export function metricValue(metrics, key) {
  if (!metrics) return null;
  const itl = key.match(/^itl_(p\d+)_ms$/);
  if (itl) return metrics.itl_ms ? metrics.itl_ms[itl[1]] ?? null : null;
  return metrics[key] ?? null;
}

// {key: value or null} for every metric of the table.
export function metricFields(metrics) {
  return Object.fromEntries(METRICS.map((m) => [m.key, metricValue(metrics, m.key)]));
}
