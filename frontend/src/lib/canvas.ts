// A 2-D canvas sized in CSS pixels and drawn at the screen's pixel density.

/** Sizes the canvas to w x h CSS pixels (backing store scaled by devicePixelRatio) and returns its
 *  cleared context, drawing in CSS pixels. */
export function sizedContext(canvas: HTMLCanvasElement, w: number, h: number): CanvasRenderingContext2D {
  const dpr = window.devicePixelRatio || 1;
  canvas.width = w * dpr;
  canvas.height = h * dpr;
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h}px`;
  const ctx = canvas.getContext('2d')!;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return ctx;
}
