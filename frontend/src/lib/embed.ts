// The viewer embedded in a notebook (widget.ts): which run it opens, and which view it shows alone.
// The same names are t3vis.show(run, view=...)'s (t3vis/notebook/widget.py VIEWS).

export const VIEW_NAMES = ['projection', 'datamap', 'instance', 'table', 'heads', 'curves'] as const;
export type ViewName = (typeof VIEW_NAMES)[number];

export interface Embed {
  run: string;
  /** one view alone; null: all of them */
  view: ViewName | null;
}

export function viewName(value: unknown): ViewName | null {
  return (VIEW_NAMES as readonly unknown[]).includes(value) ? (value as ViewName) : null;
}

/** Whether a view is on screen: every view on the page, only the chosen one in a widget that names one. */
export function showsView(embed: Embed | null, view: ViewName): boolean {
  return !embed?.view || embed.view === view;
}
