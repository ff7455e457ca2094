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

/** An entry of GET /api/runs. */
export type RunListEntry = RunSummary | DamagedRun;

export function isDamaged(run: RunListEntry): run is DamagedRun {
  return 'error' in run;
}

export interface CheckpointInfo {
  step: number;
  /** null when the run recorded no epochs (a plain loop's snapshot(step=...), checkpoints without trainer state) */
  epoch: number | null;
  time: string | null;
  metrics: Record<string, number | null>;
  has_weights: boolean;
}

export interface RunInfo extends RunSummary {
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

export type SortKey = 'id' | 'loss' | 'gold_prob' | 'confidence' | 'variability' | 'label' | 'pred';

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
}

export type HeadScope = 'all' | 'selection' | 'example';

export interface HeadsResponse {
  importance: number[][];
  scope: HeadScope;
  n: number;
  summaries: Record<string, number[][]>;
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

export interface PruneResponse {
  n: number;
  before: { accuracy: number; loss: number };
  after: { accuracy: number; loss: number };
  flips: { id: number; before: number; after: number; label: number }[];
}

export type ColorBy = 'label' | 'pred' | 'correct' | 'loss' | 'gold_prob' | 'confidence' | 'variability' | 'region'
  | 'preservation';

export interface HeadHistory {
  steps: number[];
  importance: number[][][]; // (C, L, H)
}
