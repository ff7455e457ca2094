// What the views show of a run, by the behaviour of its task: a classifier's examples have a
// gold class and a prediction; a sequence run's (causal-lm, seq2seq) are scored token by token
// and may carry a category (label_names non-empty) that is no gold class. The colour-by options,
// the table's columns, the point filters, the words of the data map and tooltips and the
// training curves' metrics are looked up here, one table per behaviour, so views do not branch
// on task names.
import { fixed, pct } from './format';
import type { PointFilter } from './filters';
import { isSequenceTask, runTask } from './task';
import type { ColorBy, Curves, Points, RunInfo, SortKey } from './types';

export type Behaviour = 'classifier' | 'sequence';

export function behaviourOf(info: RunInfo | null | undefined): Behaviour {
  return isSequenceTask(runTask(info)) ? 'sequence' : 'classifier';
}

/** Whether a sequence run's examples were given categories (a classifier's labels are its classes). */
export function hasCategories(info: RunInfo | null | undefined): boolean {
  return (info?.label_names.length ?? 0) > 0;
}

// ---- Colour by ------------------------------------------------------------------------------

export interface ColorOption {
  value: ColorBy;
  label: string;
  /** offered only where the examples carry a label (a sequence run's category) */
  needsLabels?: boolean;
}

/**
 * The colour-by options, the default first. A sequence run with categories opens coloured by
 * category, as a classifier opens by gold label: the examples' own grouping reads at a glance in
 * a layout of hidden states and asks the first question (do the representations separate it?);
 * without categories it opens by loss, the task's own measure.
 */
const COLOR_OPTIONS: Record<Behaviour, ColorOption[]> = {
  classifier: [
    { value: 'label', label: 'Gold label' },
    { value: 'pred', label: 'Prediction' },
    { value: 'correct', label: 'Correctness' },
    { value: 'loss', label: 'Loss' },
    { value: 'gold_prob', label: 'Gold-label confidence p(gold)' },
    { value: 'confidence', label: 'Data-map confidence' },
    { value: 'variability', label: 'Data-map variability' },
    { value: 'region', label: 'Data-map region' },
    { value: 'preservation', label: 'Neighbourhood preservation' },
  ],
  sequence: [
    { value: 'label', label: 'Category', needsLabels: true },
    { value: 'loss', label: 'Loss' },
    { value: 'perplexity', label: 'Perplexity' },
    { value: 'token_accuracy', label: 'Token accuracy' },
    { value: 'mean_prob', label: 'Mean target-token probability' },
    { value: 'confidence', label: 'Data-map confidence' },
    { value: 'variability', label: 'Data-map variability' },
    { value: 'region', label: 'Data-map region' },
    { value: 'preservation', label: 'Neighbourhood preservation' },
  ],
};

export function colorOptions(info: RunInfo | null | undefined): ColorOption[] {
  const labels = hasCategories(info);
  return COLOR_OPTIONS[behaviourOf(info)].filter((o) => !o.needsLabels || labels);
}

/** The colour shown for a choice: the choice where the run offers it, else the run's default. */
export function shownColor(info: RunInfo | null | undefined, by: ColorBy): ColorBy {
  const options = colorOptions(info);
  return options.some((o) => o.value === by) ? by : options[0].value;
}

// ---- Words ----------------------------------------------------------------------------------

export interface TaskWords {
  /** the label column's short name (tooltips, filters, table) and its legend title */
  label: string;
  labelTitle: string;
  /** the data map's axes and its correctness colour */
  confidence: string;
  variability: string;
  correctness: string;
  /** the data map's correctness in a hover card */
  correctShort: string;
  /** what the training dynamics track per example and pass */
  tracked: string;
  /** what a probe-only filter leaves out of the data map */
  probeOnly: string;
  search: string;
}

const WORDS: Record<Behaviour, TaskWords> = {
  classifier: {
    label: 'gold', labelTitle: 'Gold label',
    confidence: 'confidence (mean gold-label probability)',
    variability: 'variability (std of gold-label probability across epochs)',
    correctness: 'Correct in share of epochs', correctShort: 'correct', tracked: 'gold-label probability',
    probeOnly: 'gold/pred/correct/loss are known for probe examples only, so the rest are left out',
    search: 'Search text…',
  },
  sequence: {
    label: 'category', labelTitle: 'Category',
    confidence: 'confidence (mean target-token probability)',
    variability: 'variability (std of mean target-token probability across epochs)',
    correctness: 'Token accuracy (mean over epochs)', correctShort: 'token acc. (epochs)',
    tracked: 'mean target-token probability',
    probeOnly: 'category/loss are known for probe examples only, so the rest are left out',
    search: 'Search source, target…',
  },
};

