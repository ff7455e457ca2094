import { describe, expect, it } from 'vitest';
import { attentionRow, attentionWeight } from '../../src/lib/attention';
import { indexOf, probeSelection, rowsOf } from '../../src/lib/examples';
import { Selection } from '../../src/lib/selection';
import { fixed, layerLabel, metric, metricLabel, pct } from '../../src/lib/format';
import { cellAt, headSeries } from '../../src/lib/heads';
import { frameFits, frameOf, pointStyle, toNdc } from '../../src/lib/frame';
import { smoothByCount } from '../../src/lib/series';

describe('attention tensor (L, H, T, T) uint8', () => {
  // L=1, H=2, T=2: head 1, query 1 attends [64, 191]
  const a = { shape: [1, 2, 2, 2], data: Uint8Array.from([255, 0, 0, 255, 128, 127, 64, 191]) };
  it('reads one weight and one query row', () => {
    expect(attentionWeight(a, 0, 1, 1, 0)).toBeCloseTo(64 / 255);
    expect(Array.from(attentionRow(a, 0, 1, 1)).map((v) => Math.round(v * 255))).toEqual([64, 191]);
    expect(Array.from(attentionRow(a, 0, 0, 0)).map((v) => Math.round(v * 255))).toEqual([255, 0]);
  });
  it('answers zeros outside the tensor', () => {
    expect(Array.from(attentionRow(a, 3, 0, 0))).toEqual([0, 0]);
  });
});

describe('heads', () => {
  it('headSeries follows one head across checkpoints', () => {
    const h = { steps: [0, 5, 10], importance: [[[1, 2]], [[3, 4]], [[5, NaN]]] };
    expect(headSeries(h, 0, 1).map(([s, v]) => [s, Number.isNaN(v) ? null : v])).toEqual([[0, 2], [5, 4], [10, null]]);
  });
  it('cellAt maps a pixel to (layer, head) past the label margins', () => {
    expect(cellAt(26 + 10, 16 + 30 + 1, 20, 26, 16, 2, 4)).toEqual({ l: 1, h: 0 });
    expect(cellAt(10, 10, 20, 26, 16, 2, 4)).toBeNull();
    expect(cellAt(26 + 80, 20, 20, 26, 16, 2, 4)).toBeNull();
  });
});

describe('examples', () => {
  const index = indexOf(Float64Array.from([10, 20, 30]));
  it('links ids to rows', () => {
    expect(rowsOf(new Set([30, 10, 99]), index)).toEqual({ mask: Uint8Array.from([1, 0, 1]), count: 2 });
    expect(rowsOf(null, index)).toBeNull();
    expect(index.get(20)).toBe(1);
    expect(index.get(21)).toBeUndefined();
    expect([...probeSelection(Selection.of([10, 99]), index)!]).toEqual([10]);
    expect([...probeSelection(Selection.of([3, 1, 2]), null)!]).toEqual([1, 2, 3]);
    expect(probeSelection(Selection.of([99]), index)).toBeNull();
  });
});

describe('frames (data -> device coordinates)', () => {
  const x = Float32Array.from([0, 10, 5]), y = Float32Array.from([0, 2, 1]);
  it('frameOf centres and pads the layout, one scale on both axes', () => {
    const f = frameOf(x, y, 0, 1);
    expect(f).toEqual({ cx: 5, cy: 1, half: 5 });
    const n = toNdc(x, y, f);
    expect(Array.from(n.x)).toEqual([-1, 1, 0]);
    expect(Array.from(n.y)).toEqual([-0.2, 0.2, 0].map(Math.fround));
  });
  it('a wide plot uses its width', () => {
    expect(frameOf(x, y, 0, 2).half).toBe(2.5);
  });
  it('frameFits keeps a frame for a similar layout and drops it for a much smaller one', () => {
    const f = frameOf(x, y, 0.06, 1);
    expect(frameFits(f, x, y, 1)).toBe(true);
    expect(frameFits(f, Float32Array.from([0, 1]), Float32Array.from([0, 1]), 1)).toBe(false);
  });
  it('pointStyle shrinks points as their number grows', () => {
    const small = pointStyle(100), big = pointStyle(1_000_000);
    expect(big.size).toBeLessThan(small.size);
    expect(big.opacity).toBeLessThan(small.opacity);
    expect(big.size).toBeGreaterThanOrEqual(1.5);
  });
  it('non-finite coordinates map to the origin', () => {
    const n = toNdc(Float32Array.from([NaN]), Float32Array.from([Infinity]), { cx: 0, cy: 0, half: 1 });
    expect([n.x[0], n.y[0]]).toEqual([0, 0]);
  });
});

describe('format', () => {
  it('formats numbers and names', () => {
    expect(pct(0.1234)).toBe('12.3%');
    expect(pct(NaN)).toBe('—');
    expect(fixed(null)).toBe('—');
    expect(metric('probe_accuracy', 0.5)).toBe('50.0%');
    expect(metric('probe_loss', 0.5)).toBe('0.500');
    expect(metricLabel('validation_accuracy')).toBe('val. acc.');
    expect(layerLabel(0)).toBe('emb');
  });
});

describe('series', () => {
  it('smoothByCount weights by count and skips NaN', () => {
    const out = smoothByCount([[0, 1], [1, NaN], [2, 0]], [1, 1, 3], 1);
    expect(out[0][1]).toBeCloseTo(1);
    expect(out[1][1]).toBeCloseTo(0.25);
    expect(out[2][1]).toBeCloseTo(0);
  });
});
