// Pure helpers over head arrays (importance per layer x head, over checkpoints).
import { headLabel } from './format';
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

// ---- Heads marked for pruning, per attention stack --------------------------------------
// markedHeads holds one key per marked head, "stack:layer:head" (0-based, as the API and
// t3vis.evaluate address them), so marks of several stacks can be masked in one pruning.

/** A marked head: its stack, layer (block) and head, 0-based. */
export interface HeadMark {
  stack: string;
  layer: number;
  head: number;
}

/** The markedHeads key of a head of a stack. */
export function headKey(stack: string, layer: number, head: number): string {
  return `${stack}:${layer}:${head}`;
}

/** The head a markedHeads key names; null for a key that is not "stack:layer:head". */
export function parseHeadKey(key: string): HeadMark | null {
  const m = /^(.+):(\d+):(\d+)$/.exec(key);
  return m ? { stack: m[1], layer: Number(m[2]), head: Number(m[3]) } : null;
}

/** The marks of a set of keys, ordered by stack (in `stackOrder`, then by name), layer and head. */
export function parseMarks(keys: Iterable<string>, stackOrder: string[] = []): HeadMark[] {
  const rank = (s: string) => { const i = stackOrder.indexOf(s); return i < 0 ? stackOrder.length : i; };
  return [...keys].map(parseHeadKey).filter((m): m is HeadMark => m !== null)
    .sort((a, b) => rank(a.stack) - rank(b.stack) || a.stack.localeCompare(b.stack) || a.layer - b.layer || a.head - b.head);
}

/** The marks as the prune request's masked_heads by stack: {stack: [[layer, head]]}. */
export function masksByStack(marks: HeadMark[]): Record<string, [number, number][]> {
  const out: Record<string, [number, number][]> = {};
  for (const m of marks) (out[m.stack] ??= []).push([m.layer, m.head]);
  return out;
}

/** The [layer, head] pairs of one stack's marks (a single-stack run's plain masked_heads list). */
export function masksOf(marks: HeadMark[], stack: string): [number, number][] {
  return marks.filter((m) => m.stack === stack).map((m) => [m.layer, m.head]);
}

/** A set of keys with one head's mark added, or removed if it was there. */
export function toggleMark(keys: Set<string>, key: string): Set<string> {
  const next = new Set(keys);
  if (next.has(key)) next.delete(key); else next.add(key);
  return next;
}

/** A head's short label: "L1.H2", with its stack in front where the run has several ("decoder L1.H2"). */
export function markLabel(stack: string, layer: number, head: number, withStack: boolean): string {
  return withStack ? `${stack} ${headLabel(layer, head)}` : headLabel(layer, head);
}

/** What a pruning masked, in words: "decoder L1.H2, cross L0.H3" (stacks named where there are several). */
export function maskedText(masked: Record<string, [number, number][]>, withStack: boolean): string {
  return Object.entries(masked).flatMap(([stack, pairs]) => pairs.map(([l, h]) => markLabel(stack, l, h, withStack)))
    .join(', ');
}

/** The [layer, head] moved into a stack of num_layers x num_heads heads. */
export function clampHead(head: [number, number], sizes: { num_layers: number; num_heads: number } | null):
  [number, number] {
  if (!sizes) return head;
  return [Math.max(0, Math.min(head[0], sizes.num_layers - 1)), Math.max(0, Math.min(head[1], sizes.num_heads - 1))];
}

/**
 * The query rows and key columns the thumbnails (L, H, K, K) use: they cover the first K
 * positions, so runs of short texts leave the far rows and columns empty. [rows, cols], each
 * 1 + the last index any head attends there (at least 1), so the patterns can fill their cells.
 */
export function thumbExtent(t: { shape: number[]; data: Uint8Array }): [number, number] {
  const K = t.shape[2] ?? 0;
  let rows = 0, cols = 0;
  for (let i = 0; i < t.data.length; i++) {
    if (!t.data[i]) continue;
    const q = Math.floor(i / K) % K, k = i % K;
    if (q >= rows) rows = q + 1;
    if (k >= cols) cols = k + 1;
  }
  return [Math.max(1, rows), Math.max(1, cols)];
}
