import { describe, expect, it } from 'vitest';
import { clampHead, headKey, markLabel, maskedText, masksByStack, masksOf, parseHeadKey, parseMarks, thumbExtent,
  toggleMark }
  from '../../src/lib/heads';

describe('pruning marks are per stack', () => {
  it('headKey and parseHeadKey round-trip, 0-based', () => {
    expect(headKey('decoder', 1, 2)).toBe('decoder:1:2');
    expect(parseHeadKey('decoder:1:2')).toEqual({ stack: 'decoder', layer: 1, head: 2 });
    expect(parseHeadKey(headKey('cross', 0, 0))).toEqual({ stack: 'cross', layer: 0, head: 0 });
  });
  it('parseHeadKey refuses keys without a stack or with non-numbers', () => {
    expect(parseHeadKey('1:2')).toBeNull();
    expect(parseHeadKey('decoder:a:2')).toBeNull();
    expect(parseHeadKey('')).toBeNull();
  });
  it('parseMarks orders by the run\'s stacks, then layer and head, and drops bad keys', () => {
    const keys = ['cross:1:0', 'decoder:2:1', 'decoder:0:3', 'encoder:1:1', 'old:style', 'decoder:0:1'];
    expect(parseMarks(keys, ['encoder', 'decoder', 'cross']).map((m) => headKey(m.stack, m.layer, m.head)))
      .toEqual(['encoder:1:1', 'decoder:0:1', 'decoder:0:3', 'decoder:2:1', 'cross:1:0']);
  });
  it('masksByStack combines several stacks in one request body', () => {
    const marks = parseMarks(['decoder:0:1', 'cross:1:2', 'decoder:2:0'], ['decoder', 'cross']);
    expect(masksByStack(marks)).toEqual({ decoder: [[0, 1], [2, 0]], cross: [[1, 2]] });
    expect(masksByStack([])).toEqual({});
  });
  it('masksOf keeps one stack as a plain [[layer, head]] list (the classifier\'s request)', () => {
    const marks = parseMarks(['encoder:1:3', 'encoder:0:1'], ['encoder']);
    expect(masksOf(marks, 'encoder')).toEqual([[0, 1], [1, 3]]);
    expect(masksOf(marks, 'decoder')).toEqual([]);
  });
  it('toggleMark adds, then removes, without touching the set it was given', () => {
    const empty = new Set<string>();
    const one = toggleMark(empty, 'decoder:1:2');
    expect([...one]).toEqual(['decoder:1:2']);
    expect(empty.size).toBe(0);
    expect(toggleMark(one, 'decoder:1:2').size).toBe(0);
    expect(toggleMark(one, 'cross:1:2').size).toBe(2);
  });
  it('labels name the stack only where the run has several', () => {
    expect(markLabel('encoder', 1, 3, false)).toBe('L1.H3');
    expect(markLabel('decoder', 1, 2, true)).toBe('decoder L1.H2');
    expect(maskedText({ decoder: [[1, 2]], cross: [[0, 3]] }, true)).toBe('decoder L1.H2, cross L0.H3');
    expect(maskedText({ encoder: [[0, 1], [1, 3]] }, false)).toBe('L0.H1, L1.H3');
  });
  it('clampHead moves a head into a smaller stack', () => {
    expect(clampHead([2, 3], { num_layers: 2, num_heads: 4 })).toEqual([1, 3]);
    expect(clampHead([1, 5], { num_layers: 3, num_heads: 4 })).toEqual([1, 3]);
    expect(clampHead([1, 1], null)).toEqual([1, 1]);
  });
});

describe('thumbExtent', () => {
  it('finds the rows and columns any head uses', () => {
    // L=1, H=2, K=3: head 0 uses (0,0), (1,1); head 1 uses (0,2)
    const data = new Uint8Array(18);
    data[0] = 255; data[4] = 10; data[9 + 2] = 7;
    expect(thumbExtent({ shape: [1, 2, 3, 3], data })).toEqual([2, 3]);
  });
  it('is at least 1 x 1 for empty thumbnails', () => {
    expect(thumbExtent({ shape: [1, 1, 2, 2], data: new Uint8Array(4) })).toEqual([1, 1]);
  });
});
