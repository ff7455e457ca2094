import { describe, expect, it } from 'vitest';
import {
  checkpointName, epochText, headLabel, headName, hiddenLayerName, hiddenLayerTitle, incomplete, metric, sci, sentence,
} from '../../src/lib/format';

describe('checkpoints without epochs', () => {
  it('names a checkpoint by step and epoch when it has one', () => {
    expect(checkpointName({ step: 120, epoch: 1.5 })).toBe('step 120 · epoch 1.50');
    expect(checkpointName({ step: 120, epoch: 1.5 }, 1)).toBe('step 120 · epoch 1.5');
    expect(checkpointName({ step: 0, epoch: 0 })).toBe('step 0 · epoch 0.00');
    expect(epochText(2)).toBe('epoch 2.00');
  });
  it('names it by step alone when the run recorded no epoch', () => {
    expect(checkpointName({ step: 120, epoch: null })).toBe('step 120');
    expect(epochText(null)).toBeNull();
    expect(epochText(undefined)).toBeNull();
    expect(epochText(NaN)).toBeNull();
  });
  it('never prints null or NaN for a missing metric', () => {
    expect(metric('probe_accuracy', null)).toBe('—');
    expect(metric('probe_loss', null)).toBe('—');
    expect(metric('train_seconds', null)).toBe('—');
    expect(metric('train_seconds', 12.34)).toBe('12.3 s');
  });
});

describe('heads are named 0-based, as the API addresses them', () => {
  it('importance[2][5] is L2.H5, layer 2, head 5', () => {
    expect(headLabel(2, 5)).toBe('L2.H5');
    expect(headName(2, 5)).toBe('layer 2, head 5');
    expect(headLabel(0, 0)).toBe('L0.H0');
  });
  it('hidden-state layers count the embeddings as layer 0', () => {
    expect(hiddenLayerName(0)).toBe('layer 0 (embeddings)');
    expect(hiddenLayerName(3)).toBe('layer 3');
    expect(hiddenLayerTitle(0)).toBe('Hidden-state layer 0: the embeddings');
    expect(hiddenLayerTitle(3)).toBe('Hidden-state layer 3: the output of block 2');
  });
});

describe("integrated gradients' completeness error", () => {
  it('prints errors in scientific notation, a dash when unknown', () => {
    expect(sci(0.00123)).toBe('1.2e-3');
    expect(sci(0)).toBe('0.0e+0');
    expect(sci(null)).toBe('—');
    expect(sci(undefined)).toBe('—');
  });
  it('warns only when the absolute error is large and the relative one confirms it', () => {
    expect(incomplete(0.01, 0.5)).toBe(false);      // f(x) ~ f(baseline): the relative error explodes, harmlessly
    expect(incomplete(0.2, 0.01)).toBe(false);      // large gap: 0.2 is 1% of it
    expect(incomplete(0.2, 0.3)).toBe(true);
    expect(incomplete(0.2, null)).toBe(true);       // no relative error (older server): the absolute one decides
    expect(incomplete(0.2, undefined)).toBe(true);
    expect(incomplete(0.05, 1)).toBe(false);        // at the tolerance, not above it
    expect(incomplete(null, 1)).toBe(false);
  });
});

describe('sentence', () => {
  it('ends a message with a full stop once', () => {
    expect(sentence('restore it, or restart `t3vis serve`')).toBe('restore it, or restart `t3vis serve`.');
    expect(sentence('already one.')).toBe('already one.');
    expect(sentence('  ')).toBe('');
  });
});
