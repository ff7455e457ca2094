// Typed client of the t3vis HTTP API (docs/api.md): token handling, JSON, binary arrays
// and Arrow IPC tables decoded into typed arrays.
import { tableFromIPC, type Table, type Vector } from 'apache-arrow';
import type {
  Alignment, ByteTensor, Curves, DataMap, GenerateRequest, GenerationAnswer, GenerativePruneResponse, HeadHistory, ExampleDetail,
  HeadScope, HeadsResponse, InstanceRequest, InstanceResponse, Points, Projection, ProjectionMethod, ProjectionStatus,
  PruneResponse, RegionRule, RunInfo, RunListEntry, RunVersion, SelectionSummary, SequenceInstanceAnswer, SequenceInstanceRequest,
  StackAttention, TablePage, TableQuery,
} from './types';

import { REGION_NAMES } from './filters';
import { send } from './transport';

export const REGIONS = REGION_NAMES;

/** An error answer of the API ({detail}) or a network failure. */
export class ApiError extends Error {
  status: number;
  detail: string;
  constructor(status: number, detail: string) {
    super(status ? `${detail} (HTTP ${status})` : detail);
    this.status = status;
    this.detail = detail;
  }
}

export function isAbort(err: unknown): boolean {
  return err instanceof DOMException && err.name === 'AbortError';
}

/** The token from the page URL (`?token=`), sent on every call as a Bearer header. */
function pageToken(): string | null {
  return typeof window === 'undefined' ? null : new URLSearchParams(window.location.search).get('token');
}

const TOKEN = pageToken();

function headers(extra: Record<string, string> = {}): Record<string, string> {
  return TOKEN ? { Authorization: `Bearer ${TOKEN}`, ...extra } : extra;
}

const enc = encodeURIComponent;

async function errorOf(res: Response): Promise<ApiError> {
  let detail = res.statusText || 'request failed';
  try {
    const body = await res.json();
    if (body && body.detail !== undefined) {
      detail = typeof body.detail === 'string' ? body.detail : describeValidation(body.detail);
    }
  } catch {
    /* not JSON */
  }
  if (res.status === 401) detail += ' — open the URL printed by `t3vis serve` (it carries ?token=…)';
  return new ApiError(res.status, detail);
}

/** FastAPI 422 bodies carry a list of {loc, msg}; make one readable line of it. */
function describeValidation(detail: unknown): string {
  if (Array.isArray(detail)) {
    return detail
      .map((d) => (d && typeof d === 'object' ? `${(d.loc ?? []).join('.')}: ${d.msg ?? ''}` : String(d)))
      .join('; ');
  }
  return JSON.stringify(detail);
}

async function request(path: string, init: RequestInit = {}): Promise<Response> {
  let res: Response;
  try {
    res = await send(path, { ...init, headers: headers(init.headers as Record<string, string>) });
  } catch (err) {
    if (isAbort(err)) throw err;
    throw new ApiError(0, `cannot reach the t3vis server (${(err as Error).message}); is \`t3vis serve\` running?`);
  }
  if (!res.ok) throw await errorOf(res);
  return res;
}

async function getJSON<T>(path: string, signal?: AbortSignal): Promise<T> {
  return (await request(path, { signal })).json() as Promise<T>;
}

async function postJSON<T>(path: string, body: unknown, signal?: AbortSignal): Promise<T> {
  const res = await request(path, {
    method: 'POST', body: JSON.stringify(body), signal, headers: { 'Content-Type': 'application/json' },
  });
  return res.json() as Promise<T>;
}

async function getArrow(path: string, signal?: AbortSignal): Promise<Table> {
  const res = await request(path, { signal });
  return tableFromIPC(new Uint8Array(await res.arrayBuffer()));
}

async function getBytes(path: string, signal?: AbortSignal): Promise<ByteTensor> {
  const res = await request(path, { signal });
  return decodeBytes(new Uint8Array(await res.arrayBuffer()), res.headers.get('X-T3vis-Shape'), `binary answer of ${path}`);
}

// ---- Arrow columns to typed arrays -------------------------------------------------------

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

// ---- Endpoints ---------------------------------------------------------------------------

const runPath = (run: string) => `/runs/${enc(run)}`;
const ckPath = (run: string, step: number) => `${runPath(run)}/checkpoints/${step}`;
/** `?stack=S` (or `&stack=S` after a query), or nothing for the run's default stack */
const stackQuery = (stack: string | null | undefined, sep = '?') => (stack ? `${sep}stack=${enc(stack)}` : '');

