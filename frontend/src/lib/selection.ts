// Set operations on selections (sets of example ids): a lasso replaces the selection, adds to
// it (Ctrl/Cmd held), or removes from it (Alt held). null means "nothing selected".

export type SelectOp = 'replace' | 'add' | 'subtract' | 'intersect';

export function combineSelection(current: Set<number> | null, ids: Iterable<number>, op: SelectOp): Set<number> | null {
  let out: Set<number>;
  switch (op) {
    case 'replace':
      out = new Set(ids);
      break;
    case 'add':
      out = new Set(current ?? []);
      for (const id of ids) out.add(id);
      break;
    case 'subtract': {
      out = new Set(current ?? []);
      for (const id of ids) out.delete(id);
      break;
    }
    case 'intersect': {
      const keep = new Set(ids);
      out = new Set();
      for (const id of current ?? []) if (keep.has(id)) out.add(id);
      break;
    }
  }
  return out.size ? out : null;
}

/** The operation a mouse gesture means, from the modifier keys held. */
export function opFromModifiers(e: { altKey?: boolean; ctrlKey?: boolean; metaKey?: boolean } | null): SelectOp {
  if (!e) return 'replace';
  if (e.altKey) return 'subtract';
  if (e.ctrlKey || e.metaKey) return 'add';
  return 'replace';
}

/** Whether two selections hold the same ids. */
export function sameSelection(a: Set<number> | null, b: Set<number> | null): boolean {
  if (a === b) return true;
  if (!a || !b || a.size !== b.size) return false;
  for (const id of a) if (!b.has(id)) return false;
  return true;
}
