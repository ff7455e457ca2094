// The lasso's maths, over typed arrays: which points a polygon drawn on screen holds. The plot
// maps data to screen by a scale and an offset per axis (no rotation), so a point is tested at
// (ax * x + bx, ay * y + by) against the polygon in screen pixels.

/** Screen position = (ax * x + bx, ay * y + by). */
export interface ScreenMap {
  ax: number; bx: number;
  ay: number; by: number;
}

/** The rows whose points lie inside `polygon` (flat [x0, y0, x1, y1, ...] in screen pixels, closed
 *  implicitly); `shown`: only these rows (1 kept), null: all. Ascending. */
export function pointsInPolygon(x: Float32Array, y: Float32Array, m: ScreenMap, polygon: ArrayLike<number>,
  shown: Uint8Array | null = null): Int32Array {
  const k = polygon.length >> 1;
  if (k < 3) return new Int32Array(0);
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (let i = 0; i < k; i++) {
    const px = polygon[2 * i], py = polygon[2 * i + 1];
    if (px < x0) x0 = px;
    if (px > x1) x1 = px;
    if (py < y0) y0 = py;
    if (py > y1) y1 = py;
  }
  const out = new Int32Array(x.length);
  let c = 0;
  for (let r = 0; r < x.length; r++) {
    if (shown && !shown[r]) continue;
    const sx = m.ax * x[r] + m.bx, sy = m.ay * y[r] + m.by;
    if (sx < x0 || sx > x1 || sy < y0 || sy > y1) continue;
    // even-odd rule: count the polygon's edges a ray to the right crosses
    let inside = false;
    for (let i = 0, j = k - 1; i < k; j = i++) {
      const xi = polygon[2 * i], yi = polygon[2 * i + 1], xj = polygon[2 * j], yj = polygon[2 * j + 1];
      if ((yi > sy) !== (yj > sy) && sx < ((xj - xi) * (sy - yi)) / (yj - yi) + xi) inside = !inside;
    }
    if (inside) out[c++] = r;
  }
  return out.slice(0, c);
}

/** The rows of the smallest and largest x, then of the smallest and largest y (screenMapOf's
 *  anchors: worth keeping while the positions stay, a scan of every point each). */
export function extremeRows(x: Float32Array, y: Float32Array): [number, number, number, number] {
  let ix0 = 0, ix1 = 0, iy0 = 0, iy1 = 0;
  for (let i = 1; i < x.length; i++) {
    if (x[i] < x[ix0]) ix0 = i;
    if (x[i] > x[ix1]) ix1 = i;
    if (y[i] < y[iy0]) iy0 = i;
    if (y[i] > y[iy1]) iy1 = i;
  }
  return [ix0, ix1, iy0, iy1];
}

/** The screen map from the plot's own positions of the points with the extreme x and y (one
 *  per axis fixes its scale and offset; `rows`: extremeRows, if already known); null when there
 *  are no points. */
export function screenMapOf(x: Float32Array, y: Float32Array,
  screenOf: (row: number) => [number, number] | null,
  rows: [number, number, number, number] = extremeRows(x, y)): ScreenMap | null {
  if (!x.length) return null;
  const [ix0, ix1, iy0, iy1] = rows;
  const a = screenOf(ix0), b = screenOf(ix1), c = screenOf(iy0), d = screenOf(iy1);
  if (!a || !b || !c || !d) return null;
  const ax = x[ix1] > x[ix0] ? (b[0] - a[0]) / (x[ix1] - x[ix0]) : 0;
  const ay = y[iy1] > y[iy0] ? (d[1] - c[1]) / (y[iy1] - y[iy0]) : 0;
  return { ax, bx: a[0] - ax * x[ix0], ay, by: c[1] - ay * y[iy0] };
}
