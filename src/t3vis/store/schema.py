"""The on-disk contract of a run directory, imported by both writer and reader.

Format v2 (below) is v1 plus the task, the attention stacks and per-token arrays; v1 runs
(classification, one stack) still read: a v1 run is a v2 run whose task is classification and
whose one stack's files carry the plain names.

    RUN/
      run.json                  RunMeta below
      examples.parquet          id, split, text, label, probe_row (-1: seen in training, not probed)
      dynamics/part-*.parquet   id, epoch, step, gold_prob, correct (one part per flush)
      checkpoints/step-00001200/
        meta.json               CheckpointMeta below; written last, so its presence marks a complete checkpoint
        outputs.parquet         the task's output columns (tasks/formats.py), row i = probe row i:
                                classification: id, pred, loss, gold_prob, correct, nan, probs
                                causal-lm, seq2seq: id, loss (mean target-token NLL), perplexity,
                                mean_prob, token_accuracy, n_tokens, nan
        hidden.npy              float16 (layers+1, N, d): pooled state per layer, layer-major
        gate_grads.npy          float32 (N, L, H): d loss / d head gate per example; memory-mapped.
                                Runs written before float32 storage hold float16 divided by meta.json's
                                gate_grad_scale; readers multiply by gate_grad_scale (absent: 1.0)
        heads.npz               importance (L, H), importance_raw (L, H), attention summaries
                                (L, H) each, thumbnails (L, H, K, K), thumbnail_counts (K, K)
        hidden.<stack>.npy,     the same for every other stack (stack_file below): the files without
        gate_grads.<stack>.npy, a stack in their name belong to run.json's default_stack. A
        heads.<stack>.npz       cross-attention stack has no hidden states of its own
        tokens.npz              generative tasks: per target token, ragged, example i's tokens at
                                offsets[i]:offsets[i+1]: offsets int64 (N+1), target int32 (the token),
                                nll float16, prob float16, top1 int32 (the model's most likely token)
        weights/                safetensors + config + tokenizer, unless meta.json names another location;
                                for a PEFT model the adapter + tokenizer + t3vis_base.json naming the base
      base_model/               a PEFT run's base model, saved at the first checkpoint that keeps weights
                                (absent where the base was loaded from a local folder: that is referenced)
      cache/                    derived arrays (<sha256 of key>.npy), safe to delete; bounded in size,
                                least recently used entries evicted first (store/cache.py)

Checkpoints are staged in `checkpoints/.staging-*` and renamed into place, so a reader
never sees a half-written one. Re-recording a step renames the old folder aside to
`checkpoints/.replaced-step-*` first, renames the new one in, then deletes the old; a writer
that finds a `.replaced-*` folder without its `step-*` folder (a crash between the renames)
renames it back (store/atomic.py). Readers skip every name that `parse_checkpoint_dirname`
rejects, so neither kind of hidden folder is ever read as a checkpoint.

`RunWriter.create` writes only into a missing or empty folder (or one holding nothing but
what an interrupted create left), never over files it did not write.
"""

from __future__ import annotations

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)

RUN_META = "run.json"
EXAMPLES = "examples.parquet"
DYNAMICS_DIR = "dynamics"
CHECKPOINTS_DIR = "checkpoints"
CACHE_DIR = "cache"
BASE_MODEL_DIR = "base_model"   # a PEFT run's base model, saved once (checkpoints' weights hold adapters)
STAGING_PREFIX = ".staging-"     # a checkpoint being written, or an old one being deleted
TRASH_PREFIX = ".replaced-"      # the old copy of a checkpoint while a new one replaces it

CHECKPOINT_META = "meta.json"
OUTPUTS = "outputs.parquet"
HIDDEN = "hidden.npy"
HEADS = "heads.npz"
GATE_GRADS = "gate_grads.npy"
TOKENS = "tokens.npz"
WEIGHTS_DIR = "weights"
TOKEN_ARRAYS = ("offsets", "target", "nll", "prob", "top1")

EXAMPLE_COLUMNS = ("id", "split", "text", "label", "probe_row")     # every task; generative add `target`
DYNAMICS_COLUMNS = ("id", "epoch", "step", "gold_prob", "correct")
# dynamics of a generative task: gold_prob is the mean target-token probability of the example in
# that training step, correct its token accuracy (a float in [0, 1] rather than a bool)

# Per-head attention summaries stored in heads.npz, each (L, H), averaged over the
# non-padding query positions of every probe example.
ATTENTION_SUMMARIES = (
    "entropy",          # nats, of each query's attention distribution
    "to_first",         # attention mass on the first token
    "to_separator",     # attention mass on separator / end tokens
    "to_self",          # attention mass on the query's own position
    "to_previous",      # attention mass on the position before the query
    "to_next",          # attention mass on the position after the query
    "distance",         # expected |query - key| in tokens
)

# Summaries only cross-attention stacks have, stored as attention_<name> too.
CROSS_ATTENTION_SUMMARIES = (
    "coverage",         # per example, mean over source tokens of min(1, attention received); averaged
)

POOLINGS = ("cls", "mean", "last")

# Keys of run.json, with what each holds.
RUN_META_KEYS = {
    "format_version": "int, FORMAT_VERSION of the writer",
    "t3vis_version": "str",
    "model": "dict: name_or_path, architecture, model_type, num_parameters",
    "task": "str: classification, causal-lm or seq2seq (v1: sequence-classification)",
    "stacks": "v2: list of {name, num_layers, num_heads, hidden_size, hidden (bool: has hidden states)}, "
              "in the order they run",
    "default_stack": "v2: str, the stack whose files carry the plain names and whose sizes are num_layers, "
                     "num_heads, hidden_size below (the last stack with hidden states: the decoder of an "
                     "encoder-decoder)",
    "truncated": "v2: int, probe examples cut at max_length",
    "label_names": "list[str], index = class id (empty for generative tasks)",
    "label_map": "dict[str, int], name -> class id: the mapping the labels were recorded with",
    "num_layers": "int, transformer blocks (hidden.npy has num_layers + 1 rows)",
    "num_heads": "int, heads per block",
    "hidden_size": "int",
    "pooling": "one of POOLINGS",
    "max_length": "int, tokens per example in the probe pass",
    "thumbnail_size": "int, K of the attention thumbnails",
    "num_probe": "int, N",
    "created": "ISO time",
    "weights_roots": "optional list[str]: absolute folders outside the run that a checkpoint's `weights` may "
                     "point into (Trainer checkpoints, `t3vis record`'s folders); nothing else is loaded",
}


def stack_file(name: str, stack: str | None, default_stack: str | None) -> str:
    """The file of `stack` for a per-stack file name (HIDDEN, GATE_GRADS, HEADS): the plain name for
    the default stack, "hidden.decoder.npy" style for the others."""
    if stack is None or stack == default_stack:
        return name
    stem, dot, suffix = name.partition(".")
    return f"{stem}.{stack}{dot}{suffix}"


def checkpoint_dirname(step: int) -> str:
    return f"step-{int(step):08d}"


def parse_checkpoint_dirname(name: str) -> int | None:
    if not name.startswith("step-"):
        return None
    digits = name[len("step-"):]
    return int(digits) if digits.isdigit() else None
