import { describe, expect, it } from 'vitest';
import { rasterise, rgbaBytes, type RasterFrame, type RasterPoints } from '../../src/lib/raster';

const RED = [255, 0, 0, 255], BLUE = [0, 0, 255, 255], HALF_RED = [255, 0, 0, 128];

function points(x: number[], y: number[], values: number[], more: Partial<RasterPoints> = {}): RasterPoints {
  return { x: Float32Array.from(x), y: Float32Array.from(y), values: Float32Array.from(values),
    sizeValues: null, order: null, shown: null, ...more };
}

function frame(more: Partial<RasterFrame> = {}): RasterFrame {
  // screen = data + 0.5 (CSS pixels): a point at (i, j) sits on pixel (i, j)'s centre; one device
  // pixel per CSS pixel, 12 x 12
  return { width: 12, height: 12, scale: 1, map: { ax: 1, bx: 0.5, ay: 1, by: 0.5 },
    palette: [...RED, ...BLUE], continuous: false, pointSize: 1, opacity: 1, ...more };
}

const pixel = (img: Uint8ClampedArray, w: number, px: number, py: number) => Array.from(img.slice((py * w + px) * 4, (py * w + px) * 4 + 4));
const inked = (img: Uint8ClampedArray) => {
  let n = 0;
  for (let i = 3; i < img.length; i += 4) if (img[i] > 0) n++;
  return n;
};

describe('rasterise', () => {
  it('draws a one-pixel point on the pixel under its screen position, in its category colour', () => {
    const img = rasterise(points([5], [3], [1]), frame());
    expect(pixel(img, 12, 5, 3)).toEqual(BLUE);
    expect(inked(img)).toBe(1);
  });

  it('blends later points over earlier ones, in the order given', () => {
    const two = (order: Int32Array | null) => rasterise(
      points([5, 5], [5, 5], [0, 1], { order }),
      frame({ palette: [...HALF_RED, ...BLUE] }));
    // red at alpha 128/255 over opaque blue: 255 * 0.502 red, 255 * 0.498 blue, opaque
    expect(pixel(two(Int32Array.from([1, 0])), 12, 5, 5)).toEqual([128, 0, 127, 255]);
    // blue drawn last covers the red
    expect(pixel(two(null), 12, 5, 5)).toEqual(BLUE);
  });

  it('leaves out hidden rows and rows without a colour or a position', () => {
    const pts = points([1, 3, 5, Number.NaN], [1, 3, 5, 7], [0, Number.NaN, 1, 0],
      { shown: Uint8Array.from([0, 1, 1, 1]) });
    const img = rasterise(pts, frame());
    expect(inked(img)).toBe(1);
    expect(pixel(img, 12, 5, 5)).toEqual(BLUE);
  });

  it('picks continuous colours as the WebGL plot does: floor(value x (colours - 1))', () => {
    const palette = [...RED, 0, 255, 0, 255, ...BLUE];
    const img = rasterise(points([1, 3, 5, 7], [1, 1, 1, 1], [0, 0.5, 0.99, 1]),
      frame({ palette, continuous: true }));
    expect(pixel(img, 12, 1, 1)).toEqual(RED);
    expect(pixel(img, 12, 3, 1)).toEqual([0, 255, 0, 255]);
    expect(pixel(img, 12, 5, 1)).toEqual([0, 255, 0, 255]);      // floor(1.98) = 1
    expect(pixel(img, 12, 7, 1)).toEqual(BLUE);
  });

  it('draws a disc with an antialiased edge, scaled to device pixels', () => {
    // 1.5 CSS pixels across at 2 device pixels each: radius 1.5 device pixels at (11, 11)
    const img = rasterise(points([5], [5], [0]), frame({ width: 24, height: 24, scale: 2, pointSize: 1.5 }));
    // pixel (10, 10)'s centre is 0.707 from the point's: covered, min(1, 2 - 0.707)
    expect(pixel(img, 24, 10, 10)).toEqual(RED);
    // pixel (9, 10)'s centre is sqrt(1.5^2 + 0.5^2) = 1.581 away: 2 - 1.581 = 0.419 of it
    expect(pixel(img, 24, 9, 10)).toEqual([255, 0, 0, Math.round(0.4189 * 255)]);
    // pixel (9, 9)'s centre is 2.12 away: outside
    expect(pixel(img, 24, 9, 9)[3]).toBe(0);
    expect(inked(img)).toBe(4 + 8);
  });

  it('sizes points by their size value, one of the bins given', () => {
    const img = rasterise(points([2, 8], [5, 5], [0, 0], { sizeValues: Float32Array.from([0, 1]) }),
      frame({ width: 12, pointSize: [1, 3] }));
    let left = 0, right = 0;
    for (let py = 0; py < 12; py++) for (let px = 0; px < 12; px++) {
      if (pixel(img, 12, px, py)[3] > 0) (px < 6 ? left++ : right++);
    }
    expect(left).toBe(1);
    expect(right).toBe(9);       // a 3-pixel disc on a pixel centre: its 3 x 3 pixels
  });

  it('applies the plot opacity to the colour alpha', () => {
    const img = rasterise(points([5], [5], [0]), frame({ opacity: 0.5 }));
    expect(pixel(img, 12, 5, 5)).toEqual([255, 0, 0, 128]);
  });
});

describe('rgbaBytes', () => {
  it('reads #rrggbb as opaque and #rrggbbaa with its alpha', () => {
    expect(rgbaBytes('#4353c9')).toEqual([0x43, 0x53, 0xc9, 255]);
    expect(rgbaBytes('#4353c980')).toEqual([0x43, 0x53, 0xc9, 0x80]);
  });
});

describe('rasterise while the camera moves', () => {
  it('draws every stride-th point in drawing order', () => {
    const x = [1, 3, 5, 7, 9], y = [1, 1, 1, 1, 1], v = [0, 0, 0, 0, 0];
    const img = rasterise(points(x, y, v, { order: Int32Array.from([4, 3, 2, 1, 0]) }), frame({ stride: 2 }));
    // drawing order 4, 3, 2, 1, 0: every second is 4, 2, 0 (pixels 9, 5, 1)
    expect([1, 3, 5, 7, 9].map((px) => pixel(img, 12, px, 1)[3] > 0)).toEqual([true, false, true, false, true]);
    expect(inked(rasterise(points(x, y, v), frame({ stride: 1 })))).toBe(5);
  });
});
