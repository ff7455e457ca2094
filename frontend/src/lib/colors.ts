// One palette for the whole page, and the encodings of every colour-by option as a
// (value per point, colour map, legend) triple that the WebGL scatterplots consume.
import { interpolateRgbBasis } from 'd3-interpolate';
import { interpolateViridis, interpolateRdBu } from 'd3-scale-chromatic';
import type { ColorBy, Points, Projection } from './types';
import { REGION_NAMES as REGIONS } from './filters';
import type { Behaviour } from './views';

export const CATEGORICAL = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1',
  '#ff9da7', '#9c755f', '#bab0ac'];
export const MISSING = '#c8cdd6';
export const CORRECT = '#4e79a7';
export const WRONG = '#e4572e';
export const REGION_COLORS: Record<string, string> = {
  'easy-to-learn': '#3f9e62',
  ambiguous: '#e0a526',
  'hard-to-learn': '#d1495b',
};
export const ACCENT = '#4353c9';
export const SELECTED = '#16181d';

/** preservation: low (distorted) red through amber to blue (kept). */
export const interpolatePreservation = interpolateRgbBasis(['#c0392b', '#e8a33d', '#9cc3d9', '#2d6a9f']);
/** loss: low values recede (pale), high values stand out (dark red). */
export const interpolateLoss = interpolateRgbBasis(['#cdd8e6', '#f0b062', '#d9534f', '#7a0f25']);
export const interpolateImportance = (t: number) => interpolateViridis(0.95 - 0.9 * t);
/** signed saliency: -1 blue (against the class) .. +1 red (toward it). */
export const interpolateSigned = (t: number) => interpolateRdBu(1 - (t + 1) / 2);

export function ramp(interp: (t: number) => string, n = 64): string[] {
  return Array.from({ length: n }, (_, i) => interp(i / (n - 1)));
}

export type Legend =
  | { kind: 'categorical'; title: string; items: { label: string; color: string; count?: number; note?: string }[] }
  | { kind: 'continuous'; title: string; colors: string[]; min: string; max: string; note?: string };

/** What a scatterplot draws for one colour-by choice. */
export interface Encoding {
  values: Float32Array; // category index, or 0..1 (NaN: no value)
  continuous: boolean;
  colors: string[];
  legend: Legend;
  /** draw order (last on top): the telling end of a continuous scale drawn over the rest */
  order?: Int32Array | null;
}

/** gold-label probability / confidence: low (wrong, red) to high (right, blue). */
export const interpolateGoldProb = interpolateRgbBasis(['#b2182b', '#ef8a62', '#e8e2cf', '#67a9cf', '#2166ac']);
/** variability: low recedes (pale), high stands out (purple). */
export const interpolateVariability = interpolateRgbBasis(['#e3e0ef', '#b4a7d6', '#7b5ea7', '#3f1f69']);
export const FILTERED = '#eceef2';
/** Points outside a big selection (drawn by recolouring, ReglScatter.svelte). */
export const UNSELECTED = '#dde0e7';

/** Indices sorted by value, ascending (or descending), NaN first. */
export function orderBy(values: Float32Array, descending = false): Int32Array {
  const idx = new Int32Array(values.length);
  for (let i = 0; i < idx.length; i++) idx[i] = i;
  const key = (i: number) => (Number.isFinite(values[i]) ? (descending ? -values[i] : values[i]) : -Infinity);
  return idx.sort((a, b) => key(a) - key(b));
}

/** The q-quantile of the finite values (1 when there are none). */
export function quantile(a: Float32Array, q: number): number {
  const v = Float32Array.from(a).sort(); // numeric; NaN sorts last
  let n = v.length;
  while (n && !Number.isFinite(v[n - 1])) n--;
  if (!n) return 1;
  return v[Math.min(n - 1, Math.floor(q * (n - 1)))];
}

function count(values: Float32Array, k: number): number {
  let c = 0;
  for (let i = 0; i < values.length; i++) if (values[i] === k) c++;
  return c;
}

function countMissing(values: Float32Array): number {
  let c = 0;
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) c++;
  return c;
}

function categorical(title: string, values: Float32Array, labels: string[], colors: string[]): Encoding {
  return {
    values, continuous: false, colors,
    legend: {
      kind: 'categorical', title,
      items: labels.map((label, k) => ({ label, color: colors[k], count: count(values, k) }))
        .filter((it) => it.count > 0),
    },
  };
}

