"""DuckDB over a run's Parquet files: the example table, per-point columns, one example, curves.

SQL here is parametrised: user input only ever travels as a bound parameter. The only
identifiers formatted into SQL are the server's own (a derived table's name, the column names
of server/columns.py; a sort key is one of those, checked before it is used). One in-memory
DuckDB database per app (opened on first use, closed when the app stops); every query runs on
its own cursor, so requests on different threads never share one. Every Parquet file is
checked by the reader (columns and types) before DuckDB reads it, so a damaged file is a
CorruptRunError naming it, not a DuckDB error.

Which columns a run's table, points and history have comes from its task (server/columns.py):
a classification run's pred, correct, gold_prob; a generative run's perplexity, mean_prob,
token_accuracy, n_tokens and target text. A filter or sort on a column the run lacks is a 422.

A selection of ids (a list, or a handle's ids: server/selections.py) reaches DuckDB as an Arrow
table registered on the query's cursor and joined, never as bound list values: a million ids cost
a hash join, not a million parameters.

The data map (confidence, variability, region per example) is computed by
`t3vis.cartography` through the reader and materialised once per run and version of its
dynamics files as a DuckDB table, so filters and sorts on it cost what a join costs.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from t3vis.cartography import RegionRule
from t3vis.errors import CorruptRunError, InvalidInputError, NotFoundError
from t3vis.server.columns import Columns
from t3vis.server.models import SelectionSummary, TablePage, TableQuery, TableRow
from t3vis.server.runs import RunHandle
from t3vis.server.selections import distinct_ids

log = logging.getLogger("t3vis.server")

# what DuckDB raises for a file it cannot read or whose columns do not fit the query
_READ_ERRORS = (duckdb.IOException, duckdb.InvalidInputException, duckdb.BinderException,
                duckdb.ConversionException)

# TableQuery field -> (the wide table's column it reads, its condition on the wide table (w), the value
# bound as $field); ids (or a selection handle) filter through the registered table CHOSEN instead
FILTERS = (
    ("labels", "label", "w.label IN (SELECT unnest($labels::BIGINT[]))"),
    ("preds", "pred", "w.pred IN (SELECT unnest($preds::BIGINT[]))"),
    ("correct", "correct", "w.correct = $correct"),
    ("loss_min", "loss", "w.loss >= $loss_min"),
    ("loss_max", "loss", "w.loss <= $loss_max"),
    ("conf_min", "confidence", "w.confidence >= $conf_min"),
    ("conf_max", "confidence", "w.confidence <= $conf_max"),
    ("regions", "region", "w.region IN (SELECT unnest($regions::VARCHAR[]))"),
    ("split", "split", "w.split = $split"),
)
CHOSEN = "chosen"            # the name a query's selected ids are registered under (our own identifier)
UNSORTABLE = ("split", "region")     # wide columns a table is not sorted by (TableQuery.sort lists the others)
MAX_TABLES = 8               # materialised tables kept (wide per checkpoint, texts and facts per run)
REGION_RULE_KEY = b"t3vis.region_rule"    # the data map's schema metadata: its RegionRule, as JSON
DATAMAP_SCHEMA = pa.schema([("id", pa.int64()), ("confidence", pa.float32()), ("variability", pa.float32()),
                            ("correctness", pa.float32()), ("region", pa.string()), ("probe_row", pa.int32())])


@dataclass(frozen=True)
class ProbeSelection:
    ids: np.ndarray          # (n,) the probed ids, in the order asked
    rows: np.ndarray         # (n,) their probe rows
    labels: np.ndarray       # (n,)
    texts: list[str]
    skipped: int             # ids left out: seen in training only, never probed
    targets: list[str] | None = None     # a generative run's targets ("" where the whole text is the target)


def _dictionary_encoded(table: pa.Table, columns) -> pa.Table:
    """String columns with a handful of values (split, region) sent as dictionary indices: at
    1,000,000 points they were most of the bytes on the wire."""
    for name in columns:
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, table.column(name).dictionary_encode())
    return table


def _bindable(value):
    """A query value as DuckDB binds it (tuples and other sequences as lists)."""
    return list(value) if isinstance(value, (tuple, set, frozenset)) else value


def _finite(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _stamp(path: Path) -> tuple:
    try:
        st = path.stat()
    except FileNotFoundError:
        return (str(path), -1, -1)
    return (str(path), st.st_size, st.st_mtime_ns)


def _unreadable(handle: RunHandle, what: str, params: dict, error: Exception) -> CorruptRunError:
    """A DuckDB read error as the run's fault, naming the files the query read."""
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    files = [v for v in params.values() if isinstance(v, str) and v.endswith(".parquet")]
    files += [f for v in params.values() if isinstance(v, list) for f in v
              if isinstance(f, str) and f.endswith(".parquet")]
    return CorruptRunError(f"{what} of run {handle.name!r} could not be read ({first}); the run's files are "
                           f"damaged or missing: {', '.join(files) or handle.path} (re-record the run)")


