// Application state shared by every view: one selection (a set of example ids), one current
// run / checkpoint / layer / method, the focused example and head, and the notices shown.
// The URL holds the state, so a copied link reopens the same picture.
import { derived, get, writable } from 'svelte/store';
import { combineSelection, Selection, type IdsLike, type SelectOp } from './selection';
import { rowIndexOf } from './rows';
import { decodeFilter, encodeFilter, NO_FILTER, type FilterMode, type PointFilter } from './filters';
import type { Alignment, ColorBy, DataMap, Points, ProjectionMethod, RunInfo, RunVersion, SaliencyMethod, SelectionSummary } from './types';
import { isSequenceTask, resolveStack, runTask } from './task';

export const runName = writable<string | null>(null);
export const runInfo = writable<RunInfo | null>(null);
export const step = writable<number | null>(null);
export const layer = writable<number>(-1); // -1: not chosen yet (the last layer once the run is known)
export const method = writable<ProjectionMethod>('pca');
export const colorBy = writable<ColorBy>('label');
export const saliencyMethod = writable<SaliencyMethod>('integrated_gradients');

/** The attention stack the heads grid, pruning marks and attention views show; null: the run's default. */
export const headStack = writable<string | null>(null);
/** The stack whose hidden states the projections show; null: the run's default. */
export const hiddenStack = writable<string | null>(null);
/** Whether the run's examples are sequences (causal-lm, seq2seq) rather than classified texts. */
export const sequenceRun = derived(runInfo, ($run) => isSequenceTask(runTask($run)));
/** The heads' stack, resolved against the run (sizes included). */
export const headStackInfo = derived([runInfo, headStack], ([$run, $s]) => resolveStack($run, $s));
/** The projections' stack, resolved against the run. */
export const hiddenStackInfo = derived([runInfo, hiddenStack], ([$run, $s]) => resolveStack($run, $s));

/** Example ids selected by lasso, brush or table (sorted, of any size); null: nothing selected. */
export const selection = writable<Selection | null>(null);
/** What the current selection holds (not probed, without text), as the server counts it; null
 *  while nothing is selected or the count is on its way. */
export const selectionSummary = writable<SelectionSummary | null>(null);
/** The view that made the current selection (views do not echo their own selection). */
export const selectionSource = writable<string>('');
/** The example shown in the instance view. */
export const focusId = writable<number | null>(null);
/** The example under the mouse in any view (highlighted in the others). */
export const hoverId = writable<number | null>(null);
/** The head shown in the instance view's attention panel: [layer (block, 0-based), head]. */
export const focusHead = writable<[number, number]>([0, 0]);
/** Heads marked for pruning, as "stack:layer:head" keys (lib/heads.ts headKey / parseHeadKey; block index 0-based). */
export const markedHeads = writable<Set<string>>(new Set());

/** Per-checkpoint point attributes and the data map, loaded once and shared. */
export const points = writable<Points | null>(null);
export const datamap = writable<DataMap | null>(null);

/** id -> probe row of the current checkpoint's points. */
export const probeIndex = derived(points, ($p) => ($p ? rowIndexOf($p.id) : null));

/** Replace the selection (or add to it, subtract from it) with example ids; null clears it. */
export function setSelection(ids: IdsLike | null, source: string, op: SelectOp = 'replace'): void {
  selectionSource.set(source);
  selection.set(ids === null ? (op === 'replace' ? null : get(selection)) : combineSelection(get(selection), ids, op));
}

/** A gesture on a plot picked these rows: select their ids, only those the filter keeps (mask
 *  null: all); a single picked point also becomes the example in focus. */
export function selectRows(rows: ArrayLike<number>, idOf: ArrayLike<number>, mask: ArrayLike<number> | null,
                           source: string, op: SelectOp): void {
  const ids = new Float64Array(rows.length);
  let k = 0;
  for (let i = 0; i < rows.length; i++) if (!mask || mask[rows[i]]) ids[k++] = idOf[rows[i]];
  setSelection(Selection.of(ids.subarray(0, k)), source, op);
  if (k === 1 && op === 'replace') focusId.set(ids[0]);
}

