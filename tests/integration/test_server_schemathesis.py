"""Property tests of the whole API against its own OpenAPI schema (schemathesis).

Every operation of /openapi.json gets generated requests, valid and invalid; the test fails on
any 5xx, an undocumented status code or content type, or a body or header that does not match
the schema. The schema narrows `run` to the served runs and lists the checkpoint steps as
examples, so the generated requests reach the real handlers, not only the 404 path.

Projections: in the property test `method` is narrowed to "pca" (generated requests for umap and
tsne would queue dozens of layouts, each with its numba warm-up, in the background). Every method,
UMAP and t-SNE included, is then run to completion once against the full schema by
`test_every_projection_method_answers_as_its_schema_says`: its 202 job statuses and its binary
200 answer are checked like any generated case (one checkpoint, unaligned, to stay quick).
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from server_fixtures import record_tiny_run

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


PROJECTION = "/api/runs/{run}/checkpoints/{step}/projection"


def _load_schemas():
    """(the schema with projections narrowed to PCA, the full schema), over one app serving a
    freshly recorded tiny run (at collection: schemathesis needs the schema to generate the
    tests; its lazy pytest-fixture loader does not work with this pytest)."""
    from fastapi.testclient import TestClient

    from t3vis.server import create_app

    run_dir, _, _ = record_tiny_run(Path(_FOLDER.name) / "tiny")
    app = create_app([run_dir], model_cache=2)
    with TestClient(app) as client:
        spec = client.get("/openapi.json").json()
    full = _loaded(copy.deepcopy(spec), app)
    for p in spec["paths"][PROJECTION]["get"]["parameters"]:
        if p["name"] == "method":
            p["schema"] = {"type": "string", "enum": ["pca"]}
    return _loaded(spec, app), full


def _loaded(spec: dict, app):
    loaded = schemathesis.openapi.from_dict(spec)
    loaded.app = app                        # what schemathesis.openapi.from_asgi sets
    loaded.location = "/openapi.json"
    return loaded


_FOLDER = tempfile.TemporaryDirectory(prefix="t3vis-schemathesis-")
schema, full_schema = _load_schemas()


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_matches_its_schema(case):
    case.call_and_validate(checks=CHECKS)


@pytest.mark.parametrize("method", ["pca", "umap", "tsne"])
def test_every_projection_method_answers_as_its_schema_says(method):
    operation = full_schema[PROJECTION]["GET"]
    case = operation.Case(path_parameters={"run": "tiny", "step": 5},
                          query={"layer": 1, "method": method, "aligned": False})
    deadline = time.monotonic() + 300
    response = case.call_and_validate(checks=CHECKS)
    statuses = [response.status_code]
    while response.status_code == 202 and time.monotonic() < deadline:
        assert response.json()["status"] != "failed", response.json()
        time.sleep(0.2)
        response = case.call_and_validate(checks=CHECKS)
        statuses.append(response.status_code)
    assert statuses[0] == 202 and response.status_code == 200, statuses
    assert response.headers["x-t3vis-rows"] == ["24"] and len(response.content) == 24 * 3 * 4
