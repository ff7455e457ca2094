// Application state shared by every view: one selection (a set of example ids), one current
// run / checkpoint / layer / method, the focused example and head, and the notices shown.
// The URL holds the state, so a copied link reopens the same picture.
import { derived, get, writable } from 'svelte/store';
import type { ColorBy, DataMap, Points, ProjectionMethod, RunInfo, SaliencyMethod } from './types';

export const runName = writable<string | null>(null);
export const runInfo = writable<RunInfo | null>(null);
export const step = writable<number | null>(null);
export const layer = writable<number>(-1); // -1: not chosen yet (the last layer once the run is known)
export const method = writable<ProjectionMethod>('pca');
export const colorBy = writable<ColorBy>('label');
export const saliencyMethod = writable<SaliencyMethod>('integrated_gradients');

/** Example ids selected by lasso, brush or table; null: nothing selected. */
export const selection = writable<Set<number> | null>(null);
/** The view that made the current selection (views do not echo their own selection). */
export const selectionSource = writable<string>('');
/** The example shown in the instance view. */
export const focusId = writable<number | null>(null);
/** The example under the mouse in any view (highlighted in the others). */
export const hoverId = writable<number | null>(null);
/** The head shown in the instance view's attention panel: [layer (block, 0-based), head]. */
export const focusHead = writable<[number, number]>([0, 0]);
/** Heads marked for pruning, as "layer:head" keys (block index 0-based). */
export const markedHeads = writable<Set<string>>(new Set());

/** Per-checkpoint point attributes and the data map, loaded once and shared. */
export const points = writable<Points | null>(null);
export const datamap = writable<DataMap | null>(null);

/** id -> probe row of the current checkpoint's points. */
export const probeIndex = derived(points, ($p) => {
  if (!$p) return null;
  const m = new Map<number, number>();
  for (let i = 0; i < $p.n; i++) m.set($p.id[i], i);
  return m;
});

export function setSelection(ids: Iterable<number> | null, source: string): void {
  const set = ids === null ? null : new Set(ids);
  selectionSource.set(source);
  selection.set(set && set.size ? set : null);
}

export const currentCheckpoint = derived([runInfo, step], ([$run, $step]) =>
  $run?.checkpoints.find((c) => c.step === $step) ?? null);

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
}

function num(v: string | null): number | null {
  if (v === null || v === '') return null;
  const x = Number(v);
  return Number.isFinite(x) ? x : null;
}

export function readUrl(): UrlState {
  const p = new URLSearchParams(window.location.search);
  const head = p.get('head')?.split('.').map(Number);
  const sel = p.get('sel');
  return {
    run: p.get('run'),
    step: num(p.get('step')),
    layer: num(p.get('layer')),
    method: (p.get('method') as ProjectionMethod) || null,
    color: (p.get('color') as ColorBy) || null,
    example: num(p.get('ex')),
    head: head && head.length === 2 && head.every(Number.isFinite) ? [head[0], head[1]] : null,
    selection: sel ? sel.split(',').map(Number).filter(Number.isFinite) : null,
    saliency: (p.get('saliency') as SaliencyMethod) || null,
  };
}

/** Keeps the URL in step with the state (replaceState, so history is not flooded). */
export function syncUrl(): () => void {
  const state = derived(
    [runName, step, layer, method, colorBy, focusId, focusHead, selection, saliencyMethod],
    (v) => v,
  );
  return state.subscribe(([$run, $step, $layer, $method, $color, $focus, $head, $sel, $sal]) => {
    const p = new URLSearchParams(window.location.search);
    const set = (k: string, v: string | null) => (v === null ? p.delete(k) : p.set(k, v));
    set('run', $run);
    set('step', $step === null ? null : String($step));
    set('layer', $layer < 0 ? null : String($layer));
    set('method', $method);
    set('color', $color);
    set('saliency', $sal === 'integrated_gradients' ? null : $sal);
    set('ex', $focus === null ? null : String($focus));
    set('head', `${$head[0]}.${$head[1]}`);
    set('sel', $sel && $sel.size <= URL_SELECTION_MAX ? [...$sel].join(',') : null);
    const url = `${window.location.pathname}?${p.toString()}${window.location.hash}`;
    if (url !== window.location.pathname + window.location.search + window.location.hash) {
      history.replaceState(null, '', url);
    }
  });
}

export function labelName(i: number | null | undefined): string {
  if (i === null || i === undefined || i < 0) return '—';
  return get(runInfo)?.label_names[i] ?? String(i);
}
