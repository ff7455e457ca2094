// Types of the t3vis HTTP API (docs/api.md, v1).

export interface RunSummary {
  name: string;
  model: string;
  num_examples: number;
  num_probe: number;
  num_layers: number;
  num_heads: number;
  hidden_size: number;
  label_names: string[];
  num_checkpoints: number;
}

/** A served run whose run.json or examples cannot be read: listed with the reason. */
export interface DamagedRun {
  name: string;
  error: string;
}

/** A served run whose folder has not started recording yet (no run.json): its other routes answer 409. */
export interface WaitingRun {
  name: string;
  waiting: true;
  detail: string | null;
}

/** An entry of GET /api/runs. */
export type RunListEntry = RunSummary | DamagedRun | WaitingRun;

export function isDamaged(run: RunListEntry): run is DamagedRun {
  return 'error' in run;
}

export function isWaiting(run: RunListEntry): run is WaitingRun {
  return 'waiting' in run && run.waiting === true;
}

/** Whether a run list entry can be opened now (neither damaged nor waiting). */
export function isReadable(run: RunListEntry): run is RunSummary {
  return !isDamaged(run) && !isWaiting(run);
}

/** Where a served run stands: still to start recording, readable, deleted, or unreadable. */
export type RunState = 'waiting' | 'ready' | 'gone' | 'damaged';

/** GET /api/runs/{run}/version: a number that grows whenever checkpoints, dynamics or run.json change. */
export interface RunVersion {
  version: number;
  state: RunState;
  steps: number[];
  /** a count that changes when the training dynamics do */
  dynamics: number;
  detail: string | null;
}

/** How projections are aligned across checkpoints: each to the one before (earlier layouts never
 *  move as checkpoints land), or all to the last checkpoint. */
export type Alignment = 'previous' | 'final';

export interface CheckpointInfo {
  step: number;
  /** null when the run recorded no epochs (a plain loop's snapshot(step=...), checkpoints without trainer state) */
  epoch: number | null;
  time: string | null;
  metrics: Record<string, number | null>;
  has_weights: boolean;
}

/** What a run's model was trained to do (docs/api.md, Runs). */
export type TaskName = 'classification' | 'causal-lm' | 'seq2seq';

/** One attention stack of the model: an encoder-decoder has "encoder", "decoder" and "cross". */
export interface StackInfo {
  name: string;
  num_layers: number;
  num_heads: number;
  /** whether its layers' pooled hidden states were recorded (cross-attention has none of its own) */
  has_hidden: boolean;
}

export interface RunInfo extends RunSummary {
  /** absent from older servers: read it with runTask() */
  task?: TaskName;
  /** absent from older servers and single-stack classifiers' older runs: read them with runStacks() */
  stacks?: StackInfo[];
  default_stack?: string | null;
  /** the per-example output columns of the points answer */
  point_columns?: string[];
  pooling: string;
  checkpoints: CheckpointInfo[];
  has_dynamics: boolean;
  has_weights: boolean;
  attention_summaries: string[];
  saliency_methods: string[];
  projection_methods: string[];
}

export interface Curves {
  checkpoints: { step: number; epoch: number | null; metrics: Record<string, number | null> }[];
  training: { step: number; epoch: number | null; accuracy: number | null; gold_prob: number | null; n: number }[];
}

export type ProjectionMethod = 'pca' | 'umap' | 'tsne';

export interface ProjectionStatus {
  status: 'queued' | 'running' | 'failed';
  progress: number;
  message: string;
}

/** A projection: one (x, y, preservation) triple per probe row. */
export interface Projection {
  n: number;
  x: Float32Array;
  y: Float32Array;
  preservation: Float32Array;
  sampled: boolean;
  meanPreservation: number | null;
}

/** Columns of the `points` Arrow table, as typed arrays (nulls as NaN / -1 / ''). */
export interface Points {
  n: number;
  id: Float64Array;
  label: Int32Array;
  pred: Int32Array;
  correct: Uint8Array; // 1 correct, 0 wrong, 255 unknown
  loss: Float32Array;
  goldProb: Float32Array;
  confidence: Float32Array;
  variability: Float32Array;
  region: Int8Array; // index into REGIONS, -1 none
  split: string[];
  splitCode: Int8Array;
  /** generative runs (NaN elsewhere): exp(loss), mean target-token probability, top-1 token accuracy, target tokens */
  perplexity: Float32Array;
  meanProb: Float32Array;
  tokenAccuracy: Float32Array;
  nTokens: Float32Array;
}

