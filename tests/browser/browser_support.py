"""Constants and page helpers shared by the browser tests and their fixtures."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO_RUN = ROOT / "runs" / "demo"
DEMO_SEQ2SEQ_RUN = ROOT / "runs" / "demo-seq2seq"
TOKEN = "browser-test-token"


def open_app(p, server, query: str = "run=tiny"):
    p.page.goto(f"{server.url}/?{query}")
    p.page.wait_for_selector("#app [data-testid=views]")
    assert_viewer(p)


def assert_viewer(p):
    """The page is the viewer itself, past its loading state: not the "viewer not built" page, not
    the boot or "Loading run" message, but the app's header and its real panels."""
    assert p.page.title() == "t3vis", f"not the viewer's page: {p.page.title()!r}"
    assert p.page.locator("#boot").count() == 0, "the viewer's bundle did not start"
    assert p.page.locator("[data-testid=loading-run]").count() == 0
    assert p.page.locator("#app header.top [data-testid=checkpoint-slider]").count() == 1
    titles = p.page.locator("[data-testid=views] section.panel > header h2").all_text_contents()
    for title in ("Hidden-state projection", "Data map", "Attention heads", "Training curves"):
        assert title in titles, f"no {title!r} panel among {titles}"


def wait_projection(p, run: str, step: int, layer: int | None = None, method: str = "pca"):
    key = f"{run}|{step}|" + (f"{layer}|{method}" if layer is not None else "")
    p.page.wait_for_function(
        "key => (document.querySelector('[data-testid=projection-plot]')?.dataset.drawn || '').startsWith(key)",
        arg=key)


# A canvas's RGBA pixels: a 2-D canvas read directly, a WebGL one (the scatterplots draw into their
# own) copied onto a 2-D canvas first.
PIXELS_FN = """(c) => {
  let ctx = c.getContext('2d');
  if (!ctx) {
    const t = document.createElement('canvas');
    t.width = c.width; t.height = c.height;
    ctx = t.getContext('2d');
    ctx.drawImage(c, 0, 0);
  }
  return ctx.getImageData(0, 0, c.width, c.height).data;
}"""

INK_JS = f"""sel => {{
  const c = document.querySelector(sel + ' canvas');
  const d = ({PIXELS_FN})(c);
  let ink = 0;
  for (let i = 0; i < d.length; i += 4) {{
    if (d[i + 3] > 40 && (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235)) ink++;
  }}
  return ink;
}}"""


INK_POINT_JS = f"""sel => {{
  const c = document.querySelector(sel + ' canvas');
  const r = c.getBoundingClientRect();
  const d = ({PIXELS_FN})(c);
  let best = null, bestInk = 0;
  for (let y = 4; y < c.height - 4; y += 2) for (let x = 4; x < c.width - 4; x += 2) {{
    let ink = 0;
    for (let dy = -2; dy <= 2; dy++) for (let dx = -2; dx <= 2; dx++) {{
      const i = ((y + dy) * c.width + (x + dx)) * 4;
      if (d[i + 3] > 40 && (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235)) ink++;
    }}
    if (ink > bestInk) {{ bestInk = ink; best = [x, y]; }}
  }}
  const s = r.width / c.width;
  return [r.left + best[0] * s, r.top + best[1] * s];
}}"""


def table_total(p) -> int:
    p.page.wait_for_function("document.querySelector('[data-testid=table-count]')?.dataset.total !== ''")
    return int(p.page.get_attribute("[data-testid=table-count]", "data-total"))


def wait_table_total(p, n: int):
    p.page.wait_for_function("n => document.querySelector('[data-testid=table-count]')?.dataset.total === String(n)",
                             arg=n)


def selection_size(p) -> int:
    text = p.page.inner_text("[data-testid=selection-chip]")
    return int(re.search(r"([\d,]+)", text).group(1).replace(",", ""))


def lasso(p, selector: str, frac: float = 0.5):
    """Drag a lasso over the left `frac` of the plot with the mouse."""
    box = p.page.locator(selector).bounding_box()
    x0, y0, x1, y1 = box["x"] + 4, box["y"] + 4, box["x"] + box["width"] * frac, box["y"] + box["height"] - 4
    mouse = p.page.mouse
    mouse.move(x0, y0)
    mouse.down()
    for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 2)):
        mouse.move(x, y, steps=12)
    mouse.up()


def assert_no_console_errors(p):
    errors = [e for e in p.errors if "GPU stall" not in e]
    assert not errors, f"console errors: {errors}"


def lasso_points(p, selector: str, polygon):
    """Drag a lasso along a polygon given in fractions of the plot's box (0..1, y down)."""
    box = p.page.locator(selector).bounding_box()
    pts = [(box["x"] + 3 + fx * (box["width"] - 6), box["y"] + 3 + fy * (box["height"] - 6)) for fx, fy in polygon]
    mouse = p.page.mouse
    mouse.move(*pts[0])
    mouse.down()
    for x, y in [*pts[1:], pts[0]]:
        mouse.move(x, y, steps=12)
    mouse.up()


def click_head(p, layer: int, head: int):
    canvas = p.page.locator("[data-testid=head-canvas]")
    cell = int(canvas.get_attribute("data-cell"))
    canvas.click(position={"x": 26 + head * cell + cell / 2, "y": 16 + layer * cell + cell / 2})


def synthetic_run(path: Path, n: int, hidden_dims: int = 32, seed: int = 0) -> Path:
    """A run of n probed examples with clustered random hidden states and outputs, one checkpoint,
    no model (the benchmarks' generator): at 32 dims a t-SNE of it takes the server a while."""
    sys.path.insert(0, str(ROOT / "bench"))
    from _synthetic import synthetic_run as generate

    return generate(path, n, hidden_dims=hidden_dims, seed=seed)

