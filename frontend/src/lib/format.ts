// Number formatting shared by the views.
export function pct(x: number | null | undefined, digits = 1): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '—' : `${(x * 100).toFixed(digits)}%`;
}

export function fixed(x: number | null | undefined, digits = 3): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(digits);
}

export function signed(x: number, digits = 3): string {
  return `${x >= 0 ? '+' : '−'}${Math.abs(x).toFixed(digits)}`;
}

/** A metric's value: accuracies as percentages, the rest to 3 decimals. */
export function metric(name: string, v: number): string {
  return /acc/i.test(name) ? pct(v) : /seconds/.test(name) ? `${v.toFixed(1)} s` : fixed(v);
}

export function metricLabel(name: string): string {
  return name.replace(/_/g, ' ').replace(/\bvalidation\b/, 'val.').replace(/\baccuracy\b/, 'acc.');
}

export function layerLabel(l: number): string {
  return l === 0 ? 'emb' : String(l);
}
