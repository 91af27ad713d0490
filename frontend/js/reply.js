// A generation: POST /api/generate streamed as SSE, shown token by token, with Stop, the notices of a
// worker that fails mid-reply (worker_down, recovered, error), and the metrics at the end.
import { $, el, setText } from "./dom.js";
import { fmt, fmtDuration, isNum, plural } from "./format.js";
import { HttpError, describeHttpError, errorMessage, fetchWithTimeout } from "./http.js";
import { readEventStream } from "./stream.js";
import { clearError, showError } from "./errors.js";
import { clearInvalid, markInvalid, readForm } from "./form.js";
import { METRICS, metricValue, shownFor } from "./metrics.js";
import { clearTimeline, renderTimeline } from "./timeline.js";
import { addHistory, historyRecord, lastRunNumber } from "./history.js";

const CANCEL_TIMEOUT_MS = 3000;  // the cancel POST must not keep the Stop click hanging
const STOP_GRACE_MS = 1500;      // after a cancel, wait this long for the server's `done` (it carries metrics)
const TICK_MS = 250;             // the live status line and the recovery countdown

let current = null;  // the run in flight, or null

export function isRunning() {
  return current !== null;
}

// ---------------------------------------------------------------------------------------------
// Metric tiles

export function buildMetrics() {
  const item = (m) => el("div", { class: m.tile === "main" ? "metric" : "metric secondary", hidden: Boolean(m.only) },
    el("dt", { text: m.unit ? `${m.label} (${m.unit})` : m.label }),
    el("dd", { "data-metric": m.key, "data-digits": String(m.digits), text: "—" }));
  const tiles = [...METRICS.filter((m) => m.tile === "main"), ...METRICS.filter((m) => m.tile === "more")];
  $("metrics").replaceChildren(...tiles.map(item));
}

function renderMetrics(metrics) {
  const parallelism = metrics ? metrics.parallelism : null;
  for (const dd of $("metrics").querySelectorAll("[data-metric]")) {
    dd.parentElement.hidden = !shownFor(dd.dataset.metric, parallelism);  // tensor-only tiles
    const value = metricValue(metrics, dd.dataset.metric);
    dd.textContent = fmt(value, Number(dd.dataset.digits));
    if (isNum(value)) dd.dataset.value = String(value);
    else delete dd.dataset.value;
  }
}

// ---------------------------------------------------------------------------------------------
// The notice under the reply's heading: a worker down (with the countdown), recovered, or the failure.

function showNotice(kind, text) {
  const box = $("reply-notice");
  box.dataset.kind = kind;
  setText(box, text);
  box.hidden = false;
}

function hideNotice() {
  const box = $("reply-notice");
  box.hidden = true;
  box.textContent = "";
  delete box.dataset.kind;
  delete box.dataset.worker;
  delete box.dataset.remainingS;
}

// "worker-2 is down: connection refused. The root waits up to 30 s for it to come back: 24 s left."
export function waitingText(waiting, nowMs) {
  const left = Math.max(0, Math.ceil(waiting.waitS - (nowMs - waiting.since) / 1000));
  const why = waiting.message && waiting.message !== `${waiting.worker} is down` ? ` (${waiting.message})` : "";
  const end = left > 0 ? `${left} s left` : "giving up";
  return { left, text: `${waiting.worker} is down${why}. The root is waiting up to ${fmt(waiting.waitS, 0)} s for it to come back, `
    + `then replays the reply: ${end}. ${plural(waiting.tokensSoFar, "token")} so far.` };
}

// "worker-3 restarted; replayed 8 tokens; 24 s waiting."
export function recoveredText(events) {
  return events.map((r) => `${r.worker} restarted; replayed ${plural(r.replayed_tokens, "token")}; ${fmtDuration(r.waited_ms)} waiting.`).join(" ");
}

function renderWaiting(run) {
  if (!run.waiting) return;
  const { left, text } = waitingText(run.waiting, performance.now());
  showNotice("worker-down", text);
  const box = $("reply-notice");
  box.dataset.worker = run.waiting.worker;
  box.dataset.remainingS = String(left);
}

// ---------------------------------------------------------------------------------------------
// The run