/** A value per point mapped onto [lo, hi] -> [0, 1] (clamped; NaN stays NaN for "no value"). */
export function normalise(src: Float32Array, lo: number, hi: number): Float32Array {
  const out = new Float32Array(src.length);
  const span = hi - lo || 1;
  for (let i = 0; i < src.length; i++) {
    const v = src[i];
    out[i] = Number.isFinite(v) ? Math.max(0, Math.min(1, (v - lo) / span)) : NaN;
  }
  return out;
}

function continuous(title: string, values: Float32Array, interp: (t: number) => string, min: string, max: string,
  descending = false, note?: string): Encoding {
  const missing = countMissing(values);
  const notes = [note, missing ? `${missing.toLocaleString()} without a value (grey)` : undefined].filter(Boolean);
  return {
    values, continuous: true, colors: ramp(interp), order: orderBy(values, descending),
    legend: { kind: 'continuous', title, colors: ramp(interp, 16), min, max, note: notes.length ? notes.join(' · ') : undefined },
  };
}

/** A perplexity as a legend's end shows it: one decimal below 100, whole numbers above. */
export function perplexityText(p: number): string {
  return p < 100 ? p.toFixed(1) : Math.round(p).toLocaleString('en-US');
}

/** The upper end of a legend for a long-tailed non-negative quantity (its 98th percentile). */
export function upperEnd(values: Float32Array, q = 0.98): number {
  return Math.max(quantile(values, q), 1e-6);
}

/** Legend titles that differ by the task's behaviour: a sequence run's label is a category, and
 *  its data map follows the mean target-token probability instead of p(gold). */
const TITLES: Record<Behaviour, { label: string; loss: string; confidence: string; variability: string }> = {
  classifier: {
    label: 'Gold label',
    loss: 'Loss (cross-entropy)',
    confidence: 'Data-map confidence (mean p(gold) over epochs)',
    variability: 'Data-map variability (std of p(gold) over epochs)',
  },
  sequence: {
    label: 'Category',
    loss: 'Loss (mean target-token negative log-likelihood)',
    confidence: 'Data-map confidence (mean target-token probability over epochs)',
    variability: 'Data-map variability (std of mean target-token probability over epochs)',
  },
};

export function encodePoints(by: ColorBy, pts: Points, proj: Projection | null, labelNames: string[],
  behaviour: Behaviour = 'classifier'): Encoding {
  const titles = TITLES[behaviour];
  const n = pts.n;
  const values = new Float32Array(n);
  const nl = Math.max(labelNames.length, 1);
  const labelColors = labelNames.map((_, i) => CATEGORICAL[i % CATEGORICAL.length]);
  switch (by) {
    case 'label':
    case 'pred': {
      const src = by === 'label' ? pts.label : pts.pred;
      for (let i = 0; i < n; i++) values[i] = src[i] >= 0 && src[i] < nl ? src[i] : nl;
      return categorical(by === 'label' ? titles.label : 'Prediction', values, [...labelNames, 'unknown'],
        [...labelColors, MISSING]);
    }
    case 'correct': {
      for (let i = 0; i < n; i++) values[i] = pts.correct[i] === 1 ? 0 : pts.correct[i] === 0 ? 1 : 2;
      return categorical('Prediction is', values, ['correct', 'wrong', 'unknown'], [CORRECT, WRONG, MISSING]);
    }
    case 'region': {
      for (let i = 0; i < n; i++) values[i] = pts.region[i] >= 0 ? pts.region[i] : REGIONS.length;
      return categorical('Data-map region', values, [...REGIONS, 'no training dynamics'],
        [...REGIONS.map((r) => REGION_COLORS[r]), MISSING]);
    }
    case 'loss': {
      const hi = upperEnd(pts.loss);
      return continuous(titles.loss, normalise(pts.loss, 0, hi), interpolateLoss, '0', `≥ ${hi.toFixed(2)}`);
    }
    case 'gold_prob':
      // low confidence is the telling end: drawn on top
      return continuous('Gold-label confidence p(gold) at this checkpoint', normalise(pts.goldProb, 0, 1),
        interpolateGoldProb, '0 wrong', '1 right', true);
    case 'confidence':
      return continuous(titles.confidence, normalise(pts.confidence, 0, 1),
        interpolateGoldProb, '0', '1', true);
    case 'variability': {
      const hi = upperEnd(pts.variability, 1);
      return continuous(titles.variability, normalise(pts.variability, 0, hi),
        interpolateVariability, '0', hi.toFixed(2));
    }
    case 'perplexity': {
      // perplexity spans orders of magnitude: coloured on a log scale from the points' lowest
      // up to their 98th percentile (a few outliers would wash the rest out)
      const logs = new Float32Array(n);
      for (let i = 0; i < n; i++) logs[i] = pts.perplexity[i] >= 1 ? Math.log(pts.perplexity[i]) : NaN;
      const lo = quantile(logs, 0), hi = Math.max(upperEnd(logs), lo + 1e-6);
      return continuous('Perplexity (exp of the mean target-token loss), log scale', normalise(logs, lo, hi),
        interpolateLoss, perplexityText(Math.exp(lo)), `≥ ${perplexityText(Math.exp(hi))}`);
    }
    case 'token_accuracy':
      return continuous('Token accuracy (target tokens the model ranks first)', normalise(pts.tokenAccuracy, 0, 1),
        interpolateGoldProb, '0', '1', true);
    case 'mean_prob':
      return continuous('Mean target-token probability at this checkpoint', normalise(pts.meanProb, 0, 1),
        interpolateGoldProb, '0', '1', true);
    case 'preservation': {
      // above 50,000 points the server measures a sample: the others are NaN, drawn as missing
      return continuous('Neighbourhood preservation (10-NN kept in 2-D)', proj ? normalise(proj.preservation, 0, 1) : values, interpolatePreservation,
        '0 distorted', '1 kept', true, proj?.meanPreservation != null ? `mean ${proj.meanPreservation.toFixed(2)}` : undefined);
    }
  }
}

