// The page of the distributed LLM inference simulator.
// It talks only to the root service (docs/api.md): POST /api/generate streamed as SSE, the Stop
// button's POST /api/requests/<id>/cancel, and a 1 s poll of /healthz, /api/cluster and /api/stats.
// Plain DOM and hand-drawn canvas: no build step, no library, nothing from the network.
"use strict";

// ---------------------------------------------------------------------------------------------
// Settings

const POLL_INTERVAL_MS = 1000;   // side panel refresh: the page promises "live at least once a second"
const POLL_TIMEOUT_MS = 2500;    // a poll slower than this is abandoned; the next one starts fresh
const CANCEL_TIMEOUT_MS = 3000;  // the cancel POST must not keep the Stop click hanging
const STOP_GRACE_MS = 1500;      // after a cancel, wait this long for the server's `done` (it carries metrics)
const SPARK_SAMPLES = 60;        // ~1 minute of CPU/memory history per container
const MAX_TOKENS_MIN = 1;        // docs/api.md: max_tokens is an int 1..1024; the server stays the authority
const MAX_TOKENS_MAX = 1024;
const HISTORY_KEY = "ddllm.history.v1";  // sessionStorage: the runs of this tab survive a reload

// The six headline numbers under each reply, then the secondary ones. [key, label, unit, digits]
// The key is the field of the server's `metrics` object (itl_* are read from metrics.itl_ms).
const MAIN_METRICS = [
  ["ttft_ms", "TTFT", "ms", 1],
  ["ttlt_ms", "TTLT", "ms", 1],
  ["completion_tokens", "Tokens", "", 0],
  ["decode_tok_s", "Decode", "tokens/s", 1],
  ["tpot_ms", "TPOT", "ms/token", 2],
  ["injected_latency_ms", "Injected latency", "ms", 1],
];
const MORE_METRICS = [
  ["prompt_tokens", "Prompt tokens", "", 0],
  ["prefill_tok_s", "Prefill", "tokens/s", 1],
  ["itl_p50_ms", "ITL p50", "ms", 2],
  ["itl_p90_ms", "ITL p90", "ms", 2],
  ["itl_p99_ms", "ITL p99", "ms", 2],
  ["transport_ms", "Transport", "ms", 1],
  ["compute_ms", "Compute", "ms", 1],
];

// Columns of the history table and of the CSV export, in order. [key, header, digits]
const HISTORY_COLUMNS = [
  ["run", "Run", 0],
  ["prompt", "Prompt", null],
  ["finish_reason", "Finish", null],
  ["prompt_tokens", "Prompt tok.", 0],
  ["completion_tokens", "Tokens", 0],
  ["ttft_ms", "TTFT ms", 1],
  ["ttlt_ms", "TTLT ms", 1],
  ["tpot_ms", "TPOT ms", 2],
  ["decode_tok_s", "Decode tok/s", 1],
  ["injected_latency_ms", "Injected ms", 1],
  ["transport_ms", "Transport ms", 1],
  ["compute_ms", "Compute ms", 1],
];
const CSV_COLUMNS = [
  "run", "started_at", "request_id", "mode", "max_tokens", "temperature", "top_p", "top_k", "seed",
  "finish_reason", "prompt_tokens", "completion_tokens", "ttft_ms", "ttlt_ms", "tpot_ms",
  "decode_tok_s", "prefill_tok_s", "itl_p50_ms", "itl_p90_ms", "itl_p99_ms",
  "injected_latency_ms", "transport_ms", "compute_ms", "prompt",
];

// Segments of the timeline bars. [kind, legend label]
const SEGMENTS = [
  ["injected", "Injected link latency"],
  ["transport", "Link transport"],
  ["compute", "Worker compute"],
  ["other", "Root and the rest"],
];

// ---------------------------------------------------------------------------------------------
// State: one object, changed only by the functions below.

const state = {
  run: null,              // the generation in flight, or null
  runCounter: 0,          // numbers the runs of this session
  history: [],            // one record per finished run (see historyRecord)
  clusterKey: null,       // the shape of the cluster the side panel was built for
  cluster: null,          // the last /api/cluster body
  series: new Map(),      // node key -> {cpu: number[], mem: number[]}
  statsTime: null,        // `time` of the last /api/stats sample counted
  statsSamples: 0,        // number of distinct stats samples received
  errors: new Map(),      // source -> message, shown in #error
};

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------
// Small helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role" || key === "title" ||
             key === "id" || key === "scope" || key === "hidden") node.setAttribute(key, value === true ? "" : value);
    else node[key] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function isNum(x) {
  return typeof x === "number" && Number.isFinite(x);
}

function fmt(x, digits = 1) {
  return isNum(x) ? x.toFixed(digits) : "—";
}

function plural(n, word) {
  return isNum(n) ? `${n} ${word}${n === 1 ? "" : "s"}` : `? ${word}s`;
}

function fmtBytes(bytes) {
  if (!isNum(bytes)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let i = 0;
  while (Math.abs(value) >= 1024 && i < units.length - 1) { value /= 1024; i += 1; }
  return `${value.toFixed(value >= 100 || i === 0 ? 0 : 1)} ${units[i]}`;
}

// Half-open [start, end) as the people reading the page count layers: "0–5".
function fmtLayers(layers) {
  if (!Array.isArray(layers) || layers.length !== 2) return "";
  const [start, end] = layers;
  if (end - start <= 0) return "no layers";
  return end - start === 1 ? `layer ${start}` : `layers ${start}–${end - 1}`;
}

// A fetch that gives up after `timeoutMs`, and also when `signal` aborts.
async function fetchWithTimeout(url, options = {}, timeoutMs = POLL_TIMEOUT_MS) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    return await fetch(url, { ...options, signal: controller.signal, cache: "no-store" });
  } finally {
    clearTimeout(timer);
  }
}

