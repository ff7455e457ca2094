// Decoding the API's binary answers into typed arrays: Arrow IPC tables (points, data map) and
// projections (float32, or quantised uint16). Pure functions, run in a Web Worker
// (decode.worker.ts) where the page has one, else on the main thread (offthread.ts).
import { tableFromIPC, type Table, type Vector } from 'apache-arrow';
import makeKDBush from 'regl-scatterplot/src/kdbush-class.js';
import { ApiError } from './errors';
import { REGION_NAMES } from './filters';
import type { RasterFrame, RasterPoints } from './raster';
import { RowIndex } from './rows';
import type { DataMap, Points, Projection, RegionRule } from './types';

const REGIONS = REGION_NAMES;


function floats(v: Vector | null, n: number): Float32Array {
  const out = new Float32Array(n).fill(NaN);
  if (!v) return out;
  if (v.nullCount === 0) {
    const arr = v.toArray() as ArrayLike<number>;
    for (let i = 0; i < n; i++) out[i] = Number(arr[i]);
  } else {
    for (let i = 0; i < n; i++) {
      const x = v.get(i);
      out[i] = x === null ? NaN : Number(x);
    }
  }
  return out;
}

function ints(v: Vector | null, n: number, missing = -1): Int32Array {
  const out = new Int32Array(n).fill(missing);
  if (!v) return out;
  if (v.nullCount === 0) {
    const arr = v.toArray() as ArrayLike<number | bigint>;
    for (let i = 0; i < n; i++) out[i] = Number(arr[i]);
    return out;
  }
  for (let i = 0; i < n; i++) {
    const x = v.get(i);
    out[i] = x === null || x === undefined ? missing : Number(x);
  }
  return out;
}

function ids(v: Vector | null, n: number): Float64Array {
  const out = new Float64Array(n);
  if (!v) return out;
  const arr = v.toArray() as ArrayLike<number | bigint>;
  for (let i = 0; i < n; i++) out[i] = Number(arr[i]);
  return out;
}

function regionCodes(v: Vector | null, n: number): Int8Array {
  const out = new Int8Array(n).fill(-1);
  if (!v) return out;
  for (let i = 0; i < n; i++) {
    const s = v.get(i);
    out[i] = s === null ? -1 : (REGIONS as readonly string[]).indexOf(String(s));
  }
  return out;
}

export function decodePoints(t: Table): Points {
  const n = t.numRows;
  const correctV = t.getChild('correct');
  const correct = new Uint8Array(n).fill(255);
  if (correctV) for (let i = 0; i < n; i++) {
    const c = correctV.get(i);
    correct[i] = c === null ? 255 : c ? 1 : 0;
  }
  const splitV = t.getChild('split');
  const split: string[] = [];
  const splitCode = new Int8Array(n);
  if (splitV) for (let i = 0; i < n; i++) {
    const s = String(splitV.get(i) ?? '');
    let k = split.indexOf(s);
    if (k < 0) k = split.push(s) - 1;
    splitCode[i] = k;
  }
  return {
    n,
    id: ids(t.getChild('id'), n),
    label: ints(t.getChild('label'), n),
    pred: ints(t.getChild('pred'), n),
    correct,
    loss: floats(t.getChild('loss'), n),
    goldProb: floats(t.getChild('gold_prob'), n),
    confidence: floats(t.getChild('confidence'), n),
    variability: floats(t.getChild('variability'), n),
    region: regionCodes(t.getChild('region'), n),
    split,
    splitCode,
    perplexity: floats(t.getChild('perplexity'), n),
    meanProb: floats(t.getChild('mean_prob'), n),
    tokenAccuracy: floats(t.getChild('token_accuracy'), n),
    nTokens: floats(t.getChild('n_tokens'), n),
  };
}

/** The region rule of a data map's schema metadata (JSON); null when absent or malformed. */
export function parseRegionRule(text: string | null | undefined): RegionRule | null {
  if (!text) return null;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (!v || typeof v !== 'object') return null;
  const r = v as Record<string, unknown>;
  const numbers = ['num_classes', 'confidence_threshold', 'variability_quantile', 'variability_cut'];
  if (!numbers.every((k) => typeof r[k] === 'number' && Number.isFinite(r[k]))) return null;
  const describe: Record<string, string> = {};
  if (r.describe && typeof r.describe === 'object') {
    for (const [k, s] of Object.entries(r.describe as Record<string, unknown>)) if (typeof s === 'string') describe[k] = s;
  }
  return {
    num_classes: r.num_classes as number, confidence_threshold: r.confidence_threshold as number,
    variability_quantile: r.variability_quantile as number, variability_cut: r.variability_cut as number, describe,
  };
}

export const REGION_RULE_KEY = 't3vis.region_rule';

export function decodeDataMap(t: Table): DataMap {
  const n = t.numRows;
  return {
    n,
    rule: parseRegionRule(t.schema.metadata.get(REGION_RULE_KEY)),
    id: ids(t.getChild('id'), n),
    confidence: floats(t.getChild('confidence'), n),
    variability: floats(t.getChild('variability'), n),
    correctness: floats(t.getChild('correctness'), n),
    region: regionCodes(t.getChild('region'), n),
    probeRow: ints(t.getChild('probe_row'), n),
  };
}


