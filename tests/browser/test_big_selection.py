"""A selection bigger than the API's 100,000-id lists reaches the table whole: on a synthetic run of
150,000 probes (bench/_synthetic.py) whose projection puts 120,000 points left of a wide gap, a
lasso over the left half of the plot selects exactly those, and the selection chip, the table's
scope and the table's total all say so: the page posts the selection once as binary ids
(POST /selections) and names it by handle, with no "first 100,000" cap.

The browser's WebGL is software (SwiftShader), so a plot this big has its points drawn on a
worker into an image (lib/raster.ts): the image shows the gap where the data has it, and the
lasso's points in their colours over the others greyed out."""

from __future__ import annotations

import struct
import sys
import urllib.request

import numpy as np
import pytest

from t3vis.server.launch import BackgroundServer

from .browser_support import (
    PIXELS_FN,
    ROOT,
    assert_no_console_errors,
    lasso,
    selection_size,
    table_total,
    wait_projection,
)

N, LEFT = 150_000, 120_000
STEP, LAYER, METHOD = 100, 1, "pca"      # bench/_synthetic.py: one checkpoint at step 100, layers 0..1


def two_clusters(n: int, left: int, seed: int = 3):
    """(n, 2) float32: `left` points with x in [-10, -2], the rest with x in [2, 10]; y in [-10, 10]."""
    rng = np.random.default_rng(seed)
    side = np.zeros(n, dtype=bool)
    side[rng.choice(n, size=left, replace=False)] = True
    x = np.where(side, rng.uniform(-10, -2, n), rng.uniform(2, 10, n))
    y = rng.uniform(-10, 10, n)
    return np.stack([x, y], axis=1).astype(np.float32), rng.random(n).astype(np.float32)


@pytest.fixture(scope="module")
def big(tmp_path_factory, built_frontend):
    sys.path.insert(0, str(ROOT / "bench"))
    from _synthetic import seed_projection, synthetic_run

    from t3vis.server import create_app

    path = synthetic_run(tmp_path_factory.mktemp("big") / "big", N)
    layout, preservation = two_clusters(N, LEFT)
    seed_projection(path, STEP, LAYER, METHOD, layout, preservation)
    live = BackgroundServer(create_app([path], static_dir=built_frontend.parent))
    yield live
    live.stop()


def ids_left_of_the_gap(server) -> int:
    """The probes whose x is negative in the projection the page draws (its quantised answer, read
    here as the API describes it), counted in Python."""
    url = (f"{server.url}/api/runs/big/checkpoints/{STEP}/projection"
           f"?layer={LAYER}&method={METHOD}&aligned=true&encoding=u16")
    with urllib.request.urlopen(url) as r:
        body, rows = r.read(), int(r.headers["X-T3vis-Rows"])
    assert rows == N and len(body) == 16 + 5 * N, f"a quantised projection of {N} rows is 16 + 5N bytes: {len(body)}"
    x_min, x_max, _, _ = struct.unpack("<4f", body[:16])
    qx = np.frombuffer(body, dtype="<u2", count=N, offset=16)
    x = x_min + qx.astype(np.float64) * (x_max - x_min) / 65535
    return int((x < 0).sum())


UNSELECTED = (0xdd, 0xe0, 0xe7)           # lib/colors.ts: the colour of points outside a big selection

# Per pixel column of a scatter's canvas (`sel`): how many pixels have ink, and how many of those
# are the unselected grey.
COLUMNS_JS = f"""([sel, grey]) => {{
  const c = document.querySelector(sel);
  const d = ({PIXELS_FN})(c);
  const ink = new Array(c.width).fill(0), faint = new Array(c.width).fill(0);
  for (let y = 0; y < c.height; y++) for (let x = 0; x < c.width; x++) {{
    const i = (y * c.width + x) * 4;
    if (d[i + 3] < 128) continue;
    ink[x]++;
    const near = (k) => Math.abs(d[i + k] - grey[k]) < 6;
    if (near(0) && near(1) && near(2)) faint[x]++;
  }}
  return [ink, faint];
}}"""
RASTER = "[data-testid=projection-scatter] canvas.raster"
WEBGL = "[data-testid=projection-scatter] canvas:first-child"


def inked_extent(ink: list[int]) -> tuple[int, int]:
    cols = [i for i, v in enumerate(ink) if v]
    return cols[0], cols[-1]


