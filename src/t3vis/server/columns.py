"""Which per-example columns the server shows for a run, taken from its task's TaskFormat.

The points, the example table and an example's history list what the run's files hold: a
classification run label, pred, correct, loss, gold_prob; a generative run loss, perplexity,
mean_prob, token_accuracy, n_tokens (and the target text next to the text). Nothing here
branches on a task's name: a task's columns are its format's output and example columns.

Column names from here are the only identifiers the table's SQL formats in (the server's own
names, never user input).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from t3vis.tasks.formats import TaskFormat

# Every per-example output column the server can show, in the order it shows them, with its
# wire type. A list per example (probs) and the nan flag are not per-point columns.
OUTPUT_TYPES: dict[str, pa.DataType] = {
    "pred": pa.int32(), "correct": pa.bool_(), "loss": pa.float32(), "gold_prob": pa.float32(),
    "perplexity": pa.float32(), "mean_prob": pa.float32(), "token_accuracy": pa.float32(), "n_tokens": pa.int32(),
}
DATAMAP_COLUMNS = ("confidence", "variability", "region")
# every column of the points, as sent (Arrow) and as DuckDB casts to it
WIRE_TYPES: dict[str, pa.DataType] = {"id": pa.int64(), "split": pa.string(), "label": pa.int32(), **OUTPUT_TYPES,
                                      "confidence": pa.float32(), "variability": pa.float32(),
                                      "region": pa.string()}
_SQL_TYPES = {pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.bool_(): "BOOLEAN", pa.float32(): "FLOAT",
              pa.string(): "VARCHAR"}


@dataclass(frozen=True)
class Columns:
    """The columns of one task's runs, as the server shows them."""

    label: bool                  # examples carry a class label worth showing
    outputs: tuple[str, ...]     # from each checkpoint's outputs.parquet
    texts: tuple[str, ...]       # strings of examples.parquet shown (and searched) in the table
    history: tuple[str, ...]     # read from outputs.parquet for an example's history (outputs + probs)

    @property
    def wide(self) -> tuple[str, ...]:
        """The example table's columns but the texts: what it filters and sorts on."""
        return ("id", "split", *(("label",) if self.label else ()), *self.outputs, *DATAMAP_COLUMNS)

    def points_schema(self) -> pa.Schema:
        """The points' Arrow schema: id, split, [label], the outputs, confidence, variability, region."""
        return pa.schema([(name, WIRE_TYPES[name]) for name in self.wide])

    def no_outputs_sql(self) -> str:
        """A typed, empty outputs table (a run without checkpoints yet): id and every output column."""
        typed = "".join(f", NULL::{self.sql_type(c)} AS {c}" for c in self.outputs)
        return f"(SELECT NULL::BIGINT AS id{typed} WHERE false)"

    @staticmethod
    def sql_type(name: str) -> str:
        """The DuckDB type a wide column is cast to on the wire."""
        return _SQL_TYPES[WIRE_TYPES[name]]


def columns_of(task: TaskFormat, categorised: bool = False) -> Columns:
    """The columns a run of `task` shows: its format's outputs and texts, a label where it has
    classes, or where a generative run's examples were given categories (categorised)."""
    outputs = tuple(c for c in OUTPUT_TYPES if c in task.output_columns)
    texts = tuple(c for c in ("text", "target") if c in task.example_columns)
    history = outputs + (("probs",) if "probs" in task.output_columns else ())
    return Columns(label=task.has_classes or categorised, outputs=outputs, texts=texts, history=history)
