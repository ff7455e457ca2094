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

// ---- The data map: training examples, many of them not probe examples -------------------

/** Whether the filter tests an attribute only probe examples have (gold label in the data
 * map's arrays, prediction, correctness, loss at the checkpoint). */
export function needsProbe(f: PointFilter): boolean {
  return !!(f.labels?.length || f.preds?.length || f.correct !== null || f.lossMin !== null || f.lossMax !== null);
}

/**
 * The filter over data-map rows: the region is the data map's own; label, prediction,
 * correctness and loss are read from the probe row of the checkpoint's points (pts), so an
 * example without one (not probed, or points not loaded yet) is unknown there and filtered out.
 * Null when no filter is active.
 */
export function dataMapMask(dm: { n: number; region: Int8Array; probeRow: Int32Array }, pts: Points | null,
  f: PointFilter): Uint8Array | null {
  if (!isFilterActive(f)) return null;
  const mask = new Uint8Array(dm.n).fill(1);
  const regions = f.regions?.length ? new Set(f.regions.map((r) => (REGION_NAMES as readonly string[]).indexOf(r))) : null;
  const probe = needsProbe(f) ? (pts ? filterMask(pts, { ...f, regions: null }) : new Uint8Array(0)) : null;
  for (let i = 0; i < dm.n; i++) {
    if (regions && !regions.has(dm.region[i])) mask[i] = 0;
    else if (probe) {
      const r = dm.probeRow[i];
      if (!(r >= 0 && r < probe.length && probe[r])) mask[i] = 0;
    }
  }
  return mask;
}

// ---- Multi-value menus ------------------------------------------------------------------

/** A list with v added (on) or removed (off), in the menu's order when one is given; null
 * when it ends up empty (no filter). */
export function toggleValue<T>(list: readonly T[] | null, v: T, on: boolean, order?: readonly T[]): T[] | null {
  const rest = (list ?? []).filter((x) => x !== v);
  let next = on ? [...rest, v] : rest;
  if (order) next = [...order.filter((x) => next.includes(x)), ...next.filter((x) => !order.includes(x))];
  return next.length ? next : null;
}

/** The summary of a multi-value menu: "gold: any", "gold: positive", "gold: 2 of 3". */
export function multiSummary(title: string, names: readonly string[], chosen: readonly (string | number)[] | null,
  nameOf: (v: string | number) => string = String): string {
  if (!chosen?.length) return `${title}: any`;
  if (chosen.length === 1) return `${title}: ${nameOf(chosen[0])}`;
  if (chosen.length === 2) return `${title}: ${nameOf(chosen[0])}, ${nameOf(chosen[1])}`;
  return `${title}: ${chosen.length} of ${names.length}`;
}
