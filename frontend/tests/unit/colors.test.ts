import { describe, expect, it } from 'vitest';
import { drawable, encodePoints, FILTERED, MISSING, normalise, orderBy, quantile, toHex, upperEnd } from '../../src/lib/colors';
import type { Points } from '../../src/lib/types';

function points(n: number, over: Partial<Points> = {}): Points {
  return {
    n, id: Float64Array.from({ length: n }, (_, i) => i), label: new Int32Array(n), pred: new Int32Array(n),
    correct: new Uint8Array(n).fill(1), loss: new Float32Array(n), goldProb: new Float32Array(n),
    confidence: new Float32Array(n), variability: new Float32Array(n), region: new Int8Array(n).fill(-1),
    split: ['train'], splitCode: new Int8Array(n), ...over,
  };
}

describe('legend domains', () => {
  it('quantile ignores NaN and falls back to 1 without values', () => {
    expect(quantile(new Float32Array([3, NaN, 1, 2]), 1)).toBe(3);
    expect(quantile(new Float32Array([3, NaN, 1, 2]), 0)).toBe(1);
    expect(quantile(new Float32Array([NaN]), 0.5)).toBe(1);
  });
  it('upperEnd is the 98th percentile, never 0', () => {
    const v = Float32Array.from({ length: 100 }, (_, i) => i);
    expect(upperEnd(v)).toBe(97);
    expect(upperEnd(new Float32Array(4))).toBeGreaterThan(0);
  });
  it('normalise clamps to [0, 1] and keeps NaN', () => {
    const out = normalise(new Float32Array([-1, 0, 5, 10, 20, NaN]), 0, 10);
    expect(Array.from(out.slice(0, 5))).toEqual([0, 0, 0.5, 1, 1]);
    expect(Number.isNaN(out[5])).toBe(true);
  });
  it('orderBy puts NaN first and sorts either way', () => {
    const v = new Float32Array([0.5, NaN, 0.1, 0.9]);
    expect(Array.from(orderBy(v))).toEqual([1, 2, 0, 3]);
    expect(Array.from(orderBy(v, true))).toEqual([1, 3, 0, 2]);
  });
});

describe('encodePoints', () => {
  it('gold-label confidence is continuous on [0, 1] with a legend, low values drawn on top', () => {
    const e = encodePoints('gold_prob', points(3, { goldProb: new Float32Array([0.9, 0.1, 0.5]) }), null, ['a', 'b']);
    expect(e.continuous).toBe(true);
    expect(Array.from(e.values)).toEqual([Math.fround(0.9), Math.fround(0.1), 0.5]);
    expect(e.legend.kind).toBe('continuous');
    expect(e.legend.title).toMatch(/p\(gold\)/);
    if (e.legend.kind === 'continuous') expect([e.legend.min, e.legend.max]).toEqual(['0 wrong', '1 right']);
    expect(e.order![e.order!.length - 1]).toBe(1);
  });
  it('variability scales to its upper end and counts points without dynamics', () => {
    const e = encodePoints('variability', points(4, { variability: new Float32Array([0, 0.1, 0.2, NaN]) }), null, ['a']);
    expect(e.values[2]).toBe(1);
    expect(e.values[1]).toBeCloseTo(0.5);
    expect(Number.isNaN(e.values[3])).toBe(true);
    if (e.legend.kind !== 'continuous') throw new Error('continuous legend expected');
    expect(e.legend.max).toBe('0.20');
    expect(e.legend.note).toMatch(/1 without a value/);
  });
  it('preservation the server did not measure (a sample above 50,000 points) is missing, not 0', () => {
    const proj = { n: 3, x: new Float32Array(3), y: new Float32Array(3), preservation: new Float32Array([0.25, NaN, 1]),
      meanPreservation: 0.625, sampled: true };
    const e = encodePoints('preservation', points(3), proj, ['a']);
    expect(e.values[0]).toBe(0.25);
    expect(Number.isNaN(e.values[1])).toBe(true);
    expect(e.values[2]).toBe(1);
    if (e.legend.kind !== 'continuous') throw new Error('continuous legend expected');
    expect(e.legend.note).toMatch(/mean 0\.63 · 1 without a value/);
  });
  it('labels are categorical with counts, unknown labels last', () => {
    const e = encodePoints('label', points(3, { label: new Int32Array([0, 1, -1]) }), null, ['neg', 'pos']);
    expect(Array.from(e.values)).toEqual([0, 1, 2]);
    if (e.legend.kind !== 'categorical') throw new Error('categorical legend expected');
    expect(e.legend.items.map((i) => [i.label, i.count])).toEqual([['neg', 1], ['pos', 1], ['unknown', 1]]);
  });
});

describe('drawable (what the WebGL plot draws)', () => {
  it('bins continuous values onto the ramp and greys out missing ones', () => {
    const enc = { values: new Float32Array([0, 0.5, 1, NaN]), continuous: true, colors: ['#000000', '#777777', '#ffffff'],
      legend: { kind: 'continuous' as const, title: '', colors: [], min: '', max: '' } };
    const d = drawable(enc, null);
    expect(Array.from(d.values)).toEqual([0, 1, 2, 3]);
    expect(d.colors.slice(3)).toEqual([MISSING, FILTERED]);
  });
  it('dims filtered-out points and draws them first', () => {
    const enc = { values: new Float32Array([0, 1, 0, 1]), continuous: false, colors: ['#111111', '#222222'],
      legend: { kind: 'categorical' as const, title: '', items: [] } };
    const d = drawable(enc, new Uint8Array([1, 0, 1, 0]));
    expect(Array.from(d.values)).toEqual([0, 3, 0, 3]);
    expect(Array.from(d.order!)).toEqual([1, 3, 0, 2]);
    const hidden = drawable(enc, new Uint8Array([1, 0, 1, 0]), 'hide');
    expect(Array.from(hidden.values)).toEqual([0, 1, 0, 1]);
  });
});

describe('toHex', () => {
  it('turns d3 rgb strings into hex', () => {
    expect(toHex('rgb(255, 0, 16)')).toBe('#ff0010');
    expect(toHex('#abcdef')).toBe('#abcdef');
  });
});
