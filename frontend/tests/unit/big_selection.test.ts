import { describe, expect, it } from 'vitest';
import { decodeProjection } from '../../src/lib/decode';
import { pointsInPolygon, screenMapOf } from '../../src/lib/lasso';
import { RowIndex, rowList } from '../../src/lib/rows';
import { combineSelection, Selection } from '../../src/lib/selection';

describe('Selection (sorted Float64Array)', () => {
  it('sorts, drops repeats, and answers has/size like a Set', () => {
    const s = Selection.of([5, 1, 5, 3]);
    expect([...s]).toEqual([1, 3, 5]);
    expect(s.size).toBe(3);
    expect(s.has(3)).toBe(true);
    expect(s.has(4)).toBe(false);
  });
  it('combines big selections by merge, equal to Set arithmetic', () => {
    const a = Selection.of(Float64Array.from({ length: 100_000 }, (_, i) => 2 * i));
    const b = Selection.of(Float64Array.from({ length: 50_000 }, (_, i) => 3 * i));
    const sa = new Set(a), sb = new Set(b);
    const add = combineSelection(a, b, 'add')!;
    expect(add.size).toBe(new Set([...sa, ...sb]).size);
    const sub = combineSelection(a, b, 'subtract')!;
    expect(sub.size).toBe([...sa].filter((x) => !sb.has(x)).length);
    const both = combineSelection(a, b, 'intersect')!;
    expect([...both].slice(0, 4)).toEqual([0, 6, 12, 18]);
    expect(both.size).toBe([...sb].filter((x) => sa.has(x)).length);
  });
});

describe('RowIndex', () => {
  it('finds rows of unsorted ids and a selection\'s rows by merge', () => {
    const ids = Float64Array.from([40, 10, 30, 20]);
    const index = RowIndex.build(ids);
    expect([40, 10, 30, 20, 25].map((id) => index.get(id))).toEqual([0, 1, 2, 3, undefined]);
    const rows = index.rowsOf(Selection.of([10, 40, 99]));
    expect(rows.count).toBe(2);
    expect(Array.from(rowList(rows))).toEqual([0, 1]);
    expect([...index.within(Selection.of([10, 40, 99]))!]).toEqual([10, 40]);
  });
});

describe('the lasso over typed arrays', () => {
  it('takes the points inside a polygon in screen pixels (even-odd rule)', () => {
    // points at data (i, i) for i = 0..9; screen = (10 x + 5, -10 y + 100)
    const x = Float32Array.from({ length: 10 }, (_, i) => i), y = Float32Array.from(x);
    const map = screenMapOf(x, y, (r) => [10 * x[r] + 5, -10 * y[r] + 100]);
    expect(map).toEqual({ ax: 10, bx: 5, ay: -10, by: 100 });
    // a rectangle over screen x 20..60: data x 1.5..5.5 -> rows 2..5
    const rect = [20, 0, 60, 0, 60, 200, 20, 200];
    expect(Array.from(pointsInPolygon(x, y, map!, rect))).toEqual([2, 3, 4, 5]);
    const shown = Uint8Array.from({ length: 10 }, (_, i) => (i % 2 ? 1 : 0));
    expect(Array.from(pointsInPolygon(x, y, map!, rect, shown))).toEqual([3, 5]);
    // every point has screen x + y = 105: inside the triangle x + y < 200, outside x + y < 100
    expect(Array.from(pointsInPolygon(x, y, map!, [0, 0, 200, 0, 0, 200])).length).toBe(10);
    expect(Array.from(pointsInPolygon(x, y, map!, [0, 0, 100, 0, 0, 100]))).toEqual([]);
  });
});

describe('decodeProjection (quantised, encoding=u16)', () => {
  it('maps uint16 linearly onto the header\'s ranges; preservation 255 is missing', () => {
    const n = 3, buf = new ArrayBuffer(16 + 5 * n);
    new Float32Array(buf, 0, 4).set([-2, 2, 10, 20]);
    new Uint16Array(buf, 16, n).set([0, 65535, 32768]);
    new Uint16Array(buf, 16 + 2 * n, n).set([65535, 0, 0]);
    new Uint8Array(buf, 16 + 4 * n, n).set([254, 0, 255]);
    const p = decodeProjection(buf, String(n), null, null, 'u16');
    expect(Array.from(p.x)).toEqual([-2, 2, Math.fround(-2 + (32768 * 4) / 65535)]);
    expect(Array.from(p.y)).toEqual([20, 10, 10]);
    expect(p.preservation[0]).toBe(1);
    expect(p.preservation[1]).toBe(0);
    expect(Number.isNaN(p.preservation[2])).toBe(true);
  });
  it('reads a float32 answer to a u16 request (a server without quantising)', () => {
    const flat = new Float32Array([1, 2, 0.5, 3, 4, 1]);
    const p = decodeProjection(flat.buffer, '2', null, null, 'u16');
    expect(Array.from(p.x)).toEqual([1, 3]);
  });
});
