import { describe, expect, it } from 'vitest';
import { get } from 'svelte/store';
import { combineSelection, opFromModifiers, sameSelection } from '../../src/lib/selection';
import { selection, selectionSource, setSelection } from '../../src/lib/stores';

const ids = (s: Set<number> | null) => (s ? [...s].sort((a, b) => a - b) : null);

describe('combineSelection', () => {
  const cur = new Set([1, 2, 3]);
  it('replaces, adds, subtracts and intersects', () => {
    expect(ids(combineSelection(cur, [3, 4], 'replace'))).toEqual([3, 4]);
    expect(ids(combineSelection(cur, [3, 4], 'add'))).toEqual([1, 2, 3, 4]);
    expect(ids(combineSelection(cur, [3, 4], 'subtract'))).toEqual([1, 2]);
    expect(ids(combineSelection(cur, [3, 4], 'intersect'))).toEqual([3]);
  });
  it('an empty result is no selection', () => {
    expect(combineSelection(cur, [1, 2, 3], 'subtract')).toBeNull();
    expect(combineSelection(null, [], 'replace')).toBeNull();
    expect(ids(combineSelection(null, [7], 'add'))).toEqual([7]);
  });
  it('does not mutate the current selection', () => {
    combineSelection(cur, [9], 'add');
    expect(ids(cur)).toEqual([1, 2, 3]);
  });
});

describe('opFromModifiers', () => {
  it('Alt removes, Ctrl/Cmd adds, nothing replaces', () => {
    expect(opFromModifiers(null)).toBe('replace');
    expect(opFromModifiers({ altKey: true, ctrlKey: true })).toBe('subtract');
    expect(opFromModifiers({ ctrlKey: true })).toBe('add');
    expect(opFromModifiers({ metaKey: true })).toBe('add');
  });
});

describe('the selection store', () => {
  it('setSelection applies the operation and records the source', () => {
    setSelection([1, 2], 'projection');
    setSelection([3], 'compare-b', 'add');
    expect(ids(get(selection))).toEqual([1, 2, 3]);
    expect(get(selectionSource)).toBe('compare-b');
    setSelection([2], 'table', 'subtract');
    expect(ids(get(selection))).toEqual([1, 3]);
    setSelection(null, 'header');
    expect(get(selection)).toBeNull();
  });
  it('sameSelection compares contents', () => {
    expect(sameSelection(new Set([1, 2]), new Set([2, 1]))).toBe(true);
    expect(sameSelection(new Set([1]), null)).toBe(false);
    expect(sameSelection(null, null)).toBe(true);
  });
});