// The message of an error response: `{"error": {"message"}}` per docs/api.md, else the status line.
async function errorMessage(resp) {
  let text = "";
  try { text = await resp.text(); } catch (_) { /* body unreadable: fall back to the status */ }
  try {
    const body = JSON.parse(text);
    if (body && body.error && body.error.message) return String(body.error.message);
    if (body && body.reason) return String(body.reason);
    if (body && body.message) return String(body.message);
  } catch (_) { /* not JSON: use the text itself below */ }
  const plain = text.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim();
  return plain ? plain.slice(0, 300) : `${resp.status} ${resp.statusText}`.trim();
}

// ---------------------------------------------------------------------------------------------
// The error region: one line per source ("input", "request", "cluster", "network").

function showError(source, message) {
  if (state.errors.get(source) === message) return;  // unchanged: do not re-announce
  state.errors.set(source, message);
  renderErrors();
}

function clearError(source) {
  if (!state.errors.has(source)) return;
  state.errors.delete(source);
  renderErrors();
}

function renderErrors() {
  const box = $("error");
  box.replaceChildren(...[...state.errors].map(([source, message]) =>
    el("p", { "data-source": source, text: message })));
}

// ---------------------------------------------------------------------------------------------
// The form

// Reads and checks the form. Returns {body} or {error, field}. Only max tokens and the prompt are
// checked here; the other limits are the server's to enforce, and its 400 message is shown.
function readForm() {
  const prompt = $("prompt").value;
  if (!prompt.trim()) return { error: "Type a prompt first.", field: $("prompt") };

  const maxInput = $("max-tokens");
  const raw = maxInput.value.trim();
  const range = `a whole number from ${MAX_TOKENS_MIN} to ${MAX_TOKENS_MAX}`;
  if (maxInput.validity.badInput) return { error: `Max tokens must be ${range}.`, field: maxInput };
  if (raw === "") return { error: `Max tokens is empty: it must be ${range}.`, field: maxInput };
  const maxTokens = Number(raw);
  if (!Number.isInteger(maxTokens)) return { error: `Max tokens must be ${range} (got ${raw}).`, field: maxInput };
  if (maxTokens < MAX_TOKENS_MIN || maxTokens > MAX_TOKENS_MAX) {
    return { error: `Max tokens must be ${range} (got ${raw}).`, field: maxInput };
  }

  const body = { prompt, max_tokens: maxTokens, stream: true, chat: $("mode-chat").checked };
  const numbers = [["temperature", "temperature", "Temperature"], ["top-p", "top_p", "Top p"],
                   ["top-k", "top_k", "Top k"], ["seed", "seed", "Seed"]];
  for (const [id, key, label] of numbers) {
    const input = $(id);
    if (input.validity.badInput) return { error: `${label} must be a number.`, field: input };
    const value = input.value.trim();
    if (value !== "") body[key] = Number(value);
  }
  const stop = $("stop-text").value;
  if (stop !== "") body.stop = stop;
  if ($("ignore-eos").checked) body.ignore_eos = true;
  return { body };
}

function markInvalid(field, message) {
  field.setAttribute("aria-invalid", "true");
  if (field.id === "max-tokens") {
    const note = $("max-tokens-error");
    note.textContent = message;
    note.hidden = false;
  }
}

function clearInvalid() {
  for (const field of document.querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
  const note = $("max-tokens-error");
  note.textContent = "";
  note.hidden = true;
}

// ---------------------------------------------------------------------------------------------
// Generation: POST /api/generate, read the SSE stream with fetch + ReadableStream.

// Parses a text/event-stream body and calls onEvent(name, data) per event; data is JSON-decoded.
async function readEventStream(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const dispatch = (block) => {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;  // comments are keep-alives
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    if (data.length === 0) return;
    const text = data.join("\n");
    let parsed = text;
    try { parsed = JSON.parse(text); } catch (_) { /* keep the raw text */ }
    onEvent(name, parsed);
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    // Normalise CR LF / CR to LF, but keep a trailing CR: its LF may be in the next chunk.
    const keep = buffer.endsWith("\r") ? 1 : 0;
    buffer = buffer.slice(0, buffer.length - keep).replace(/\r\n?/g, "\n") + buffer.slice(buffer.length - keep);
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      dispatch(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
    }
  }
  buffer += decoder.decode();
  if (buffer.trim()) dispatch(buffer.replace(/\r\n?/g, "\n"));
}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function startGeneration() {
  if (state.run) return;
  clearError("input");
  clearError("request");
  clearInvalid();
  const form = readForm();
  if (form.error) {
    showError("input", form.error);
    markInvalid(form.field, form.error);
    form.field.focus();
    return;
  }

  state.runCounter += 1;
  const run = {
    number: state.runCounter,
    body: form.body,
    controller: new AbortController(),
    requestId: null,
    promptTokens: null,
    stopRequested: false,
    cancelSent: false,
    graceTimer: null,
    startedAt: new Date(),
    t0: performance.now(),
    tokens: 0,
    text: "",
    final: null,        // the `done` event's object
    serverError: null,  // the `error` event's message
    textNode: document.createTextNode(""),
    ticker: null,
  };
  state.run = run;
  setBusy(true);
  resetReply(run);

  let outcome = "error";
  try {
    const resp = await fetch("/api/generate", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(form.body),
      signal: run.controller.signal,
      cache: "no-store",
    });
    if (!resp.ok) throw new HttpError(resp.status, await errorMessage(resp));
    setRequestId(run, resp.headers.get("X-Request-Id"));
    const type = resp.headers.get("Content-Type") || "";
    if (type.includes("application/json")) {
      // A server that ignores stream: true still answers with the final object.
      run.final = await resp.json();
      if (run.final.text) appendText(run, run.final.text);
    } else {
      await readEventStream(resp.body, (name, data) => onStreamEvent(run, name, data));
    }
    if (run.final) outcome = run.final.finish_reason === "cancelled" || run.stopRequested ? "stopped" : "done";
    else if (run.serverError !== null) throw new HttpError(0, run.serverError);
    else if (run.stopRequested) outcome = "stopped";
    else throw new HttpError(0, "The reply stream ended before the reply was complete (did the root restart?).");
  } catch (err) {
    if (run.stopRequested && (err.name === "AbortError" || run.controller.signal.aborted)) {
      outcome = "stopped";
    } else if (err instanceof HttpError) {
      showError("request", describeHttpError(err));
    } else if (err.name === "TypeError") {
      showError("request", `Network error: the root service at ${location.origin} could not be reached (${err.message}).`);
    } else {
      showError("request", `The reply failed: ${err.message || err}`);
    }
  } finally {
    finishRun(run, outcome);
  }
}

