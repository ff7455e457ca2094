"""Property tests of the whole API against its own OpenAPI schema (schemathesis).

Every operation of /openapi.json gets generated requests, valid and invalid; the test fails on
any 5xx, an undocumented status code or content type, or a body or header that does not match
the schema. The schema narrows `run` to the served runs and lists the checkpoint steps as
examples, so the generated requests reach the real handlers, not only the 404 path.

Projections: `method` is narrowed to "pca" in the schema under test (the umap/tsne layouts would run numba compilation and
minutes of optimisation in the background of a property test; their job path is the same code).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from server_fixtures import record_tiny_run

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


def _load_schema():
    """The app over a freshly recorded tiny run (at collection: schemathesis needs the schema to
    generate the tests; its lazy pytest-fixture loader does not work with this pytest)."""
    from t3vis.server import create_app

    from fastapi.testclient import TestClient

    run_dir, _, _ = record_tiny_run(Path(_FOLDER.name) / "tiny")
    app = create_app([run_dir], model_cache=2)
    with TestClient(app) as client:
        spec = client.get("/openapi.json").json()
    for p in spec["paths"]["/api/runs/{run}/checkpoints/{step}/projection"]["get"]["parameters"]:
        if p["name"] == "method":
            p["schema"] = {"type": "string", "enum": ["pca"]}
    loaded = schemathesis.openapi.from_dict(spec)
    loaded.app = app                        # what schemathesis.openapi.from_asgi sets
    loaded.location = "/openapi.json"
    return loaded


_FOLDER = tempfile.TemporaryDirectory(prefix="t3vis-schemathesis-")
schema = _load_schema()


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_matches_its_schema(case):
    case.call_and_validate(checks=CHECKS)