export async function startGeneration() {
  if (current) return;
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

  const run = {
    number: Math.max(lastRunNumber(), Number($("reply").dataset.run || 0)) + 1,
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
    failure: null,      // the `error` event's object: {message, worker, partial}
    waiting: null,      // after `worker_down`: {worker, message, waitS, since, tokensSoFar}
    recovered: [],      // the `recovered` events
    textNode: document.createTextNode(""),
    ticker: null,
  };
  current = run;
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
    if (run.final) {
      outcome = run.final.finish_reason === "cancelled" || run.stopRequested ? "stopped" : "done";
    } else if (run.failure) {
      // Said in the reply's notice, beside what it kept; #error keeps to the cluster's present state,
      // so the same down worker is not announced twice.
      outcome = "error";
    } else if (run.stopRequested) {
      outcome = "stopped";
    } else {
      throw new HttpError(0, "The reply stream ended before the reply was complete (did the root restart?).");
    }
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

function onStreamEvent(run, name, data) {
  const d = data && typeof data === "object" ? data : {};
  if (name === "start") {
    setRequestId(run, d.request_id);
    if (isNum(d.prompt_tokens)) run.promptTokens = d.prompt_tokens;
  } else if (name === "token") {
    run.tokens += 1;
    $("reply").dataset.tokens = String(run.tokens);
    appendText(run, typeof d.text === "string" ? d.text : "");
    if (run.waiting) { run.waiting = null; hideNotice(); }  // tokens flow again
  } else if (name === "worker_down") {
    run.waiting = { worker: String(d.worker || "a worker"), message: d.message ? String(d.message) : "",
                    waitS: isNum(d.wait_s) ? d.wait_s : 0, since: performance.now(),
                    tokensSoFar: isNum(d.tokens_so_far) ? d.tokens_so_far : run.tokens };
    renderWaiting(run);
  } else if (name === "recovered") {
    run.waiting = null;
    run.recovered.push(d);
    showNotice("recovered", recoveredText(run.recovered));
  } else if (name === "done") {
    run.final = d;
  } else if (name === "error") {
    run.failure = { message: d.message ? String(d.message) : String(data), worker: d.worker || null, partial: d.partial || null };
    run.waiting = null;
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
  reply.dataset.tokens = "0";
  delete reply.dataset.requestId;
  delete reply.dataset.finishReason;
  hideNotice();
  renderMetrics(null);
  clearTimeline("Waiting for the reply to finish…");
  $("reply-status").textContent = "Sending…";
  run.ticker = setInterval(() => updateLiveStatus(run), TICK_MS);
}

function updateLiveStatus(run) {
  if (current !== run) return;
  const seconds = ((performance.now() - run.t0) / 1000).toFixed(1);
  const what = run.stopRequested ? "Stopping" : run.waiting ? `Waiting for ${run.waiting.worker}` : "Generating";
  setText($("reply-status"), `${what}… ${plural(run.tokens, "token")}, ${seconds} s`);
  renderWaiting(run);
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

// The reply's end, however it came: metrics, timeline and a history record from what the server sent
// (`done`, or a failed reply's `error.partial`).
function finishRun(run, outcome) {
  clearInterval(run.ticker);
  clearTimeout(run.graceTimer);
  if (current === run) current = null;
  const reply = $("reply");
  reply.dataset.state = outcome;
  reply.setAttribute("aria-busy", "false");
  const final = run.final;
  const partial = run.failure && run.failure.partial;
  const metrics = (final && final.metrics) || (partial && partial.metrics) || null;
  const finish = final ? final.finish_reason : outcome === "stopped" ? "cancelled" : "error";
  reply.dataset.finishReason = finish;

  const seconds = ((performance.now() - run.t0) / 1000).toFixed(1);
  const tokens = metrics && isNum(metrics.completion_tokens) ? metrics.completion_tokens : run.tokens;
  const recoveries = metrics && isNum(metrics.recoveries) ? metrics.recoveries : run.recovered.length;
  const waited = metrics && isNum(metrics.recovery_wait_ms) ? metrics.recovery_wait_ms : null;
  const recoveryNote = recoveries > 0
    ? ` Recovered from ${plural(recoveries, "worker failure")}${isNum(waited) ? ` (${fmtDuration(waited)} waiting)` : ""}.` : "";
  if (outcome === "stopped") {
    $("reply-status").textContent = `Stopped after ${plural(tokens, "token")} (${seconds} s).`;
  } else if (outcome === "done") {
    const why = finish === "length" ? "reached max tokens" : finish === "stop" ? "the model stopped" : finish;
    $("reply-status").textContent = `Done: ${plural(tokens, "token")}, ${why}.${recoveryNote}`;
  } else if (run.failure) {
    $("reply-status").textContent = `Failed after ${plural(tokens, "token")} (${seconds} s).`;
    showNotice("failed", `${run.failure.message.replace(/\.$/, "")}. The reply stopped here; its ${plural(tokens, "token")}`
      + `${metrics ? " and the timings so far are" : " are"} kept below and in the history (finish "error").`);
  } else {
    $("reply-status").textContent = "Failed: see the message at the top of the page.";
  }
  if (run.recovered.length && outcome !== "error") showNotice("recovered", recoveredText(run.recovered));
  else if (!run.recovered.length && recoveries > 0 && outcome === "done") {
    showNotice("recovered", `Recovered from ${plural(recoveries, "worker failure")}${isNum(waited) ? `; ${fmtDuration(waited)} waiting` : ""}.`);
  }
  if (!run.text && outcome !== "done") {
    reply.replaceChildren(el("span", { class: "empty", text: outcome === "stopped" ? "(stopped before the first token)" : "(no reply)" }));
  }

  if (metrics) {
    renderMetrics(metrics);
    renderTimeline(metrics);
  } else {
    if (!run.failure) renderMetrics(null);
    clearTimeline("No timings: the server sent no final metrics for this reply.");
  }
  if (final || outcome === "stopped" || run.failure) addHistory(historyRecord(run, finish, metrics));
  setBusy(false);
}

// Stop: cancel on the server, give it STOP_GRACE_MS to send `done` (with metrics), then abort the fetch.
export function stopGeneration() {
  const run = current;
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