/** The float32 (N, 3) body of a projection (x, y, preservation per row) into columns. `asked`
 *  'u16': the quantised body was asked for (`encoding=u16`, docs/api.md), read when the body has
 *  its 16 + 5N bytes (a server without it answers float32, 12N bytes: never the same length). */
export function decodeProjection(buf: ArrayBuffer, rowsHeader: string | null, sampledHeader: string | null,
  meanHeader: string | null, asked: 'f32' | 'u16' = 'f32'): Projection {
  const rows = rowsHeader !== null ? Number(rowsHeader) : null;
  const u16 = asked === 'u16' && rows !== null && Number.isInteger(rows) && buf.byteLength === 16 + 5 * rows;
  const cols = u16 ? quantised(buf, rows) : floats32(buf, rows);
  return {
    n: cols.x.length, ...cols,
    sampled: sampledHeader === 'true',
    meanPreservation: meanHeader !== null && meanHeader !== '' && Number.isFinite(Number(meanHeader)) ? Number(meanHeader) : null,
  };
}

type Columns = { x: Float32Array; y: Float32Array; preservation: Float32Array };

function floats32(buf: ArrayBuffer, rows: number | null): Columns {
  if (buf.byteLength % 4) throw new ApiError(0, `projection body of ${buf.byteLength} bytes is not float32`);
  const flat = new Float32Array(buf, 0, buf.byteLength / 4);
  const n = rows ?? flat.length / 3;
  if (!Number.isInteger(n) || flat.length !== n * 3) throw new ApiError(0, `projection has ${flat.length} floats, expected ${n} x 3`);
  const x = new Float32Array(n), y = new Float32Array(n), p = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x[i] = flat[3 * i];
    y[i] = flat[3 * i + 1];
    p[i] = flat[3 * i + 2];
  }
  return { x, y, preservation: p };
}

/** float32 x_min, x_max, y_min, y_max; N uint16 x; N uint16 y; N uint8 preservation (255: missing). */
function quantised(buf: ArrayBuffer, n: number): Columns {
  const [x0, x1, y0, y1] = new Float32Array(buf, 0, 4);
  const qx = new Uint16Array(buf, 16, n), qy = new Uint16Array(buf, 16 + 2 * n, n), qp = new Uint8Array(buf, 16 + 4 * n, n);
  const sx = (x1 - x0) / 65535, sy = (y1 - y0) / 65535;
  const x = new Float32Array(n), y = new Float32Array(n), p = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x[i] = x0 + qx[i] * sx;
    y[i] = y0 + qy[i] * sy;
    p[i] = qp[i] === 255 ? NaN : qp[i] / 254;
  }
  return { x, y, preservation: p };
}

// ---- What the decoding worker is asked and answers ------------------------------------------

export type DecodeKind = 'points' | 'datamap';
export type DecodeRequest = { id: number; kind: DecodeKind; body: ArrayBuffer }
  | { id: number; kind: 'kdbush'; x: Float32Array; y: Float32Array }
  // a plot's points are sent with its first frame and whenever they change; the worker keeps them
  | { id: number; kind: 'raster'; plot: number; points: RasterPoints | null; frame: RasterFrame }
  | { id: number; kind: 'raster-drop'; plot: number };
/** The decoded table and its row index's arrays (a class does not cross to the page; rows.ts rebuilds it). */
export interface Decoded { value: Points | DataMap; sortedIds: Float64Array; rowOfSorted: Int32Array | null }
export type DecodeAnswer = { id: number; decoded: Decoded } | { id: number; index: ArrayBuffer }
  | { id: number; pixels: ArrayBuffer }
  | { id: number; error: string; status: number };

/** Decode an Arrow IPC body into points or a data map, with the row index of its ids. */
export function decodeTable(kind: DecodeKind, body: ArrayBuffer): Decoded {
  const table = tableFromIPC(new Uint8Array(body));
  const value = kind === 'points' ? decodePoints(table) : decodeDataMap(table);
  const index = RowIndex.build(value.id);
  return { value, sortedIds: index.sortedIds, rowOfSorted: index.rowOfSorted };
}

/** The buffers of a decoded answer, handed over to the page rather than copied. */
export function transferables(d: Decoded): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  for (const v of [...Object.values(d.value), d.sortedIds, d.rowOfSorted]) {
    if (ArrayBuffer.isView(v) && v.buffer instanceof ArrayBuffer) out.add(v.buffer);
  }
  return [...out];
}

const KDBush = makeKDBush();

/** The spatial index regl-scatterplot looks points up in (KDBush's bytes, as it builds them: node
 *  size 16, float64), built here so the page does not (nor clone a million points to build it). */
export function spatialIndex(x: Float32Array, y: Float32Array): ArrayBuffer {
  const index = new KDBush(x.length, 16);
  for (let i = 0; i < x.length; i++) index.add(x[i], y[i]);
  index.finish();
  return index.data;
}
