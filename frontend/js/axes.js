// Chart axes: pure functions from the data's largest value to ticks whose labels read right at any
// magnitude. The unit is chosen to fit the numbers (a 136 s TTLT is drawn in minutes, not as
// "136000 ms"), the step is 1, 2, 2.5 or 5 times a power of ten, and every label is written whole.

const TIME_UNITS = [
  { suffix: "ms", ms: 1, below: 2_000 },        // under 2 s: milliseconds
  { suffix: "s", ms: 1_000, below: 180_000 },   // under 3 min: seconds
  { suffix: "min", ms: 60_000, below: Infinity },
];
const BYTE_UNITS = [["B", 1], ["KiB", 1024], ["MiB", 1024 ** 2], ["GiB", 1024 ** 3], ["TiB", 1024 ** 4]];

// The smallest step of the 1-2-2.5-5 series that is >= x.
export function niceStep(x) {
  if (!(x > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= x * (1 - 1e-9)) return m * power;
  return 10 * power;
}

// Decimals needed to write every multiple of `step` exactly (0.25 -> 2, 5 -> 0).
export function decimalsFor(step) {
  for (let d = 0; d <= 6; d += 1) {
    const scaled = step * 10 ** d;
    if (Math.abs(scaled - Math.round(scaled)) < 1e-6 * Math.max(1, scaled)) return d;
  }
  return 6;
}

// {top, ticks: [{value, text}]} from 0 to a top >= max in about `target` steps; `scale` converts a tick
// value to the caller's unit (data values are compared against value * scale).
export function niceAxis(max, suffix, target = 4, scale = 1) {
  const step = niceStep(max > 0 ? max / target : 1);
  const steps = Math.max(1, Math.ceil(max / step - 1e-9));
  const digits = decimalsFor(step);
  const ticks = [];
  for (let k = 0; k <= steps; k += 1) {
    const value = k * step;
    ticks.push({ value: value * scale, text: `${value.toFixed(digits)}${suffix ? ` ${suffix}` : ""}` });
  }
  return { top: steps * step * scale, ticks, suffix };
}

// A time axis for values in ms; tick values stay in ms, their texts are in the chosen unit.
export function timeAxis(maxMs, target = 4) {
  const unit = TIME_UNITS.find((u) => maxMs < u.below) || TIME_UNITS[TIME_UNITS.length - 1];
  return niceAxis(Math.max(maxMs, 0) / unit.ms, unit.suffix, target, unit.ms);
}

// A memory axis for values in bytes, in the binary unit the largest value reads in.
export function bytesAxis(maxBytes, target = 2) {
  let unit = BYTE_UNITS[0];
  for (const u of BYTE_UNITS) if (maxBytes >= u[1]) unit = u;
  return niceAxis(Math.max(maxBytes, 0) / unit[1], unit[0], target, unit[1]);
}

// A percent axis that reaches at least `floor` (100: the whole CPU limit, or one core without one).
export function percentAxis(maxPercent, floor = 100, target = 2) {
  const axis = niceAxis(Math.max(maxPercent, floor), "%", target);
  for (const t of axis.ticks) t.text = t.text.replace(" %", "%");
  return axis;
}
