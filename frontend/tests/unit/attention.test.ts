import { describe, expect, it } from 'vitest';
import { attentionRow, attentionSize, attentionWeight } from '../../src/lib/attention';

// (L=2, H=2, Tq=2, Tk=3): byte i holds 5*i, so the flat index ((l*H + h)*Tq + q)*Tk + k is
// readable back from the weight.
const rect = { shape: [2, 2, 2, 3], data: Uint8Array.from({ length: 24 }, (_, i) => 5 * i) };

describe('rectangular attention (L, H, Tq, Tk)', () => {
  it('reads its sizes, and a 3-number shape as square', () => {
    expect(attentionSize(rect)).toEqual({ L: 2, H: 2, Tq: 2, Tk: 3 });
    expect(attentionSize({ shape: [1, 1, 4], data: new Uint8Array(16) })).toEqual({ L: 1, H: 1, Tq: 4, Tk: 4 });
  });
  it('indexes query rows of Tk keys', () => {
    // layer 1, head 0, query 1, key 2: ((1*2 + 0)*2 + 1)*3 + 2 = 17 -> byte 85 = 1/3
    expect(attentionWeight(rect, 1, 0, 1, 2)).toBeCloseTo(1 / 3, 6);
    // layer 0, head 1, query 0: flat 6, 7, 8 -> bytes 30, 35, 40
    expect(Array.from(attentionRow(rect, 0, 1, 0)).map((v) => Math.round(v * 255))).toEqual([30, 35, 40]);
    // the last row: layer 1, head 1, query 1 -> flat 21..23
    expect(Array.from(attentionRow(rect, 1, 1, 1)).map((v) => Math.round(v * 255))).toEqual([105, 110, 115]);
  });
  it('gives zeros outside the tensor', () => {
    expect(attentionWeight(rect, 0, 0, 2, 0)).toBe(0);   // query past Tq
    expect(attentionWeight(rect, 0, 0, 0, 3)).toBe(0);   // key past Tk
    expect(Array.from(attentionRow(rect, 0, 2, 0))).toEqual([0, 0, 0]);
    expect(Array.from(attentionRow(rect, 0, 0, 2))).toEqual([0, 0, 0]);
  });
});
