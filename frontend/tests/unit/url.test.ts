import { describe, expect, it } from 'vitest';
import { NO_FILTER } from '../../src/lib/filters';
import { encodeUrlState, parseUrlState, type UrlState } from '../../src/lib/stores';

const full: UrlState = {
  run: 'demo', step: 250, layer: 6, method: 'umap', color: 'gold_prob', example: 3304, head: [1, 3],
  selection: [5, 7, 11], saliency: 'lrp', compare: [0, 3],
  filter: { ...NO_FILTER, correct: false, lossMin: 1 }, stack: 'cross', hiddenStack: 'encoder', align: 'final',
};

describe('URL state', () => {
  it('round-trips every field', () => {
    expect(parseUrlState(encodeUrlState(full))).toEqual(full);
  });
  it('keeps parameters it does not own (the token) and drops defaults', () => {
    const q = encodeUrlState({ ...full, saliency: 'integrated_gradients', compare: null, filter: NO_FILTER }, 'token=abc&step=1');
    const p = new URLSearchParams(q);
    expect(p.get('token')).toBe('abc');
    expect(p.get('step')).toBe('250');
    expect(p.has('saliency')).toBe(false);
    expect(p.has('cmp')).toBe(false);
    expect(p.has('f')).toBe(false);
  });
  it('leaves the stacks out when they are the run default', () => {
    const p = new URLSearchParams(encodeUrlState({ ...full, stack: null, hiddenStack: null }));
    expect(p.has('stack')).toBe(false);
    expect(p.has('pstack')).toBe(false);
    expect(parseUrlState('?stack=&pstack=').stack).toBe(null);
  });
  it('writes align=final only for the final-checkpoint alignment, and reads anything else as the default', () => {
    expect(new URLSearchParams(encodeUrlState(full)).get('align')).toBe('final');
    expect(new URLSearchParams(encodeUrlState({ ...full, align: 'previous' }, 'align=final')).has('align')).toBe(false);
    expect(parseUrlState('?align=final').align).toBe('final');
    expect(parseUrlState('?align=sideways').align).toBe('previous');
    expect(parseUrlState('').align).toBe('previous');
  });
  it('leaves a huge selection out of the URL', () => {
    const q = encodeUrlState({ ...full, selection: Array.from({ length: 2001 }, (_, i) => i) });
    expect(new URLSearchParams(q).has('sel')).toBe(false);
  });
  it('reads unknown or malformed values as null', () => {
    const s = parseUrlState('?method=lda&color=rainbow&step=x&head=1&cmp=a.b&saliency=magic&layer=');
    expect([s.method, s.color, s.step, s.head, s.compare, s.saliency, s.layer]).toEqual([null, null, null, null, null, null, null]);
    expect(s.filter).toEqual(NO_FILTER);
  });
});
