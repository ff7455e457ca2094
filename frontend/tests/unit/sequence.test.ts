import { describe, expect, it } from 'vitest';
import {
  alignGeneration, causallyHidden, clampHead, inputStreams, isSignedMethod, nearestStep, scoreLevel, scoreScale,
  shadeLevel, tokenDisplay,
} from '../../src/lib/sequence';

describe('input streams', () => {
  it('splits a seq2seq input into source and decoder input', () => {
    const s = inputStreams('seq2seq', ['▁a', '▁b', '</s>', '<pad>', '▁x'], { input: 3, decoder_input: 2 });
    expect(s.map((x) => [x.name, x.label, x.start, x.tokens])).toEqual([
      ['input', 'source', 0, ['▁a', '▁b', '</s>']],
      ['decoder_input', 'decoder input', 3, ['<pad>', '▁x']],
    ]);
  });
  it('keeps a causal-lm sequence whole', () => {
    const s = inputStreams('causal-lm', ['a', 'b', 'c'], { input: 3 });
    expect(s).toEqual([{ name: 'input', label: 'sequence', start: 0, tokens: ['a', 'b', 'c'] }]);
  });
  it('shows every token once when the lengths do not add up', () => {
    const s = inputStreams('seq2seq', ['a', 'b', 'c'], { input: 5, decoder_input: 1 });
    expect(s.map((x) => x.tokens)).toEqual([['a', 'b', 'c'], []]);
    const t = inputStreams('causal-lm', ['a', 'b', 'c'], { input: 2 });
    expect(t.map((x) => [x.start, x.tokens])).toEqual([[0, ['a', 'b']], [2, ['c']]]);
  });
});

describe('token display', () => {
  it('drops the word-start marks of SentencePiece and byte-level BPE', () => {
    expect(tokenDisplay('▁cat')).toEqual({ text: 'cat', wordStart: true, joined: false });
    expect(tokenDisplay('Ġdog')).toEqual({ text: 'dog', wordStart: true, joined: false });
    expect(tokenDisplay('▁')).toEqual({ text: '␣', wordStart: true, joined: false });
    expect(tokenDisplay('ing')).toEqual({ text: 'ing', wordStart: false, joined: false });
  });
  it('joins WordPiece continuations to the piece before', () => {
    expect(tokenDisplay('##s')).toEqual({ text: 's', wordStart: false, joined: true });
    expect(tokenDisplay('##')).toEqual({ text: '##', wordStart: false, joined: false });
    expect(tokenDisplay('[CLS]')).toEqual({ text: '[CLS]', wordStart: false, joined: false });
  });
});

describe('target token shading', () => {
  it('by probability: 1 - p', () => {
    expect(shadeLevel('prob', 0.25, 1.386, 3)).toBeCloseTo(0.75, 9);
    expect(shadeLevel('prob', 1, 0, 3)).toBe(0);
  });
  it('by loss: NLL over the largest NLL, at least ln 2', () => {
    expect(shadeLevel('loss', 0.5, 1.5, 3)).toBeCloseTo(0.5, 9);
    // max NLL 0.1 < ln 2: the scale end is ln 2 = 0.6931..., 0.1 / 0.6931 = 0.1443
    expect(shadeLevel('loss', 0.9, 0.1, 0.1)).toBeCloseTo(0.14427, 4);
  });
  it('clamps and treats non-finite values as fine', () => {
    expect(shadeLevel('loss', 0, 9, 3)).toBe(1);
    expect(shadeLevel('prob', NaN, 0, 1)).toBe(0);
  });
});

describe('saliency scale', () => {
  it('knows which methods are signed', () => {
    expect(isSignedMethod('integrated_gradients')).toBe(true);
    expect(isSignedMethod('grad_x_input')).toBe(true);
    expect(isSignedMethod('lrp')).toBe(true);
    expect(isSignedMethod('gradient')).toBe(false);
    expect(isSignedMethod('attention_rollout')).toBe(false);
  });
  it('ends at the largest finite |score|, never 0', () => {
    expect(scoreScale([0.5, -2, NaN, 1])).toBe(2);
    expect(scoreScale([0, 0])).toBe(1e-12);
    expect(scoreScale([])).toBe(1e-12);
  });
  it('places signed scores in -1..1 and unsigned in 0..1', () => {
    expect(scoreLevel(-1, 2, true)).toBe(-0.5);
    expect(scoreLevel(-1, 2, false)).toBe(0.5);
    expect(scoreLevel(5, 2, true)).toBe(1);
    expect(scoreLevel(NaN, 2, true)).toBe(0);
  });
  it('hides the columns after the predicting position', () => {
    expect(causallyHidden(4, 3)).toBe(true);
    expect(causallyHidden(3, 3)).toBe(false);
    expect(causallyHidden(9, undefined)).toBe(false);
  });
});

describe('generation beside its reference', () => {
  it('pads the shorter side with nulls', () => {
    expect(alignGeneration(['a', 'b', 'c'], [0.9, 0.5, 0.2], [true, false, false], ['a', 'x'])).toEqual([
      { generated: 'a', prob: 0.9, reference: 'a', match: true },
      { generated: 'b', prob: 0.5, reference: 'x', match: false },
      { generated: 'c', prob: 0.2, reference: null, match: false },
    ]);
    expect(alignGeneration(['a'], [0.4], [false], ['x', 'y'])[1]).toEqual({ generated: null, prob: null, reference: 'y', match: false });
  });
});

describe('checkpoint and head picks', () => {
  it('picks the nearest step', () => {
    expect(nearestStep([0, 4, 8], 5.9)).toBe(4);
    expect(nearestStep([0, 4, 8], 6.1)).toBe(8);
    expect(nearestStep([], 3)).toBe(null);
  });
  it('clamps a head to a stack', () => {
    expect(clampHead([3, 5], 2, 4)).toEqual([1, 3]);
    expect(clampHead([0, 1], 2, 4)).toEqual([0, 1]);
  });
});
