// The prompt form: reading and checking it, and the prompt's token count before sending.
import { $, setText } from "./dom.js";
import { errorMessage, fetchWithTimeout } from "./http.js";
import { plural } from "./format.js";

const MAX_TOKENS_MIN = 1;  // docs/api.md: max_tokens is an int 1..1024; the server stays the authority
const MAX_TOKENS_MAX = 1024;
const TOKENIZE_DEBOUNCE_MS = 300;  // count once the typing pauses, not on every key
const TOKENIZE_TIMEOUT_MS = 3000;

// Reads and checks the form. Returns {body} or {error, field}. Only max tokens and the prompt are
// checked here; the other limits are the server's to enforce, and its 400 message is shown.
export function readForm() {
  const prompt = $("prompt").value;
  if (!prompt.trim()) return { error: "Type a prompt first.", field: $("prompt") };

  const maxInput = $("max-tokens");
  const raw = maxInput.value.trim();
  const range = `a whole number from ${MAX_TOKENS_MIN} to ${MAX_TOKENS_MAX}`;
  if (maxInput.validity.badInput) return { error: `Max tokens must be ${range}.`, field: maxInput };
  if (raw === "") return { error: `Max tokens is empty: it must be ${range}.`, field: maxInput };
  const maxTokens = Number(raw);
  if (!Number.isInteger(maxTokens) || maxTokens < MAX_TOKENS_MIN || maxTokens > MAX_TOKENS_MAX) {
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

export function markInvalid(field, message) {
  field.setAttribute("aria-invalid", "true");
  if (field.id === "max-tokens") {
    const note = $("max-tokens-error");
    note.textContent = message;
    note.hidden = false;
  }
}

export function clearInvalid() {
  for (const field of document.querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
  const note = $("max-tokens-error");
  note.textContent = "";
  note.hidden = true;
}

// #prompt-tokens: the prompt's length in the model's tokens (POST /api/tokenize), so prefill
// figures can be compared before sending. data-tokens holds the number, data-state the outcome.
let countTimer = null;
let countController = null;

export function scheduleTokenCount() {
  clearTimeout(countTimer);
  countTimer = setTimeout(countTokens, TOKENIZE_DEBOUNCE_MS);
}

async function countTokens() {
  const out = $("prompt-tokens");
  const prompt = $("prompt").value;
  if (countController) countController.abort();  // an older count must not land after this one
  if (prompt === "") {
    setCount(out, "idle", "", null);
    return;
  }
  const controller = new AbortController();
  countController = controller;
  out.dataset.state = "counting";
  try {
    const resp = await fetchWithTimeout("/api/tokenize", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt, chat: $("mode-chat").checked }),
      signal: controller.signal,
    }, TOKENIZE_TIMEOUT_MS);
    if (controller !== countController) return;
    if (resp.ok) {
      const n = (await resp.json()).prompt_tokens;
      setCount(out, "ok", `${plural(n, "token")}${$("mode-chat").checked ? " with the chat template" : ""}`, n);
    } else if (resp.status === 503) {
      setCount(out, "unavailable", "token count: the cluster is not ready", null);
    } else {
      // The server's reason goes in the tooltip: a 400 for a bad prompt is shown on sending anyway.
      setCount(out, "error", `token count unavailable (${resp.status})`, null);
      out.title = await errorMessage(resp);
    }
  } catch (err) {
    if (controller !== countController) return;
    setCount(out, "error", err.name === "AbortError" ? "token count: no answer in time" : "token count: network error", null);
  }
}

function setCount(out, state, text, tokens) {
  out.dataset.state = state;
  out.title = "";
  if (tokens === null) delete out.dataset.tokens; else out.dataset.tokens = String(tokens);
  setText(out, text);
}
