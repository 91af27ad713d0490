// Requests to the root: timeouts, error messages, JSON polling.

const POLL_TIMEOUT_MS = 2500;  // a poll slower than this is abandoned; the next one starts fresh

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// A fetch that gives up after `timeoutMs`, and also when `options.signal` aborts.
export async function fetchWithTimeout(url, options = {}, timeoutMs = POLL_TIMEOUT_MS) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const outer = options.signal;
  if (outer) outer.addEventListener("abort", () => controller.abort(), { once: true });
  try {
    return await fetch(url, { ...options, signal: controller.signal, cache: "no-store" });
  } finally {
    clearTimeout(timer);
  }
}

// The message of an error response: `{"error": {"message"}}` per docs/api.md, else the status line.
export async function errorMessage(resp) {
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

export async function getJson(url) {
  const resp = await fetchWithTimeout(url);
  let body = null;
  try { body = await resp.json(); } catch (_) { /* not JSON: body stays null */ }
  return { status: resp.status, ok: resp.ok, body };
}

export function describeHttpError(err) {
  if (err.status === 0) return `The server reported an error: ${err.message}`;
  if (err.status === 503) return `The cluster is not ready (503): ${err.message}`;
  if (err.status >= 500) return `The server failed (${err.status}): ${err.message}`;
  return `The server refused the request (${err.status}): ${err.message}`;
}
