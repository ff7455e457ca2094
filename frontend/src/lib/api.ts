// Typed client of the t3vis HTTP API (docs/api.md): token handling, JSON, binary arrays
// and Arrow IPC tables decoded into typed arrays.
import type {
  Alignment, ByteTensor, Curves, DataMap, GenerateRequest, GenerationAnswer, GenerativePruneResponse, HeadHistory, ExampleDetail,
  HeadScope, HeadsResponse, InstanceRequest, InstanceResponse, Points, Projection, ProjectionMethod, ProjectionStatus,
  PruneResponse, RegionRule, RunInfo, RunListEntry, RunVersion, SelectionSummary, SequenceInstanceAnswer, SequenceInstanceRequest,
  StackAttention, TablePage, TableQuery,
} from './types';

import { REGION_NAMES } from './filters';
import { ApiError } from './errors';
export { ApiError } from './errors';
export { decodeDataMap, decodePoints, decodeProjection, parseRegionRule, REGION_RULE_KEY } from './decode';
import { send } from './transport';
import { decodeProjection } from './decode';
import { decodeDataMapBody, decodePointsBody } from './offthread';
import type { Selection } from './selection';

export const REGIONS = REGION_NAMES;

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

let inFlight = 0;

async function request(path: string, init: RequestInit = {}): Promise<Response> {
  let res: Response;
  inFlight++;
  try {
    res = await send(path, { ...init, headers: headers(init.headers as Record<string, string>) });
  } catch (err) {
    if (isAbort(err)) throw err;
    throw new ApiError(0, `cannot reach the t3vis server (${(err as Error).message}); is \`t3vis serve\` running?`);
  } finally {
    inFlight--;
  }
  if (!res.ok) throw await errorOf(res);
  return res;
}

/** Resolves once no API request has been waiting for `quietMs`, or after `maxMs` at most: work
 *  that can wait (repainting a million points) lets the answers a gesture asked for land first. */
export function requestsSettled(quietMs = 80, maxMs = 3000): Promise<void> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    let quietSince = inFlight ? Infinity : t0;
    const check = () => {
      const now = performance.now();
      if (inFlight) quietSince = Infinity;
      else if (quietSince === Infinity) quietSince = now;
      if (now - quietSince >= quietMs || now - t0 >= maxMs) resolve();
      else setTimeout(check, 20);
    };
    setTimeout(check, 20);
  });
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

async function getBody(path: string, signal?: AbortSignal): Promise<ArrayBuffer> {
  return (await request(path, { signal })).arrayBuffer();
}

async function getBytes(path: string, signal?: AbortSignal): Promise<ByteTensor> {
  const res = await request(path, { signal });
  return decodeBytes(new Uint8Array(await res.arrayBuffer()), res.headers.get('X-T3vis-Shape'), `binary answer of ${path}`);
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

  /** Per-point columns of a checkpoint, decoded off the main thread; `columns`: only these (and
   *  the rest missing: NaN, -1), else all. */
  points: async (run: string, step: number, signal?: AbortSignal, columns: string[] | null = null) =>
    decodePointsBody(await getBody(`${ckPath(run, step)}/points${columns ? `?columns=${enc(columns.join(','))}` : ''}`, signal)),

  datamap: async (run: string, signal?: AbortSignal) => decodeDataMapBody(await getBody(`${runPath(run)}/datamap`, signal)),

  /** A page of the table; with a selection, of its examples only. */
  table: (run: string, q: TableQuery, sel: Selection | null, signal?: AbortSignal) =>
    withSelection(run, sel, signal, (ref) => postJSON<TablePage>(`${runPath(run)}/table`, { ...q, ...ref }, signal)),

  /** What a selection holds (not probed, without text). */
  selection: (run: string, sel: Selection, signal?: AbortSignal) =>
    sel.size <= INLINE_IDS
      ? postJSON<SelectionSummary>(`${runPath(run)}/selection`, { ids: Array.from(sel.ids) }, signal)
      : selectionHandle(run, sel, signal),

  example: (run: string, id: number, signal?: AbortSignal) =>
    getJSON<ExampleDetail>(`${runPath(run)}/examples/${id}`, signal),

  heads: (run: string, step: number, scope: HeadScope, sel: Selection | null, signal?: AbortSignal,
    stack: string | null = null) =>
    withSelection(run, sel, signal, (ref) =>
      postJSON<HeadsResponse>(`${ckPath(run, step)}/heads`, { scope, ...(ref ?? { ids: null }), ...(stack ? { stack } : {}) }, signal)),

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
  prune: (run: string, step: number, masked: [number, number][], sel: Selection | null, signal?: AbortSignal,
    estimate = false) =>
    withSelection(run, sel, signal, (ref) =>
      postJSON<PruneResponse>(`${ckPath(run, step)}/prune`, { masked_heads: masked, ...(ref ?? { ids: null }), estimate }, signal)),

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
  pruneStacks: (run: string, step: number, masked: Record<string, [number, number][]>, sel: Selection | null,
    maxNewTokens = 20, signal?: AbortSignal) =>
    withSelection(run, sel, signal, (ref) => postJSON<GenerativePruneResponse>(`${ckPath(run, step)}/prune`,
      { masked_heads: masked, ...(ref ?? { ids: null }), max_new_tokens: maxNewTokens }, signal)),

  /**
   * The projection of (step, layer, method). While the server computes it (202), polls the
   * same URL every `pollMs` and reports progress; resolves with the decoded columns (asked for
   * quantised: 5 bytes a point instead of 12; a float32 answer is read as well).
   * `align`: each layout aligned to the previous checkpoint's, or all to the last checkpoint's.
   */
  async projection(run: string, step: number, layer: number, method: ProjectionMethod,
    onProgress: (s: ProjectionStatus) => void, signal?: AbortSignal, pollMs = 500,
    stack: string | null = null, align: Alignment = 'previous'): Promise<Projection> {
    const path = `${ckPath(run, step)}/projection?layer=${layer}&method=${method}&aligned=true&align=${align}&encoding=u16${stackQuery(stack, '&')}`;
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
        res.headers.get('X-T3vis-Sampled'), mp, 'u16');
    }
  },
};

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

