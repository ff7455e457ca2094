// What a run's task and model structure mean to the views: one place that reads them, so views
// ask "is this a sequence?" or "which stacks are there?" instead of comparing task names.
import type { RunInfo, StackInfo, TaskName } from './types';

export const TASK_NAMES: Record<TaskName, string> = {
  classification: 'Classification',
  'causal-lm': 'Causal language modelling',
  seq2seq: 'Sequence to sequence',
};

export const STACK_NAMES: Record<string, string> = {
  encoder: 'Encoder',
  decoder: 'Decoder',
  cross: 'Cross-attention',
};

/** A stack's display name ("Encoder", "Cross-attention"; unknown names as they are). */
export function stackName(stack: string): string {
  return STACK_NAMES[stack] ?? stack;
}

/** The run's task; runs from servers that predate tasks are classifiers. */
export function runTask(info: RunInfo | null | undefined): TaskName {
  return info?.task ?? 'classification';
}

/** Whether the run's examples are sequences scored token by token (causal-lm, seq2seq). */
export function isSequenceTask(task: TaskName): boolean {
  return task !== 'classification';
}

/** The run's attention stacks; a server that lists none has one, of the run's sizes. */
export function runStacks(info: RunInfo | null | undefined): StackInfo[] {
  if (!info) return [];
  if (info.stacks?.length) return info.stacks;
  return [{ name: info.default_stack ?? 'encoder', num_layers: info.num_layers, num_heads: info.num_heads, has_hidden: true }];
}

/** The run's default stack: the one whose sizes num_layers and num_heads are. */
export function defaultStack(info: RunInfo | null | undefined): string | null {
  if (!info) return null;
  return info.default_stack ?? runStacks(info)[0]?.name ?? null;
}

/** The stack named `name` (null or unknown: the default stack). */
export function resolveStack(info: RunInfo | null | undefined, name: string | null): StackInfo | null {
  const stacks = runStacks(info);
  return stacks.find((s) => s.name === name) ?? stacks.find((s) => s.name === defaultStack(info)) ?? stacks[0] ?? null;
}

/** The stacks whose hidden states were recorded: what a projection can show. */
export function hiddenStacks(info: RunInfo | null | undefined): StackInfo[] {
  return runStacks(info).filter((s) => s.has_hidden);
}