def test_a_big_plot_on_a_software_gpu_is_drawn_by_a_worker_where_its_points_are(page, big):
    page.page.goto(f"{big.url}/?run=big&step={STEP}&layer={LAYER}&method={METHOD}")
    wait_projection(page, "big", STEP, LAYER, METHOD)
    page.page.wait_for_function(f"() => document.querySelector('{RASTER}')?.dataset.shown === 'points'")
    page.page.wait_for_function(f"() => ({COLUMNS_JS})(['{RASTER}', [0, 0, 0]])[0].some(v => v > 0)")
    ink, _ = page.page.evaluate(COLUMNS_JS, [RASTER, list(UNSELECTED)])
    first, last = inked_extent(ink)
    # the data's x runs over [-10, -2] and [2, 10]: an empty band of 4/20 of the drawn width in the middle
    empty = [i for i in range(first, last + 1) if ink[i] == 0]
    width = last - first
    assert empty, "no gap between the two clusters in the drawn image"
    gap_lo, gap_hi = empty[0], empty[-1]
    assert len(empty) == gap_hi - gap_lo + 1, "the empty columns are not one band"
    assert 0.15 < (gap_hi - gap_lo + 1) / width < 0.25, (gap_lo, gap_hi, first, last)
    assert abs((gap_lo + gap_hi) / 2 - (first + last) / 2) < 0.03 * width
    # nothing is drawn twice: the WebGL canvas underneath stays clear
    webgl_ink, _ = page.page.evaluate(COLUMNS_JS, [WEBGL, list(UNSELECTED)])
    assert sum(webgl_ink) == 0
    # the plot draws no hover of its own: a hovered row is ringed over its drawn point
    page.page.hover("[data-testid=table-body] tr:nth-child(3)")
    ring = page.page.locator("[data-testid=projection-scatter] .ring")
    ring.wait_for()
    inked_under_ring = page.page.evaluate(f"""() => {{
      const c = document.querySelector('{RASTER}');
      const r = document.querySelector('[data-testid=projection-scatter] .ring');
      const box = c.getBoundingClientRect(), at = r.getBoundingClientRect(), k = c.width / box.width;
      const x = Math.round((at.left + at.width / 2 - box.left) * k);
      const y = Math.round((at.top + at.height / 2 - box.top) * k);
      const d = ({PIXELS_FN})(c);
      let ink = 0;
      for (let dy = -2; dy <= 2; dy++) for (let dx = -2; dx <= 2; dx++) {{
        if (d[((y + dy) * c.width + x + dx) * 4 + 3] > 0) ink++;
      }}
      return ink;
    }}""")
    assert inked_under_ring > 0

    lasso(page, "[data-testid=projection-scatter]", 0.5)
    page.page.wait_for_selector("[data-testid=selection-chip]", timeout=120_000)
    # the selection's colours: the right cluster greyed out, the left one in its label colours
    page.page.wait_for_function(
        f"() => {{ const [ink, faint] = ({COLUMNS_JS})(['{RASTER}', {list(UNSELECTED)}]);"
        f" return faint[{last - 2}] > 0 && faint[{last - 2}] === ink[{last - 2}]; }}", timeout=60_000)
    ink, faint = page.page.evaluate(COLUMNS_JS, [RASTER, list(UNSELECTED)])
    left = range(first, gap_lo)
    right = range(gap_hi + 1, last + 1)
    assert sum(faint[i] for i in left) < 0.01 * sum(ink[i] for i in left)
    assert sum(faint[i] for i in right) > 0.95 * sum(ink[i] for i in right)
    assert_no_console_errors(page)


def test_a_lasso_of_more_than_100000_points_reaches_the_table_whole(page, big):
    expected = ids_left_of_the_gap(big)
    assert expected == LEFT > 100_000
    posted = []
    page.page.on("request", lambda r: posted.append(r) if r.method == "POST" and "/selections" in r.url else None)
    page.page.goto(f"{big.url}/?run=big&step={STEP}&layer={LAYER}&method={METHOD}")
    wait_projection(page, "big", STEP, LAYER, METHOD)
    page.page.wait_for_function("n => document.querySelector('[data-testid=table-count]')?.dataset.total === String(n)",
                                arg=N, timeout=120_000)
    lasso(page, "[data-testid=projection-scatter]", 0.5)
    page.page.wait_for_selector("[data-testid=selection-chip]", timeout=120_000)
    assert selection_size(page) == expected
    page.page.wait_for_function("n => document.querySelector('[data-testid=table-count]')?.dataset.total === String(n)",
                                arg=expected, timeout=120_000)
    assert table_total(page) == expected
    scope = page.page.inner_text("[data-testid=table-scope]")
    assert f"selection of {expected:,}" in scope, scope
    assert "first" not in scope, f"the table still caps the selection: {scope!r}"
    assert posted, "the selection did not travel as a handle (no POST .../selections)"
    assert posted[0].headers.get("content-type") == "application/octet-stream"
    assert len(posted[0].post_data_buffer) == 8 * expected, "the posted body is not the selected ids as int64"
    page.page.screenshot(path=str(ROOT / "test-artifacts" / "big-selection-lasso.png"))
    assert_no_console_errors(page)
