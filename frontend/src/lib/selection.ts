// Selections: sets of example ids, held as one sorted Float64Array (8 bytes an id, whatever the
// size: a lasso over a million points is an 8 MB array, not a Set of a million numbers). A lasso
// replaces the selection, adds to it (Ctrl/Cmd held), or removes from it (Alt held). null means
// "nothing selected".

export type SelectOp = 'replace' | 'add' | 'subtract' | 'intersect';

/** A set of example ids: sorted, distinct, immutable. Iterable and sized like a Set. */
export class Selection implements Iterable<number> {
  /** the ids, ascending, each once */
  readonly ids: Float64Array;

  private constructor(sortedDistinct: Float64Array) {
    this.ids = sortedDistinct;
  }

  /** From ids in any order, repeats allowed. */
  static of(ids: Iterable<number> | ArrayLike<number>): Selection {
    const a = Float64Array.from(ids as Iterable<number>);   // a copy: sorted in place below
    a.sort();
    return new Selection(distinct(a));
  }

  /** From ids already sorted ascending and distinct (not copied). */
  static sorted(ids: Float64Array): Selection {
    return new Selection(ids);
  }

  get size(): number {
    return this.ids.length;
  }

  has(id: number): boolean {
    return search(this.ids, id) >= 0;
  }

  [Symbol.iterator](): Iterator<number> {
    return this.ids[Symbol.iterator]();
  }
}

/** Anything that holds ids: a Selection, a Set, a list. */
export type IdsLike = Selection | Iterable<number> | ArrayLike<number>;

function asSorted(ids: IdsLike): Float64Array {
  return ids instanceof Selection ? ids.ids : Selection.of(ids).ids;
}

function distinct(a: Float64Array): Float64Array {
  let j = 0;
  for (let i = 0; i < a.length; i++) if (i === 0 || a[i] !== a[j - 1]) a[j++] = a[i];
  return j === a.length ? a : a.slice(0, j);
}

/** The index of `id` in ascending `a`, or -1. */
export function search(a: Float64Array, id: number): number {
  let lo = 0, hi = a.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const v = a[mid];
    if (v < id) lo = mid + 1;
    else if (v > id) hi = mid - 1;
    else return mid;
  }
  return -1;
}

/** Set operations on sorted arrays, by one merge walk. */
function merge(a: Float64Array, b: Float64Array, op: 'add' | 'subtract' | 'intersect'): Float64Array {
  const out = new Float64Array(op === 'add' ? a.length + b.length : a.length);
  let i = 0, j = 0, k = 0;
  while (i < a.length && j < b.length) {
    const x = a[i], y = b[j];
    if (x < y) { if (op !== 'intersect') out[k++] = x; i++; }
    else if (x > y) { if (op === 'add') out[k++] = y; j++; }
    else { if (op !== 'subtract') out[k++] = x; i++; j++; }
  }
  if (op !== 'intersect') while (i < a.length) out[k++] = a[i++];
  if (op === 'add') while (j < b.length) out[k++] = b[j++];
  return k === out.length ? out : out.slice(0, k);
}

export function combineSelection(current: IdsLike | null, ids: IdsLike, op: SelectOp): Selection | null {
  const next = asSorted(ids);
  const cur = current ? asSorted(current) : new Float64Array(0);
  const out = op === 'replace' ? next : merge(cur, next, op);
  return out.length ? (ids instanceof Selection && out === next ? ids : Selection.sorted(out)) : null;
}

/** The operation a mouse gesture means, from the modifier keys held. */
export function opFromModifiers(e: { altKey?: boolean; ctrlKey?: boolean; metaKey?: boolean } | null): SelectOp {
  if (!e) return 'replace';
  if (e.altKey) return 'subtract';
  if (e.ctrlKey || e.metaKey) return 'add';
  return 'replace';
}

/** Whether two selections hold the same ids. */
export function sameSelection(a: IdsLike | null, b: IdsLike | null): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  const x = asSorted(a), y = asSorted(b);
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}
