// Live plots for the dashboard: a fixed-size ring buffer of samples per series, drawn as a line on a <canvas>.
// No chart library: a plot is a polyline scaled to the series' own maximum, with that maximum and the latest value
// written on it. Each canvas carries data-points (samples held) and data-last (the latest sample) for scripts
// and tests to read. Missing samples (null) break the line.
"use strict";

class Ring {
  constructor(capacity) {
    this.capacity = capacity;
    this.values = [];
  }

  push(value) {
    this.values.push(value);
    if (this.values.length > this.capacity) this.values.shift();
  }

  get length() {
    return this.values.length;
  }
}

function formatSample(value) {
  if (value === null || value === undefined) return "–";
  if (Math.abs(value) >= 100) return value.toFixed(0);
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(value === Math.round(value) ? 0 : 2);
}

function drawPlot(canvas, ring) {
  const context = canvas.getContext("2d");
  const width = canvas.width, height = canvas.height, pad = 4, top = 16;
  const style = getComputedStyle(canvas);
  context.clearRect(0, 0, width, height);
  const present = ring.values.filter((v) => v !== null && v !== undefined);
  const most = Math.max(1e-9, ...present);
  context.strokeStyle = style.getPropertyValue("--grid").trim() || "#ccc";
  context.lineWidth = 1;
  context.beginPath();
  context.moveTo(pad, height - pad + 0.5);
  context.lineTo(width - pad, height - pad + 0.5);
  context.stroke();
  context.strokeStyle = style.getPropertyValue("--line").trim() || "#2563eb";
  context.lineWidth = 2;
  context.beginPath();
  const step = (width - 2 * pad) / Math.max(1, ring.capacity - 1);
  const offset = ring.capacity - ring.length; // the newest sample sits at the right edge
  let drawing = false;
  ring.values.forEach((value, i) => {
    if (value === null || value === undefined) {
      drawing = false;
      return;
    }
    const x = pad + (offset + i) * step;
    const y = height - pad - (value / most) * (height - pad - top);
    if (drawing) context.lineTo(x, y);
    else context.moveTo(x, y);
    drawing = true;
  });
  context.stroke();
  context.fillStyle = style.getPropertyValue("--text").trim() || "#222";
  context.font = "11px sans-serif";
  context.fillText("max " + formatSample(present.length ? Math.max(...present) : null), pad, 11);
  const last = ring.length ? ring.values[ring.length - 1] : null;
  const label = "now " + formatSample(last);
  context.fillText(label, width - pad - context.measureText(label).width, 11);
  canvas.dataset.points = String(ring.length);
  canvas.dataset.last = last === null || last === undefined ? "" : String(last);
}