function describeHttpError(err) {
  if (err.status === 0) return `The server reported an error: ${err.message}`;
  if (err.status === 503) return `The cluster is not ready (503): ${err.message}`;
  if (err.status >= 500) return `The server failed (${err.status}): ${err.message}`;
  return `The server refused the request (${err.status}): ${err.message}`;
}

function onStreamEvent(run, name, data) {
  if (name === "start") {
    setRequestId(run, data && data.request_id);
    if (data && isNum(data.prompt_tokens)) run.promptTokens = data.prompt_tokens;
  } else if (name === "token") {
    const text = data && typeof data.text === "string" ? data.text : "";
    run.tokens += 1;
    appendText(run, text);
  } else if (name === "done") {
    run.final = data;
  } else if (name === "error") {
    run.serverError = data && data.message ? String(data.message) : String(data);
  }
  updateLiveStatus(run);
}

function setRequestId(run, id) {
  if (!id || run.requestId) return;
  run.requestId = String(id);
  $("reply").dataset.requestId = run.requestId;
  if (run.stopRequested) sendCancel(run);  // Stop was pressed before the id was known
}

function appendText(run, text) {
  if (!text) return;
  const reply = $("reply");
  const atBottom = reply.scrollHeight - reply.scrollTop - reply.clientHeight < 24;
  run.text += text;
  run.textNode.appendData(text);
  if (atBottom) reply.scrollTop = reply.scrollHeight;
}

function resetReply(run) {
  const reply = $("reply");
  reply.replaceChildren(run.textNode);
  reply.dataset.state = "streaming";
  reply.dataset.run = String(run.number);  // lets a test tell this run's end from the previous one's
  reply.setAttribute("aria-busy", "true");
  delete reply.dataset.requestId;
  delete reply.dataset.finishReason;
  renderMetrics(null);
  $("timeline").replaceChildren(el("p", { class: "empty", text: "Waiting for the reply to finish…" }));
  $("reply-status").textContent = "Sending…";
  run.ticker = setInterval(() => updateLiveStatus(run), 250);
}

function updateLiveStatus(run) {
  if (state.run !== run) return;
  const seconds = ((performance.now() - run.t0) / 1000).toFixed(1);
  const what = run.stopRequested ? "Stopping" : "Generating";
  const tokens = `${run.tokens} token${run.tokens === 1 ? "" : "s"}`;
  $("reply-status").textContent = `${what}… ${tokens}, ${seconds} s`;
}

function setBusy(busy) {
  const send = $("send");
  const stop = $("stop");
  const stopHadFocus = document.activeElement === stop;
  send.disabled = busy;
  send.textContent = busy ? "Generating…" : "Send";
  stop.hidden = !busy;
  stop.disabled = false;
  if (!busy && stopHadFocus) $("prompt").focus();  // never leave focus on a hidden button
}

function finishRun(run, outcome) {
  clearInterval(run.ticker);
  clearTimeout(run.graceTimer);
  if (state.run === run) state.run = null;
  const reply = $("reply");
  reply.dataset.state = outcome;
  reply.setAttribute("aria-busy", "false");
  const final = run.final;
  const finish = final ? final.finish_reason : outcome === "stopped" ? "cancelled" : "error";
  reply.dataset.finishReason = finish;

  const seconds = ((performance.now() - run.t0) / 1000).toFixed(1);
  const tokens = final && final.metrics && isNum(final.metrics.completion_tokens) ? final.metrics.completion_tokens : run.tokens;
  if (reply.dataset.state === "stopped") {
    $("reply-status").textContent = `Stopped after ${tokens} token${tokens === 1 ? "" : "s"} (${seconds} s).`;
  } else if (reply.dataset.state === "done") {
    const why = finish === "length" ? "reached max tokens" : finish === "stop" ? "the model stopped" : finish;
    $("reply-status").textContent = `Done: ${tokens} token${tokens === 1 ? "" : "s"}, ${why}.`;
  } else {
    $("reply-status").textContent = "Failed: see the message at the top of the page.";
  }
  if (!run.text && reply.dataset.state !== "done") {
    reply.replaceChildren(el("span", { class: "empty", text: reply.dataset.state === "stopped" ? "(stopped before the first token)" : "(no reply)" }));
  }

  if (final && final.metrics) {
    renderMetrics(final.metrics);
    renderTimeline(final.metrics);
  } else {
    $("timeline").replaceChildren(el("p", { class: "empty", text: "No timings: the server sent no final metrics for this reply." }));
  }
  if (final || outcome === "stopped") addHistory(historyRecord(run, finish));
  setBusy(false);
}

