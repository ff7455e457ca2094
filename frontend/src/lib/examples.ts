// Example details fetched on demand (hover tooltips, the instance view), cached per run.
import { api } from './api';
import { rowIndexOf, type RowIndex, type RowSet } from './rows';
import { Selection, type IdsLike } from './selection';
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
export function indexOf(ids: Float64Array): RowIndex {
  return rowIndexOf(ids);
}

/** Which rows of a view a selection holds (null: no selection, or the view has no rows yet). */
export function rowsOf(sel: IdsLike | null, index: RowIndex | null): RowSet | null {
  if (!sel || !index) return null;
  return index.rowsOf(sel instanceof Selection ? sel : Selection.of(sel));
}

/** The probe examples of a selection (per-checkpoint analyses know only those); null when none
 *  is selected; all of it while the probes are unknown. */
export function probeSelection(sel: Selection | null, probeIndex: RowIndex | null): Selection | null {
  if (!sel) return null;
  return probeIndex ? probeIndex.within(sel) : sel;
}
