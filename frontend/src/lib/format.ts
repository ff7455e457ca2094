// Number formatting shared by the views.
import type { SaliencyMethod } from './types';
export function pct(x: number | null | undefined, digits = 1): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '—' : `${(x * 100).toFixed(digits)}%`;
}

export function fixed(x: number | null | undefined, digits = 3): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(digits);
}

export function signed(x: number, digits = 3): string {
  return `${x >= 0 ? '+' : '−'}${Math.abs(x).toFixed(digits)}`;
}

/** A small non-negative error in scientific notation ('1.2e-3'); '—' when unknown. */
export function sci(x: number | null | undefined, digits = 1): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '—' : x.toExponential(digits);
}

/** A metric's value: accuracies as percentages, the rest to 3 decimals; '—' when missing. */
export function metric(name: string, v: number | null): string {
  if (/acc/i.test(name)) return pct(v);
  return /seconds/.test(name) ? (v === null || !Number.isFinite(v) ? '—' : `${v.toFixed(1)} s`) : fixed(v);
}

/** A metric's value as metric() writes it, a perplexity to one decimal (it runs to hundreds). */
export function metricShort(name: string, v: number | null): string {
  return /perplexity/i.test(name) ? fixed(v, 1) : metric(name, v);
}

export function metricLabel(name: string): string {
  return name.replace(/_/g, ' ').replace(/\bvalidation\b/, 'val.').replace(/\baccuracy\b/, 'acc.');
}

// ---- Checkpoints: a run may record no epochs (a plain loop's snapshot(step=...), or checkpoints
// without a trainer state); then a checkpoint is named by its step alone.

/** 'epoch 1.50', or null when the checkpoint has no epoch. */
export function epochText(epoch: number | null | undefined, digits = 2): string | null {
  return epoch === null || epoch === undefined || !Number.isFinite(epoch) ? null : `epoch ${epoch.toFixed(digits)}`;
}

/** A checkpoint as titles and selectors name it: 'step 120 · epoch 1.5', or 'step 120'. */
export function checkpointName(c: { step: number; epoch: number | null }, digits = 2): string {
  const e = epochText(c.epoch, digits);
  return e === null ? `step ${c.step}` : `step ${c.step} · ${e}`;
}

// ---- Attention heads: 0-based, as the API, t3vis.evaluate(masked_heads=...) and the importance
// arrays address them (layer 2, head 5 is importance[2][5]).

/** The compact name of a head: 'L2.H5'. */
export function headLabel(layer: number, head: number): string {
  return `L${layer}.H${head}`;
}

/** The long name of a head: 'layer 2, head 5'. */
export function headName(layer: number, head: number): string {
  return `layer ${layer}, head ${head}`;
}

// ---- Hidden-state layers: another axis than the heads' layers. Layer 0 is the embeddings and
// layer l > 0 the output of transformer block l - 1 (whose heads are L{l-1}.H*).

/** The short label of a hidden-state layer in the layer picker: 'emb', '1', '2', ... */
export function layerLabel(l: number): string {
  return l === 0 ? 'emb' : String(l);
}

/** The full name of a hidden-state layer: 'layer 0 (embeddings)', 'layer 3'. */
export function hiddenLayerName(l: number): string {
  return l === 0 ? 'layer 0 (embeddings)' : `layer ${l}`;
}

/** What a hidden-state layer holds, for hover text. */
export function hiddenLayerTitle(l: number): string {
  return l === 0 ? 'Hidden-state layer 0: the embeddings' : `Hidden-state layer ${l}: the output of block ${l - 1}`;
}

// ---- Integrated gradients' completeness error.

/** Above both, an attribution misses a real share of f(x) - f(baseline). */
export const COMPLETENESS_TOLERANCE = { absolute: 0.05, relative: 0.05 };

/**
 * Whether integrated gradients' completeness error is worth a warning: the absolute error is
 * large AND large relative to f(x) - f(baseline). The relative error alone explodes where
 * f(x) ~ f(baseline), so it only confirms; when it is unknown the absolute error decides.
 */
export function incomplete(absolute: number | null, relative: number | null | undefined): boolean {
  if (absolute === null || !Number.isFinite(absolute) || absolute <= COMPLETENESS_TOLERANCE.absolute) return false;
  return relative === null || relative === undefined || !Number.isFinite(relative)
    || relative > COMPLETENESS_TOLERANCE.relative;
}

// ---- What a selection holds -------------------------------------------------------------

/** The parts of a selection the table and the projection cannot show, in words ("140 not
 *  probed", "140 without text"); empty when every selected example is probed and has text. */
export function selectionNotes(s: { not_probed: number; without_text: number; unknown: number } | null): string[] {
  if (!s) return [];
  const notes: string[] = [];
  if (s.not_probed) notes.push(`${s.not_probed.toLocaleString()} not probed`);
  if (s.without_text) notes.push(`${s.without_text.toLocaleString()} without text`);
  if (s.unknown) notes.push(`${s.unknown.toLocaleString()} unknown to this run`);
  return notes;
}

/** Why a selection's parts are missing from a view, and the fix (a tooltip). */
export function selectionNotesHelp(s: { not_probed: number; without_text: number } | null): string {
  const parts: string[] = [];
  if (s?.not_probed) {
    parts.push('Not probed: training examples seen in the loop only (in the data map), so no checkpoint recorded '
      + 'their hidden states and they are not in the projection.');
  }
  if (s?.without_text) {
    parts.push('Without text: the loop observed them but never registered their text, so the table cannot list '
      + 'them; register them with Recorder.add_examples(ids, texts, labels).');
  }
  return parts.join(' ');
}

/** A saliency method's display name, in both instance views. */
export const METHOD_NAMES: Record<SaliencyMethod, string> = {
  integrated_gradients: 'Integrated gradients', gradient: 'Input gradient', grad_x_input: 'Gradient × input',
  lrp: 'LRP (conservative)', attention_rollout: 'Attention rollout',
};

/** A message as a sentence: a full stop added where it ends without one (server details do). */
export function sentence(text: string): string {
  const t = text.trim();
  return !t || /[.!?…]$/.test(t) ? t : `${t}.`;
}
