// Mapping a 2-D layout into normalised device coordinates: a frame that fits it, kept while
// later layouts still fit so that static points stay still. Pure functions.

/**
 * A frame around a 2-D layout: centre and half-height, one scale on both axes. With the
 * plot's aspect ratio a (width / height) the visible device coordinates are [-a, a] x [-1, 1],
 * so a wide layout fills a wide plot.
 */
export interface Frame {
  cx: number;
  cy: number;
  half: number;
}

export function frameOf(x: Float32Array, y: Float32Array, pad = 0.06, aspect = 1): Frame {
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (let i = 0; i < x.length; i++) {
    const a = x[i], b = y[i];
    if (!Number.isFinite(a) || !Number.isFinite(b)) continue;
    if (a < x0) x0 = a;
    if (a > x1) x1 = a;
    if (b < y0) y0 = b;
    if (b > y1) y1 = b;
  }
  if (!Number.isFinite(x0)) return { cx: 0, cy: 0, half: 1 };
  const half = Math.max((x1 - x0) / Math.max(aspect, 0.2), y1 - y0, 1e-9) / 2 * (1 + pad);
  return { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, half };
}

/** Whether a new layout still fits a frame well enough to keep it (so static points stay put). */
export function frameFits(f: Frame, x: Float32Array, y: Float32Array, aspect = 1): boolean {
  const g = frameOf(x, y, 0, aspect);
  const outside = Math.abs(g.cx - f.cx) / aspect + g.half > f.half * 1.15 || Math.abs(g.cy - f.cy) + g.half > f.half * 1.15;
  const tooSmall = g.half < f.half * 0.5;
  return !outside && !tooSmall;
}

export function toNdc(x: Float32Array, y: Float32Array, f: Frame): { x: Float32Array; y: Float32Array } {
  const nx = new Float32Array(x.length), ny = new Float32Array(y.length);
  for (let i = 0; i < x.length; i++) {
    nx[i] = Number.isFinite(x[i]) ? (x[i] - f.cx) / f.half : 0;
    ny[i] = Number.isFinite(y[i]) ? (y[i] - f.cy) / f.half : 0;
  }
  return { x: nx, y: ny };
}

/** Point size and opacity that keep a plot legible from a few hundred to a million points. */
export function pointStyle(n: number): { size: number; opacity: number } {
  const lg = Math.log10(Math.max(n, 10));
  return { size: Math.max(1.5, Math.min(7, 11 - 1.6 * lg)), opacity: Math.max(0.35, Math.min(0.9, 1.35 - 0.15 * lg)) };
}

/** Frames kept per (group, run, layer, method), so a checkpoint change keeps static points still. */
const frames = new Map<string, Frame>();

export function frameFor(key: string, x: Float32Array, y: Float32Array, aspect: number): Frame {
  let f = frames.get(key);
  if (!f || !frameFits(f, x, y, aspect)) {
    f = frameOf(x, y, 0.06, aspect);
    frames.set(key, f);
  }
  return f;
}