export function taskWords(info: RunInfo | null | undefined): TaskWords {
  return WORDS[behaviourOf(info)];
}

/** A probe point's task measures for a hover card (loss is shown apart). */
export function pointFacts(info: RunInfo | null | undefined, pts: Points, row: number): [string, string][] {
  return behaviourOf(info) === 'sequence'
    ? [['perplexity', fixed(pts.perplexity[row], 2)], ['token acc.', pct(pts.tokenAccuracy[row], 0)],
      ['p̄(target)', pct(pts.meanProb[row], 0)]]
    : [['p(gold)', pct(pts.goldProb[row], 0)]];
}

// ---- The header's checkpoint metrics ---------------------------------------------------------

const HEADER_METRICS: Record<Behaviour, string[]> = {
  classifier: ['probe_accuracy', 'validation_accuracy', 'train_accuracy', 'probe_loss'],
  sequence: ['probe_perplexity', 'probe_token_accuracy', 'validation_token_accuracy'],
};

/** The checkpoint metrics the header shows, those the run recorded (none of these: its first three). */
export function headerMetrics(info: RunInfo | null | undefined, metrics: Record<string, number | null>): string[] {
  const keys = HEADER_METRICS[behaviourOf(info)].filter((k) => k in metrics);
  return keys.length ? keys : Object.keys(metrics).slice(0, 3);
}

// ---- Point filters ------------------------------------------------------------------------

export interface FilterFields {
  /** the label filter's title; null: the run has no labels to filter on */
  label: string | null;
  pred: boolean;
  correct: boolean;
  /** what the filter button, the label menu and the loss range say they filter by */
  help: string;
  labelHelp: string;
  lossHelp: string;
}

export function filterFields(info: RunInfo | null | undefined): FilterFields {
  if (behaviourOf(info) === 'classifier') {
    return { label: 'gold', pred: true, correct: true, help: 'Filter the points by label, prediction, correctness, loss or region',
      labelHelp: 'Gold label (any of)', lossHelp: 'Loss range at this checkpoint' };
  }
  const categories = hasCategories(info);
  return { label: categories ? 'category' : null, pred: false, correct: false,
    help: `Filter the points by ${categories ? 'category, ' : ''}loss or data-map region`, labelHelp: 'Category (any of)',
    lossHelp: 'Loss range at this checkpoint (mean negative log-likelihood of the target tokens)' };
}

/** The filter without the fields the run does not offer (one set while another run was open). */
export function filterFor(info: RunInfo | null | undefined, f: PointFilter): PointFilter {
  const fields = filterFields(info);
  if (fields.label && fields.pred && fields.correct) return f;
  return { ...f, labels: fields.label ? f.labels : null, preds: fields.pred ? f.preds : null,
    correct: fields.correct ? f.correct : null };
}

// ---- The example table ----------------------------------------------------------------------

/** How a table cell shows its value: the kind picks the markup, the key the row's field. */
export type CellKind = 'num' | 'split' | 'text' | 'label' | 'pred' | 'region' | 'percent';

export interface TableColumn {
  key: string;
  label: string;
  kind: CellKind;
  sort?: SortKey;
  title?: string;
  width?: string;
  digits?: number;
}

const DATAMAP_COLUMNS: TableColumn[] = [
  { key: 'confidence', label: 'conf.', kind: 'num', sort: 'confidence', digits: 2, width: '4.3rem', title: 'data-map confidence' },
  { key: 'variability', label: 'var.', kind: 'num', sort: 'variability', digits: 2, width: '4.3rem', title: 'data-map variability' },
  { key: 'region', label: 'region', kind: 'region', width: '6.4rem' },
];

