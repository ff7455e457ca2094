// Pure helpers for line series.

/**
 * Count-weighted moving average over k neighbours on each side (by default about 1/50 of the
 * points): per-batch training accuracy is noisy. NaN values are skipped.
 */
export function smoothByCount(pts: [number, number][], n: number[], k = Math.max(1, Math.round(pts.length / 50))):
  [number, number][] {
  return pts.map(([x], i) => {
    let s = 0, w = 0;
    for (let j = Math.max(0, i - k); j <= Math.min(pts.length - 1, i + k); j++) {
      const wj = n[j] || 1;
      if (Number.isFinite(pts[j][1])) { s += pts[j][1] * wj; w += wj; }
    }
    return [x, w ? s / w : NaN];
  });
}