/** The thresholds the server drew the data map's regions with (docs/api.md, Data map). */
export interface RegionRule {
  num_classes: number;
  /** easy-to-learn at confidence >= it, hard-to-learn below: 1/K, chance for K classes */
  confidence_threshold: number;
  variability_quantile: number;
  /** ambiguous above it: the quantile's value on this run's data map */
  variability_cut: number;
  /** each region's rule in words, with its numbers */
  describe: Record<string, string>;
}

/** What a selection holds (POST /selection): why the table may list fewer rows than were selected. */
export interface SelectionSummary {
  n: number;
  listed: number;
  not_probed: number;
  without_text: number;
  unknown: number;
}

export interface DataMap {
  n: number;
  /** null when the server sent none (an older server) */
  rule: RegionRule | null;
  id: Float64Array;
  confidence: Float32Array;
  variability: Float32Array;
  correctness: Float32Array;
  region: Int8Array;
  probeRow: Int32Array;
}

export type SortKey = 'id' | 'loss' | 'gold_prob' | 'confidence' | 'variability' | 'label' | 'pred'
  | 'perplexity' | 'mean_prob' | 'token_accuracy' | 'n_tokens';

export interface TableQuery {
  step: number | null;
  labels?: number[] | null;
  preds?: number[] | null;
  correct?: boolean | null;
  loss_min?: number | null;
  loss_max?: number | null;
  conf_min?: number | null;
  conf_max?: number | null;
  regions?: string[] | null;
  search?: string | null;
  ids?: number[] | null;
  split?: string | null;
  sort?: SortKey;
  descending?: boolean;
  offset?: number;
  limit?: number;
}

export interface TableRow {
  id: number;
  split: string;
  text: string;
  label: number;
  pred: number | null;
  correct: boolean | null;
  loss: number | null;
  gold_prob: number | null;
  confidence: number | null;
  variability: number | null;
  region: string | null;
  /** generative runs only */
  target?: string;
  perplexity?: number | null;
  mean_prob?: number | null;
  token_accuracy?: number | null;
  n_tokens?: number | null;
}

export interface TablePage {
  total: number;
  offset: number;
  limit: number;
  rows: TableRow[];
}

export interface ExampleHistoryPoint {
  step: number;
  epoch: number | null;
  pred: number | null;
  loss: number | null;
  gold_prob: number | null;
  probs: (number | null)[];
  /** generative runs only */
  perplexity?: number | null;
  mean_prob?: number | null;
  token_accuracy?: number | null;
  n_tokens?: number | null;
}

export interface ExampleDetail {
  id: number;
  text: string | null;
  split: string | null;
  label: number | null;
  probe_row: number | null;
  history: ExampleHistoryPoint[];
  dynamics: { confidence: number | null; variability: number | null; correctness: number | null; region: string | null } | null;
  forgetting_events: number | null;
  /** generative runs: the example's target or completion ("" where a causal-lm text is scored whole) */
  target?: string;
}

export type HeadScope = 'all' | 'selection' | 'example';

export interface HeadsResponse {
  importance: number[][];
  scope: HeadScope;
  n: number;
  summaries: Record<string, number[][]>;
  /** the stack these heads belong to (absent from older servers) */
  stack?: string;
}

/** A uint8 array with its shape (from X-T3vis-Shape). */
export interface ByteTensor {
  shape: number[];
  data: Uint8Array;
}

export type SaliencyMethod = 'integrated_gradients' | 'gradient' | 'grad_x_input' | 'lrp' | 'attention_rollout';

export interface InstanceRequest {
  id: number | null;
  text: string | null;
  method: SaliencyMethod;
  target: number | null;
}