class Tables:
    def __init__(self):
        self._db: duckdb.DuckDBPyConnection | None = None       # opened on first use
        self._lock = threading.Lock()
        self._datamaps: dict[int, tuple[object, str]] = {}      # run index -> (version, table name)
        self._serial = 0
        self._tables: OrderedDict[tuple, tuple[object, str]] = OrderedDict()
        self._probe_ids: dict[int, tuple[tuple, np.ndarray]] = {}     # run index -> (examples stamp, ids)

    def close(self) -> None:
        """Close the database (the app is stopping); a later query opens a fresh one."""
        with self._lock:
            db, self._db = self._db, None
            self._datamaps.clear()
            self._tables.clear()
            self._probe_ids.clear()
        if db is not None:
            db.close()

    @property
    def is_open(self) -> bool:
        return self._db is not None

    # -- plumbing ------------------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            return self._cursor_locked()

    def _cursor_locked(self) -> duckdb.DuckDBPyConnection:
        """A cursor on the database, opening it if need be; the caller holds self._lock."""
        if self._db is None:
            self._db = duckdb.connect(":memory:")
        return self._db.cursor()

    def _query(self, handle: RunHandle, sql: str, params: dict, what: str, *, arrow: bool = False,
               relations: dict[str, pa.Table] | None = None):
        """Run sql on a fresh cursor (arrow=True: as a pyarrow Table); damaged or missing files
        become CorruptRunError (409). relations: Arrow tables the sql reads by name (registered on
        this cursor only, so concurrent requests never see each other's)."""
        cursor = self._cursor()
        for name, table in (relations or {}).items():
            cursor.register(name, table)
        try:
            if arrow:
                return cursor.sql(sql, params=params).to_arrow_table()
            return cursor.execute(sql, params)
        except _READ_ERRORS as e:
            raise _unreadable(handle, what, params, e) from None

    def datamap_table(self, handle: RunHandle) -> str:
        """Name of the DuckDB table holding the run's data map (built once per dynamics version)."""
        version = handle.dynamics_version()
        with self._lock:
            known = self._datamaps.get(handle.index)
            if known is not None and known[0] == version:
                return known[1]
        _, frame = handle.datamap()
        frame = frame[["id", "confidence", "variability", "correctness", "region"]].copy()
        frame["region"] = frame["region"].astype(object)
        table = pa.Table.from_pandas(frame, preserve_index=False).cast(
            pa.schema([("id", pa.int64()), ("confidence", pa.float64()), ("variability", pa.float64()),
                       ("correctness", pa.float64()), ("region", pa.string())]))
        with self._lock:
            known = self._datamaps.get(handle.index)
            if known is not None and known[0] == version:
                return known[1]
            self._serial += 1
            name = f"datamap_{handle.index}_{self._serial}"        # our own identifier, never user input
            cursor = self._cursor_locked()
            cursor.register("incoming", table)
            cursor.execute(f"CREATE TABLE {name} AS SELECT * FROM incoming")
            cursor.unregister("incoming")
            if known is not None:
                cursor.execute(f"DROP TABLE IF EXISTS {known[1]}")
            self._datamaps[handle.index] = (version, name)
            return name

    # -- the example table ---------------------------------------------------------------

    def _materialised(self, key: tuple, version, build_sql: str, params: dict, handle: RunHandle, what: str) -> str:
        """Name of a DuckDB table built by build_sql (kept while `version` holds; LRU beyond MAX_TABLES)."""
        with self._lock:
            known = self._tables.get(key)
            if known is not None and known[0] == version:
                self._tables.move_to_end(key)
                return known[1]
            self._serial += 1
            name = f"{key[0]}_{handle.index}_{self._serial}"        # our own identifier, never user input
        cursor = self._cursor()
        try:
            cursor.execute(f"CREATE TABLE {name} AS {build_sql}", params)
        except _READ_ERRORS as e:
            raise _unreadable(handle, what, params, e) from None
        drop = []
        with self._lock:
            old = self._tables.get(key)
            if old is not None:
                drop.append(old[1])
            self._tables[key] = (version, name)
            self._tables.move_to_end(key)
            while len(self._tables) > MAX_TABLES:
                drop.append(self._tables.popitem(last=False)[1][1])
        for table in drop:
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
        return name

    def _wide_table(self, handle: RunHandle, ck) -> str:
        """One row per example: every table column but the text (examples, the checkpoint's outputs,
        the data map), materialised in DuckDB once per version of those files, so a page is a
        scan of memory, not a decode and join of Parquet files."""
        dm = self.datamap_table(handle)
        params = {"examples": handle.checked_examples_path()}
        outputs = handle.columns.no_outputs_sql()
        if ck is not None:
            outputs = "read_parquet($outputs)"
            params["outputs"] = handle.checked_outputs_path(ck)
        version = (dm, _stamp(handle.examples_path), _stamp(handle.outputs_path(ck)) if ck is not None else None)
        sql = (f"SELECT {_select(handle.columns, cast=False)} FROM read_parquet($examples) e "
               f"LEFT JOIN {outputs} o ON o.id = e.id "
               f"LEFT JOIN {dm} d ON d.id = e.id")
        return self._materialised(("wide", handle.index, None if ck is None else ck.step), version, sql, params,
                                  handle, "the example table")

    def _text_table(self, handle: RunHandle) -> str:
        """id, probe_row and the texts (text; a generative run's target too), each also lower-cased
        (lower_text...) for the search, materialised once per version of the examples table."""
        texts = handle.columns.texts
        sql = (f"SELECT id, probe_row, {', '.join(texts)}, {', '.join(f'lower({c}) AS lower_{c}' for c in texts)} "
               "FROM read_parquet($examples)")
        return self._materialised(("texts", handle.index), _stamp(handle.examples_path), sql,
                                  {"examples": handle.checked_examples_path()}, handle, "the examples table")

    def page(self, handle: RunHandle, q: TableQuery, chosen: np.ndarray | None = None) -> TablePage:
        """One page of the example table; chosen: the selected ids to filter by (a handle's), else q.ids."""
        ck = handle.checkpoint(q.step) if (q.step is not None or handle.checkpoints()) else None
        columns = handle.columns
        _check_columns(handle, q, columns)
        wide = self._wide_table(handle, ck)
        texts = self._text_table(handle)
        # every filter the query sets, as SQL with its value bound to the parameter of the field's name
        where = [sql for field, _, sql in FILTERS if getattr(q, field) is not None]
        params: dict = {field: _bindable(getattr(q, field)) for field, _, _ in FILTERS
                        if getattr(q, field) is not None}
        if chosen is None and q.ids is not None:
            chosen = np.asarray(q.ids, dtype=np.int64)
        relations = {} if chosen is None else {CHOSEN: _id_table(chosen)}
        if chosen is not None:
            where.append(f"w.id IN (SELECT id FROM {CHOSEN})")
        if q.search:
            # a literal substring of a lower-cased text (no pattern characters), kept lowered in memory
            found_in = " OR ".join(f"contains(lower_{c}, lower($search))" for c in columns.texts)
            where.append(f"w.id IN (SELECT id FROM {texts} WHERE {found_in})")
            params["search"] = q.search
        where_sql = (" WHERE " + " AND ".join(where)) if where else ""
        direction = "DESC" if q.descending else "ASC"
        sort = q.sort                          # a column of the wide table (checked above), not free text
        order = f"{sort} {direction} NULLS LAST, id {direction}"
        # Two phases: sort only (id, key) of the matching rows to find the page's ids, then read
        # those rows whole. A text search counts in the same pass (count(*) OVER ()), so the
        # substring scan of every text runs once, not twice; without one, a separate count(*)
        # is cheaper than the window. Measured on 1,000,000 rows (bench_server): sorting whole
        # rows took twice as long as sorting ids.
        page_params = {**params, "limit": q.limit, "offset": q.offset}
        counted = bool(q.search)
        window = ", count(*) OVER () AS total" if counted else ""
        found = self._query(handle, f"SELECT w.id{window} FROM {wide} w{where_sql} ORDER BY {order} "
                                    "LIMIT $limit OFFSET $offset", page_params, "the example table",
                            relations=relations).fetchall()
        if counted and found:
            total = found[0][1]
        else:
            total = self._query(handle, f"SELECT count(*) FROM {wide} w{where_sql}", params,
                                "the example table", relations=relations).fetchone()[0]
        if not found:
            return TablePage(total=int(total), offset=q.offset, limit=q.limit, rows=[])
        names = (*columns.wide, *columns.texts)
        rows_sql = (f"SELECT {', '.join(f'w.{c}' for c in columns.wide)}, {', '.join(f't.{c}' for c in columns.texts)} "
                    "FROM (SELECT unnest($page::BIGINT[]) AS id, generate_subscripts($page::BIGINT[], 1) AS k) u "
                    f"JOIN {wide} w ON w.id = u.id LEFT JOIN {texts} t ON t.id = u.id ORDER BY u.k")
        found = self._query(handle, rows_sql, {"page": [r[0] for r in found]}, "the example table").fetchall()
        rows = [TableRow(**{**_ABSENT, **{c: _json_value(v) for c, v in zip(names, r)}}) for r in found]
        return TablePage(total=int(total), offset=q.offset, limit=q.limit, rows=rows)

    # -- per-point columns and the data map, as Arrow ------------------------------------

    def points(self, handle: RunHandle, ck, names: list[str] | None = None) -> pa.Table:
        """One row per probe row, in probe order: id, split, [label], the task's outputs, the data map;
        names: only these columns, in this order (checked against the run's: see point_names). The
        files a lean answer does not need are not read."""
        columns = handle.columns
        names = list(columns.wide) if names is None else names
        sources = _sources(columns)
        params = {"examples": handle.checked_examples_path()}
        joins = ""
        if any(sources[c] == "o" for c in names):
            params["outputs"] = handle.checked_outputs_path(ck)
            joins += " LEFT JOIN read_parquet($outputs) o ON o.id = e.id"
        if any(sources[c] == "d" for c in names):
            joins += f" LEFT JOIN {self.datamap_table(handle)} d ON d.id = e.id"
        sql = (f"SELECT {_select(columns, names=names)} FROM read_parquet($examples) e{joins} "
               "WHERE e.probe_row >= 0 ORDER BY e.probe_row")
        result = self._query(handle, sql, params, "the per-point columns", arrow=True)
        schema = pa.schema([(name, columns.points_schema().field(name).type) for name in names])
        return _dictionary_encoded(result.cast(schema), [c for c in ("split", "region") if c in names])

    def probe_ids(self, handle: RunHandle) -> np.ndarray:
        """The ids of the probe rows, in probe order (row i of the points and of the projection),
        read once per version of the examples table."""
        stamp = _stamp(handle.examples_path)
        with self._lock:
            known = self._probe_ids.get(handle.index)
            if known is not None and known[0] == stamp:
                return known[1]
        table = self._query(handle, "SELECT id FROM read_parquet($examples) WHERE probe_row >= 0 ORDER BY probe_row",
                            {"examples": handle.checked_examples_path()}, "the examples table", arrow=True)
        ids = table.column("id").to_numpy().astype(np.int64, copy=False)
        with self._lock:
            self._probe_ids[handle.index] = (stamp, ids)
        return ids

    def datamap(self, handle: RunHandle) -> pa.Table:
        dm = self.datamap_table(handle)
        sql = ("SELECT d.id::BIGINT AS id, d.confidence::FLOAT AS confidence, d.variability::FLOAT AS variability, "
               "d.correctness::FLOAT AS correctness, d.region::VARCHAR AS region, "
               "coalesce(e.probe_row, -1)::INTEGER AS probe_row "
               f"FROM {dm} d LEFT JOIN read_parquet($examples) e ON e.id = d.id ORDER BY d.id")
        result = self._query(handle, sql, {"examples": handle.checked_examples_path()}, "the data map", arrow=True)
        table = _dictionary_encoded(result.cast(DATAMAP_SCHEMA), ("region",))
        return table.replace_schema_metadata({REGION_RULE_KEY: _rule_json(handle.region_rule())})

    # -- what a selection holds ------------------------------------------------------------

    def selection(self, handle: RunHandle, ids) -> SelectionSummary:
        """How many of the selected ids the table lists, how many are not probed (training only)
        and how many have no text: a data-map selection of training examples observed in a plain
        loop has no text (and so no table row) unless the loop registered them with add_examples."""
        facts, dm = self._facts_table(handle), self.datamap_table(handle)
        known = "(t.id IS NOT NULL OR d.id IS NOT NULL)"
        sql = ("SELECT count(*), count(t.id), "
               f"count(*) FILTER (WHERE {known} AND coalesce(t.probe_row, -1) < 0), "
               f"count(*) FILTER (WHERE {known} AND NOT coalesce(t.has_text, false)), "
               f"count(*) FILTER (WHERE NOT {known}) "
               f"FROM {CHOSEN} u LEFT JOIN {facts} t ON t.id = u.id LEFT JOIN {dm} d ON d.id = u.id")
        n, listed, not_probed, without_text, unknown = self._query(
            handle, sql, {}, "the examples table", relations={CHOSEN: _id_table(distinct_ids(ids))}).fetchone()
        return SelectionSummary(n=int(n), listed=int(listed), not_probed=int(not_probed),
                                without_text=int(without_text), unknown=int(unknown))

    def prepare_selections(self, handle: RunHandle) -> None:
        """Build what a selection's summary reads (once per version); a run that cannot is left
        for the summary itself to report."""
        try:
            self._facts_table(handle)
            self.datamap_table(handle)
        except (CorruptRunError, NotFoundError):
            pass

    def _facts_table(self, handle: RunHandle) -> str:
        """One row per example id: its probe row and whether it has a text, what a selection's summary
        counts, materialised once per version of the examples table (a summary of 500,000 ids is then
        two joins, not a group-by of every text)."""
        sql = ("SELECT id, any_value(probe_row) AS probe_row, coalesce(trim(any_value(text)), '') <> '' AS has_text "
               "FROM read_parquet($examples) GROUP BY id")
        return self._materialised(("facts", handle.index), _stamp(handle.examples_path), sql,
                                  {"examples": handle.checked_examples_path()}, handle, "the examples table")

    # -- examples --------------------------------------------------------------------------

    def example(self, handle: RunHandle, example_id: int) -> dict:
        """id, split, label, probe_row and the texts (text; a generative run's target too) of one example;
        NotFoundError if the run has none such. label is None in a task without classes."""
        names = ("id", "split", "label", "probe_row", *handle.columns.texts)
        row = self._query(handle, f"SELECT {', '.join(names)} FROM read_parquet($examples) WHERE id = $id LIMIT 1",
                          {"examples": handle.checked_examples_path(), "id": example_id},
                          "the examples table").fetchone()
        if row is None:
            raise NotFoundError(f"run {handle.name!r} has no example with id {example_id}")
        found = dict(zip(names, row))
        if not handle.columns.label:
            found["label"] = None           # a placeholder in examples.parquet, not a class
        return found

    def probe_rows(self, handle: RunHandle, ids) -> ProbeSelection:
        """The probe rows, labels and texts of the given ids, in their order. An id seen in training
        only (probe_row -1, or known only to the data map) is left out and counted in `skipped`: a
        data-map selection mixes both kinds. An id the run does not know at all is a 404; a
        selection with no probed id is a 422."""
        ids = np.asarray(ids, dtype=np.int64)
        target = ", e.target" if "target" in handle.columns.texts else ""
        sql = (f"SELECT u.id, e.probe_row, e.label, e.text{target} FROM {CHOSEN} u "
               "LEFT JOIN read_parquet($examples) e ON e.id = u.id ORDER BY u.k")
        order = pa.table({"id": ids, "k": np.arange(len(ids), dtype=np.int64)})
        found = self._query(handle, sql, {"examples": handle.checked_examples_path()}, "the examples table",
                            arrow=True, relations={CHOSEN: order})
        probe_row = found.column("probe_row").to_numpy(zero_copy_only=False)     # float, NaN where unlisted
        unlisted = np.unique(ids[np.isnan(probe_row.astype(np.float64))])
        unknown = np.setdiff1d(unlisted, self._datamap_ids(handle, unlisted))
        if len(unknown):
            raise NotFoundError(f"run {handle.name!r} has no example with id {int(unknown[0])}"
                                + (f" (nor {len(unknown) - 1} other id(s) given)" if len(unknown) > 1 else ""))
        probed = np.flatnonzero(probe_row >= 0)          # NaN compares false: unlisted ids are left out
        if not len(probed):
            raise InvalidInputError(f"none of the {len(ids)} ids is in the probe set of run {handle.name!r} "
                                    "(they were seen in training only, so no checkpoint recorded them)")
        kept = found.take(pa.array(probed))
        return ProbeSelection(ids=kept.column("id").to_numpy().astype(np.int64, copy=False),
                              rows=kept.column("probe_row").to_numpy().astype(np.int64),
                              labels=kept.column("label").to_numpy(zero_copy_only=False).astype(np.int64),
                              texts=kept.column("text").to_pylist(), skipped=len(ids) - len(probed),
                              targets=kept.column("target").to_pylist() if target else None)

    def _datamap_ids(self, handle: RunHandle, ids: np.ndarray) -> np.ndarray:
        """Which of ids the data map knows (training examples observed but not in examples.parquet)."""
        if not len(ids):
            return np.empty(0, dtype=np.int64)
        dm = self.datamap_table(handle)
        found = self._query(handle, f"SELECT DISTINCT id FROM {dm} WHERE id IN (SELECT id FROM {CHOSEN})", {},
                            "the data map", arrow=True, relations={CHOSEN: _id_table(ids)})
        return found.column("id").to_numpy(zero_copy_only=False).astype(np.int64)

    def probe_set(self, handle: RunHandle) -> ProbeSelection:
        """Every probe example, in probe order."""
        target = ", target" if "target" in handle.columns.texts else ""
        sql = f"SELECT id, probe_row, label, text{target} FROM read_parquet($examples) WHERE probe_row >= 0 "
        rows = self._query(handle, sql + "ORDER BY probe_row", {"examples": handle.checked_examples_path()},
                           "the examples table").fetchall()
        return _selection(rows, skipped=0, with_target=bool(target))

    def history(self, handle: RunHandle, checkpoints, example_id: int) -> list[dict]:
        """The task's outputs of one example at every checkpoint (in order): classification pred, correct,
        loss, gold_prob, probs; generative loss, perplexity, mean_prob, token_accuracy, n_tokens. A
        checkpoint whose outputs are damaged is left out (its own routes answer why)."""
        checkpoints = [ck for ck in checkpoints if _outputs_readable(handle, ck)]
        if not checkpoints:
            return []
        files = [handle.checked_outputs_path(ck) for ck in checkpoints]
        names = handle.columns.history
        rows = self._query(handle, f"SELECT filename, {', '.join(names)} FROM read_parquet($files, filename=true) "
                                   "WHERE id = $id",
                           {"files": files, "id": example_id}, "the checkpoint outputs").fetchall()
        by_file = {Path(r[0]).resolve(): dict(zip(names, r[1:])) for r in rows}
        out = []
        for ck, f in zip(checkpoints, files):
            r = by_file.get(Path(f).resolve())
            if r is None:
                continue
            entry = {"pred": None, "gold_prob": None, **{c: _json_value(v) for c, v in r.items()}}
            entry["probs"] = [_finite(p) for p in (r.get("probs") or [])]
            out.append({"step": ck.step, "epoch": _finite(ck.epoch), **entry})
        return out

    def observations(self, handle: RunHandle, example_id: int | None = None):
        """Raw training-dynamics rows (all, or of one example) as a DataFrame."""
        import pandas as pd

        files = handle.checked_dynamics_paths()
        if not files:
            return pd.DataFrame({"id": [], "epoch": [], "step": [], "gold_prob": [], "correct": []})
        sql = "SELECT id, epoch, step, gold_prob, correct FROM read_parquet($files)"
        params: dict = {"files": files}
        if example_id is not None:
            sql += " WHERE id = $id"
            params["id"] = example_id
        return self._query(handle, sql, params, "the training dynamics").df()

    def training_curve(self, handle: RunHandle) -> list[dict]:
        files = handle.checked_dynamics_paths()
        if not files:
            return []
        rows = self._query(handle, "SELECT step, min(epoch), avg(correct::DOUBLE), avg(gold_prob), count(*) "
                                   "FROM read_parquet($files) GROUP BY step ORDER BY step",
                           {"files": files}, "the training dynamics").fetchall()
        return [{"step": int(r[0]), "epoch": _finite(r[1]), "accuracy": _finite(r[2]), "gold_prob": _finite(r[3]),
                 "n": int(r[4])} for r in rows]


