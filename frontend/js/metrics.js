// The figures of a run, defined once. This table drives the metric tiles under the reply, the
// history table and the CSV export, and names the figures "Where the time went" reads: a new metric
// is one new row here.
//
// key:    its name on the page, in the history record and the CSV
// path:   where it sits in the server's `metrics` object (docs/api.md) when not at metrics[key]
// label, unit, digits: how a tile shows it (digits null: text)
// tile:   "main" (the headline numbers), "more" (smaller tiles) or null (not a tile)
// column: its header in the history table, or null (still in the CSV and the JSON export)
// only:   a parallelism ("tensor"): its tile shows for such replies only, its column once the history
//         holds such a run (a pipeline reply looks as if the row were not there); the CSV always has it
export const METRICS = [
  { key: "ttft_ms", label: "TTFT", unit: "ms", digits: 1, tile: "main", column: "TTFT ms" },
  { key: "ttlt_ms", label: "TTLT", unit: "ms", digits: 1, tile: "main", column: "TTLT ms" },
  { key: "completion_tokens", label: "Tokens", unit: "", digits: 0, tile: "main", column: "Tokens" },
  { key: "decode_tok_s", label: "Decode", unit: "tokens/s", digits: 1, tile: "main", column: "Decode tok/s" },
  { key: "tpot_ms", label: "TPOT", unit: "ms/token", digits: 2, tile: "main", column: "TPOT ms" },
  { key: "injected_latency_ms", label: "Injected latency", unit: "ms", digits: 1, tile: "main", column: "Injected ms" },
  { key: "prompt_tokens", label: "Prompt tokens", unit: "", digits: 0, tile: "more", column: "Prompt tok." },
  { key: "prefill_tok_s", label: "Prefill", unit: "tokens/s", digits: 1, tile: "more", column: null },
  { key: "itl_p50_ms", path: ["itl_ms", "p50"], label: "ITL p50", unit: "ms", digits: 2, tile: "more", column: null },
  { key: "itl_p90_ms", path: ["itl_ms", "p90"], label: "ITL p90", unit: "ms", digits: 2, tile: "more", column: null },
  { key: "itl_p99_ms", path: ["itl_ms", "p99"], label: "ITL p99", unit: "ms", digits: 2, tile: "more", column: null },
  { key: "transport_ms", label: "Transport", unit: "ms", digits: 1, tile: "more", column: "Transport ms" },
  { key: "compute_ms", label: "Compute", unit: "ms", digits: 1, tile: "more", column: "Compute ms" },
  { key: "recoveries", label: "Recoveries", unit: "", digits: 0, tile: "more", column: null },
  { key: "recovery_wait_ms", label: "Waiting for workers", unit: "ms", digits: 1, tile: "more", column: null },
  // Tensor mode (backend/tensor_metrics.py): compute_ms above is then the slowest worker per step.
  { key: "parallelism", label: "Parallelism", unit: "", digits: null, tile: null, column: "Parallelism", only: "tensor" },
  { key: "syncs", label: "Syncs", unit: "", digits: 0, tile: "more", column: "Syncs", only: "tensor" },
  { key: "sync_injected_ms", path: ["sync", "injected_ms"], label: "Sync injected", unit: "ms", digits: 1, tile: "more", column: "Sync inj. ms", only: "tensor" },
  { key: "sync_transport_ms", path: ["sync", "transport_ms"], label: "Sync transport", unit: "ms", digits: 1, tile: "more", column: null, only: "tensor" },
  { key: "sync_bytes", path: ["sync", "bytes"], label: "Sync bytes", unit: "", digits: 0, tile: null, column: null, only: "tensor" },
  { key: "sync_p50_ms", path: ["sync", "per_sync_ms", "p50"], label: "Per sync p50", unit: "ms", digits: 2, tile: "more", column: null, only: "tensor" },
  { key: "sync_p90_ms", path: ["sync", "per_sync_ms", "p90"], label: "Per sync p90", unit: "ms", digits: 2, tile: "more", column: null, only: "tensor" },
];

const BY_KEY = new Map(METRICS.map((m) => [m.key, m]));

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

// Columns of the history table for these records: [key, header, digits]; digits null for text.
// A column marked `only` appears once some record is of that parallelism.
export function historyColumns(records) {
  const held = new Set(records.map((r) => r.parallelism));
  return [
    ["run", "Run", 0],
    ["prompt", "Prompt", null],
    ["finish_reason", "Finish", null],
    ...METRICS.filter((m) => m.column && (!m.only || held.has(m.only))).map((m) => [m.key, m.column, m.digits]),
  ];
}

// Whether a metric belongs on the page for a reply of this parallelism.
export function shownFor(key, parallelism) {
  const m = BY_KEY.get(key);
  return !m || !m.only || m.only === parallelism;
}

export function metricValue(metrics, key) {
  if (!metrics) return null;
  const m = BY_KEY.get(key);
  let value = metrics;
  for (const step of (m && m.path) || [key]) {
    if (value === null || typeof value !== "object") return null;
    value = value[step];
  }
  return value ?? null;
}

// {key: value or null} for every metric of the table.
export function metricFields(metrics) {
  return Object.fromEntries(METRICS.map((m) => [m.key, metricValue(metrics, m.key)]));
}
