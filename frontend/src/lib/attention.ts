// Reading the instance attention tensor: uint8 (L, H, T, T), each query row scaled so that it
// sums to about 255 (docs/api.md).
import type { ByteTensor } from './types';

export function attentionWeight(a: ByteTensor, layer: number, head: number, q: number, k: number): number {
  const [, H, T] = a.shape;
  return a.data[((layer * H + head) * T + q) * T + k] / 255;
}

/** The attention of one query token over every key token, as weights in 0..1. */
export function attentionRow(a: ByteTensor, layer: number, head: number, q: number): Float32Array {
  const [L, H, T] = a.shape;
  const out = new Float32Array(T);
  if (layer < 0 || layer >= L || head < 0 || head >= H || q < 0 || q >= T) return out;
  const base = ((layer * H + head) * T + q) * T;
  for (let k = 0; k < T; k++) out[k] = a.data[base + k] / 255;
  return out;
}