const TABLE_COLUMNS: Record<Behaviour, TableColumn[]> = {
  classifier: [
    { key: 'id', label: 'id', kind: 'num', sort: 'id', width: '3.6rem', digits: 0 },
    { key: 'split', label: 'split', kind: 'split', width: '4.6rem' },
    { key: 'text', label: 'text', kind: 'text' },
    { key: 'label', label: 'gold', kind: 'label', sort: 'label', width: '4.8rem' },
    { key: 'pred', label: 'pred', kind: 'pred', sort: 'pred', width: '4.8rem' },
    { key: 'loss', label: 'loss', kind: 'num', sort: 'loss', width: '4.3rem' },
    { key: 'gold_prob', label: 'p(gold)', kind: 'num', sort: 'gold_prob', digits: 2, width: '4.3rem', title: 'probability of the gold label' },
    ...DATAMAP_COLUMNS,
  ],
  sequence: [
    { key: 'id', label: 'id', kind: 'num', sort: 'id', width: '3.2rem', digits: 0 },
    { key: 'split', label: 'split', kind: 'split', width: '4.2rem' },
    { key: 'text', label: 'source', kind: 'text', title: 'the source text (the prompt of a causal-lm example)' },
    { key: 'target', label: 'target', kind: 'text', title: 'the target the model is scored on (a completion for causal-lm)' },
    { key: 'label', label: 'category', kind: 'label', sort: 'label', width: '5rem' },
    { key: 'loss', label: 'loss', kind: 'num', sort: 'loss', width: '4rem', title: 'mean negative log-likelihood of the target tokens' },
    { key: 'perplexity', label: 'ppl.', kind: 'num', sort: 'perplexity', digits: 1, width: '4.2rem', title: 'perplexity: exp(loss)' },
    { key: 'token_accuracy', label: 'tok. acc.', kind: 'percent', sort: 'token_accuracy', width: '4.6rem',
      title: 'token accuracy: share of target tokens the model ranks first' },
    { key: 'mean_prob', label: 'p̄(tgt)', kind: 'num', sort: 'mean_prob', digits: 2, width: '4rem',
      title: 'mean probability of the target tokens' },
    ...DATAMAP_COLUMNS,
  ],
};

export function tableColumns(info: RunInfo | null | undefined): TableColumn[] {
  const labels = behaviourOf(info) === 'classifier' || hasCategories(info);
  return TABLE_COLUMNS[behaviourOf(info)].filter((c) => c.key !== 'label' || labels);
}

/** Sorting by a key first: the telling end first (high loss, perplexity, variability; low accuracy). */
export function sortsDescending(key: SortKey): boolean {
  return key === 'loss' || key === 'variability' || key === 'perplexity';
}

// ---- Training curves ------------------------------------------------------------------------

export interface CurveKind {
  value: string;
  label: string;
  /** checkpoint metrics shown */
  metrics: RegExp;
  /** per-step series of the training dynamics: name, value */
  training: { name: string; value: (t: Curves['training'][number]) => number | null }[];
  percent?: boolean;
  log?: boolean;
}

const CURVE_KINDS: Record<Behaviour, CurveKind[]> = {
  classifier: [
    { value: 'accuracy', label: 'Accuracy', metrics: /acc/i, percent: true,
      training: [{ name: 'training batches (moving average)', value: (t) => t.accuracy }] },
    { value: 'loss', label: 'Loss', metrics: /loss/i, training: [] },
  ],
  sequence: [
    { value: 'token_accuracy', label: 'Token accuracy', metrics: /token_acc/i, percent: true,
      training: [{ name: 'training token accuracy (moving average)', value: (t) => t.accuracy },
        { name: 'training mean target-token probability', value: (t) => t.gold_prob }] },
    { value: 'perplexity', label: 'Perplexity', metrics: /perplexity/i, log: true, training: [] },
    { value: 'loss', label: 'Loss', metrics: /loss/i, training: [] },
  ],
};

export function curveKinds(info: RunInfo | null | undefined): CurveKind[] {
  return CURVE_KINDS[behaviourOf(info)];
}

/** The points' columns (GET .../points?columns=) each colour is drawn from. */
const COLOR_COLUMNS: Record<ColorBy, string[]> = {
  label: ['label'], pred: ['pred'], correct: ['correct'], loss: ['loss'], gold_prob: ['gold_prob'],
  confidence: ['confidence'], variability: ['variability'], region: ['region'], preservation: [],
  perplexity: ['perplexity'], token_accuracy: ['token_accuracy'], mean_prob: ['mean_prob'],
};

/** Runs with at least this many probe examples draw first from the columns the colour needs. */
export const FIRST_COLUMNS_FROM = 100_000;

/** The columns a big run's first picture needs (ids and the colour's), fetched before the rest;
 *  null for a run small enough to fetch them all at once. */
export function firstColumns(info: RunInfo | null | undefined, by: ColorBy): string[] | null {
  if (!info || info.num_probe < FIRST_COLUMNS_FROM) return null;
  return ['id', ...COLOR_COLUMNS[shownColor(info, by)]];
}