/** Filters on point attributes, applied to the projections and the table. */
export const pointFilter = writable<PointFilter>(NO_FILTER);
/** Whether the projections hide filtered-out points or draw them faint. */
export const filterMode = writable<FilterMode>('dim');

/** The comparison: a second projection at another checkpoint and/or layer; null when closed. */
export const compare = writable<{ step: number; layer: number } | null>(null);

export const currentCheckpoint = derived([runInfo, step], ([$run, $step]) =>
  $run?.checkpoints.find((c) => c.step === $step) ?? null);
/** The current checkpoint and when it was recorded: changes when its step is re-recorded (a
 *  string, so a new run info with the same checkpoint does not wake its subscribers). */
export const currentRecorded = derived(currentCheckpoint, ($c) => ($c ? `${$c.step}@${$c.time}` : null));
/** Whether the run's description is loaded (true/false: unchanged by a grown run info). */
export const runLoaded = derived([runInfo, runName], ([$run, $name]) => !!$run && $run.name === $name);
/** Whether the loaded run has training dynamics. */
export const runHasDynamics = derived(runInfo, ($run) => !!$run?.has_dynamics);

/** How projections are aligned across checkpoints (the URL's align=final: to the last one). */
export const alignment = writable<Alignment>('previous');

// ---- Following a run while it trains (lib/live.ts) ----------------------------------------

/** Where the run stands and its version, as last polled; null before the first answer. */
export const runState = writable<RunVersion | null>(null);
/** The run's version last applied to the page: views that load once per run load again when it
 *  changes (0 until the first change after opening the run). */
export const runVersion = writable<number>(0);
/** The training dynamics' count last applied: the data map loads again when it changes. */
export const dynamicsVersion = writable<number>(0);
/** Whether each checkpoint that lands moves the views to it. */
export const followLatest = writable<boolean>(true);
/** Checkpoints that landed while not following (the badge counts them). */
export const unseenSteps = writable<number[]>([]);

// ---- Notices -----------------------------------------------------------------------------

export interface Notice {
  id: number;
  kind: 'error' | 'info';
  text: string;
}

let noticeSeq = 0;
export const notices = writable<Notice[]>([]);

export function notify(text: string, kind: Notice['kind'] = 'error', ms = 9000): void {
  const id = ++noticeSeq;
  notices.update((list) => [...list.filter((n) => n.text !== text), { id, kind, text }].slice(-4));
  if (ms > 0) setTimeout(() => dismiss(id), ms);
}

export function dismiss(id: number): void {
  notices.update((list) => list.filter((n) => n.id !== id));
}

// ---- URL state ---------------------------------------------------------------------------

const URL_SELECTION_MAX = 2000;

export interface UrlState {
  run: string | null;
  step: number | null;
  layer: number | null;
  method: ProjectionMethod | null;
  color: ColorBy | null;
  example: number | null;
  head: [number, number] | null;
  selection: number[] | null;
  saliency: SaliencyMethod | null;
  filter: PointFilter;
  /** the comparison pane: [step, layer], or null when the comparison is closed */
  compare: [number, number] | null;
  /** the heads' stack and the projections' stack (null: the run's default) */
  stack: string | null;
  hiddenStack: string | null;
  /** projections aligned to the previous checkpoint (default) or to the final one */
  align: Alignment;
}

const METHODS: readonly string[] = ['pca', 'umap', 'tsne'];
const COLORS: readonly string[] = ['label', 'pred', 'correct', 'loss', 'gold_prob', 'confidence', 'variability', 'region',
  'preservation', 'perplexity', 'token_accuracy', 'mean_prob'];
const SALIENCY: readonly string[] = ['integrated_gradients', 'gradient', 'grad_x_input', 'lrp', 'attention_rollout'];

