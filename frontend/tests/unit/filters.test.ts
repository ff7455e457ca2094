import { describe, expect, it } from 'vitest';
import { countKept, decodeFilter, encodeFilter, filterMask, filterQuery, isFilterActive, keptRows, NO_FILTER } from '../../src/lib/filters';
import type { Points } from '../../src/lib/types';

const pts: Points = {
  n: 5, id: Float64Array.from([0, 1, 2, 3, 4]), label: Int32Array.from([0, 1, 0, 1, 0]),
  pred: Int32Array.from([0, 0, 1, 1, -1]), correct: Uint8Array.from([1, 0, 0, 1, 255]),
  loss: Float32Array.from([0.1, 2.0, 1.5, 0.3, NaN]), goldProb: new Float32Array(5), confidence: new Float32Array(5),
  variability: new Float32Array(5), region: Int8Array.from([0, 2, 1, -1, 0]), split: ['train'], splitCode: new Int8Array(5),
};

describe('filterMask', () => {
  it('is null when nothing is filtered', () => {
    expect(isFilterActive(NO_FILTER)).toBe(false);
    expect(filterMask(pts, NO_FILTER)).toBeNull();
    expect(countKept(null, 5)).toBe(5);
  });
  it('combines every condition (and drops points without a value)', () => {
    expect(keptRows(filterMask(pts, { ...NO_FILTER, labels: [0] })!)).toEqual([0, 2, 4]);
    expect(keptRows(filterMask(pts, { ...NO_FILTER, correct: false })!)).toEqual([1, 2]);
    expect(keptRows(filterMask(pts, { ...NO_FILTER, lossMin: 0.2, lossMax: 1.6 })!)).toEqual([2, 3]);
    expect(keptRows(filterMask(pts, { ...NO_FILTER, regions: ['hard-to-learn', 'ambiguous'] })!)).toEqual([1, 2]);
    expect(keptRows(filterMask(pts, { ...NO_FILTER, labels: [0], preds: [1] })!)).toEqual([2]);
    const m = filterMask(pts, { ...NO_FILTER, lossMin: 0 })!;
    expect(countKept(m, 5)).toBe(4);
  });
});

describe('filter in the table query and the URL', () => {
  const f = { labels: [1], preds: [0, 1], correct: true, lossMin: 0.5, lossMax: null, regions: ['ambiguous'] };
  it('maps onto the table API fields', () => {
    expect(filterQuery(f)).toEqual({ labels: [1], preds: [0, 1], correct: true, loss_min: 0.5, loss_max: null,
      regions: ['ambiguous'] });
    expect(filterQuery(NO_FILTER)).toEqual({ labels: null, preds: null, correct: null, loss_min: null, loss_max: null,
      regions: null });
  });
  it('round-trips through its URL form', () => {
    const s = encodeFilter(f)!;
    expect(s).toBe('label:1;pred:0,1;correct:1;loss:0.5~;region:ambiguous');
    expect(decodeFilter(s)).toEqual(f);
    expect(encodeFilter(NO_FILTER)).toBeNull();
    expect(decodeFilter(null)).toEqual(NO_FILTER);
  });
  it('ignores malformed parts', () => {
    expect(decodeFilter('label:x;region:nowhere;correct:2;junk;loss:a~3')).toEqual({ ...NO_FILTER, lossMax: 3 });
  });
});
