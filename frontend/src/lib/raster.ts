// Points drawn on the CPU into an RGBA image, for a big plot where WebGL is software (no GPU:
// SwiftShader, llvmpipe). There one frame of a million points costs the GPU process about a
// second, and the page's main thread waits for it (a software compositor reads every WebGL frame
// back). Here a worker draws the same points in tens of milliseconds and the page only puts the
// image on a 2-D canvas. Colours, sizes and opacity follow regl-scatterplot's encoding, so a plot
// looks the same whichever way it is drawn.
import type { ScreenMap } from './lasso';

/** What the points are: positions in the plot's data space and their encodings. */
export interface RasterPoints {
  x: Float32Array;
  y: Float32Array;
  /** colour: a palette index (categorical) or a value in [0, 1] (continuous) */
  values: Float32Array;
  /** size: a value in [0, 1] picking one of `sizes` (null: every point `pointSize`) */
  sizeValues: Float32Array | null;
  /** drawing order, first to last (null: row order) */
  order: Int32Array | null;
  /** 1 for rows shown (null: every row) */
  shown: Uint8Array | null;
}

/** How to draw them this frame. */
export interface RasterFrame {
  /** canvas size in device pixels */
  width: number;
  height: number;
  /** device pixels per CSS pixel: the screen map and the point sizes are in CSS pixels */
  scale: number;
  map: ScreenMap;
  /** RGBA, 0-255, four per colour */
  palette: Uint8Array | number[];
  continuous: boolean;
  /** diameter in CSS pixels, or one per size bin when the points are sized by `sizeValues` */
  pointSize: number | number[];
  opacity: number;
  /** draw every `stride`-th point in drawing order (a frame while the camera moves); default 1 */
  stride?: number;
}

/** The points as an RGBA image (width x height, not premultiplied), drawn in order over a
 *  transparent background: each point a disc with an antialiased edge, blended "over" (as the
 *  WebGL plot blends them). A point with a NaN colour or position is not drawn. */
export function rasterise(points: RasterPoints, frame: RasterFrame): Uint8ClampedArray {
  const { width: w, height: h, scale, map, palette, continuous, opacity } = frame;
  const { x, y, values, sizeValues, order, shown } = points;
  // premultiplied colour and alpha per pixel: "over" is then a multiply-add
  const acc = new Float32Array(w * h * 4);
  const colours = palette.length >> 2;
  // regl-scatterplot: index = floor(value * multiplier), the multiplier being the colours
  // less one for continuous values and 1 for categories
  const multiplier = continuous ? colours - 1 : 1;
  const sizes = Array.isArray(frame.pointSize) ? frame.pointSize : [frame.pointSize];
  const sizeMultiplier = sizes.length - 1;
  // each colour's alpha and premultiplied channels, looked up per point
  const alphas = new Float32Array(colours), premul = new Float32Array(colours * 3);
  for (let c = 0; c < colours; c++) {
    const a = (palette[4 * c + 3] / 255) * opacity;
    alphas[c] = a;
    for (let k = 0; k < 3; k++) premul[3 * c + k] = (palette[4 * c + k] / 255) * a;
  }
  const n = x.length, stride = Math.max(1, Math.floor(frame.stride ?? 1));
  for (let k = 0; k < n; k += stride) {
    const r = order ? order[k] : k;
    if (shown && !shown[r]) continue;
    const v = values[r];
    if (Number.isNaN(v)) continue;
    const c = Math.min(colours - 1, Math.max(0, Math.floor(v * multiplier)));
    const a = alphas[c];
    if (a <= 0) continue;
    const cr = premul[3 * c], cg = premul[3 * c + 1], cb = premul[3 * c + 2];
    const sz = sizeValues && sizeMultiplier > 0
      ? sizes[Math.min(sizeMultiplier, Math.max(0, Math.floor(sizeValues[r] * sizeMultiplier)))]
      : sizes[0];
    const radius = (sz * scale) / 2;
    const cx = (map.ax * x[r] + map.bx) * scale, cy = (map.ay * y[r] + map.by) * scale;
    if (!(cx > -radius - 1 && cx < w + radius + 1 && cy > -radius - 1 && cy < h + radius + 1)) continue;
    // pixels whose centres lie within radius + 0.5 of the point's centre, covered by how far
    // inside: fully within radius - 0.5, partly out to radius + 0.5
    const full2 = radius > 0.5 ? (radius - 0.5) * (radius - 0.5) : -1, edge2 = (radius + 0.5) * (radius + 0.5);
    const px0 = Math.max(0, Math.floor(cx - radius)), px1 = Math.min(w - 1, Math.floor(cx + radius));
    const py0 = Math.max(0, Math.floor(cy - radius)), py1 = Math.min(h - 1, Math.floor(cy + radius));
    for (let py = py0; py <= py1; py++) {
      const dy = py + 0.5 - cy;
      for (let px = px0; px <= px1; px++) {
        const dx = px + 0.5 - cx, d2 = dx * dx + dy * dy;
        if (d2 >= edge2) continue;
        const cover = d2 <= full2 ? 1 : Math.min(1, radius + 0.5 - Math.sqrt(d2));
        const i = (py * w + px) * 4, keep = 1 - a * cover;
        acc[i] = cr * cover + acc[i] * keep;
        acc[i + 1] = cg * cover + acc[i + 1] * keep;
        acc[i + 2] = cb * cover + acc[i + 2] * keep;
        acc[i + 3] = a * cover + acc[i + 3] * keep;
      }
    }
  }
  const out = new Uint8ClampedArray(w * h * 4);       // (which rounds to the nearest byte)
  for (let i = 0; i < out.length; i += 4) {
    const alpha = acc[i + 3];
    if (alpha <= 0) continue;
    out[i] = (acc[i] / alpha) * 255;
    out[i + 1] = (acc[i + 1] / alpha) * 255;
    out[i + 2] = (acc[i + 2] / alpha) * 255;
    out[i + 3] = alpha * 255;
  }
  return out;
}

/** A colour '#rrggbb' or '#rrggbbaa' as four bytes. */
export function rgbaBytes(hex: string): [number, number, number, number] {
  const h = hex.replace('#', '');
  const byte = (i: number) => parseInt(h.slice(i, i + 2), 16);
  return [byte(0), byte(2), byte(4), h.length >= 8 ? byte(6) : 255];
}