/** A JSON list of token labels from a header (the server escapes non-ASCII as \u). */
export function tokenHeader(value: string | null, what: string): string[] {
  try {
    const v = JSON.parse(value ?? '');
    if (Array.isArray(v) && v.every((t) => typeof t === 'string')) return v;
  } catch {
    /* fall through */
  }
  throw new ApiError(0, `${what} header is not a JSON list of tokens`);
}

export const api = {
  runs: (signal?: AbortSignal) => getJSON<RunListEntry[]>('/runs', signal),
  run: (run: string, signal?: AbortSignal) => getJSON<RunInfo>(runPath(run), signal),
  curves: (run: string, signal?: AbortSignal) => getJSON<Curves>(`${runPath(run)}/curves`, signal),
  /** Where the run stands and a number that grows with every checkpoint, dynamics part or run.json change. */
  version: (run: string, signal?: AbortSignal) => getJSON<RunVersion>(`${runPath(run)}/version`, signal),

  points: async (run: string, step: number, signal?: AbortSignal) =>
    decodePoints(await getArrow(`${ckPath(run, step)}/points`, signal)),

  datamap: async (run: string, signal?: AbortSignal) => decodeDataMap(await getArrow(`${runPath(run)}/datamap`, signal)),

  table: (run: string, q: TableQuery, signal?: AbortSignal) => postJSON<TablePage>(`${runPath(run)}/table`, q, signal),

  selection: (run: string, idList: number[], signal?: AbortSignal) =>
    postJSON<SelectionSummary>(`${runPath(run)}/selection`, { ids: idList }, signal),

  example: (run: string, id: number, signal?: AbortSignal) =>
    getJSON<ExampleDetail>(`${runPath(run)}/examples/${id}`, signal),

  heads: (run: string, step: number, scope: HeadScope, idList: number[] | null, signal?: AbortSignal,
    stack: string | null = null) =>
    postJSON<HeadsResponse>(`${ckPath(run, step)}/heads`, { scope, ids: idList, ...(stack ? { stack } : {}) }, signal),

  thumbnails: (run: string, step: number, signal?: AbortSignal, stack: string | null = null) =>
    getBytes(`${ckPath(run, step)}/heads/thumbnails${stackQuery(stack)}`, signal),

  instance: (run: string, step: number, req: InstanceRequest, signal?: AbortSignal) =>
    postJSON<InstanceResponse>(`${ckPath(run, step)}/instance`, req, signal),

  attention: (run: string, step: number, target: { id: number } | { text: string }, signal?: AbortSignal) => {
    const q = 'id' in target ? `id=${target.id}` : `text=${enc(target.text)}`;
    return getBytes(`${ckPath(run, step)}/instance/attention?${q}`, signal);
  },

  headHistory: (run: string, signal?: AbortSignal, stack: string | null = null) =>
    getJSON<HeadHistory>(`${runPath(run)}/heads/history${stackQuery(stack)}`, signal),

  /** A classifier's measures with heads masked; `estimate`: at once, from a seeded sample, with 95% intervals. */
  prune: (run: string, step: number, masked: [number, number][], idList: number[] | null, signal?: AbortSignal,
    estimate = false) =>
    postJSON<PruneResponse>(`${ckPath(run, step)}/prune`, { masked_heads: masked, ids: idList, estimate }, signal),

  // ---- generative runs ----

  /** A sequence at a checkpoint: per-token outputs, and the saliency of `token` (or the matrix). */
  sequenceInstance: (run: string, step: number, req: SequenceInstanceRequest, signal?: AbortSignal) =>
    postJSON<SequenceInstanceAnswer>(`${ckPath(run, step)}/instance`, req, signal),

  /** Every head of one stack for a sequence: `attentionId` is the instance answer's attention_id. */
  async stackAttention(run: string, step: number, attentionId: string, stack: string | null,
    signal?: AbortSignal): Promise<StackAttention> {
    const path = `${ckPath(run, step)}/instance/attention?${attentionId}${stackQuery(stack, '&')}`;
    const res = await request(path, { signal });
    const t = decodeBytes(new Uint8Array(await res.arrayBuffer()), res.headers.get('X-T3vis-Shape'), `attention of ${path}`);
    return {
      ...t,
      stack: res.headers.get('X-T3vis-Stack') ?? stack ?? '',
      queryTokens: tokenHeader(res.headers.get('X-T3vis-Query-Tokens'), 'X-T3vis-Query-Tokens'),
      keyTokens: tokenHeader(res.headers.get('X-T3vis-Key-Tokens'), 'X-T3vis-Key-Tokens'),
    };
  },

  generate: (run: string, step: number, req: GenerateRequest, signal?: AbortSignal) =>
    postJSON<GenerationAnswer>(`${ckPath(run, step)}/generate`, req, signal),

  /** Mask heads of any stacks: measures before and after, and generations for at most 20 examples. */
  pruneStacks: (run: string, step: number, masked: Record<string, [number, number][]>, idList: number[] | null,
    maxNewTokens = 20, signal?: AbortSignal) =>
    postJSON<GenerativePruneResponse>(`${ckPath(run, step)}/prune`,
      { masked_heads: masked, ids: idList, max_new_tokens: maxNewTokens }, signal),

  /**
   * The projection of (step, layer, method). While the server computes it (202), polls the
   * same URL every `pollMs` and reports progress; resolves with the decoded float32 (N, 3).
   * `align`: each layout aligned to the previous checkpoint's, or all to the last checkpoint's.
   */
  async projection(run: string, step: number, layer: number, method: ProjectionMethod,
    onProgress: (s: ProjectionStatus) => void, signal?: AbortSignal, pollMs = 500,
    stack: string | null = null, align: Alignment = 'previous'): Promise<Projection> {
    const path = `${ckPath(run, step)}/projection?layer=${layer}&method=${method}&aligned=true&align=${align}${stackQuery(stack, '&')}`;
    for (;;) {
      const res = await request(path, { signal });
      if (res.status === 202) {
        const status = (await res.json()) as ProjectionStatus;
        if (status.status === 'failed') throw new ApiError(202, `projection failed: ${status.message || 'no reason given'}`);
        onProgress(status);
        await sleep(pollMs, signal);
        continue;
      }
      const mp = res.headers.get('X-T3vis-Mean-Preservation');
      return decodeProjection(await res.arrayBuffer(), res.headers.get('X-T3vis-Rows'),
        res.headers.get('X-T3vis-Sampled'), mp);
    }
  },
};

