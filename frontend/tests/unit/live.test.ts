import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { layoutRevision, pollVersion, stepAfter, stepDiff, unseenAfter, versionChange, type VisibilitySource } from '../../src/lib/live';
import type { CheckpointInfo, RunInfo, RunVersion } from '../../src/lib/types';

const ready = (version: number, steps: number[], dynamics = 0): RunVersion =>
  ({ version, state: 'ready', steps, dynamics, detail: null });

describe('version change detection', () => {
  it('is null when the version, steps and dynamics are the same', () => {
    expect(versionChange(ready(3, [0, 5]), ready(3, [0, 5]))).toBeNull();
  });
  it('names the checkpoints that landed and those that vanished', () => {
    expect(versionChange(ready(3, [0, 5]), ready(4, [0, 5, 10]))).toEqual(
      { added: [10], removed: [], dynamicsChanged: false, stateChanged: false });
    expect(versionChange(ready(3, [0, 5, 10]), ready(4, [0]))).toEqual(
      { added: [], removed: [5, 10], dynamicsChanged: false, stateChanged: false });
  });
  it('sees new training dynamics without a new checkpoint', () => {
    expect(versionChange(ready(3, [0], 2), ready(4, [0], 3))?.dynamicsChanged).toBe(true);
  });
  it('sees a change of state (a run deleted while served)', () => {
    const gone: RunVersion = { version: 4, state: 'gone', steps: [], dynamics: 0, detail: 'folder deleted' };
    expect(versionChange(ready(3, [0]), gone)).toEqual({ added: [], removed: [0], dynamicsChanged: false, stateChanged: true });
  });
  it('sees steps that differ from the loaded run even under the same version number', () => {
    expect(versionChange(ready(7, [0]), ready(7, [0, 4]))?.added).toEqual([4]);
  });
  it('diffs step lists in order', () => {
    expect(stepDiff([0, 4, 8], [0, 8, 12, 16])).toEqual({ added: [12, 16], removed: [4] });
  });
});

describe('the new-checkpoints badge', () => {
  const landed = (added: number[], removed: number[] = []) => ({ added, removed, dynamicsChanged: false, stateChanged: false });
  it('counts nothing while following', () => {
    expect(unseenAfter([4], landed([8]), true, 8)).toEqual([]);
  });
  it('counts each checkpoint that lands while not following', () => {
    let unseen = unseenAfter([], landed([8]), false, 0);
    unseen = unseenAfter(unseen, landed([12, 16]), false, 0);
    expect(unseen).toEqual([8, 12, 16]);
  });
  it('forgets checkpoints that vanished and never counts the one on screen', () => {
    expect(unseenAfter([8, 12], landed([20], [12]), false, 0)).toEqual([8, 20]);
    expect(unseenAfter([], landed([8]), false, 8)).toEqual([]);
  });
});

describe('the step after a change', () => {
  const landed = (added: number[], removed: number[] = []) => ({ added, removed, dynamicsChanged: false, stateChanged: false });
  it('moves to the latest checkpoint when following', () => {
    expect(stepAfter(4, [0, 4, 8], landed([8]), true)).toBe(8);
  });
  it('stays when not following', () => {
    expect(stepAfter(4, [0, 4, 8], landed([8]), false)).toBe(4);
  });
  it('stays when following but only dynamics changed', () => {
    expect(stepAfter(0, [0, 4], landed([]), true)).toBe(0);
  });
  it('moves to the latest when the step on screen vanished, following or not', () => {
    expect(stepAfter(8, [0, 4], landed([], [8]), false)).toBe(4);
    expect(stepAfter(8, [], landed([], [0, 4, 8]), false)).toBeNull();
  });
});

describe('layout revision', () => {
  const ck = (step: number, time: number): CheckpointInfo =>
    ({ step, time, epoch: null, metrics: {}, has_weights: false }) as unknown as CheckpointInfo;
  const info = (cks: CheckpointInfo[]) => ({ checkpoints: cks }) as unknown as RunInfo;
  it('aligned to the previous checkpoint, does not change when a later checkpoint lands', () => {
    expect(layoutRevision(info([ck(0, 1)]), 0, 'previous')).toBe(layoutRevision(info([ck(0, 1), ck(5, 2)]), 0, 'previous'));
  });
  it('changes when the checkpoint is re-recorded', () => {
    expect(layoutRevision(info([ck(0, 1)]), 0, 'previous')).not.toBe(layoutRevision(info([ck(0, 9)]), 0, 'previous'));
  });
  it('aligned to the final checkpoint, changes when a later checkpoint lands', () => {
    expect(layoutRevision(info([ck(0, 1)]), 0, 'final')).not.toBe(layoutRevision(info([ck(0, 1), ck(5, 2)]), 0, 'final'));
  });
});

class FakePage extends EventTarget implements VisibilitySource {
  visibilityState = 'visible';
  show(state: 'visible' | 'hidden') {
    this.visibilityState = state;
    this.dispatchEvent(new Event('visibilitychange'));
  }
}

describe('polling the version', () => {
  beforeEach(() => { vi.useFakeTimers(); });
  afterEach(() => { vi.useRealTimers(); });

  it('asks at once, then every interval, one request at a time', async () => {
    let inFlight = 0, most = 0, calls = 0;
    const resolvers: (() => void)[] = [];
    const page = new FakePage();
    const seen: number[] = [];
    const stop = pollVersion({
      page, intervalMs: 700, onError: () => {}, onVersion: (v) => seen.push(v.version),
      fetch: () => new Promise((resolve) => {
        calls++; inFlight++; most = Math.max(most, inFlight);
        resolvers.push(() => { inFlight--; resolve(ready(calls, [])); });
      }),
    });
    await vi.advanceTimersByTimeAsync(0);
    expect(calls).toBe(1);
    await vi.advanceTimersByTimeAsync(5000);       // the answer is slow: no second request meanwhile
    expect(calls).toBe(1);
    resolvers.shift()!();
    await vi.advanceTimersByTimeAsync(699);
    expect(calls).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(calls).toBe(2);
    expect(most).toBe(1);
    expect(seen).toEqual([1]);
    stop();
  });

  it('pauses while the page is hidden and resumes when it shows', async () => {
    let calls = 0;
    const page = new FakePage();
    const stop = pollVersion({ page, intervalMs: 700, onError: () => {}, onVersion: () => {},
      fetch: async () => ready(++calls, []) });
    await vi.advanceTimersByTimeAsync(0);
    expect(calls).toBe(1);
    page.show('hidden');
    await vi.advanceTimersByTimeAsync(10_000);
    expect(calls).toBe(1);                          // the tick after hiding found the page hidden
    page.show('visible');
    await vi.advanceTimersByTimeAsync(0);
    expect(calls).toBe(2);                          // at once on showing
    await vi.advanceTimersByTimeAsync(700);
    expect(calls).toBe(3);
    stop();
    await vi.advanceTimersByTimeAsync(5000);
    expect(calls).toBe(3);                          // stopped
  });

  it('reports a failure and keeps asking', async () => {
    let calls = 0;
    const errors: unknown[] = [];
    const stop = pollVersion({ page: new FakePage(), intervalMs: 700, onError: (e) => errors.push(e), onVersion: () => {},
      fetch: async () => { calls++; throw new Error('down'); } });
    await vi.advanceTimersByTimeAsync(1400);
    expect(calls).toBe(3);
    expect(errors).toHaveLength(3);
    stop();
  });
});
