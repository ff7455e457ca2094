import { describe, expect, it } from 'vitest';
import { followVersion, pushedVersions, useVersionFeed } from '../../src/lib/live';
import type { RunVersion } from '../../src/lib/types';

const ready = (version: number, steps: number[]): RunVersion => ({ version, state: 'ready', steps, dynamics: 0, detail: null });

/** A kernel that pushes versions to whoever subscribed. */
function kernel() {
  const listeners = new Set<(run: string, v: RunVersion) => void>();
  return {
    subscribe: (fn: (run: string, v: RunVersion) => void) => { listeners.add(fn); return () => listeners.delete(fn); },
    push: (run: string, v: RunVersion) => listeners.forEach((fn) => fn(run, v)),
    listening: () => listeners.size,
  };
}

const flush = () => new Promise((r) => setTimeout(r, 0));

describe('versions pushed by the kernel (the notebook widget)', () => {
  it('asks for the current version once, then takes each push for its own run only', async () => {
    const k = kernel();
    const seen: number[] = [];
    let asked = 0;
    const stop = pushedVersions(k.subscribe)('demo', {
      fetch: async () => { asked++; return ready(1, [0]); },
      onVersion: (v) => seen.push(v.version),
      onError: () => { throw new Error('no error expected'); },
    });
    await flush();
    k.push('demo', ready(2, [0, 5]));
    k.push('other', ready(9, [0]));
    k.push('demo', ready(3, [0, 5, 10]));
    expect(seen).toEqual([1, 2, 3]);
    expect(asked).toBe(1);
    stop();
    expect(k.listening()).toBe(0);
    k.push('demo', ready(4, [0]));
    expect(seen).toEqual([1, 2, 3]);
  });

  it('reports a failed first ask, and drops an answer that comes after stopping', async () => {
    const k = kernel();
    const errors: unknown[] = [];
    const seen: number[] = [];
    pushedVersions(k.subscribe)('demo', {
      fetch: async () => { throw new Error('kernel gone'); }, onVersion: () => {}, onError: (e) => errors.push(e),
    });
    await flush();
    expect(errors).toHaveLength(1);
    let answer: (v: RunVersion) => void = () => {};
    const stop = pushedVersions(k.subscribe)('demo', {
      fetch: () => new Promise<RunVersion>((r) => (answer = r)), onVersion: (v) => seen.push(v.version), onError: () => {},
    });
    stop();
    answer(ready(7, [0]));
    await flush();
    expect(seen).toEqual([]);
  });

  it('is what followVersion uses once installed', async () => {
    const k = kernel();
    useVersionFeed(pushedVersions(k.subscribe));
    const seen: number[] = [];
    const stop = followVersion('demo', { fetch: async () => ready(1, []), onVersion: (v) => seen.push(v.version), onError: () => {} });
    await flush();
    k.push('demo', ready(2, [0]));
    expect(seen).toEqual([1, 2]);
    stop();
  });
});
