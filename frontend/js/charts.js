// Hand-drawn charts on a canvas (no chart library). Tick labels are DOM elements laid over the
// canvas, not canvas text: they are measured before the plot is sized, so a label is never cut,
// and a test can read and measure them like any other text.
import { cssVar, el } from "./dom.js";
import { isNum } from "./format.js";

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

const clamp = (x, lo, hi) => Math.min(Math.max(x, lo), Math.max(lo, hi));

// Draws a chart into `wrap` (a .chart element holding one canvas).
// spec: {
//   yAxis: {top, ticks: [{value, text}]}            (from axes.js)
//   xTicks: [{at, text}]                             at: 0..1 along the plot
//   series: [{color, points: [{at, value, hollow}], fill}]   value null: a gap in the line
//   empty: text shown when there is no point at all
// }
export function renderChart(wrap, spec) {
  const canvas = wrap.querySelector("canvas");
  for (const old of wrap.querySelectorAll(".tick, .chart-empty")) old.remove();
  const { ctx, width, height } = prepareCanvas(canvas);
  const hasPoints = spec.series.some((s) => s.points.some((p) => isNum(p.value)));
  if (!hasPoints) {
    if (spec.empty) wrap.append(el("p", { class: "chart-empty", text: spec.empty }));
    ctx.strokeStyle = cssVar("--grid");
    ctx.strokeRect(0.5, 0.5, width - 1, height - 1);
    wrap.dataset.top = "";
    return;
  }

  const yLabels = spec.yAxis.ticks.map((t) => el("span", { class: "tick", "data-axis": "y", "data-value": String(t.value), text: t.text }));
  const xLabels = (spec.xTicks || []).map((t) => el("span", { class: "tick", "data-axis": "x", text: t.text }));
  wrap.append(...yLabels, ...xLabels);
  const labelW = Math.max(0, ...yLabels.map((s) => s.offsetWidth));
  const labelH = Math.max(0, ...yLabels.map((s) => s.offsetHeight), ...xLabels.map((s) => s.offsetHeight));
  const pad = {
    left: Math.ceil(labelW) + 6,
    right: 6,
    top: Math.ceil(labelH / 2) + 1,
    bottom: xLabels.length ? labelH + 3 : Math.ceil(labelH / 2) + 1,
  };
  const plotW = Math.max(1, width - pad.left - pad.right);
  const plotH = Math.max(1, height - pad.top - pad.bottom);
  const top = spec.yAxis.top || 1;
  const x = (at) => pad.left + plotW * clamp(at, 0, 1);
  const y = (v) => pad.top + plotH - (plotH * Math.max(0, v)) / top;
  wrap.dataset.top = String(top);

  // Grid lines and their labels, right-aligned in the left margin.
  ctx.strokeStyle = cssVar("--grid");
  ctx.lineWidth = 1;
  spec.yAxis.ticks.forEach((t, i) => {
    const yy = Math.round(y(t.value)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(pad.left, yy);
    ctx.lineTo(width - pad.right, yy);
    ctx.stroke();
    const label = yLabels[i];
    label.style.left = `${pad.left - 4 - label.offsetWidth}px`;
    label.style.top = `${clamp(yy - label.offsetHeight / 2, 0, height - label.offsetHeight)}px`;
  });
  (spec.xTicks || []).forEach((t, i) => {
    const label = xLabels[i];
    // Kept right of the y labels' margin: "−60 s" under the plot's left edge, not under "0%".
    label.style.left = `${clamp(x(t.at) - label.offsetWidth / 2, pad.left, width - label.offsetWidth)}px`;
    label.style.top = `${height - label.offsetHeight}px`;
  });

  for (const s of spec.series) {
    ctx.strokeStyle = s.color;
    ctx.fillStyle = s.color;
    ctx.lineWidth = s.fill ? 1.5 : 2;
    ctx.beginPath();
    let drawing = false;
    let first = null;
    let last = null;
    for (const p of s.points) {
      if (!isNum(p.value)) { drawing = false; continue; }
      if (drawing) ctx.lineTo(x(p.at), y(p.value)); else ctx.moveTo(x(p.at), y(p.value));
      drawing = true;
      first = first ?? p;
      last = p;
    }
    ctx.stroke();
    if (s.fill && first && last) {
      ctx.lineTo(x(last.at), y(0));
      ctx.lineTo(x(first.at), y(0));
      ctx.closePath();
      ctx.globalAlpha = 0.18;
      ctx.fill();
      ctx.globalAlpha = 1;
      continue;
    }
    for (const p of s.points) {
      if (!isNum(p.value)) continue;
      ctx.beginPath();
      ctx.arc(x(p.at), y(p.value), 3, 0, 2 * Math.PI);
      if (p.hollow) { ctx.fillStyle = cssVar("--card"); ctx.fill(); ctx.stroke(); ctx.fillStyle = s.color; } else ctx.fill();
    }
  }
}