// Stop: cancel on the server, give it STOP_GRACE_MS to send `done` (with metrics), then abort the fetch.
function stopGeneration() {
  const run = state.run;
  if (!run || run.stopRequested) return;
  run.stopRequested = true;
  $("stop").disabled = true;
  updateLiveStatus(run);
  run.graceTimer = setTimeout(() => run.controller.abort(), STOP_GRACE_MS);
  if (run.requestId) sendCancel(run);
}

async function sendCancel(run) {
  if (run.cancelSent) return;
  run.cancelSent = true;
  const url = `/api/requests/${encodeURIComponent(run.requestId)}/cancel`;
  try {
    const resp = await fetchWithTimeout(url, { method: "POST" }, CANCEL_TIMEOUT_MS);
    // 404: the request already finished; the stream is ending on its own.
    if (!resp.ok && resp.status !== 404) {
      showError("request", `Stop: the server could not cancel the request (${resp.status}): ${await errorMessage(resp)}`);
    }
  } catch (err) {
    showError("request", `Stop: the cancel request failed (${err.message}); the reply was cut off in the page only.`);
    run.controller.abort();
  }
}

// ---------------------------------------------------------------------------------------------
// Metrics and the per-stage timeline

function metricValue(metrics, key) {
  if (!metrics) return null;
  const itl = key.match(/^itl_(p\d+)_ms$/);
  if (itl) return metrics.itl_ms ? metrics.itl_ms[itl[1]] : null;
  return metrics[key];
}

function buildMetrics() {
  const box = $("metrics");
  const item = ([key, label, unit, digits], secondary) => el("div", { class: secondary ? "metric secondary" : "metric" },
    el("dt", { text: unit ? `${label} (${unit})` : label }),
    el("dd", { "data-metric": key, "data-digits": String(digits), text: "—" }));
  box.replaceChildren(...MAIN_METRICS.map((m) => item(m, false)), ...MORE_METRICS.map((m) => item(m, true)));
}

function renderMetrics(metrics) {
  for (const dd of $("metrics").querySelectorAll("[data-metric]")) {
    const value = metricValue(metrics, dd.dataset.metric);
    dd.textContent = fmt(value, Number(dd.dataset.digits));
    if (isNum(value)) dd.dataset.value = String(value);
    else delete dd.dataset.value;
  }
}

// Rows of the timeline: one per worker (its incoming link, then its compute), the link back to the
// root, and what is left of TTLT (the root's own work: tokenizer, embedding, sampling, queueing).
function timelineRows(metrics) {
  const rows = [];
  const stages = Array.isArray(metrics.stages) ? metrics.stages : [];
  stages.forEach((stage, i) => {
    const link = stage.link_in || {};
    rows.push({
      key: `worker-${i + 1}`,
      label: stage.name || `worker ${i + 1}`,
      sub: fmtLayers(stage.layers),
      parts: { injected: link.injected_ms, transport: link.transport_ms, compute: stage.compute_ms },
    });
  });
  const out = metrics.link_out || null;
  if (out) {
    rows.push({ key: "link-out", label: "link back to root", sub: "",
                parts: { injected: out.injected_ms, transport: out.transport_ms } });
  }
  const accounted = rows.reduce((sum, row) => sum + Object.values(row.parts).reduce((a, b) => a + (isNum(b) ? b : 0), 0), 0);
  if (isNum(metrics.ttlt_ms) && metrics.ttlt_ms - accounted > 0.05) {
    rows.push({ key: "root", label: "root and the rest", sub: "", parts: { other: metrics.ttlt_ms - accounted } });
  }
  return rows;
}

function renderTimeline(metrics) {
  const box = $("timeline");
  const rows = timelineRows(metrics);
  if (rows.length === 0) {
    box.replaceChildren(el("p", { class: "empty", text: "The server sent no per-stage timings." }));
    return;
  }
  const totalOf = (parts) => Object.values(parts).reduce((a, b) => a + (isNum(b) ? b : 0), 0);
  const scale = Math.max(...rows.map((row) => totalOf(row.parts)), 1e-9);

  // Whole-request split, the one line a reader needs first.
  const sums = { injected: 0, transport: 0, compute: 0, other: 0 };
  for (const row of rows) for (const [kind, ms] of Object.entries(row.parts)) if (isNum(ms)) sums[kind] += ms;
  const grand = Object.values(sums).reduce((a, b) => a + b, 0) || 1;
  const summary = el("p", { class: "timeline-summary" },
    "Of the whole reply: ",
    ...SEGMENTS.filter(([kind]) => sums[kind] > 0).flatMap(([kind, label], i, all) => [
      el("span", { class: `swatch seg-${kind}`, "aria-hidden": "true" }),
      `${label.toLowerCase()} ${(100 * sums[kind] / grand).toFixed(0)}% (${fmt(sums[kind], 0)} ms)`,
      i < all.length - 1 ? " · " : ".",
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
      el("span", { class: "stage-total", text: `${fmt(total, 1)} ms` })));
  }

  const legend = el("ul", { class: "legend", "aria-label": "Legend" },
    ...SEGMENTS.map(([kind, label]) => el("li", {}, el("span", { class: `swatch seg-${kind}`, "aria-hidden": "true" }), label)));
  const note = el("p", { class: "hint", text: "Totals over the whole reply (all tokens), on one scale; hover a segment for its value." });
  box.replaceChildren(summary, list, legend, note);
}

