"""Request and response schemas of the HTTP API (docs/api.md). Pydantic only: no torch, no I/O."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_IDS = 100_000            # docs/api.md: id lists at most 100,000 ids
MAX_PAGE = 1_000             # page limit
MAX_TEXT = 20_000            # characters of a free text sent to the instance view
MAX_SEARCH = 1_000           # characters of a table search string
MAX_MASKED = 4_096           # (layer, head) pairs in one pruning request
MAX_NEW_TOKENS = 128         # tokens one generation request may ask for (each is one forward pass)
MAX_GENERATIONS = 20         # a pruning selection up to this size also gets its greedy generations

# a run sorts by the columns its task has (a generative run: no gold_prob, label or pred; 422 otherwise)
SortKey = Literal["id", "loss", "gold_prob", "confidence", "variability", "label", "pred", "correct", "perplexity",
                  "mean_prob", "token_accuracy", "n_tokens"]
SaliencyMethod = Literal["integrated_gradients", "gradient", "grad_x_input", "lrp", "attention_rollout"]
ProjectionMethod = Literal["pca", "umap", "tsne"]
Region = Literal["easy-to-learn", "ambiguous", "hard-to-learn"]

I64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]     # DuckDB BIGINT range
# a selection held by the server (POST /runs/{run}/selections), in place of an id list
SelectionHandle = Annotated[str, Field(pattern=r"^sel-[0-9a-f]{16}$", description=(
    "a selection handle from POST /api/runs/{run}/selections, in place of ids (not both)"))]


class _Strict(BaseModel):
    """Request bodies: unknown fields are an error (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")


class Error(BaseModel):
    detail: str


# -- runs ----------------------------------------------------------------------------

class CheckpointInfo(BaseModel):
    step: int
    epoch: float | None
    time: str | None
    metrics: dict[str, float | None]
    has_weights: bool


class RunSummary(BaseModel):
    name: str
    model: str
    architecture: str | None = None
    num_parameters: int | None = None
    num_examples: int
    num_probe: int
    num_layers: int
    num_heads: int
    hidden_size: int
    label_names: list[str]
    num_checkpoints: int
    task: str | None = Field(None, description="classification, causal-lm or seq2seq")


class DamagedRun(BaseModel):
    """A served run whose run.json or examples cannot be read: listed so the viewer can say why."""
    name: str
    error: str


class WaitingRun(BaseModel):
    """A served run with nothing recorded yet (its folder does not exist, or holds no run.json):
    listed so the viewer can say it waits; it opens once the recorder writes run.json."""
    name: str
    waiting: Literal[True] = True
    detail: str


RunState = Literal["waiting", "ready", "gone", "damaged"]


class RunVersion(BaseModel):
    """What a page polls to follow a run while it is written (docs/api.md, "Following a run")."""
    version: int = Field(description="grows by one whenever the run's checkpoints, training-dynamics parts, "
                                     "examples or run.json change (or its state does); never otherwise")
    state: RunState = Field(description="waiting: nothing recorded yet; ready: served; gone: its folder was "
                                        "deleted or moved; damaged: run.json does not read")
    steps: list[int] = Field(description="the steps of the complete checkpoints, sorted")
    dynamics: int = Field(description="training-dynamics parts written (grows as training observes)")
    detail: str | None = Field(description="what the state means, to show (null when ready)")


class StackSummary(BaseModel):
    """One attention stack of a run ("encoder", "decoder" or "cross")."""
    name: str
    num_layers: int
    num_heads: int
    has_hidden: bool = Field(description="it has hidden states of its own (a cross-attention stack has not)")


class RunInfo(RunSummary):
    pooling: str | None
    max_length: int | None
    checkpoints: list[CheckpointInfo]
    has_dynamics: bool
    has_weights: bool
    attention_summaries: list[str]
    saliency_methods: list[str]
    projection_methods: list[str]
    stacks: list[StackSummary] | None = Field(None, description="the attention stacks, in the order they run")
    default_stack: str | None = Field(None, description="the stack that num_layers, num_heads, the projections "
                                                        "and head routes without a stack describe")
    point_columns: list[str] | None = Field(None, description="the per-point columns of the points and the table: "
                                                              "id, split, [label], the task's outputs, the data map")


class CurvePoint(BaseModel):
    step: int
    epoch: float | None
    metrics: dict[str, float | None]


class TrainingPoint(BaseModel):
    step: int
    epoch: float | None
    accuracy: float | None
    gold_prob: float | None
    n: int


class Curves(BaseModel):
    checkpoints: list[CurvePoint]
    training: list[TrainingPoint]


# -- projections ---------------------------------------------------------------------

class ProjectionStatus(BaseModel):
    status: Literal["queued", "running", "failed"]
    progress: float = Field(ge=0.0, le=1.0)
    message: str


# -- table ---------------------------------------------------------------------------

class TableQuery(_Strict):
    step: I64 | None = Field(default=None, description="checkpoint step; null: the latest")
    labels: list[I64] | None = Field(default=None, max_length=MAX_IDS)
    preds: list[I64] | None = Field(default=None, max_length=MAX_IDS)
    correct: bool | None = None
    loss_min: float | None = None
    loss_max: float | None = None
    conf_min: float | None = None
    conf_max: float | None = None
    regions: list[Region] | None = Field(default=None, max_length=3)
    search: str | None = Field(default=None, max_length=MAX_SEARCH,
                               description="case-insensitive substring of the text")
    ids: list[I64] | None = Field(default=None, max_length=MAX_IDS)
    selection: SelectionHandle | None = None
    split: str | None = Field(default=None, max_length=200)
    sort: SortKey = "id"
    descending: bool = False
    offset: int = Field(default=0, ge=0, le=2**62)
    limit: int = Field(default=50, ge=0, le=MAX_PAGE)


class TableRow(BaseModel):
    id: int
    split: str | None
    text: str | None
    label: int | None
    pred: int | None
    correct: bool | None
    loss: float | None
    gold_prob: float | None
    confidence: float | None
    variability: float | None
    region: str | None
    target: str | None = Field(None, description="generative runs: the target (completion) text")
    perplexity: float | None = None
    mean_prob: float | None = Field(None, description="generative runs: mean target-token probability")
    token_accuracy: float | None = Field(None, description="generative runs: share of target tokens predicted top-1")
    n_tokens: int | None = Field(None, description="generative runs: target tokens")


class TablePage(BaseModel):
    total: int
    offset: int
    limit: int
    rows: list[TableRow]


class SelectionQuery(_Strict):
    ids: list[I64] | None = Field(default=None, max_length=MAX_IDS, description="the selected example ids")
    selection: SelectionHandle | None = None


class NewSelection(_Strict):
    """POST /runs/{run}/selections as JSON (binary bodies carry any number of ids)."""
    ids: list[I64] = Field(max_length=MAX_IDS, description="the selected example ids")


class SelectionSummary(BaseModel):
    """What a selection holds, so the viewer can say why the table lists fewer rows than were selected."""
    n: int = Field(description="distinct ids given")
    listed: int = Field(description="ids in the run's examples table (what the table can list)")
    not_probed: int = Field(description="ids the run knows that are not in the probe set (training only: "
                                        "in the data map, not in the projection)")
    without_text: int = Field(description="ids the run knows that have no text recorded (register them with "
                                          "Recorder.add_examples)")
    unknown: int = Field(description="ids this run does not know at all")


class SelectionHandleAnswer(SelectionSummary):
    """A selection the server now holds: its handle, to name it by, and what it holds."""
    handle: str = Field(description="sel-<16 hex>: the same run and set of ids always give the same handle")
    count: int = Field(description="distinct ids selected (= n)")


# -- one example ---------------------------------------------------------------------

class HistoryEntry(BaseModel):
    step: int
    epoch: float | None
    pred: int | None
    loss: float | None
    gold_prob: float | None
    probs: list[float | None]
    correct: bool | None = None
    perplexity: float | None = None
    mean_prob: float | None = None
    token_accuracy: float | None = None
    n_tokens: int | None = None


class ExampleDynamics(BaseModel):
    confidence: float | None
    variability: float | None
    correctness: float | None
    region: str | None


class ExampleDetail(BaseModel):
    id: int
    text: str | None
    split: str | None
    label: int | None
    probe_row: int | None
    history: list[HistoryEntry]
    dynamics: ExampleDynamics | None
    forgetting_events: int | None
    target: str | None = Field(None, description="generative runs: the target (completion) text")


# -- heads ---------------------------------------------------------------------------

StackName = Annotated[str, Field(min_length=1, max_length=64, description="an attention stack of the run "
                                                                         "(GET /api/runs/{run} lists them)")]


class HeadsQuery(_Strict):
    scope: Literal["all", "selection", "example"] = "all"
    ids: list[I64] | None = Field(default=None, max_length=MAX_IDS)
    selection: SelectionHandle | None = None
    stack: StackName | None = Field(None, description="null: the run's default stack")


class HeadsAnswer(BaseModel):
    importance: list[list[float | None]]
    scope: str
    n: int
    skipped: int = Field(0, description="ids left out of a selection: seen in training only, never probed")
    summaries: dict[str, list[list[float | None]]]
    stack: str | None = Field(None, description="the stack these heads belong to")


class HeadsHistory(BaseModel):
    steps: list[int]
    importance: list[list[list[float | None]]]


# -- instance ------------------------------------------------------------------------

class InstanceQuery(_Strict):
    id: I64 | None = None
    text: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT)
    method: SaliencyMethod = "integrated_gradients"
    target: int | None = Field(default=None, ge=0, le=100_000, description="classification: the class to "
                                                                           "explain; null: the prediction")
    target_text: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT,
                                    description="generative runs, with text: its target (seq2seq, required) or "
                                                "completion (causal-lm; null: the whole text is scored)")
    token: int | None = Field(default=None, ge=0, le=100_000,
                              description="generative runs: the target token whose saliency row to compute")
    foil: Annotated[str, Field(min_length=1, max_length=200)] | Annotated[int, Field(ge=0, le=2**31 - 1)] | None = (
        Field(default=None, description="generative runs: a token (as the tokenizer writes it) or token id; "
                                        "explain log p(target) - log p(foil)"))
    matrix: bool = Field(False, description="generative runs: also the whole target x input saliency matrix")


