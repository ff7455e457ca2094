// Example details fetched on demand (hover tooltips, the instance view), cached per run.
import { api } from './api';
import type { ExampleDetail } from './types';

const cache = new Map<string, Promise<ExampleDetail>>();

export function exampleDetail(run: string, id: number): Promise<ExampleDetail> {
  const key = `${run}\u0000${id}`;
  let p = cache.get(key);
  if (!p) {
    p = api.example(run, id);
    p.catch(() => cache.delete(key));
    cache.set(key, p);
    if (cache.size > 2000) cache.delete(cache.keys().next().value as string);
  }
  return p;
}

/** id -> row index, for linking views that hold the same examples in different orders. */
export function indexOf(ids: Float64Array): Map<number, number> {
  const m = new Map<number, number>();
  for (let i = 0; i < ids.length; i++) m.set(ids[i], i);
  return m;
}

export function rowsOf(sel: Set<number> | null, index: Map<number, number> | null): number[] | null {
  if (!sel || !index) return null;
  const out: number[] = [];
  for (const id of sel) {
    const r = index.get(id);
    if (r !== undefined) out.push(r);
  }
  return out;
}

/** The ids of a selection that are probe examples (per-checkpoint analyses know only those). */
export function probeIds(sel: Set<number> | null, probeIndex: Map<number, number> | null, max = 100_000): number[] | null {
  if (!sel) return null;
  const out: number[] = [];
  for (const id of sel) {
    if (out.length >= max) break;
    if (!probeIndex || probeIndex.has(id)) out.push(id);
  }
  return out;
}
