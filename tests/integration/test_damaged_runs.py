"""No run, however damaged, makes the server answer 5xx (table-driven).

One tiny run with weights is recorded once; each case copies it, damages ONE file in ONE way
(missing, truncated, garbage bytes, a JSON field missing or of the wrong type, a Parquet
column renamed, an array of the wrong shape), serves the copy and calls EVERY route of the
OpenAPI schema with valid parameters of the undamaged run, on the damaged checkpoint and on
the other one (checkpoint files are damaged in the last checkpoint, 5, in every way, and in the
first, 0, by bytes). Every answer must be below 500; the routes that read the damaged file
answer exactly 409 with a message naming the file; every other route answers 200, so one
damaged checkpoint never takes down the other, the run list or the other's aligned layout.
The run's version (what a page polls to follow it) answers 200 whatever is damaged, with state
"damaged" when run.json does not read; a run with nothing recorded yet answers 409 on every
route but the list and its version.

Which routes read which file is written out by hand below (ROUTES_READING), from the API's
contract: it is the reference the server is checked against, not derived from the server.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from server_fixtures import record_tiny_run

from t3vis.errors import NotFoundError
from t3vis.server import create_app

RUN = "tiny"
STEPS = (0, 5)

# -- every route of the schema, with valid parameters of the undamaged run ----------------------

# (method, path template) -> (query parameters, JSON body); {step} is filled with DAMAGED and OTHER
REQUESTS: dict[tuple[str, str], tuple[dict | None, dict | None]] = {
    ("get", "/api/runs"): (None, None),
    ("get", "/api/runs/{run}"): (None, None),
    ("get", "/api/runs/{run}/version"): (None, None),
    ("get", "/api/runs/{run}/curves"): (None, None),
    ("get", "/api/runs/{run}/checkpoints/{step}/points"): (None, None),
    ("get", "/api/runs/{run}/checkpoints/{step}/projection"): ({"layer": 1, "method": "pca", "aligned": True}, None),
    ("post", "/api/runs/{run}/table"): (None, {"step": "{step}", "sort": "loss"}),     # a per-checkpoint route
    ("get", "/api/runs/{run}/examples/{example_id}"): (None, None),
    ("post", "/api/runs/{run}/checkpoints/{step}/heads"): (None, {"scope": "selection", "ids": [2, 9, 1001]}),
    ("get", "/api/runs/{run}/checkpoints/{step}/heads/thumbnails"): (None, None),
    ("get", "/api/runs/{run}/heads/history"): (None, None),
    ("post", "/api/runs/{run}/checkpoints/{step}/instance"): (None, {"id": 7, "method": "gradient"}),
    ("get", "/api/runs/{run}/checkpoints/{step}/instance/attention"): ({"id": 3}, None),
    ("post", "/api/runs/{run}/checkpoints/{step}/prune"): (None, {"masked_heads": [[0, 1]], "ids": [1, 2, 3]}),
    ("post", "/api/runs/{run}/checkpoints/{step}/generate"): (None, {"id": 3}),
    ("get", "/api/runs/{run}/datamap"): (None, None),
    ("post", "/api/runs/{run}/selection"): (None, {"ids": [1, 2, 9, 1001]}),
    ("post", "/api/runs/{run}/selections"): (None, {"ids": [1, 2, 9, 1001]}),
}

# short names of the routes, as the expectations below use them
NAMES = {"/api/runs": "runs", "/api/runs/{run}": "run", "/api/runs/{run}/version": "version",
         "/api/runs/{run}/curves": "curves",
         "/api/runs/{run}/checkpoints/{step}/points": "points",
         "/api/runs/{run}/checkpoints/{step}/projection": "projection", "/api/runs/{run}/table": "table",
         "/api/runs/{run}/examples/{example_id}": "example", "/api/runs/{run}/checkpoints/{step}/heads": "heads",
         "/api/runs/{run}/checkpoints/{step}/heads/thumbnails": "thumbnails",
         "/api/runs/{run}/heads/history": "history", "/api/runs/{run}/checkpoints/{step}/instance": "instance",
         "/api/runs/{run}/checkpoints/{step}/instance/attention": "attention",
         "/api/runs/{run}/checkpoints/{step}/prune": "prune", "/api/runs/{run}/datamap": "datamap",
         "/api/runs/{run}/selection": "selection", "/api/runs/{run}/selections": "selections",
         "/api/runs/{run}/checkpoints/{step}/generate": "generate"}
PER_STEP = {"points", "projection", "table", "heads", "thumbnails", "instance", "attention", "prune", "generate"}
RUN_WIDE = {"runs", "run", "version", "curves", "example", "history", "datamap", "selection", "selections"}
# The routes that answer 200 in every state of a run (the page learns the state from them)
ALWAYS_200 = {"runs", "version"}
# What an undamaged route answers where it is not 200: the tiny run is a classifier, which does not generate
UNDAMAGED = {"generate": 422}


def on(*names: str, steps=STEPS) -> set:
    """Route keys: per-checkpoint routes at the given steps, run-wide routes as they are."""
    return {(n, s) for n in names for s in steps if n in PER_STEP} | {(n, None) for n in names if n in RUN_WIDE}


# The routes that read each file of the run, so answer 409 when it is damaged (all others answer 200)
RUN_FILES = {
    "run.json": on(*PER_STEP, *(RUN_WIDE - ALWAYS_200)),
    "examples.parquet": on("run", "table", "example", "points", "datamap", "heads", "instance", "attention",
                           "prune", "selection", "selections"),
    "dynamics/part-000000.parquet": on("curves", "example", "datamap", "table", "points", "selection",
                                       "selections"),
}
# The run list answers 200 whatever is damaged; runs whose summary cannot be read are listed with an error
LISTED_AS_DAMAGED = {"run.json", "examples.parquet"}
# ... and of each checkpoint, at that checkpoint only
CHECKPOINT_FILES = {
    "meta.json": PER_STEP,
    "outputs.parquet": {"points", "table"},
    "hidden.npy": {"projection"},
    "heads.npz": {"heads", "thumbnails"},
    "gate_grads.npy": {"heads"},
    "weights/config.json": {"instance", "attention", "prune"},
    "weights/model.safetensors": {"instance", "attention", "prune"},
    "weights/tokenizer.json": {"instance", "attention", "prune"},
    "weights/tokenizer_config.json": {"instance", "attention", "prune"},
}


# -- the damage -------------------------------------------------------------------------------

def _missing(path: Path) -> None:
    path.unlink()


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\xffnot what this file should hold\x13" * 64)


def _json_edit(edit):
    def damage(path: Path) -> None:
        value = json.loads(path.read_text())
        edit(value)
        path.write_text(json.dumps(value))
    return damage


def _field_missing(field: str):
    return _json_edit(lambda v: v.pop(field))


def _field_wrong_type(field: str, value):
    return _json_edit(lambda v: v.__setitem__(field, value))


def _column_renamed(column: str):
    def damage(path: Path) -> None:
        table = pq.read_table(path)
        pq.write_table(table.rename_columns([f"{c}_renamed" if c == column else c for c in table.column_names]),
                       path)
    return damage


def _reshaped(path: Path) -> None:
    array = np.load(path)
    np.save(path, array.reshape(array.shape[0], -1)[:, :-1])


BYTES = {"missing": _missing, "truncated": _truncated, "garbage": _garbage}
JSON_FIELDS = {   # a required field, and one given a value of the wrong type
    "run.json": ("label_names", ("num_layers", "two")),
    "meta.json": ("step", ("step", "five")),
    "weights/config.json": ("model_type", ("num_attention_heads", "four")),
    "weights/tokenizer.json": ("model", ("model", 5)),
    "weights/tokenizer_config.json": ("tokenizer_class", ("tokenizer_class", 5)),
}
PARQUET_COLUMNS = {"examples.parquet": "label", "dynamics/part-000000.parquet": "gold_prob",
                   "outputs.parquet": "loss"}
ARRAYS = ("hidden.npy", "gate_grads.npy")


@dataclass(frozen=True)
class Case:
    file: str                   # key of RUN_FILES or CHECKPOINT_FILES
    kind: str
    step: int | None = None     # the checkpoint whose file it is

    @property
    def relative(self) -> str:
        return self.file if self.step is None else f"checkpoints/step-{self.step:08d}/{self.file}"

    def damage(self):
        if self.kind in BYTES:
            return BYTES[self.kind]
        if self.kind == "field missing":
            return _field_missing(JSON_FIELDS[self.file][0])
        if self.kind == "field of the wrong type":
            return _field_wrong_type(*JSON_FIELDS[self.file][1])
        if self.kind == "column renamed":
            return _column_renamed(PARQUET_COLUMNS[self.file])
        return _reshaped

    def expected_409(self) -> set:
        """Routes that must answer 409 (all others 200)."""
        if self.file.startswith("dynamics/") and self.kind == "missing":
            return set()                                # no training dynamics: a valid run without a data map
        if self.file == "weights/tokenizer_config.json" and self.kind in ("missing", "field missing"):
            return set()                                # tokenizer.json alone builds the tokenizer
        if self.step is None:
            return RUN_FILES[self.file]
        return on(*CHECKPOINT_FILES[self.file], steps=(self.step,))


def _cases() -> list[Case]:
    where = {f: [None] for f in RUN_FILES} | {f: [5] for f in CHECKPOINT_FILES}
    cases = [Case(f, k, step) for f, steps in where.items() for step in steps for k in BYTES]
    cases += [Case(f, k, step) for f, steps in where.items() if f in JSON_FIELDS for step in steps
              for k in ("field missing", "field of the wrong type")]
    cases += [Case(f, "column renamed", step) for f, steps in where.items() if f in PARQUET_COLUMNS for step in steps]
    cases += [Case(f, "wrong shape", step) for f, steps in where.items() if f in ARRAYS for step in steps]
    cases += [Case(f, k, 0) for f in CHECKPOINT_FILES for k in BYTES]           # the first checkpoint, too
    return cases


CASES = _cases()


# -- the test ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    return record_tiny_run(tmp_path_factory.mktemp("damaged") / "recorded" / RUN)[0]


def _call(client: TestClient, method: str, template: str, step: int | None, query, body):
    path = template.replace("{run}", RUN).replace("{example_id}", "4")
    if step is not None:
        path = path.replace("{step}", str(step))
    if body is not None:
        body = {k: (step if v == "{step}" else v) for k, v in body.items()}
    r = client.request(method.upper(), path, params=query, json=body)
    deadline = time.monotonic() + 30
    while r.status_code == 202 and time.monotonic() < deadline:      # a projection job: poll until done
        assert r.json()["status"] != "failed", r.json()
        time.sleep(0.02)
        r = client.request(method.upper(), path, params=query, json=body)
    return r


def test_every_schema_route_is_in_the_table(recorded):
    spec = create_app([recorded]).openapi()
    routes = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert routes == set(REQUESTS)
    assert set(NAMES) == {path for _, path in REQUESTS}


def test_the_undamaged_run_answers_200_everywhere(recorded, tmp_path):
    run_dir = shutil.copytree(recorded, tmp_path / RUN)
    with TestClient(create_app([run_dir])) as client:
        for (method, template), (query, body) in REQUESTS.items():
            for step in STEPS if NAMES[template] in PER_STEP else (None,):
                r = _call(client, method, template, step, query, body)
                assert r.status_code == UNDAMAGED.get(NAMES[template], 200), (template, step, r.text)


@pytest.mark.parametrize("case", CASES, ids=[f"{'' if c.step is None else f'step{c.step}/'}{c.file}-{c.kind}"
                                             .replace(" ", "_") for c in CASES])
def test_a_damaged_file_gives_409_naming_it_and_nothing_else_breaks(recorded, tmp_path, case):
    run_dir = shutil.copytree(recorded, tmp_path / RUN)
    target = run_dir / case.relative
    case.damage()(target)
    if case.file == "run.json" and case.kind == "missing":
        with pytest.raises(NotFoundError, match=r"run\.json"):     # not a run at all: `t3vis serve` refuses it
            create_app([run_dir])
        return
    expected_409 = case.expected_409()
    with TestClient(create_app([run_dir]), raise_server_exceptions=False) as client:
        for (method, template), (query, body) in REQUESTS.items():
            name = NAMES[template]
            for step in STEPS if name in PER_STEP else (None,):
                r = _call(client, method, template, step, query, body)
                where = f"{method.upper()} {template} step={step}: {r.status_code} {r.text[:300]}"
                assert r.status_code < 500, where
                if name == "runs":
                    _check_run_list(r, case, target, where)
                elif name == "version":
                    _check_version(r, case, target, where)
                elif (name, step) in expected_409:
                    assert r.status_code == 409, where
                    assert target.name in r.json()["detail"], where
                else:
                    assert r.status_code == UNDAMAGED.get(name, 200), where


def _check_run_list(r, case: Case, target: Path, where: str) -> None:
    assert r.status_code == 200, where
    [entry] = r.json()
    assert entry["name"] == RUN, where
    if case.file in LISTED_AS_DAMAGED and case.step is None:
        assert set(entry) == {"name", "error"} and target.name in entry["error"], where
    else:
        assert "error" not in entry and entry["num_checkpoints"] >= 1, where


def _check_version(r, case: Case, target: Path, where: str) -> None:
    assert r.status_code == 200, where
    body = r.json()
    if case.file == "run.json":
        assert body["state"] == "damaged" and target.name in body["detail"] and body["steps"] == [], where
        return
    assert body["state"] == "ready" and body["detail"] is None, where
    # a checkpoint whose meta.json does not read is no complete checkpoint; other damage leaves the steps
    damaged_step = case.step if case.file == "meta.json" else None
    assert body["steps"] == [s for s in STEPS if s != damaged_step], where


def test_a_run_not_recorded_yet_answers_409_on_every_route_but_its_list_and_version(tmp_path):
    with TestClient(create_app([tmp_path / RUN]), raise_server_exceptions=False) as client:
        for (method, template), (query, body) in REQUESTS.items():
            name = NAMES[template]
            for step in STEPS if name in PER_STEP else (None,):
                r = _call(client, method, template, step, query, body)
                where = f"{method.upper()} {template} step={step}: {r.status_code} {r.text[:300]}"
                if name in ALWAYS_200:
                    assert r.status_code == 200, where
                    continue
                assert r.status_code == 409, where
                assert f"run {RUN!r} has not started recording yet" in r.json()["detail"], where
        assert client.get("/api/runs").json() == [{"name": RUN, "waiting": True,
                                                   "detail": client.get(f"/api/runs/{RUN}/version").json()["detail"]}]


def test_one_damaged_run_leaves_the_list_of_the_others_whole(recorded, tmp_path):
    good = shutil.copytree(recorded, tmp_path / "good" / "tiny")
    bad = shutil.copytree(recorded, tmp_path / "bad" / "broken")
    _field_missing("label_names")(bad / "run.json")
    with TestClient(create_app([good, bad])) as client:
        listed = {e["name"]: e for e in client.get("/api/runs").json()}
        assert listed["tiny"]["num_checkpoints"] == len(STEPS) and "error" not in listed["tiny"]
        assert "run.json" in listed["broken"]["error"] and "label_names" in listed["broken"]["error"]
        assert client.get("/api/runs/tiny").status_code == 200
        assert client.get("/api/runs/broken").status_code == 409