// ---------------------------------------------------------------------------------------------
// History of this session's runs: table, chart, CSV and JSON export

function historyRecord(run, finish) {
  const m = (run.final && run.final.metrics) || {};
  const body = run.body;
  const itl = m.itl_ms || {};
  return {
    run: run.number,
    started_at: run.startedAt.toISOString(),
    request_id: (run.final && run.final.request_id) || run.requestId,
    mode: body.chat ? "chat" : "raw",
    max_tokens: body.max_tokens,
    temperature: body.temperature ?? null,
    top_p: body.top_p ?? null,
    top_k: body.top_k ?? null,
    seed: body.seed ?? null,
    finish_reason: finish,
    prompt_tokens: m.prompt_tokens ?? run.promptTokens,
    completion_tokens: m.completion_tokens ?? run.tokens,
    ttft_ms: m.ttft_ms ?? null,
    ttlt_ms: m.ttlt_ms ?? null,
    tpot_ms: m.tpot_ms ?? null,
    decode_tok_s: m.decode_tok_s ?? null,
    prefill_tok_s: m.prefill_tok_s ?? null,
    itl_p50_ms: itl.p50 ?? null,
    itl_p90_ms: itl.p90 ?? null,
    itl_p99_ms: itl.p99 ?? null,
    injected_latency_ms: m.injected_latency_ms ?? null,
    transport_ms: m.transport_ms ?? null,
    compute_ms: m.compute_ms ?? null,
    prompt: body.prompt,
    text: run.text,
    metrics: run.final ? run.final.metrics : null,  // the full object (stages, containers) for the JSON export
  };
}

function addHistory(record) {
  state.history.push(record);
  saveHistory();
  renderHistory();
}

function saveHistory() {
  try { sessionStorage.setItem(HISTORY_KEY, JSON.stringify(state.history)); } catch (_) { /* storage full or off: keep it in memory */ }
}

function loadHistory() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(HISTORY_KEY) || "[]");
    if (Array.isArray(saved)) state.history = saved;
  } catch (_) { state.history = []; }
  state.runCounter = state.history.reduce((n, r) => Math.max(n, r.run || 0), 0);
}

function buildHistoryHead() {
  $("history").tHead.replaceChildren(el("tr", {},
    ...HISTORY_COLUMNS.map(([key, header]) => el("th", { scope: "col", "data-col": key, text: header }))));
}

function renderHistory() {
  const rows = state.history.map((record) => el("tr", { "data-run": String(record.run) },
    ...HISTORY_COLUMNS.map(([key, , digits]) => {
      const value = record[key];
      if (key === "prompt") {
        const text = String(value || "");
        return el("td", { class: "prompt-cell", title: text, text: text.length > 28 ? `${text.slice(0, 27)}…` : text });
      }
      if (digits === null) return el("td", { text: value ?? "—" });
      return el("td", { class: "num", text: fmt(value, digits) });
    })));
  $("history").tBodies[0].replaceChildren(...rows);
  const empty = state.history.length === 0;
  $("history-empty").hidden = !empty;
  for (const id of ["export-csv", "export-json", "clear-history"]) $(id).disabled = empty;
  drawHistoryChart();
}

function csvCell(value) {
  if (value === null || value === undefined) return "";
  let text = String(value);
  // A prompt typed as "=1+1" must not run as a formula in a spreadsheet.
  if (typeof value === "string" && /^[=+\-@]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function historyCsv() {
  const lines = [CSV_COLUMNS.join(",")];
  for (const record of state.history) lines.push(CSV_COLUMNS.map((key) => csvCell(record[key])).join(","));
  return `${lines.join("\r\n")}\r\n`;
}

function download(filename, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = el("a", { href: url, download: filename });
  link.style.display = "none";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function exportName(ext) {
  return `ddllm-runs-${new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19)}.${ext}`;
}

// ---------------------------------------------------------------------------------------------
// Canvas drawing (hand-made: no chart library)

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

// Sizes the canvas backing store to its CSS box and the screen's pixel ratio; returns a context in CSS px.
function prepareCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth));
  const height = Math.max(1, Math.round(canvas.clientHeight));
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return { ctx, width, height };
}

function niceCeil(x) {
  if (!(x > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(x));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= x) return step * power;
  return 10 * power;
}

