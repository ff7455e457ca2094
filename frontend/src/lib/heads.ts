// Pure helpers over head arrays (importance per layer x head, over checkpoints).
import type { HeadHistory } from './types';

/** One head's importance at every checkpoint, as (step, value) points (NaN where missing). */
export function headSeries(h: HeadHistory, layer: number, head: number): [number, number][] {
  return h.steps.map((s, c) => {
    const v = h.importance[c]?.[layer]?.[head];
    return [s, typeof v === 'number' && Number.isFinite(v) ? v : NaN];
  });
}

/** The (layer, head) cell under a point of a grid drawn with row / column label margins. */
export function cellAt(x: number, y: number, cell: number, rowLabel: number, colLabel: number, L: number, H: number):
  { l: number; h: number } | null {
  const j = Math.floor((x - rowLabel) / cell), l = Math.floor((y - colLabel) / cell);
  return l >= 0 && l < L && j >= 0 && j < H ? { l, h: j } : null;
}