class InstanceAnswer(BaseModel):
    tokens: list[str]
    probs: list[float | None]
    pred: int
    label: int | None
    loss: float | None
    target: int
    method: str
    scores: list[float | None]
    delta: float | None = Field(description="integrated gradients: the absolute completeness error "
                                            "|sum(scores) - (f(x) - f(baseline))| in logit units; null otherwise")
    delta_relative: float | None = Field(None, description="integrated gradients: delta / |f(x) - f(baseline)|; "
                                                           "null otherwise")
    n_steps: int | None = Field(default=None, description="integrated gradients: the quadrature steps taken, the "
                                                          "first of 16, 24, 32, 48, 64, ... 256, from where the "
                                                          "example's length starts it, whose relative "
                                                          "completeness error is at most 1%; null otherwise")
    attention_id: str = Field(description="query string for .../instance/attention that returns this example's "
                                          "attention, e.g. 'id=12' or 'key=...'")


class SequenceInstanceAnswer(BaseModel):
    """A generative run's instance view: the example's tokens, its target tokens as the model scores them
    (teacher forced), and on request one target token's saliency row and the whole matrix."""
    task: str
    input_tokens: list[str] = Field(description="every input token: causal-lm the whole sequence; seq2seq the "
                                                "source tokens, then the decoder input tokens")
    stream_lengths: dict[str, int] = Field(description="tokens per stream, in the order of input_tokens "
                                                       "('input', then 'decoder_input' for seq2seq)")
    target_tokens: list[str]
    target_ids: list[int]
    predicted_at: list[int] = Field(description="per target token, the input_tokens column whose output predicts it")
    target_probs: list[float | None] = Field(description="per target token, its probability")
    target_nll: list[float | None] = Field(description="per target token, its negative log-likelihood")
    top1_ids: list[int] = Field(description="per target token, the model's most likely token there")
    top1_tokens: list[str]
    loss: float | None = Field(description="mean target-token NLL")
    perplexity: float | None
    mean_prob: float | None
    token_accuracy: float | None
    method: str
    token: int | None = Field(description="the target token explained by scores (null: none asked)")
    foil: int | None = Field(default=None, description="the foil's token id (contrastive saliency), or null")
    scores: list[float | None] | None = Field(default=None, description="the asked token's saliency over input_tokens")
    delta: float | None = Field(default=None, description="integrated gradients: |sum(scores) - (f(x) - f(baseline))|")
    delta_relative: float | None = None
    matrix: list[list[float | None]] | None = Field(default=None, description="matrix: true: one row per target token")
    matrix_delta: list[float | None] | None = Field(default=None, description="integrated gradients: each row's delta")
    attention_id: str


