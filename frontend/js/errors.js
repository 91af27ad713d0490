// The error region #error: one line per source ("input", "request", "cluster").
import { $, el } from "./dom.js";

const errors = new Map();  // source -> message

export function showError(source, message) {
  if (errors.get(source) === message) return;  // unchanged: do not re-announce
  errors.set(source, message);
  render();
}

export function clearError(source) {
  if (!errors.has(source)) return;
  errors.delete(source);
  render();
}

function render() {
  $("error").replaceChildren(...[...errors].map(([source, message]) => el("p", { "data-source": source, text: message })));
}
