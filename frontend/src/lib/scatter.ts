// Helpers around regl-scatterplot: a renderer that draws straight into the plot's own canvas;
// the frame maths (data -> normalised device coordinates) is in frame.ts.
//
// regl-scatterplot's own renderer draws into a hidden WebGL canvas and then copies it into the
// plot's 2-D canvas with drawImage. That copy makes the main thread wait for the GPU to finish
// the frame: with a million points on a software GPU, most of a second per frame, in one task.
// This renderer is the same two passes (points into a float framebuffer, then gamma onto the
// canvas; after regl-scatterplot's renderer.js, MIT) with the plot's canvas as the WebGL canvas,
// so no task of the page copies a frame. A GPU compositor then takes the frame when it is ready;
// a software one (no GPU) still reads each WebGL frame back when it commits, waiting for it:
// there a big plot's points are drawn by raster.ts instead (see `divert`).
import { checkSupport, createRegl } from 'regl-scatterplot';
import type { Regl } from 'regl';

/** What regl-scatterplot asks of an external renderer (its createRenderer's interface). */
export interface CanvasRenderer {
  readonly canvas: HTMLCanvasElement;
  readonly regl: Regl;
  gamma: number;
  readonly isSupported: boolean;
  readonly isDestroyed: boolean;
  /** WebGL runs on the CPU here (no GPU): a big plot is better drawn by raster.ts */
  readonly software: boolean;
  /** While set, each frame the plot asks for calls this instead of drawing (the canvas is left
   *  clear): the plot's points are drawn elsewhere. */
  divert: (() => void) | null;
  render(draw: () => void, target?: HTMLCanvasElement): void;
  resize(width?: number, height?: number): void;
  onFrame(draw: () => void): () => void;
  refresh(): void;
  destroy(): void;
}

const CLEAR = { color: [0, 0, 0, 0] as [number, number, number, number], depth: 1 };

/** A renderer drawing into `canvas` itself (a WebGL context of its own: one per plot). */
export function canvasRenderer(canvas: HTMLCanvasElement, gamma = 1): CanvasRenderer {
  const regl = createRegl(canvas) as Regl;
  const isSupported = checkSupport(regl, true);
  const software = softwareGl(regl._gl);
  let cleared = false;
  const size: [number, number] = [Math.max(canvas.width, 1), Math.max(canvas.height, 1)];
  const fbo = regl.framebuffer({ width: size[0], height: size[1], colorFormat: 'rgba', colorType: 'float' });
  let destroyed = false;

  // Blending happens in the float framebuffer (linear), then one pass maps it onto the canvas.
  const toCanvas = regl({
    vert: `precision highp float;
      attribute vec2 xy;
      void main () { gl_Position = vec4(xy, 0, 1); }`,
    frag: `precision highp float;
      uniform vec2 srcRes;
      uniform sampler2D src;
      uniform float gamma;
      void main () {
        vec4 color = texture2D(src, gl_FragCoord.xy / srcRes);
        gl_FragColor = vec4(pow(clamp(color.rgb, vec3(0), vec3(1)), vec3(1.0 / gamma)), color.a);
      }`,
    attributes: { xy: [-4, -4, 4, -4, 0, 4] },
    uniforms: { src: () => fbo, srcRes: () => size, gamma: () => renderer.gamma },
    count: 3,
    depth: { enable: false },
    blend: {
      enable: true,
      func: { srcRGB: 'one', srcAlpha: 'one', dstRGB: 'one minus src alpha', dstAlpha: 'one minus src alpha' },
    },
  });

  // The plot sets its canvas's size itself (width, height, devicePixelRatio): follow it.
  const fitCanvas = () => {
    const w = Math.max(canvas.width, 1), h = Math.max(canvas.height, 1);
    if (w === size[0] && h === size[1]) return;
    size[0] = w;
    size[1] = h;
    fbo.resize(w, h);
    regl.poll();
  };

  const draws = new Set<() => void>();
  const frame = regl.frame(() => {
    for (const draw of draws) draw();
  });

  const renderer: CanvasRenderer = {
    canvas,
    regl,
    gamma,
    isSupported,
    get isDestroyed() {
      return destroyed;
    },
    software,
    divert: null,
    render(draw) {
      if (renderer.divert) {
        if (!cleared) regl.clear(CLEAR);
        cleared = true;
        renderer.divert();
        return;
      }
      cleared = false;
      fitCanvas();
      regl.clear(CLEAR);
      fbo.use(() => {
        regl.clear(CLEAR);
        draw();
      });
      toCanvas();
    },
    // The canvas is the plot's: its size is the plot's to set (an export scales the plot itself).
    resize() {
      fitCanvas();
    },
    onFrame(draw) {
      draws.add(draw);
      return () => draws.delete(draw);
    },
    refresh() {
      regl.poll();
    },
    destroy() {
      if (destroyed) return;
      destroyed = true;
      frame.cancel();
      draws.clear();
      regl.destroy();
    },
  };
  return renderer;
}

/** Points as regl-scatterplot keeps them ([x, y, z, w] per point), built a slice per task: given
 *  its columns, the plot builds this array itself, a million points in one long task. */
export async function pointRowsInSlices(x: Float32Array, y: Float32Array, z: Float32Array, w: Float32Array | null,
  slice = 100_000): Promise<number[][]> {
  const rows: number[][] = new Array(x.length);
  for (let lo = 0; lo < x.length; lo += slice) {
    if (lo) await new Promise((next) => setTimeout(next));
    const hi = Math.min(x.length, lo + slice);
    for (let i = lo; i < hi; i++) rows[i] = w ? [x[i], y[i], z[i], w[i]] : [x[i], y[i], z[i]];
  }
  return rows;
}

/** Whether this WebGL context renders on the CPU (SwiftShader, llvmpipe, Microsoft's Basic Render
 *  Driver): what it names as its renderer, unmasked where the browser tells. */
export function softwareGl(gl: WebGLRenderingContext): boolean {
  const info = gl.getExtension('WEBGL_debug_renderer_info');
  const name = String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER) ?? '');
  return /swiftshader|llvmpipe|softpipe|software|basic render/i.test(name);
}

export { frameOf, frameFits, frameFor, pointStyle, toNdc, type Frame } from './frame';