def _selection(rows: list[tuple], *, skipped: int, with_target: bool) -> ProbeSelection:
    """A ProbeSelection of (id, probe_row, label, text[, target]) rows."""
    return ProbeSelection(ids=np.array([r[0] for r in rows], dtype=np.int64),
                          rows=np.array([r[1] for r in rows], dtype=np.int64),
                          labels=np.array([r[2] for r in rows], dtype=np.int64),
                          texts=[r[3] for r in rows], skipped=skipped,
                          targets=[r[4] for r in rows] if with_target else None)


# TableRow's fields a task may lack (a generative run has no pred, correct, gold_prob or label)
_ABSENT = {"label": None, "pred": None, "correct": None, "gold_prob": None}


def _sources(columns: Columns) -> dict[str, str]:
    """Where each wide column comes from: examples (e), outputs (o) or the data map (d)."""
    return {"id": "e", "split": "e", "label": "e", **{c: "o" for c in columns.outputs},
            "confidence": "d", "variability": "d", "region": "d"}


def _select(columns: Columns, *, cast: bool = True, names=None) -> str:
    """The wide columns (or names of them) from examples (e), outputs (o) and the data map (d); cast:
    each as its wire type (the points' Arrow), else as stored (the example table keeps the data map's
    float64)."""
    sources = _sources(columns)
    return ", ".join(f"{sources[c]}.{c}::{columns.sql_type(c)} AS {c}" if cast else f"{sources[c]}.{c}"
                     for c in (columns.wide if names is None else names))


