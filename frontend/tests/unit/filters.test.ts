import { describe, expect, it } from 'vitest';
import {
  countKept, dataMapMask, decodeFilter, encodeFilter, filterMask, filterQuery, isFilterActive, keptRows, multiSummary, needsProbe,
  NO_FILTER, toggleValue,
} from '../../src/lib/filters';
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

describe('the filter over the data map', () => {
  // six training examples: rows 0-3 are probe rows 3, 0, 1, 2 (the probe order differs); 4 and 5 were not probed
  const dm = { n: 6, region: Int8Array.from([0, 1, 2, 0, 1, -1]), probeRow: Int32Array.from([3, 0, 1, 2, -1, -1]) };
  it('is null without a filter and needs no points for a region filter', () => {
    expect(dataMapMask(dm, pts, NO_FILTER)).toBeNull();
    expect(needsProbe({ ...NO_FILTER, regions: ['ambiguous'] })).toBe(false);
    // the region is the data map's own, so unprobed examples take part
    expect(keptRows(dataMapMask(dm, null, { ...NO_FILTER, regions: ['ambiguous', 'easy-to-learn'] })!)).toEqual([0, 1, 3, 4]);
  });
  it('reads probe-only attributes through the probe row and leaves unprobed examples out', () => {
    for (const f of [{ labels: [0] }, { preds: [1] }, { correct: true }, { lossMin: 0 }, { lossMax: 9 }]) {
      expect(needsProbe({ ...NO_FILTER, ...f })).toBe(true);
    }
    // probe rows kept by correct=false: 1, 2 -> data-map rows 2 (probe 1) and 3 (probe 2)
    expect(keptRows(dataMapMask(dm, pts, { ...NO_FILTER, correct: false })!)).toEqual([2, 3]);
    // gold label 0: probe rows 0, 2, 4 -> data-map rows 1, 3 (probe row 4 is not in the data map)
    expect(keptRows(dataMapMask(dm, pts, { ...NO_FILTER, labels: [0] })!)).toEqual([1, 3]);
    // combined with the data map's region
    expect(keptRows(dataMapMask(dm, pts, { ...NO_FILTER, correct: false, regions: ['hard-to-learn'] })!)).toEqual([2]);
    // without the checkpoint's points nothing is known about them yet
    expect(countKept(dataMapMask(dm, null, { ...NO_FILTER, correct: true }), 6)).toBe(0);
  });
  it('ignores probe rows out of range', () => {
    const bad = { n: 2, region: Int8Array.from([0, 0]), probeRow: Int32Array.from([99, 0]) };
    expect(keptRows(dataMapMask(bad, pts, { ...NO_FILTER, lossMin: 0 })!)).toEqual([1]);
  });
});

describe('multi-value menus', () => {
  it('toggles values in the menu order, and an empty choice is no filter', () => {
    expect(toggleValue(null, 'b', true)).toEqual(['b']);
    expect(toggleValue(['c'], 'a', true, ['a', 'b', 'c'])).toEqual(['a', 'c']);
    expect(toggleValue([2, 0], 1, true, [0, 1, 2])).toEqual([0, 1, 2]);
    expect(toggleValue(['a', 'c'], 'a', false)).toEqual(['c']);
    expect(toggleValue(['a'], 'a', false)).toBeNull();
    expect(toggleValue(['a'], 'a', true)).toEqual(['a']);
  });
  it('summarises the choice', () => {
    const names = ['neg', 'neu', 'pos'];
    const nameOf = (v: string | number) => names[Number(v)];
    expect(multiSummary('gold', names, null)).toBe('gold: any');
    expect(multiSummary('gold', names, [2], nameOf)).toBe('gold: pos');
    expect(multiSummary('gold', names, [0, 2], nameOf)).toBe('gold: neg, pos');
    expect(multiSummary('gold', names, [0, 1, 2], nameOf)).toBe('gold: 3 of 3');
  });
  it('several values round-trip through the URL', () => {
    const f = { ...NO_FILTER, labels: [0, 2], preds: [1, 2], regions: ['easy-to-learn', 'hard-to-learn'] };
    expect(encodeFilter(f)).toBe('label:0,2;pred:1,2;region:easy-to-learn,hard-to-learn');
    expect(decodeFilter(encodeFilter(f))).toEqual(f);
  });
});
