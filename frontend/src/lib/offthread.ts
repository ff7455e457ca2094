// Decoding on a Web Worker where the page has one (main.ts and widget.ts each say how to make it:
// a file next to the bundle, or one inlined into the widget's single module), else on the main
// thread. Either way the decoded ids' row index is remembered (examples.ts indexOf).
import { ApiError } from './errors';
import { decodeTable, type DecodeAnswer, type DecodeKind, type DecodeRequest, type Decoded } from './decode';
import { rasterise, type RasterFrame, type RasterPoints } from './raster';
import { rememberIndex, RowIndex } from './rows';
import type { DataMap, Points } from './types';

let makeWorker: (() => Worker) | null = null;
/** Three workers: tables decode on one while a plot's spatial index builds on another, and big
 *  plots on a software GPU are drawn on the third. */
type Lane = 'tables' | 'index' | 'raster';
const workers = new Map<Lane, Worker>();
let seq = 0;
type Answer = Decoded | ArrayBuffer;
const waiting = new Map<number, { resolve: (d: Answer) => void; reject: (e: unknown) => void }>();

/** How this bundle makes its decoding worker (null: decode on the main thread). */
export function useDecodeWorker(make: (() => Worker) | null): void {
  makeWorker = make;
}

function theWorker(lane: Lane): Worker | null {
  const running = workers.get(lane);
  if (running || !makeWorker) return running ?? null;
  let worker: Worker;
  try {
    worker = makeWorker();
  } catch (err) {
    console.warn('no decoding worker; decoding on the main thread', err);
    makeWorker = null;
    return null;
  }
  workers.set(lane, worker);
  worker.onmessage = (e: MessageEvent<DecodeAnswer>) => {
    const w = waiting.get(e.data.id);
    if (!w) return;
    waiting.delete(e.data.id);
    if ('decoded' in e.data) w.resolve(e.data.decoded);
    else if ('index' in e.data) w.resolve(e.data.index);
    else if ('pixels' in e.data) w.resolve(e.data.pixels);
    else w.reject(new ApiError(e.data.status, e.data.error));
  };
  worker.onerror = (e) => {
    // a worker that cannot start (a blocked script, a strict CSP): what waits on it fails with
    // the reason, and later bodies are decoded on the main thread
    console.warn('the decoding worker failed; decoding on the main thread', e.message);
    e.preventDefault();
    for (const w of workers.values()) w.terminate();
    workers.clear();
    rasterSent.clear();
    makeWorker = null;
    for (const w of waiting.values()) w.reject(new ApiError(0, `the decoding worker failed: ${e.message || 'no reason given'}`));
    waiting.clear();
  };
  return worker;
}

function ask(w: Worker, message: DecodeRequest, transfer: ArrayBuffer[]): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    waiting.set(message.id, { resolve, reject });
    w.postMessage(message, transfer);
  });
}

function decoded(kind: DecodeKind, body: ArrayBuffer): Promise<Decoded> {
  const w = theWorker('tables');
  if (!w) return Promise.resolve().then(() => decodeTable(kind, body));
  return ask(w, { id: ++seq, kind, body }, [body]) as Promise<Decoded>;
}

/** A scatterplot's spatial index of these positions, built on the worker; null without one
 *  (the plot builds its own). The positions are copied, not taken. */
export function spatialIndexOffThread(x: Float32Array, y: Float32Array): Promise<ArrayBuffer | null> {
  let index = indexes.get(x);
  if (!index) {
    const w = theWorker('index');
    if (!w) return Promise.resolve(null);
    const cx = x.slice(), cy = y.slice();
    index = (ask(w, { id: ++seq, kind: 'kdbush', x: cx, y: cy }, [cx.buffer, cy.buffer]) as Promise<ArrayBuffer>)
      .catch(() => null);
    indexes.set(x, index);
  }
  return index;     // (KDBush reads its bytes only: plots may share them)
}

let rasterPlots = 0;
/** The points each plot last sent the raster worker (it keeps them between frames). */
const rasterSent = new Map<number, RasterPoints>();

/** A number for a plot drawn by rasterOffThread (its points are kept under it). */
export function newRasterPlot(): number {
  return ++rasterPlots;
}

/** A frame of a plot's points as RGBA pixels (raster.ts), drawn on the worker where there is one.
 *  The points cross to the worker (copied) only when they are not the ones it has. */
export function rasterOffThread(plot: number, points: RasterPoints, frame: RasterFrame): Promise<Uint8ClampedArray> {
  const w = theWorker('raster');
  if (!w) return Promise.resolve().then(() => rasterise(points, frame));
  const send = rasterSent.get(plot) === points ? null : points;
  rasterSent.set(plot, points);
  return (ask(w, { id: ++seq, kind: 'raster', plot, points: send, frame }, []) as Promise<ArrayBuffer>)
    .then((pixels) => new Uint8ClampedArray(pixels));
}

/** Forget a plot's points (the plot is gone). */
export function dropRasterPlot(plot: number): void {
  if (!rasterSent.delete(plot)) return;
  workers.get('raster')?.postMessage({ id: ++seq, kind: 'raster-drop', plot } satisfies DecodeRequest);
}

/** Spatial indexes asked for, by the x positions they index (asked once, as soon as positions arrive). */
const indexes = new WeakMap<Float32Array, Promise<ArrayBuffer | null>>();

async function table(kind: DecodeKind, body: ArrayBuffer): Promise<Points | DataMap> {
  const d = await decoded(kind, body);
  rememberIndex(d.value.id, new RowIndex(d.sortedIds, d.rowOfSorted));
  return d.value;
}

export const decodePointsBody = (body: ArrayBuffer) => table('points', body) as Promise<Points>;
export const decodeDataMapBody = (body: ArrayBuffer) => table('datamap', body) as Promise<DataMap>;
