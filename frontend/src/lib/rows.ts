// Example id -> row of a view's arrays (probe rows of the points, rows of the data map), by binary
// search over the ids sorted once: no Map of a million entries on the main thread, and the sorted
// ids meet a selection's sorted ids in one merge walk.
import { search, Selection } from './selection';

/** Which rows of a view a selection holds: one byte per row, and how many are set. */
export interface RowSet {
  mask: Uint8Array;
  count: number;
}

export class RowIndex {
  /** the ids ascending */
  readonly sortedIds: Float64Array;
  /** the row of each sorted id; null when the ids were ascending already (row = position) */
  readonly rowOfSorted: Int32Array | null;
  readonly n: number;

  constructor(sortedIds: Float64Array, rowOfSorted: Int32Array | null) {
    this.sortedIds = sortedIds;
    this.rowOfSorted = rowOfSorted;
    this.n = sortedIds.length;
  }

  /** The index of rows holding `ids` (ids distinct). */
  static build(ids: Float64Array): RowIndex {
    let ascending = true;
    for (let i = 1; i < ids.length && ascending; i++) ascending = ids[i - 1] < ids[i];
    if (ascending) return new RowIndex(ids, null);
    const order = new Int32Array(ids.length);
    for (let i = 0; i < order.length; i++) order[i] = i;
    order.sort((a, b) => ids[a] - ids[b]);
    const sorted = new Float64Array(ids.length);
    for (let i = 0; i < order.length; i++) sorted[i] = ids[order[i]];
    return new RowIndex(sorted, order);
  }

  /** The row of an id, or undefined (as Map.get). */
  get(id: number): number | undefined {
    const at = search(this.sortedIds, id);
    if (at < 0) return undefined;
    return this.rowOfSorted ? this.rowOfSorted[at] : at;
  }

  has(id: number): boolean {
    return this.get(id) !== undefined;
  }

  /** The rows of a selection's ids (one merge walk over both sorted lists). */
  rowsOf(sel: Selection): RowSet {
    const mask = new Uint8Array(this.n);
    const a = this.sortedIds, b = sel.ids, rows = this.rowOfSorted;
    let i = 0, j = 0, count = 0;
    while (i < a.length && j < b.length) {
      const x = a[i], y = b[j];
      if (x < y) i++;
      else if (x > y) j++;
      else { mask[rows ? rows[i] : i] = 1; count++; i++; j++; }
    }
    return { mask, count };
  }

  /** The ids of a selection that have a row here; the selection itself when all do. */
  within(sel: Selection): Selection | null {
    const a = this.sortedIds, b = sel.ids;
    const out = new Float64Array(Math.min(a.length, b.length));
    let i = 0, j = 0, k = 0;
    while (i < a.length && j < b.length) {
      const x = a[i], y = b[j];
      if (x < y) i++;
      else if (x > y) j++;
      else { out[k++] = x; i++; j++; }
    }
    if (k === b.length) return sel;
    return k ? Selection.sorted(out.slice(0, k)) : null;
  }
}

/** The row numbers a RowSet holds, ascending. */
export function rowList(rows: RowSet): Int32Array {
  const out = new Int32Array(rows.count);
  let k = 0;
  for (let i = 0; i < rows.mask.length && k < out.length; i++) if (rows.mask[i]) out[k++] = i;
  return out;
}

/** Row indexes by the id array they index (built once, by the decoding worker where there is one). */
const indexes = new WeakMap<Float64Array, RowIndex>();

export function rememberIndex(ids: Float64Array, index: RowIndex): void {
  indexes.set(ids, index);
}

/** The row index of an id array (remembered, else built now). */
export function rowIndexOf(ids: Float64Array): RowIndex {
  let index = indexes.get(ids);
  if (!index) {
    index = RowIndex.build(ids);
    indexes.set(ids, index);
  }
  return index;
}