// ---- Selections of any size --------------------------------------------------------------

/** Selections up to this size travel as their ids; larger ones as a handle the server holds. */
export const INLINE_IDS = 10_000;

/** How a request names its selection: its ids, or the handle of ids posted before. */
export type SelectionRef = { ids: number[] } | { selection: string };

type Handle = SelectionSummary & { handle: string; count: number };

/** Handles by selection and run: a selection is posted once, whatever reads it. */
const handles = new WeakMap<Selection, Map<string, Promise<Handle>>>();

/** The selection's ids as little-endian int64 (ids are integers below 2^53). */
export function int64Body(sel: Selection): ArrayBuffer {
  const words = new Uint32Array(sel.size * 2);
  const view = new DataView(words.buffer);
  for (let i = 0; i < sel.size; i++) {
    const id = sel.ids[i];
    if (id >= 0 && id < 4294967296) view.setUint32(8 * i, id, true);
    else view.setBigInt64(8 * i, BigInt(id), true);
  }
  return words.buffer;
}

function postHandle(run: string, sel: Selection): Promise<Handle> {
  return request(`${runPath(run)}/selections`, {
    method: 'POST', body: int64Body(sel), headers: { 'Content-Type': 'application/octet-stream' },
  }).then((r) => r.json() as Promise<Handle>);
}

/** The server's handle of a selection (posted once per run; posted again after `forget`). */
function selectionHandle(run: string, sel: Selection, signal?: AbortSignal): Promise<Handle> {
  let byRun = handles.get(sel);
  if (!byRun) handles.set(sel, (byRun = new Map()));
  let h = byRun.get(run);
  if (!h) {
    h = postHandle(run, sel);
    byRun.set(run, h);
    h.catch(() => byRun.delete(run));
  }
  // the post is shared: one caller giving up does not cancel it for the others
  return signal ? abortable(h, signal) : h;
}

function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new DOMException('aborted', 'AbortError'));
  return new Promise<T>((resolve, reject) => {
    signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')), { once: true });
    p.then(resolve, reject);
  });
}

/** Call with the selection named as the server takes it; a handle the server no longer holds
 *  (410: evicted, or the server restarted) is posted again and the call retried once. */
export async function withSelection<T>(run: string, sel: Selection | null, signal: AbortSignal | undefined,
  call: (ref: SelectionRef | null) => Promise<T>): Promise<T> {
  if (!sel) return call(null);
  if (sel.size <= INLINE_IDS) return call({ ids: Array.from(sel.ids) });
  const first = await selectionHandle(run, sel, signal);
  try {
    return await call({ selection: first.handle });
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 410) throw err;
    handles.get(sel)?.delete(run);
    const again = await selectionHandle(run, sel, signal);
    return call({ selection: again.handle });
  }
}