function drawSparkline(canvas, values, ceiling, color) {
  const { ctx, width, height } = prepareCanvas(canvas);
  ctx.strokeStyle = cssVar("--grid");
  ctx.lineWidth = 1;
  ctx.strokeRect(0.5, 0.5, width - 1, height - 1);
  if (values.length === 0) return;
  const top = Math.max(ceiling || 0, ...values) || 1;
  const step = (width - 2) / (SPARK_SAMPLES - 1);
  const x0 = width - 1 - step * (values.length - 1);
  const y = (v) => height - 1.5 - (height - 3) * Math.max(0, v) / top;
  ctx.beginPath();
  values.forEach((v, i) => (i === 0 ? ctx.moveTo(x0, y(v)) : ctx.lineTo(x0 + step * i, y(v))));
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.5;
  ctx.stroke();
  ctx.lineTo(x0 + step * (values.length - 1), height - 1);
  ctx.lineTo(x0, height - 1);
  ctx.closePath();
  ctx.globalAlpha = 0.18;
  ctx.fillStyle = color;
  ctx.fill();
  ctx.globalAlpha = 1;
}

function drawHistoryChart() {
  const canvas = $("history-chart");
  const { ctx, width, height } = prepareCanvas(canvas);
  const text = cssVar("--muted");
  const font = getComputedStyle(document.body).fontFamily;
  ctx.font = `12px ${font}`;
  ctx.fillStyle = text;
  const runs = state.history;
  if (runs.length === 0) {
    ctx.textAlign = "center";
    ctx.fillText("TTFT and TTLT of every run will be drawn here.", width / 2, height / 2);
    return;
  }
  const series = [["ttft_ms", "TTFT", cssVar("--ttft")], ["ttlt_ms", "TTLT", cssVar("--ttlt")]];
  const values = runs.flatMap((r) => series.map(([key]) => r[key])).filter(isNum);
  const top = niceCeil(Math.max(...values, 1));
  const pad = { left: 56, right: 14, top: 26, bottom: 28 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const x = (i) => pad.left + (runs.length === 1 ? plotW / 2 : (plotW * i) / (runs.length - 1));
  const y = (v) => pad.top + plotH - (plotH * v) / top;

  // Grid and the ms axis.
  ctx.strokeStyle = cssVar("--grid");
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let k = 0; k <= 4; k += 1) {
    const v = (top * k) / 4;
    const yy = Math.round(y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(pad.left, yy);
    ctx.lineTo(width - pad.right, yy);
    ctx.stroke();
    ctx.fillText(`${top >= 10 ? v.toFixed(0) : v.toFixed(1)} ms`, pad.left - 6, yy);
  }
  // Run numbers, thinned out when there are many runs.
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const every = Math.ceil(runs.length / Math.max(1, Math.floor(plotW / 36)));
  runs.forEach((r, i) => { if (i % every === 0 || i === runs.length - 1) ctx.fillText(`#${r.run}`, x(i), height - pad.bottom + 8); });

  // The two series, with a dot per run (a lone run is a dot).
  for (const [key, , color] of series) {
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let drawing = false;
    runs.forEach((r, i) => {
      if (!isNum(r[key])) { drawing = false; return; }
      if (drawing) ctx.lineTo(x(i), y(r[key])); else ctx.moveTo(x(i), y(r[key]));
      drawing = true;
    });
    ctx.stroke();
    runs.forEach((r, i) => {
      if (!isNum(r[key])) return;
      ctx.beginPath();
      ctx.arc(x(i), y(r[key]), 3, 0, 2 * Math.PI);
      ctx.fill();
    });
  }
  // Legend.
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  let lx = pad.left;
  for (const [, label, color] of series) {
    ctx.fillStyle = color;
    ctx.fillRect(lx, 9, 14, 4);
    ctx.fillStyle = text;
    ctx.fillText(label, lx + 19, 11);
    lx += 19 + ctx.measureText(label).width + 18;
  }
}

// ---------------------------------------------------------------------------------------------
// Side panel: cluster chain, container load, model — polled every second.

// The cluster's shape: when it changes (a different model or worker set), the panel is rebuilt.
function clusterShape(cluster) {
  return JSON.stringify((cluster.workers || []).map((w) => [w.name, w.layers, w.threads, w.memory_limit_bytes,
    w.estimate && w.estimate.total_bytes]));
}

function nodeEntry(key, title, sub, meta) {
  return el("li", { class: "node", "data-node": key, "data-status": "unknown" },
    el("div", { class: "node-head" },
      el("strong", { class: "node-name", text: title }),
      sub ? el("span", { class: "node-layers", text: sub }) : null,
      el("span", { class: "status", text: "…" })),
    el("p", { class: "node-meta", text: meta }),
    el("div", { class: "node-stat" },
      el("span", { class: "stat-label", text: "CPU" }),
      el("span", { class: "cpu", text: "—" }),
      el("canvas", { class: "spark cpu-spark", role: "img", "aria-label": `${title} CPU over the last minute` })),
    el("div", { class: "node-stat" },
      el("span", { class: "stat-label", text: "Mem" }),
      el("span", { class: "mem", text: "—" }),
      el("canvas", { class: "spark mem-spark", role: "img", "aria-label": `${title} memory over the last minute` })),
    el("p", { class: "node-error", hidden: true }));
}

function workerMeta(w) {
  const parts = [plural(w.threads, "thread")];
  if (isNum(w.memory_limit_bytes)) parts.push(`limit ${fmtBytes(w.memory_limit_bytes)}`);
  const est = w.estimate;
  if (est && isNum(est.total_bytes)) {
    parts.push(`needs ≈ ${fmtBytes(est.total_bytes)} (weights ${fmtBytes(est.weight_bytes)} + KV ${fmtBytes(est.kv_bytes)})`);
  }
  parts.push(w.url || "");
  return parts.join(" · ");
}

function buildClusterPanel(cluster) {
  const workers = cluster.workers || [];
  const lat = cluster.latency || {};
  const linkText = isNum(lat.min_ms) ? `link: ${fmt(lat.min_ms, 0)}–${fmt(lat.max_ms, 0)} ms injected` : "link";
  const items = [nodeEntry("root", "root", "", `tokenizer, embedding, sampling · ${plural(cluster.threads_root, "thread")}`)];
  // Idle workers (placement "fit") hold no layers and are not on the chain: listed after it.
  workers.forEach((w, i) => {
    if (w.idle) return;
    items.push(el("li", { class: "link", "aria-hidden": "true", text: `↓ ${linkText}` }));
    items.push(nodeEntry(`worker-${i + 1}`, w.name || `worker ${i + 1}`, fmtLayers(w.layers), workerMeta(w)));
  });
  items.push(el("li", { class: "link", "aria-hidden": "true", text: `↩ back to root · ${linkText}` }));
  workers.forEach((w, i) => {
    if (w.idle) items.push(nodeEntry(`worker-${i + 1}`, w.name || `worker ${i + 1}`, "idle: no layers", workerMeta(w)));
  });
  $("cluster").replaceChildren(...items);
  // The sparklines keep their history across a rebuild when the node keys stay.
  for (const key of [...state.series.keys()]) if (!$("cluster").querySelector(`[data-node="${key}"]`)) state.series.delete(key);
}

function setNodeStatus(key, status, error) {
  const node = $("cluster").querySelector(`[data-node="${key}"]`);
  if (!node) return;
  node.dataset.status = status;
  node.querySelector(".status").textContent = status;
  const note = node.querySelector(".node-error");
  note.textContent = error || "";
  note.hidden = !error;
}

function renderCluster(cluster, healthy, healthReason) {
  state.cluster = cluster;
  const shape = clusterShape(cluster);
  if (shape !== state.clusterKey) {
    state.clusterKey = shape;
    buildClusterPanel(cluster);
  }
  setNodeStatus("root", healthy ? "ready" : "loading", healthy ? "" : healthReason);
  (cluster.workers || []).forEach((w, i) => setNodeStatus(`worker-${i + 1}`, w.status || "unknown", w.error || ""));
  $("synthetic-banner").hidden = !(cluster.model && cluster.model.synthetic);
  renderModelInfo(cluster);
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

function renderModelInfo(cluster) {
  const m = cluster.model || {};
  const lat = cluster.latency || {};
  const threads = (cluster.workers || []).map((w) => w.threads).filter(isNum);
  const rows = [
    ["Model", `${m.name || "?"}${m.synthetic ? " (synthetic)" : ""}`],
    ["Path", m.path || "—"],
    ["Dtype", m.dtype || "—"],
    ["Layers", m.n_layers ?? "—"],
    ["Hidden size", m.hidden_size ?? "—"],
    ["Vocabulary", m.vocab_size ?? "—"],
    ["Threads", `root ${cluster.threads_root ?? "?"}${threads.length ? `, workers ${threads.join(", ")}` : ""}`],
    ["Link latency", latencyText(lat)],
  ];
  if (isNum(lat.bandwidth_mbps) && lat.bandwidth_mbps > 0) rows.push(["Link bandwidth", `${fmt(lat.bandwidth_mbps, 1)} Mbit/s`]);
  if (isNum(lat.loss) && lat.loss > 0) rows.push(["Packet loss", `${fmt(100 * lat.loss, 1)}%`]);
  const box = $("model-info");
  const next = rows.map(([k, v]) => `${k}\u0000${v}`).join("\u0001");
  if (box.dataset.rendered === next) return;  // unchanged: leave the DOM alone
  box.dataset.rendered = next;
  box.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
}

// Which node of the chain a stats container is: by role for the root; by name, then by the URL's
// host, then by order for the workers (container names are e.g. "worker-1" or "project-worker1-1").
function matchContainers(containers, workers) {
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

function renderStats(stats) {
  if (stats.time !== undefined && stats.time === state.statsTime) return;  // the same sample again
  state.statsTime = stats.time;
  state.statsSamples += 1;
  $("stats-samples").textContent = String(state.statsSamples);
  $("stats-source").textContent = `stats: ${stats.source || "?"}`;
  const workers = (state.cluster && state.cluster.workers) || [];
  const byNode = matchContainers(stats.containers || [], workers);
  for (const node of $("cluster").querySelectorAll(".node")) {
    const key = node.dataset.node;
    const c = byNode.get(key);
    const series = state.series.get(key) || { cpu: [], mem: [] };
    state.series.set(key, series);
    if (!c) {
      node.querySelector(".cpu").textContent = "no stats";
      node.querySelector(".mem").textContent = "no stats";
      continue;
    }
    series.cpu.push(isNum(c.cpu_percent) ? c.cpu_percent : 0);
    series.mem.push(isNum(c.mem_bytes) ? c.mem_bytes : 0);
    if (series.cpu.length > SPARK_SAMPLES) series.cpu.shift();
    if (series.mem.length > SPARK_SAMPLES) series.mem.shift();
    node.dataset.container = c.name;
    node.dataset.cpu = String(c.cpu_percent);
    node.dataset.mem = String(c.mem_bytes);
    node.dataset.samples = String(series.cpu.length);
    // cpu_percent: 100 = one core busy. cpu_limit_percent: the same load as a share of the container's
    // CPU limit (cpu_limit_cores), null without a limit.
    const cores = isNum(c.cpu_limit_cores) && c.cpu_limit_cores > 0 ? c.cpu_limit_cores : null;
    const share = isNum(c.cpu_limit_percent) ? c.cpu_limit_percent : cores ? c.cpu_percent / cores : null;
    let cpuText = `${fmt(c.cpu_percent, 0)}%`;
    if (cores === 1) cpuText += " of 1 core";
    else if (cores) cpuText += ` (${fmt(share, 0)}% of ${fmt(cores, cores % 1 ? 1 : 0)} cores)`;
    node.querySelector(".cpu").textContent = cpuText;
    node.querySelector(".cpu").title = "100% = one core fully busy";
    const memLimit = isNum(c.mem_limit_bytes) && c.mem_limit_bytes > 0 ? c.mem_limit_bytes : null;
    const idx = key.startsWith("worker-") ? Number(key.slice(7)) - 1 : -1;
    const est = idx >= 0 && workers[idx] && workers[idx].estimate;
    const estText = est && isNum(est.total_bytes) ? ` · est. ${fmtBytes(est.total_bytes)}` : "";
    node.querySelector(".mem").textContent = `${fmtBytes(c.mem_bytes)}${memLimit ? ` of ${fmtBytes(memLimit)}` : ""}${estText}`;
    drawSparkline(node.querySelector(".cpu-spark"), series.cpu, 100 * (cores || 1), cssVar("--cpu"));
    // Memory is scaled to its own peak (+25%): against the limit a slice's few MiB would be a flat line.
    drawSparkline(node.querySelector(".mem-spark"), series.mem, 1.25 * Math.max(...series.mem), cssVar("--mem"));
  }
}

function renderHealth(kind, text) {
  const health = $("health");
  health.dataset.state = kind;
  if (health.textContent !== text) health.textContent = text;
}

async function getJson(url) {
  const resp = await fetchWithTimeout(url);
  let body = null;
  try { body = await resp.json(); } catch (_) { /* not JSON: body stays null */ }
  return { status: resp.status, ok: resp.ok, body };
}

async function pollOnce() {
  const [health, cluster, stats] = await Promise.allSettled([getJson("/healthz"), getJson("/api/cluster"), getJson("/api/stats")]);
  const reached = [health, cluster, stats].filter((r) => r.status === "fulfilled");
  if (reached.length === 0) {
    const why = health.reason && health.reason.name === "AbortError" ? "no answer in time" : "network error";
    showError("cluster", `Cannot reach the root service at ${location.origin} (${why}). Retrying every second.`);
    renderHealth("down", "Root service unreachable");
    for (const node of $("cluster").querySelectorAll(".node")) setNodeStatus(node.dataset.node, "unreachable", "");
    return;
  }

  const h = health.status === "fulfilled" ? health.value : null;
  const healthy = h ? h.status === 200 : false;
  const c = cluster.status === "fulfilled" && cluster.value.ok ? cluster.value.body : null;
  const loadingReason = (h && h.body && h.body.reason) || (c && c.reason) || "";
  const problems = [];
  if (h && h.status === 503) problems.push(`The cluster is still loading${loadingReason ? `: ${loadingReason}` : "."}`);
  else if (h && !h.ok) problems.push(`The health check failed (${h.status})${loadingReason ? `: ${loadingReason}` : "."}`);
  if (c) {
    renderCluster(c, healthy, loadingReason);
    for (const w of c.workers || []) {
      if (w.status === "down") problems.push(`${w.name} is down${w.error ? `: ${w.error}` : "."}`);
    }
  } else if (cluster.status === "fulfilled") {
    problems.push(`The cluster description is unavailable (${cluster.value.status}).`);
  }
  if (stats.status === "fulfilled" && stats.value.ok && stats.value.body) renderStats(stats.value.body);

  if (problems.length) showError("cluster", problems.join(" "));
  else clearError("cluster");
  if (healthy) renderHealth("ok", c && c.model ? `Ready · ${c.model.name} on ${(c.workers || []).length} workers` : "Ready");
  else if (h && h.status === 503) renderHealth("loading", "Loading…");
  else renderHealth("down", "Not ready");
}

function startPolling() {
  const tick = async () => {
    const started = performance.now();
    try { await pollOnce(); } catch (err) { showError("cluster", `The side panel failed to update: ${err.message}`); }
    setTimeout(tick, Math.max(0, POLL_INTERVAL_MS - (performance.now() - started)));
  };
  tick();
}

// ---------------------------------------------------------------------------------------------
// Wiring

function init() {
  buildMetrics();
  buildHistoryHead();
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
  $("max-tokens").addEventListener("input", () => {
    if ($("max-tokens").getAttribute("aria-invalid")) { clearInvalid(); clearError("input"); }
  });
  $("stop").addEventListener("click", stopGeneration);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.run) stopGeneration();
  });
  $("export-csv").addEventListener("click", () => download(exportName("csv"), historyCsv(), "text/csv;charset=utf-8"));
  $("export-json").addEventListener("click", () =>
    download(exportName("json"), `${JSON.stringify(state.history, null, 2)}\n`, "application/json"));
  $("clear-history").addEventListener("click", () => {
    state.history = [];
    saveHistory();
    renderHistory();
  });
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(drawHistoryChart, 100);
  });
  startPolling();
}

init();
