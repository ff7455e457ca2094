// The decoding worker: Arrow tables of a million rows are parsed here, off the page's main thread,
// and their typed arrays handed back (transferred, not copied). Big plots on a software GPU have
// their points drawn here too (raster.ts).
import { ApiError } from './errors';
import { decodeTable, spatialIndex, transferables, type DecodeAnswer, type DecodeRequest } from './decode';
import { rasterise, type RasterPoints } from './raster';

/** Each plot's points, kept between its frames (a frame of a pan or zoom sends none). */
const plots = new Map<number, RasterPoints>();

self.onmessage = (e: MessageEvent<DecodeRequest>) => {
  const { id } = e.data;
  let answer: DecodeAnswer;
  try {
    if (e.data.kind === 'raster-drop') {
      plots.delete(e.data.plot);
      return;
    }
    if (e.data.kind === 'raster') {
      if (e.data.points) plots.set(e.data.plot, e.data.points);
      const points = plots.get(e.data.plot);
      if (!points) throw new Error(`no points for plot ${e.data.plot}`);
      const pixels = rasterise(points, e.data.frame).buffer as ArrayBuffer;
      (self as unknown as Worker).postMessage({ id, pixels } satisfies DecodeAnswer, [pixels]);
      return;
    }
    if (e.data.kind === 'kdbush') {
      const index = spatialIndex(e.data.x, e.data.y);
      (self as unknown as Worker).postMessage({ id, index } satisfies DecodeAnswer, [index]);
      return;
    }
    const decoded = decodeTable(e.data.kind, e.data.body);
    (self as unknown as Worker).postMessage({ id, decoded } satisfies DecodeAnswer, transferables(decoded));
    return;
  } catch (err) {
    answer = { id, error: (err as Error).message, status: err instanceof ApiError ? err.status : 0 };
  }
  (self as unknown as Worker).postMessage(answer);
};
