import { describe, expect, it } from 'vitest';
import { Bool, Float32, Int32, Int64, Table, Utf8, tableFromIPC, tableToIPC, vectorFromArray } from 'apache-arrow';
import { decodeBytes, decodeDataMap, decodePoints, decodeProjection, int64Body, ApiError } from '../../src/lib/api';
import { Selection } from '../../src/lib/selection';

function roundTrip(cols: Record<string, ReturnType<typeof vectorFromArray>>) {
  return tableFromIPC(tableToIPC(new Table(cols), 'stream'));
}

describe('decodePoints (Arrow IPC -> typed arrays)', () => {
  const t = roundTrip({
    id: vectorFromArray([10n, 11n, 12n], new Int64()),
    split: vectorFromArray(['train', 'validation', 'train'], new Utf8()),
    label: vectorFromArray([0, 1, 1], new Int32()),
    pred: vectorFromArray([0, null, 1], new Int32()),
    correct: vectorFromArray([true, null, false], new Bool()),
    loss: vectorFromArray([0.5, null, 2.0], new Float32()),
    gold_prob: vectorFromArray([0.6, 0.1, 0.2], new Float32()),
    confidence: vectorFromArray([0.7, null, 0.3], new Float32()),
    variability: vectorFromArray([0.1, null, 0.2], new Float32()),
    region: vectorFromArray(['easy-to-learn', null, 'hard-to-learn'], new Utf8()),
  });
  const p = decodePoints(t);

  it('reads every column with its nulls as NaN / -1 / 255', () => {
    expect(p.n).toBe(3);
    expect(Array.from(p.id)).toEqual([10, 11, 12]);
    expect(Array.from(p.label)).toEqual([0, 1, 1]);
    expect(Array.from(p.pred)).toEqual([0, -1, 1]);
    expect(Array.from(p.correct)).toEqual([1, 255, 0]);
    expect(p.loss[0]).toBeCloseTo(0.5);
    expect(Number.isNaN(p.loss[1])).toBe(true);
    expect(p.goldProb[2]).toBeCloseTo(0.2);
    expect(Number.isNaN(p.confidence[1])).toBe(true);
    expect(p.variability[2]).toBeCloseTo(0.2);
  });

  it('codes regions by their index and splits by first appearance', () => {
    expect(Array.from(p.region)).toEqual([0, -1, 2]);
    expect(p.split).toEqual(['train', 'validation']);
    expect(Array.from(p.splitCode)).toEqual([0, 1, 0]);
  });

  it('fills absent columns with missing values', () => {
    const q = decodePoints(roundTrip({ id: vectorFromArray([1n, 2n], new Int64()) }));
    expect(Array.from(q.pred)).toEqual([-1, -1]);
    expect(Array.from(q.correct)).toEqual([255, 255]);
    expect(Array.from(q.region)).toEqual([-1, -1]);
  });
});

describe('decodeDataMap', () => {
  it('keeps probe_row -1 for examples that are not probed', () => {
    const d = decodeDataMap(roundTrip({
      id: vectorFromArray([5n, 1000n], new Int64()),
      confidence: vectorFromArray([0.9, 0.2], new Float32()),
      variability: vectorFromArray([0.05, 0.3], new Float32()),
      correctness: vectorFromArray([1, 0.5], new Float32()),
      region: vectorFromArray(['easy-to-learn', 'ambiguous'], new Utf8()),
      probe_row: vectorFromArray([3, -1], new Int32()),
    }));
    expect(Array.from(d.id)).toEqual([5, 1000]);
    expect(Array.from(d.probeRow)).toEqual([3, -1]);
    expect(Array.from(d.region)).toEqual([0, 1]);
    expect(d.correctness[1]).toBeCloseTo(0.5);
  });
});

describe('decodeProjection (float32 (N, 3) row-major)', () => {
  const flat = new Float32Array([1, 2, 0.5, 3, 4, 1, -1, -2, 0]);
  it('splits x, y and preservation and reads the headers', () => {
    const p = decodeProjection(flat.buffer, '3', 'true', '0.5');
    expect(p.n).toBe(3);
    expect(Array.from(p.x)).toEqual([1, 3, -1]);
    expect(Array.from(p.y)).toEqual([2, 4, -2]);
    expect(Array.from(p.preservation)).toEqual([0.5, 1, 0]);
    expect(p.sampled).toBe(true);
    expect(p.meanPreservation).toBe(0.5);
  });
  it('infers N without the rows header and treats a missing mean as null', () => {
    const p = decodeProjection(flat.buffer, null, null, null);
    expect(p.n).toBe(3);
    expect(p.sampled).toBe(false);
    expect(p.meanPreservation).toBeNull();
  });
  it('rejects a body that does not match its header', () => {
    expect(() => decodeProjection(flat.buffer, '4', null, null)).toThrow(ApiError);
    expect(() => decodeProjection(new ArrayBuffer(10), null, null, null)).toThrow(/float32/);
  });
});

describe('decodeBytes (uint8 with X-T3vis-Shape)', () => {
  it('accepts a body of the header\'s size', () => {
    const t = decodeBytes(new Uint8Array(24), '2,3,2,2');
    expect(t.shape).toEqual([2, 3, 2, 2]);
  });
  it('rejects a missing or wrong shape', () => {
    expect(() => decodeBytes(new Uint8Array(24), null)).toThrow(/shape/);
    expect(() => decodeBytes(new Uint8Array(24), '2,3,2')).toThrow(/24 bytes/);
  });
});


describe('int64Body', () => {
  it('writes a selection as little-endian int64, ids past 2^32 included', () => {
    const ids = [7, 0, 2 ** 40 + 3, 4294967295];
    const body = int64Body(Selection.of(ids));
    expect([...new BigInt64Array(body)]).toEqual([0n, 7n, 4294967295n, 2n ** 40n + 3n]);
  });
});