/** The float32 (N, 3) body of a projection (x, y, preservation per row) into columns. */
export function decodeProjection(buf: ArrayBuffer, rowsHeader: string | null, sampledHeader: string | null,
  meanHeader: string | null): Projection {
  const flat = new Float32Array(buf, 0, Math.floor(buf.byteLength / 4));
  if (buf.byteLength % 4) throw new ApiError(0, `projection body of ${buf.byteLength} bytes is not float32`);
  const n = rowsHeader !== null ? Number(rowsHeader) : flat.length / 3;
  if (!Number.isInteger(n) || flat.length !== n * 3) throw new ApiError(0, `projection has ${flat.length} floats, expected ${n} x 3`);
  const x = new Float32Array(n), y = new Float32Array(n), p = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x[i] = flat[3 * i];
    y[i] = flat[3 * i + 1];
    p[i] = flat[3 * i + 2];
  }
  return {
    n, x, y, preservation: p,
    sampled: sampledHeader === 'true',
    meanPreservation: meanHeader !== null && meanHeader !== '' && Number.isFinite(Number(meanHeader)) ? Number(meanHeader) : null,
  };
}

/** A uint8 body with its X-T3vis-Shape header, checked against each other. */
export function decodeBytes(data: Uint8Array, shapeHeader: string | null, what = 'binary answer'): ByteTensor {
  const shape = (shapeHeader ?? '').split(',').filter(Boolean).map(Number);
  const expected = shape.reduce((a, b) => a * b, 1);
  if (!shape.length || shape.some((d) => !Number.isInteger(d) || d < 0) || expected !== data.length) {
    throw new ApiError(0, `${what} has ${data.length} bytes, shape header says ${shape.join('x') || 'nothing'}`);
  }
  return { shape, data };
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      reject(new DOMException('aborted', 'AbortError'));
    }, { once: true });
  });
}

/** The API caps id lists at 100,000. */
export const MAX_IDS = 100_000;

export function idList(sel: Set<number> | null): number[] | null {
  if (!sel) return null;
  const out: number[] = [];
  for (const id of sel) {
    if (out.length >= MAX_IDS) break;
    out.push(id);
  }
  return out;
}
