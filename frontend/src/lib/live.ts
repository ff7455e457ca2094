// Following a run while it trains: poll its version (GET /api/runs/{run}/version) and work out
// what a new version changed: checkpoints that landed or vanished, new training dynamics, a run
// that started recording, was deleted or became unreadable.
import { isAbort } from './api';
import type { Alignment, CheckpointInfo, RunInfo, RunVersion } from './types';

/** How often the page asks (the server answers from a few file stats). */
export const POLL_MS = 700;

export interface VersionChange {
  /** checkpoint steps that landed since the version seen before */
  added: number[];
  /** checkpoint steps that are gone (a truncated or re-recorded run) */
  removed: number[];
  dynamicsChanged: boolean;
  stateChanged: boolean;
}

/** The steps in `after` and not in `before`, and those in `before` and not in `after`. */
export function stepDiff(before: readonly number[], after: readonly number[]): { added: number[]; removed: number[] } {
  const b = new Set(before), a = new Set(after);
  return { added: after.filter((s) => !b.has(s)), removed: before.filter((s) => !a.has(s)) };
}

/** What changed from `prev` (null: nothing seen yet) to `next`; null when nothing did. */
export function versionChange(prev: RunVersion | null, next: RunVersion): VersionChange | null {
  const { added, removed } = stepDiff(prev?.steps ?? [], next.steps);
  const dynamicsChanged = !!prev && prev.dynamics !== next.dynamics;
  const stateChanged = !prev || prev.state !== next.state;
  if (prev && prev.version === next.version && !added.length && !removed.length && !dynamicsChanged && !stateChanged) return null;
  return { added, removed, dynamicsChanged, stateChanged };
}

/** The checkpoints landed since the user stopped following, as the badge counts them: following,
 *  none; else those seen before plus the new ones, less those that vanished, less the one on screen. */
export function unseenAfter(unseen: readonly number[], change: VersionChange, follow: boolean, onScreen: number | null): number[] {
  if (follow) return [];
  const gone = new Set(change.removed);
  const out = unseen.filter((s) => !gone.has(s));
  for (const s of change.added) if (!out.includes(s) && s !== onScreen) out.push(s);
  return out;
}

/** The step to show once the run's checkpoints are `steps`: the latest when following and one
 *  landed, or when the step on screen vanished; else the step on screen. */
export function stepAfter(current: number | null, steps: readonly number[], change: VersionChange, follow: boolean): number | null {
  const latest = steps.length ? Math.max(...steps) : null;
  if (current === null || !steps.includes(current)) return latest;
  return follow && change.added.length ? latest : current;
}

/** A key that changes when a projection's bytes may have: the checkpoint re-recorded, or, aligned
 *  to the final checkpoint, another final checkpoint. */
export function layoutRevision(info: RunInfo | null, step: number | null, align: Alignment): string {
  const cks = info?.checkpoints ?? [];
  const stamp = (c: CheckpointInfo | undefined) => (c ? `${c.step}@${c.time}` : '');
  const own = stamp(cks.find((c) => c.step === step));
  return align === 'final' ? `${own}|${stamp(cks.at(-1))}` : own;
}

/** What visibility the poller needs of the page: the document, or a stand-in in tests. */
export interface VisibilitySource {
  readonly visibilityState: string;
  addEventListener(type: 'visibilitychange', fn: () => void): void;
  removeEventListener(type: 'visibilitychange', fn: () => void): void;
}

export interface PollOptions {
  fetch: (signal: AbortSignal) => Promise<RunVersion>;
  onVersion: (v: RunVersion) => void;
  onError: (err: unknown) => void;
  intervalMs?: number;
  page?: VisibilitySource;
}

/**
 * Asks for the version every `intervalMs`, one request in flight at most, and not while the page
 * is hidden (it asks again as soon as the page shows). Returns the function that stops it.
 */
export function pollVersion({ fetch, onVersion, onError, intervalMs = POLL_MS, page = document }: PollOptions): () => void {
  let stopped = false, inFlight = false;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let ctrl: AbortController | null = null;

  const schedule = (ms: number) => {
    if (stopped || inFlight || timer !== null) return;
    timer = setTimeout(tick, ms);
  };
  async function tick() {
    timer = null;
    if (stopped || inFlight || page.visibilityState === 'hidden') return;   // a hidden page resumes on showing
    inFlight = true;
    ctrl = new AbortController();
    try {
      const v = await fetch(ctrl.signal);
      if (!stopped) onVersion(v);
    } catch (err) {
      if (!stopped && !isAbort(err)) onError(err);
    } finally {
      inFlight = false;
      ctrl = null;
    }
    schedule(intervalMs);
  }
  const onVisibility = () => {
    if (page.visibilityState !== 'hidden') schedule(0);
  };
  page.addEventListener('visibilitychange', onVisibility);
  schedule(0);
  return () => {
    stopped = true;
    if (timer !== null) clearTimeout(timer);
    ctrl?.abort();
    page.removeEventListener('visibilitychange', onVisibility);
  };
}

/** Where a followed run's versions come from: a poll of the server (the served page), or the
 *  kernel's pushes (the notebook widget: widget.ts), so an idle kernel is not asked every 700 ms. */
export type VersionFeed = (run: string, options: PollOptions) => () => void;

let versionFeed: VersionFeed = (_run, options) => pollVersion(options);

export function useVersionFeed(feed: VersionFeed): void {
  versionFeed = feed;
}

/** Follows a run's version through the feed in use; returns the function that stops it. */
export function followVersion(run: string, options: PollOptions): () => void {
  return versionFeed(run, options);
}

/** A feed of versions pushed by the kernel: the current one asked once, then each pushed change. */
export function pushedVersions(subscribe: (onPush: (run: string, v: RunVersion) => void) => () => void): VersionFeed {
  return (run, { fetch, onVersion, onError }) => {
    let stopped = false;
    const ctrl = new AbortController();
    fetch(ctrl.signal).then((v) => { if (!stopped) onVersion(v); })
      .catch((err) => { if (!stopped && !isAbort(err)) onError(err); });
    const unsubscribe = subscribe((pushedRun, v) => { if (!stopped && pushedRun === run) onVersion(v); });
    return () => { stopped = true; ctrl.abort(); unsubscribe(); };
  };
}
