// Filters on point attributes (gold label, prediction, correctness, loss range, data-map
// region), shared by the projections (which hide or dim what they filter out) and the table
// (which sends the same filter to the server). Pure functions over typed arrays.
import type { Points, TableQuery } from './types';

export const REGION_NAMES = ['easy-to-learn', 'ambiguous', 'hard-to-learn'] as const;

export interface PointFilter {
  labels: number[] | null;
  preds: number[] | null;
  correct: boolean | null;
  lossMin: number | null;
  lossMax: number | null;
  regions: string[] | null;
}

export type FilterMode = 'dim' | 'hide';

export const NO_FILTER: PointFilter = Object.freeze({
  labels: null, preds: null, correct: null, lossMin: null, lossMax: null, regions: null,
}) as PointFilter;

export function isFilterActive(f: PointFilter): boolean {
  return !!(f.labels?.length || f.preds?.length || f.correct !== null || f.lossMin !== null || f.lossMax !== null
    || f.regions?.length);
}

/**
 * One byte per point: 1 kept, 0 filtered out; null when no filter is active. Points without a
 * value for a filtered attribute (no prediction, no loss, no region) are filtered out.
 */
export function filterMask(pts: Points, f: PointFilter): Uint8Array | null {
  if (!isFilterActive(f)) return null;
  const n = pts.n;
  const mask = new Uint8Array(n).fill(1);
  const labels = f.labels?.length ? new Set(f.labels) : null;
  const preds = f.preds?.length ? new Set(f.preds) : null;
  const regions = f.regions?.length ? new Set(f.regions.map((r) => (REGION_NAMES as readonly string[]).indexOf(r))) : null;
  const want = f.correct === null ? -1 : f.correct ? 1 : 0;
  const lo = f.lossMin ?? -Infinity, hi = f.lossMax ?? Infinity;
  const lossOn = f.lossMin !== null || f.lossMax !== null;
  for (let i = 0; i < n; i++) {
    if ((labels && !labels.has(pts.label[i]))
      || (preds && !preds.has(pts.pred[i]))
      || (want >= 0 && pts.correct[i] !== want)
      || (regions && !regions.has(pts.region[i]))
      || (lossOn && !(pts.loss[i] >= lo && pts.loss[i] <= hi))) mask[i] = 0;
  }
  return mask;
}

/** Indices of the kept points. */
export function keptRows(mask: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < mask.length; i++) if (mask[i]) out.push(i);
  return out;
}

export function countKept(mask: Uint8Array | null, n: number): number {
  if (!mask) return n;
  let c = 0;
  for (let i = 0; i < mask.length; i++) c += mask[i];
  return c;
}

/** The same filter as the table API's query fields. */
export function filterQuery(f: PointFilter): Pick<TableQuery, 'labels' | 'preds' | 'correct' | 'loss_min' | 'loss_max' | 'regions'> {
  return {
    labels: f.labels?.length ? [...f.labels] : null,
    preds: f.preds?.length ? [...f.preds] : null,
    correct: f.correct,
    loss_min: f.lossMin,
    loss_max: f.lossMax,
    regions: f.regions?.length ? [...f.regions] : null,
  };
}

// ---- URL form: "label:0,1;pred:1;correct:0;loss:0.5~2;region:ambiguous" ------------------

export function encodeFilter(f: PointFilter): string | null {
  if (!isFilterActive(f)) return null;
  const parts: string[] = [];
  if (f.labels?.length) parts.push(`label:${f.labels.join(',')}`);
  if (f.preds?.length) parts.push(`pred:${f.preds.join(',')}`);
  if (f.correct !== null) parts.push(`correct:${f.correct ? 1 : 0}`);
  if (f.lossMin !== null || f.lossMax !== null) parts.push(`loss:${f.lossMin ?? ''}~${f.lossMax ?? ''}`);
  if (f.regions?.length) parts.push(`region:${f.regions.join(',')}`);
  return parts.join(';');
}

export function decodeFilter(s: string | null): PointFilter {
  const f: PointFilter = { ...NO_FILTER };
  if (!s) return f;
  const ints = (v: string) => v.split(',').map(Number).filter((x) => Number.isInteger(x) && x >= 0);
  const num = (v: string) => (v === '' || !Number.isFinite(Number(v)) ? null : Number(v));
  for (const part of s.split(';')) {
    const i = part.indexOf(':');
    if (i < 0) continue;
    const k = part.slice(0, i), v = part.slice(i + 1);
    if (k === 'label') f.labels = ints(v).length ? ints(v) : null;
    else if (k === 'pred') f.preds = ints(v).length ? ints(v) : null;
    else if (k === 'correct') f.correct = v === '1' ? true : v === '0' ? false : null;
    else if (k === 'loss') {
      const [a, b = ''] = v.split('~');
      f.lossMin = num(a);
      f.lossMax = num(b);
    } else if (k === 'region') {
      const r = v.split(',').filter((x) => (REGION_NAMES as readonly string[]).includes(x));
      f.regions = r.length ? r : null;
    }
  }
  return f;
}