# -- generation ----------------------------------------------------------------------

class GenerateQuery(_Strict):
    id: I64 | None = None
    text: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT,
                             description="a prompt (causal-lm) or source (seq2seq)")
    target_text: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT,
                                    description="with text: the reference to show next to the generation")
    max_new_tokens: int = Field(20, ge=1, le=MAX_NEW_TOKENS)


class GenerateAnswer(BaseModel):
    prompt: str
    tokens: list[str] = Field(description="the generated tokens, end-of-sequence included if reached")
    token_ids: list[int]
    probs: list[float | None] = Field(description="the probability the model gave each token when it chose it")
    text: str
    finished: bool = Field(description="stopped at the end-of-sequence token (false: ran out of max_new_tokens)")
    reference_tokens: list[str] = Field(description="the target tokens as the task scores them (a causal-lm "
                                                    "example without a completion: none)")
    reference_ids: list[int]
    matches: list[bool] = Field(description="per generated token: it is the reference token at that position")


# -- pruning -------------------------------------------------------------------------

HeadPairs = Annotated[list[tuple[int, int]], Field(max_length=MAX_MASKED)]


PRUNE_SAMPLE = 128           # examples an estimate evaluates: answers well inside 1 s on 2 cores (bench/bench_prune.py)


class PruneQuery(_Strict):
    masked_heads: HeadPairs | Annotated[dict[StackName, HeadPairs], Field(max_length=8)] = Field(
        default_factory=list, description="[layer, head] pairs of the default stack, or {stack: [[layer, head]]}; "
                                          "layer is the block index 0..L-1")
    ids: list[I64] | None = Field(default=None, max_length=MAX_IDS)
    selection: SelectionHandle | None = None
    max_new_tokens: int = Field(20, ge=1, le=MAX_NEW_TOKENS,
                                description=f"generative runs, a selection of at most {MAX_GENERATIONS}: tokens "
                                            "to generate before and after")
    estimate: bool = Field(False, description=f"a classifier: answer at once from a seeded random sample of "
                                              f"{PRUNE_SAMPLE} of the examples, with 95% intervals (all of them, "
                                              "exactly, when there are no more)")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="draws the estimate's sample: same seed, same sample")


