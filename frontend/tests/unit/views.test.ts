// What the views show by a run's task: colour options, legends, table columns, filters, curves.
import { describe, expect, it } from 'vitest';
import { encodePoints } from '../../src/lib/colors';
import { NO_FILTER } from '../../src/lib/filters';
import type { Points, RunInfo, TaskName } from '../../src/lib/types';
import {
  colorOptions, curveKinds, filterFields, filterFor, headerMetrics, pointFacts, shownColor, tableColumns, taskWords,
} from '../../src/lib/views';

function run(task: TaskName | undefined, labelNames: string[] = []): RunInfo {
  return {
    name: 'r', model: 'm', num_examples: 4, num_probe: 4, num_layers: 2, num_heads: 2, hidden_size: 8,
    label_names: labelNames, num_checkpoints: 1, pooling: 'mean', checkpoints: [], has_dynamics: true,
    has_weights: false, attention_summaries: [], saliency_methods: [], projection_methods: [], task,
  };
}

function points(n: number, over: Partial<Points> = {}): Points {
  const nan = () => new Float32Array(n).fill(NaN);
  return {
    n, id: Float64Array.from({ length: n }, (_, i) => i), label: new Int32Array(n).fill(-1), pred: new Int32Array(n).fill(-1),
    correct: new Uint8Array(n).fill(255), loss: nan(), goldProb: nan(), confidence: nan(), variability: nan(),
    region: new Int8Array(n).fill(-1), split: ['train'], splitCode: new Int8Array(n), perplexity: nan(), meanProb: nan(),
    tokenAccuracy: nan(), nTokens: nan(), ...over,
  };
}

const CLASSIFIER_COLORS = ['label', 'pred', 'correct', 'loss', 'gold_prob', 'confidence', 'variability', 'region', 'preservation'];

describe('colour-by options', () => {
  it('a classifier keeps its list, gold label first (also from a server that names no task)', () => {
    expect(colorOptions(run('classification', ['neg', 'pos'])).map((o) => o.value)).toEqual(CLASSIFIER_COLORS);
    expect(colorOptions(run(undefined, ['neg', 'pos'])).map((o) => o.value)).toEqual(CLASSIFIER_COLORS);
    expect(colorOptions(run('classification'))[0].label).toBe('Gold label');
  });
  it('a sequence run offers its measures, never a prediction or p(gold)', () => {
    const values = colorOptions(run('seq2seq')).map((o) => o.value);
    expect(values).toEqual(['loss', 'perplexity', 'token_accuracy', 'mean_prob', 'confidence', 'variability', 'region',
      'preservation']);
    expect(colorOptions(run('causal-lm')).map((o) => o.value)).toEqual(values);
  });
  it('a sequence run with categories offers them first, named category', () => {
    const options = colorOptions(run('seq2seq', ['sport', 'tech']));
    expect(options[0]).toMatchObject({ value: 'label', label: 'Category' });
    expect(options.map((o) => o.label).join(' ')).not.toMatch(/gold|Prediction|Correctness/);
  });
  it('a choice the run does not offer gives way to its default', () => {
    expect(shownColor(run('seq2seq'), 'label')).toBe('loss');
    expect(shownColor(run('seq2seq', ['a']), 'label')).toBe('label');
    expect(shownColor(run('seq2seq'), 'gold_prob')).toBe('loss');
    expect(shownColor(run('seq2seq'), 'perplexity')).toBe('perplexity');
    expect(shownColor(run('classification', ['a']), 'perplexity')).toBe('label');
    expect(shownColor(run('classification', ['a']), 'gold_prob')).toBe('gold_prob');
  });
});

describe('legends of a sequence run', () => {
  it('category: titled by category with the counts, no gold', () => {
    const e = encodePoints('label', points(5, { label: Int32Array.from([0, 1, 2, 0, 0]) }), null,
      ['sport', 'tech', 'politics'], 'sequence');
    expect(e.legend.title).toBe('Category');
    expect(e.legend.kind === 'categorical' && e.legend.items.map((i) => [i.label, i.count])).toEqual(
      [['sport', 3], ['tech', 1], ['politics', 1]]);
  });
  it('perplexity: log scale from the lowest point to the 98th percentile', () => {
    const perplexity = Float32Array.from([2, 20, 200, 2000, NaN]);
    const e = encodePoints('perplexity', points(5, { perplexity }), null, [], 'sequence');
    expect(e.legend.kind === 'continuous' && [e.legend.min, e.legend.max]).toEqual(['2.0', '≥ 200']);
    // equal steps in log(perplexity) are equal steps in colour; above the 98th percentile: the top
    expect(e.values[0]).toBeCloseTo(0, 5);
    expect(e.values[1]).toBeCloseTo(0.5, 5);
    expect(e.values[2]).toBeCloseTo(1, 5);
    expect(e.values[3]).toBe(1);
    expect(Number.isNaN(e.values[4])).toBe(true);
  });
  it('token accuracy and mean probability run over [0, 1], the low end on top', () => {
    const tokenAccuracy = Float32Array.from([0.25, 1, 0]);
    const e = encodePoints('token_accuracy', points(3, { tokenAccuracy }), null, [], 'sequence');
    expect(Array.from(e.values)).toEqual([0.25, 1, 0]);
    expect(Array.from(e.order ?? [])).toEqual([1, 0, 2]);
  });
  it('the data map follows the target tokens, and a classifier keeps its titles', () => {
    const pts = points(2, { confidence: Float32Array.from([0.2, 0.4]) });
    expect(encodePoints('confidence', pts, null, [], 'sequence').legend.title).toMatch(/target-token probability/);
    expect(encodePoints('confidence', pts, null, []).legend.title).toBe('Data-map confidence (mean p(gold) over epochs)');
    expect(encodePoints('label', pts, null, ['a']).legend.title).toBe('Gold label');
  });
});

