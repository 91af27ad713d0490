// DOM helpers shared by every module of the page.

export const $ = (id) => document.getElementById(id);

// el("td", {class: "num", "data-col": "ttft_ms", text: "12.0"}, ...children)
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role" || key === "title" ||
             key === "id" || key === "scope" || key === "hidden" || key === "type") node.setAttribute(key, value === true ? "" : value);
    else node[key] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// Sets textContent only when it changes: live regions are not re-announced, mutation logs stay short.
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

export function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}