class Interval(BaseModel):
    """A 95% confidence interval."""
    low: float | None
    high: float | None


class Score(BaseModel):
    accuracy: float | None
    loss: float | None
    accuracy_interval: Interval | None = Field(default=None, description="an estimate's 95% interval; null when exact")
    loss_interval: Interval | None = Field(default=None, description="an estimate's 95% interval; null when exact")


class Flip(BaseModel):
    id: int
    before: int
    after: int
    label: int


class PruneAnswer(BaseModel):
    n: int
    skipped: int = Field(0, description="ids left out: seen in training only, never probed")
    before: Score
    after: Score
    flips: list[Flip] = Field(description="the flipped predictions among the examples evaluated (the sample's)")
    exact: bool = Field(default=True, description="false: an estimate from `sample` of the n examples")
    sample: int = Field(description="examples evaluated: n when exact")
    flipped: float = Field(description="flipped predictions among all n: counted when exact, else estimated")
    flipped_interval: Interval | None = Field(default=None, description="an estimate's 95% interval; null when exact")


class GenerativeScore(BaseModel):
    loss: float | None = Field(description="mean NLL over all target tokens (token-weighted)")
    perplexity: float | None
    token_accuracy: float | None


class GenerationPair(BaseModel):
    """One example's greedy generation before and after masking, side by side."""
    id: int
    before: list[str]
    after: list[str]
    before_probs: list[float | None]
    after_probs: list[float | None]
    before_text: str
    after_text: str
    changed: list[bool] = Field(description="per token of after: it differs from before's token there (or before "
                                            "has none)")
    reference: list[str] = Field(description="the target tokens")


class GenerativePruneAnswer(BaseModel):
    n: int
    skipped: int = Field(0, description="ids left out: seen in training only, never probed")
    before: GenerativeScore
    after: GenerativeScore
    masked_heads: dict[str, list[tuple[int, int]]] = Field(description="the masked heads per stack")
    exact: bool = Field(default=True, description="always true: a generative run answers an estimate request exactly")
    generations: list[GenerationPair] | None = Field(
        description=f"a selection of at most {MAX_GENERATIONS} examples: greedy generations before and after")
