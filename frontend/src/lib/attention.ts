// Reading an attention tensor: uint8 (L, H, Tq, Tk), each query row scaled so that it sums to
// about 255 (docs/api.md). A classifier's is square (T x T over its tokens); a generative run's
// cross-attention is rectangular (decoder input positions x source tokens). A 3-number shape
// (L, H, T) is read as square.
import type { ByteTensor } from './types';

/** The tensor's sizes: layers, heads, query positions, key positions. */
export function attentionSize(a: ByteTensor): { L: number; H: number; Tq: number; Tk: number } {
  const [L, H, Tq, Tk] = a.shape;
  return { L, H, Tq, Tk: Tk ?? Tq };
}

/** The weight (0..1) of query position q on key position k; 0 outside the tensor. */
export function attentionWeight(a: ByteTensor, layer: number, head: number, q: number, k: number): number {
  const { L, H, Tq, Tk } = attentionSize(a);
  if (layer < 0 || layer >= L || head < 0 || head >= H || q < 0 || q >= Tq || k < 0 || k >= Tk) return 0;
  return a.data[((layer * H + head) * Tq + q) * Tk + k] / 255;
}

/** The attention of one query position over every key position, as weights in 0..1. */
export function attentionRow(a: ByteTensor, layer: number, head: number, q: number): Float32Array {
  const { L, H, Tq, Tk } = attentionSize(a);
  const out = new Float32Array(Tk);
  if (layer < 0 || layer >= L || head < 0 || head >= H || q < 0 || q >= Tq) return out;
  const base = ((layer * H + head) * Tq + q) * Tk;
  for (let k = 0; k < Tk; k++) out[k] = a.data[base + k] / 255;
  return out;
}