function num(v: string | null): number | null {
  if (v === null || v === '') return null;
  const x = Number(v);
  return Number.isFinite(x) ? x : null;
}

function pair(v: string | null): [number, number] | null {
  const p = v?.split('.').map((x) => (x === '' ? NaN : Number(x)));
  return p && p.length === 2 && p.every(Number.isInteger) ? [p[0], p[1]] : null;
}

/** The state a URL's query string holds (unknown or malformed values read as null). */
export function parseUrlState(search: string): UrlState {
  const p = new URLSearchParams(search);
  const sel = p.get('sel');
  const m = p.get('method'), c = p.get('color'), sal = p.get('saliency');
  return {
    run: p.get('run'),
    step: num(p.get('step')),
    layer: num(p.get('layer')),
    method: m && METHODS.includes(m) ? (m as ProjectionMethod) : null,
    color: c && COLORS.includes(c) ? (c as ColorBy) : null,
    example: num(p.get('ex')),
    head: pair(p.get('head')),
    selection: sel ? sel.split(',').filter((x) => x !== '').map(Number).filter(Number.isFinite) : null,
    saliency: sal && SALIENCY.includes(sal) ? (sal as SaliencyMethod) : null,
    filter: decodeFilter(p.get('f')),
    compare: pair(p.get('cmp')),
    stack: p.get('stack') || null,
    hiddenStack: p.get('pstack') || null,
    align: p.get('align') === 'final' ? 'final' : 'previous',
  };
}

/** The query string for a state, keeping parameters it does not own (e.g. token). */
export function encodeUrlState(st: UrlState, search = ''): string {
  const p = new URLSearchParams(search);
  const set = (k: string, v: string | null) => (v === null ? p.delete(k) : p.set(k, v));
  set('run', st.run);
  set('step', st.step === null ? null : String(st.step));
  set('layer', st.layer === null || st.layer < 0 ? null : String(st.layer));
  set('method', st.method);
  set('color', st.color);
  set('saliency', st.saliency === null || st.saliency === 'integrated_gradients' ? null : st.saliency);
  set('ex', st.example === null ? null : String(st.example));
  set('head', st.head ? `${st.head[0]}.${st.head[1]}` : null);
  set('sel', st.selection && st.selection.length <= URL_SELECTION_MAX ? st.selection.join(',') : null);
  set('f', encodeFilter(st.filter));
  set('cmp', st.compare ? `${st.compare[0]}.${st.compare[1]}` : null);
  set('stack', st.stack);
  set('pstack', st.hiddenStack);
  set('align', st.align === 'final' ? 'final' : null);
  return p.toString();
}

export function readUrl(): UrlState {
  return parseUrlState(window.location.search);
}

/** Keeps the URL in step with the state (replaceState, so history is not flooded). */
export function syncUrl(): () => void {
  const state = derived(
    [runName, step, layer, method, colorBy, focusId, focusHead, selection, saliencyMethod, pointFilter, compare, headStack,
      hiddenStack, alignment],
    (v) => v,
  );
  return state.subscribe(([$run, $step, $layer, $method, $color, $focus, $head, $sel, $sal, $filter, $cmp, $stack,
    $pstack, $align]) => {
    const query = encodeUrlState({
      run: $run, step: $step, layer: $layer, method: $method, color: $color, example: $focus, head: $head,
      selection: $sel && $sel.size <= URL_SELECTION_MAX ? [...$sel] : null, saliency: $sal, filter: $filter,
      compare: $cmp ? [$cmp.step, $cmp.layer] : null, stack: $stack, hiddenStack: $pstack, align: $align,
    }, window.location.search);
    const url = `${window.location.pathname}?${query}${window.location.hash}`;
    if (url !== window.location.pathname + window.location.search + window.location.hash) {
      history.replaceState(null, '', url);
    }
  });
}

export function labelName(i: number | null | undefined): string {
  if (i === null || i === undefined || i < 0) return '—';
  return get(runInfo)?.label_names[i] ?? String(i);
}