def _id_table(ids) -> pa.Table:
    """Selected ids as the one-column Arrow table (id int64) a query joins with (zero-copy from numpy)."""
    return pa.table({"id": np.asarray(ids, dtype=np.int64)})


def point_names(handle: RunHandle, columns: str | None) -> list[str] | None:
    """The point columns a `columns=` query names ("id,label"), in its order, each once; None: all. A
    name the run does not have is a 422 listing the ones it has."""
    if columns is None:
        return None
    names = list(dict.fromkeys(c.strip() for c in columns.split(",") if c.strip()))
    known = handle.columns.wide
    unknown = [c for c in names if c not in known]
    if unknown or not names:
        raise InvalidInputError(f"run {handle.name!r} has no point column {', '.join(map(repr, unknown))}; its "
                                f"columns are {', '.join(known)}" if unknown else
                                f"columns is empty: name some of {', '.join(known)} (or leave it out for all)")
    return names


def _json_value(value):
    """A DuckDB value as JSON holds it: floats finite or None, the rest as they are."""
    return _finite(value) if isinstance(value, float) else value


def _check_columns(handle: RunHandle, q: TableQuery, columns: Columns) -> None:
    """A filter or sort on a column this run's task does not have is the caller's mistake (422)."""
    wide = columns.wide
    sortable = [c for c in wide if c not in UNSORTABLE]
    if q.sort not in sortable:
        raise InvalidInputError(f"run {handle.name!r} ({handle.run.task_format.name}) has no column {q.sort!r} to "
                                f"sort by; sort by one of {sortable}")
    lacking = [field for field, column, _ in FILTERS if getattr(q, field) is not None and column not in wide]
    if lacking:
        raise InvalidInputError(f"run {handle.name!r} ({handle.run.task_format.name}) cannot filter on "
                                f"{', '.join(lacking)}: it has no column "
                                f"{', '.join(sorted({c for f, c, _ in FILTERS if f in lacking}))}; "
                                f"its columns are {list(wide)}")


def _rule_json(rule: RegionRule) -> bytes:
    return json.dumps({"num_classes": rule.num_classes, "confidence_threshold": rule.confidence_threshold,
                       "variability_quantile": rule.variability_quantile, "variability_cut": rule.variability_cut,
                       "describe": rule.describe()}).encode()


def _outputs_readable(handle: RunHandle, ck) -> bool:
    try:
        handle.checked_outputs_path(ck)
    except CorruptRunError as e:
        log.warning("leaving checkpoint %s of run %s out of an example's history: %s", ck.step, handle.name, e)
        return False
    return True
