"""What each task's run holds on disk: the reader's side of a task, without torch.

The model-facing side of a task (encoding, losses, outputs) is t3vis.tasks.<task>; store,
analysis of stored runs and the server need only what a run's files hold, from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from t3vis.errors import InvalidInputError


@dataclass(frozen=True)
class TaskFormat:
    name: str
    example_columns: tuple[str, ...]     # examples.parquet
    output_columns: tuple[str, ...]      # each checkpoint's outputs.parquet
    token_outputs: bool                  # each checkpoint holds per-target-token arrays (tokens.npz)
    correct_is_fraction: bool            # dynamics' `correct` is a token accuracy in [0, 1], not a bool
    # The data map's hard-to-learn threshold on confidence. None: chance, 1/K for K classes. A
    # generative example's confidence is its mean target-token probability: no uniform guess over
    # a vocabulary is a useful bar, so it keeps the paper's 0.5.
    confidence_threshold: float | None
    auto_model: str                      # the transformers Auto class that loads a checkpoint's weights
    has_classes: bool                    # examples carry a class label (run.json's label_names)

    def hard_to_learn_below(self, num_classes: int) -> float:
        return 1.0 / max(num_classes, 1) if self.confidence_threshold is None else self.confidence_threshold


CLASSIFICATION = TaskFormat(
    name="classification",
    example_columns=("id", "split", "text", "label", "probe_row"),
    output_columns=("id", "pred", "loss", "gold_prob", "correct", "nan", "probs"),
    token_outputs=False, correct_is_fraction=False, confidence_threshold=None,
    auto_model="AutoModelForSequenceClassification", has_classes=True)

_GENERATIVE_OUTPUTS = ("id", "loss", "perplexity", "mean_prob", "token_accuracy", "n_tokens", "nan")

CAUSAL_LM = TaskFormat(
    name="causal-lm",
    # text: the whole text, or the prompt; target: the completion ("" where the whole text is the target)
    example_columns=("id", "split", "text", "target", "label", "probe_row"),
    output_columns=_GENERATIVE_OUTPUTS, token_outputs=True, correct_is_fraction=True, confidence_threshold=0.5,
    auto_model="AutoModelForCausalLM", has_classes=False)

SEQ2SEQ = TaskFormat(
    name="seq2seq",
    example_columns=("id", "split", "text", "target", "label", "probe_row"),
    output_columns=_GENERATIVE_OUTPUTS, token_outputs=True, correct_is_fraction=True, confidence_threshold=0.5,
    auto_model="AutoModelForSeq2SeqLM", has_classes=False)

FORMATS = {f.name: f for f in (CLASSIFICATION, CAUSAL_LM, SEQ2SEQ)}
# names older runs were written with
_ALIASES = {"sequence-classification": "classification"}


def task_format(name: str | None) -> TaskFormat:
    """The format of the task a run names (format v1 runs: classification)."""
    key = _ALIASES.get(name or "classification", name or "classification")
    if key not in FORMATS:
        raise InvalidInputError(f"unknown task {name!r}; t3vis knows {', '.join(FORMATS)}")
    return FORMATS[key]
