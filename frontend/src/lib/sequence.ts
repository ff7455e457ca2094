// Pure helpers of the sequence instance view (causal-lm, seq2seq): how the input tokens split
// into streams, how target tokens and saliency scores are shaded, how a generation lines up
// with its reference. No Svelte, no fetches: each is unit-tested (tests/unit/sequence.test.ts).
import type { SaliencyMethod, TaskName } from './types';

/** A run of consecutive input tokens fed to one part of the model. */
export interface InputStream {
  name: 'input' | 'decoder_input';
  label: string;
  /** index of its first token in input_tokens */
  start: number;
  tokens: string[];
}

/**
 * The input tokens split by stream_lengths: seq2seq gives "source" then "decoder input" (the
 * target shifted right); causal-lm one "sequence" (prompt, completion, end token). Lengths
 * that do not add up are clamped so that every token shows once.
 */
export function inputStreams(task: TaskName, tokens: string[], lengths: { input: number; decoder_input?: number }): InputStream[] {
  const nInput = Math.max(0, Math.min(tokens.length, lengths.input));
  const first: InputStream = { name: 'input', label: task === 'seq2seq' ? 'source' : 'sequence', start: 0, tokens: tokens.slice(0, nInput) };
  if (lengths.decoder_input === undefined && nInput === tokens.length) return [first];
  return [first, { name: 'decoder_input', label: 'decoder input', start: nInput, tokens: tokens.slice(nInput) }];
}

/**
 * A subword as written: SentencePiece's "▁" and byte-level BPE's "Ġ" mark the start of a word
 * (`wordStart`) and are dropped; WordPiece's "##" marks a piece joined to the one before (`joined`).
 */
export function tokenDisplay(token: string): { text: string; wordStart: boolean; joined: boolean } {
  if (token.length > 2 && token.startsWith('##')) return { text: token.slice(2), wordStart: false, joined: true };
  if (/^[▁Ġ]/.test(token)) return { text: token.slice(1) || '␣', wordStart: true, joined: false };
  return { text: token, wordStart: false, joined: false };
}

/** Where a target token's shade comes from: its probability, or its loss (NLL in nats). */
export type TokenShade = 'prob' | 'loss';

/**
 * A target token's shade position in 0..1 (0: fine, 1: worst): 1 - probability, or the NLL over
 * the sequence's largest NLL (at least ln 2, so a sequence of near-certain tokens stays pale).
 */
export function shadeLevel(mode: TokenShade, prob: number, nll: number, maxNll: number): number {
  const v = mode === 'prob' ? 1 - prob : nll / Math.max(Math.LN2, maxNll);
  return Number.isFinite(v) ? Math.max(0, Math.min(1, v)) : 0;
}

/** Methods whose scores are magnitudes (one hue); the rest are signed (toward / against). */
const UNSIGNED: ReadonlySet<SaliencyMethod> = new Set<SaliencyMethod>(['gradient', 'attention_rollout']);

export function isSignedMethod(method: SaliencyMethod): boolean {
  return !UNSIGNED.has(method);
}

/** The largest |score| among finite scores: the end of a saliency colour scale (never 0). */
export function scoreScale(scores: readonly number[]): number {
  let m = 0;
  for (const s of scores) if (Number.isFinite(s) && Math.abs(s) > m) m = Math.abs(s);
  return m > 0 ? m : 1e-12;
}

/**
 * A score's position on its colour scale: signed in -1..1 (score / scale), unsigned in 0..1
 * (|score| / scale).
 */
export function scoreLevel(score: number, scale: number, signed: boolean): number {
  if (!Number.isFinite(score) || scale <= 0) return 0;
  const v = Math.max(-1, Math.min(1, score / scale));
  return signed ? v : Math.abs(v);
}

/** Input column `col` comes after the position that predicts the target token: causally unseen. */
export function causallyHidden(col: number, predictedAt: number | undefined): boolean {
  return predictedAt !== undefined && col > predictedAt;
}

/** One position of a generation beside its reference. */
export interface AlignedToken {
  generated: string | null;
  prob: number | null;
  reference: string | null;
  match: boolean;
}

/** The generated tokens position by position beside the reference tokens (the longer decides the length). */
export function alignGeneration(tokens: string[], probs: number[], matches: boolean[], reference: string[]): AlignedToken[] {
  const n = Math.max(tokens.length, reference.length);
  return Array.from({ length: n }, (_, k) => ({
    generated: k < tokens.length ? tokens[k] : null,
    prob: k < probs.length ? probs[k] : null,
    reference: k < reference.length ? reference[k] : null,
    match: !!matches[k],
  }));
}

/** The checkpoint step nearest to x (a click on a chart's step axis); null without checkpoints. */
export function nearestStep(steps: number[], x: number): number | null {
  let best: number | null = null;
  for (const s of steps) if (best === null || Math.abs(s - x) < Math.abs(best - x)) best = s;
  return best;
}

/** Clamp a (layer, head) pick to a stack's sizes. */
export function clampHead(pick: [number, number], layers: number, heads: number): [number, number] {
  return [Math.max(0, Math.min(pick[0], layers - 1)), Math.max(0, Math.min(pick[1], heads - 1))];
}