/** What the WebGL plot draws: one category per point (continuous values binned), colours, order. */
export interface Drawable {
  values: Float32Array;
  colors: string[];
  order: Int32Array | null;
}

/**
 * An encoding as categories the plot draws, with the filter applied: continuous values are
 * binned onto their ramp, points without a value take the MISSING colour, and filtered-out
 * points (mask 0) the faint FILTERED colour, drawn beneath the rest. With mode 'hide' the plot
 * hides them instead (its filter), so they keep their colour here.
 */
export function drawable(enc: Encoding, mask: Uint8Array | null, mode: 'dim' | 'hide' = 'dim'): Drawable {
  const n = enc.values.length;
  const out = new Float32Array(n);
  const k = enc.colors.length;
  const missing = k, faded = k + 1;
  for (let i = 0; i < n; i++) {
    const v = enc.values[i];
    if (!Number.isFinite(v)) out[i] = missing;
    else out[i] = enc.continuous ? Math.round(Math.max(0, Math.min(1, v)) * (k - 1)) : v;
    if (mask && !mask[i] && mode === 'dim') out[i] = faded;
  }
  let order = enc.order ?? null;
  if (mask && mode === 'dim') {
    const base = order ?? Int32Array.from({ length: n }, (_, i) => i);
    const next = new Int32Array(n);
    let j = 0;
    for (let i = 0; i < n; i++) if (!mask[base[i]]) next[j++] = base[i];
    for (let i = 0; i < n; i++) if (mask[base[i]]) next[j++] = base[i];
    order = next;
  }
  return { values: out, colors: [...enc.colors, MISSING, FILTERED], order };
}

export function hexToRgb(hex: string): [number, number, number] {
  const m = hex.replace('#', '');
  const full = m.length === 3 ? m.split('').map((c) => c + c).join('') : m;
  return [parseInt(full.slice(0, 2), 16), parseInt(full.slice(2, 4), 16), parseInt(full.slice(4, 6), 16)];
}

/** d3 colour strings are "rgb(r, g, b)"; regl-scatterplot wants hex. */
export function toHex(color: string): string {
  if (color.startsWith('#')) return color;
  const m = color.match(/\d+(\.\d+)?/g);
  if (!m) return '#000000';
  return '#' + m.slice(0, 3).map((v) => Math.round(Number(v)).toString(16).padStart(2, '0')).join('');
}
