// Reading a text/event-stream body (fetch + ReadableStream: EventSource cannot POST).

// Parses the body and calls onEvent(name, data) per event; data is JSON-decoded when it is JSON.
export async function readEventStream(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    // Normalise CR LF / CR to LF, but keep a trailing CR: its LF may be in the next chunk.
    const keep = buffer.endsWith("\r") ? 1 : 0;
    buffer = buffer.slice(0, buffer.length - keep).replace(/\r\n?/g, "\n") + buffer.slice(buffer.length - keep);
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      dispatch(buffer.slice(0, cut), onEvent);
      buffer = buffer.slice(cut + 2);
    }
  }
  buffer += decoder.decode();
  if (buffer.trim()) dispatch(buffer.replace(/\r\n?/g, "\n"), onEvent);
}

// One event block ("event: x\ndata: {...}") -> onEvent(name, data).
function dispatch(block, onEvent) {
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
}
