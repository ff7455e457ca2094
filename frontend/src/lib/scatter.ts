// Helpers around regl-scatterplot: one shared WebGL renderer for every scatterplot on the
// page; the frame maths (data -> normalised device coordinates) is in frame.ts.
import { createRenderer } from 'regl-scatterplot';

let shared: ReturnType<typeof createRenderer> | null = null;
let webglError: string | null = null;

/** The page's one WebGL renderer (browsers cap the number of live WebGL contexts). */
export function sharedRenderer(): ReturnType<typeof createRenderer> {
  if (!shared) {
    try {
      shared = createRenderer();
    } catch (err) {
      webglError = (err as Error).message || 'WebGL is not available';
      throw err;
    }
  }
  return shared;
}

export function webglAvailable(): boolean {
  if (webglError) return false;
  try {
    const c = document.createElement('canvas');
    return Boolean(c.getContext('webgl') || c.getContext('experimental-webgl'));
  } catch {
    return false;
  }
}

export { frameOf, frameFits, frameFor, pointStyle, toNdc, type Frame } from './frame';