describe('the table, filters and words by task', () => {
  it('a classifier keeps its columns', () => {
    expect(tableColumns(run('classification', ['a'])).map((c) => c.label)).toEqual(
      ['id', 'split', 'text', 'gold', 'pred', 'loss', 'p(gold)', 'conf.', 'var.', 'region']);
  });
  it('a sequence run lists source, target and its measures, sortable; category only where given', () => {
    const keys = tableColumns(run('seq2seq')).map((c) => c.key);
    expect(keys).toEqual(['id', 'split', 'text', 'target', 'loss', 'perplexity', 'token_accuracy', 'mean_prob',
      'confidence', 'variability', 'region']);
    expect(tableColumns(run('seq2seq', ['a'])).map((c) => c.key)).toContain('label');
    const sortable = tableColumns(run('seq2seq')).filter((c) => c.sort).map((c) => c.sort);
    expect(sortable).toEqual(expect.arrayContaining(['loss', 'perplexity', 'token_accuracy', 'mean_prob']));
  });
  it('filters: a sequence run has no prediction or correctness, and drops them from a stale filter', () => {
    expect(filterFields(run('classification', ['a']))).toMatchObject({ label: 'gold', pred: true, correct: true });
    expect(filterFields(run('seq2seq'))).toMatchObject({ label: null, pred: false, correct: false });
    expect(filterFields(run('seq2seq', ['a'])).label).toBe('category');
    const stale = { ...NO_FILTER, labels: [1], preds: [0], correct: true, lossMax: 2 };
    expect(filterFor(run('seq2seq'), stale)).toEqual({ ...NO_FILTER, lossMax: 2 });
    expect(filterFor(run('seq2seq', ['a', 'b']), stale)).toEqual({ ...NO_FILTER, labels: [1], lossMax: 2 });
    expect(filterFor(run('classification', ['a']), stale)).toBe(stale);
  });
  it('hover facts and words', () => {
    const pts = points(1, { perplexity: Float32Array.from([12.345]), tokenAccuracy: Float32Array.from([0.5]),
      meanProb: Float32Array.from([0.25]), goldProb: Float32Array.from([0.9]) });
    expect(pointFacts(run('seq2seq'), pts, 0)).toEqual([['perplexity', '12.35'], ['token acc.', '50%'], ['p̄(target)', '25%']]);
    expect(pointFacts(run('classification'), pts, 0)).toEqual([['p(gold)', '90%']]);
    expect(taskWords(run('causal-lm')).confidence).toMatch(/target-token probability/);
    expect(taskWords(run('classification')).label).toBe('gold');
  });
  it('curves and header metrics', () => {
    expect(curveKinds(run('classification')).map((k) => k.value)).toEqual(['accuracy', 'loss']);
    const kinds = curveKinds(run('seq2seq'));
    expect(kinds.map((k) => k.value)).toEqual(['token_accuracy', 'perplexity', 'loss']);
    expect(kinds[1].log).toBe(true);
    expect(['probe_token_accuracy', 'train_loss'].filter((m) => kinds[0].metrics.test(m))).toEqual(['probe_token_accuracy']);
    const t = { step: 1, epoch: null, accuracy: 0.3, gold_prob: 0.2, n: 4 };
    expect(kinds[0].training.map((s) => s.value(t))).toEqual([0.3, 0.2]);
    expect(headerMetrics(run('seq2seq'), { probe_loss: 1, probe_perplexity: 3, probe_token_accuracy: 0.5 }))
      .toEqual(['probe_perplexity', 'probe_token_accuracy']);
    expect(headerMetrics(run('classification'), { probe_loss: 1, probe_accuracy: 0.5 })).toEqual(['probe_accuracy', 'probe_loss']);
  });
});