export interface InstanceResponse {
  tokens: string[];
  probs: number[];
  pred: number;
  label: number | null;
  loss: number | null;
  target: number;
  method: SaliencyMethod;
  scores: number[];
  /** integrated gradients' completeness error |sum(scores) - (f(x) - f(baseline))|; null for other methods */
  delta: number | null;
  /** delta / |f(x) - f(baseline)|: explodes where f(x) ~ f(baseline); absent from older servers */
  delta_relative?: number | null;
  attention_id: string;
}

/** A 95% confidence interval. */
export interface Interval { low: number | null; high: number | null }

/** A classifier's measures; an estimate's carry their 95% intervals (null when exact). */
export interface PruneScore {
  accuracy: number;
  loss: number;
  accuracy_interval?: Interval | null;
  loss_interval?: Interval | null;
}

export interface PruneResponse {
  n: number;
  before: PruneScore;
  after: PruneScore;
  /** the flipped predictions among the examples evaluated (an estimate's: its sample's) */
  flips: { id: number; before: number; after: number; label: number }[];
  /** false: an estimate from `sample` of the n examples (docs/api.md "Pruning") */
  exact: boolean;
  sample: number;
  /** flipped predictions among all n: counted when exact, else estimated */
  flipped: number;
  flipped_interval?: Interval | null;
}

export type ColorBy = 'label' | 'pred' | 'correct' | 'loss' | 'gold_prob' | 'confidence' | 'variability' | 'region'
  | 'preservation' | 'perplexity' | 'token_accuracy' | 'mean_prob';

export interface HeadHistory {
  steps: number[];
  importance: number[][][]; // (C, L, H)
}

// ---- Generative runs (causal-lm, seq2seq): docs/api.md "Generative runs" -----------------

export interface SequenceInstanceRequest {
  id: number | null;
  text: string | null;
  /** with text: its target (seq2seq) or completion (causal-lm); with id: null */
  target_text: string | null;
  method: SaliencyMethod;
  /** the target token to explain (index into target_tokens); null: none */
  token: number | null;
  /** contrastive: a token as the tokenizer writes it, or its id */
  foil: string | number | null;
  matrix: boolean;
}

export interface SequenceInstanceAnswer {
  task: TaskName;
  input_tokens: string[];
  stream_lengths: { input: number; decoder_input?: number };
  target_tokens: string[];
  target_ids: number[];
  /** the column of input_tokens whose output predicts each target token */
  predicted_at: number[];
  target_probs: number[];
  target_nll: number[];
  top1_ids: number[];
  top1_tokens: string[];
  loss: number;
  perplexity: number;
  mean_prob: number;
  token_accuracy: number;
  method: SaliencyMethod;
  token: number | null;
  foil: number | null;
  /** the chosen token's saliency row over input_tokens (log-probability units where signed) */
  scores: number[] | null;
  delta: number | null;
  delta_relative: number | null;
  /** target tokens x input tokens, when asked for */
  matrix: number[][] | null;
  matrix_delta: number[] | null;
  attention_id: string;
}

/** One stack's attention for one sequence: uint8 (L, H, Tq, Tk), each query row scaled to sum ~255. */
export interface StackAttention extends ByteTensor {
  stack: string;
  queryTokens: string[];
  keyTokens: string[];
}

export interface GenerateRequest {
  id: number | null;
  text: string | null;
  target_text: string | null;
  max_new_tokens: number;
}

export interface GenerationAnswer {
  prompt: string;
  tokens: string[];
  token_ids: number[];
  probs: number[];
  text: string;
  finished: boolean;
  reference_tokens: string[];
  reference_ids: number[];
  /** generated token k equals reference token k */
  matches: boolean[];
}

export interface SequenceMeasures {
  loss: number;
  perplexity: number;
  token_accuracy: number;
}

export interface GenerationPair {
  id: number;
  before: string[];
  after: string[];
  before_probs: number[];
  after_probs: number[];
  before_text: string;
  after_text: string;
  /** per token of after: it differs from before's token there, or before has none */
  changed: boolean[];
  reference: string[];
}

export interface GenerativePruneResponse {
  n: number;
  skipped: number;
  before: SequenceMeasures;
  after: SequenceMeasures;
  masked_heads: Record<string, [number, number][]>;
  /** at most 20 examples evaluated: each one's greedy generation before and after */
  generations: GenerationPair[] | null;
}
