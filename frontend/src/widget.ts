// The viewer as an anywidget (t3vis.show in a notebook). Each rendering mounts the same App the
// served page mounts, inside a shadow root so the notebook's styles and the viewer's do not mix;
// its API calls travel over the widget's comm (lib/commTransport.ts), and the selection is a
// synced trait Python reads as a DataFrame (t3vis/notebook/widget.py).
import { mount, unmount } from 'svelte';
import { get } from 'svelte/store';
import type { AnyModel, InitializeProps, RenderProps } from '@anywidget/types';
import App from './App.svelte';
import pageStyles from './app.css?inline';
import { commTransport } from './lib/commTransport';
import { int64Body } from './lib/api';
import { viewName } from './lib/embed';
import { selection, setSelection } from './lib/stores';
import { sameSelection } from './lib/selection';
import { useTransport } from './lib/transport';
import DecodeWorker from './lib/decode.worker?worker&inline';
import { useDecodeWorker } from './lib/offthread';
import { pushedVersions, useVersionFeed } from './lib/live';
import type { RunVersion } from './lib/types';

interface Model {
  run: string;
  view: string | null;
  height: number;
  /** the selection's ids as little-endian int64, sorted (a binary buffer: any size); null: none */
  selected_id_bytes: DataView | null;
}

/** The page's global styles, for a shadow root: its :root variables on the host, no body rules. */
const hostStyles = pageStyles.replace(/:root\b/g, ':host').replace(/\bbody\s*\{[^}]*\}/g, '');

/** Ids from little-endian int64 bytes (ids are integers below 2^53). */
function idsOf(bytes: DataView | null): Float64Array | null {
  if (!bytes) return null;
  const ids = new Float64Array(bytes.byteLength / 8);
  for (let i = 0; i < ids.length; i++) {
    const high = bytes.getInt32(8 * i + 4, true);
    ids[i] = high === 0 ? bytes.getUint32(8 * i, true) : Number(bytes.getBigInt64(8 * i, true));
  }
  return ids;
}

/** The selection trait, both ways: a lasso in the widget is read in Python; Python's assignment selects. */
function syncSelection(model: AnyModel<Model>): () => void {
  const held = () => idsOf(model.get('selected_id_bytes'));
  const fromModel = () => {
    const ids = held();
    if (!sameSelection(get(selection), ids)) setSelection(ids, 'python');
  };
  const unsubscribe = selection.subscribe((s) => {
    if (sameSelection(held(), s)) return;
    model.set('selected_id_bytes', s ? new DataView(int64Body(s)) : null);
    model.save_changes();
  });
  model.on('change:selected_id_bytes', fromModel);
  fromModel();
  return () => { unsubscribe(); model.off('change:selected_id_bytes', fromModel); };
}

/** Once per widget model: the API over its comm and the selection trait. (Each model loads this
 *  module afresh, so its stores are its own; the views of one model share them.) */
function initialize({ model }: InitializeProps<Model>): () => void {
  const { transport, dispose } = commTransport(model);
  useTransport(transport);
  // the widget is one module with no files beside it: its decoding worker is inlined (a blob URL)
  useDecodeWorker(() => new DecodeWorker());
  useVersionFeed(pushedVersions((onPush) => {
    // the kernel watches the run and pushes {type: "version", run} with the version as JSON
    const listener = (msg: unknown, buffers: DataView[]) => {
      const m = msg as { type?: string; run?: string };
      if (m?.type !== 'version' || typeof m.run !== 'string' || !buffers[0]) return;
      onPush(m.run, JSON.parse(new TextDecoder().decode(buffers[0])) as RunVersion);
    };
    model.on('msg:custom', listener);
    return () => model.off('msg:custom', listener);
  }));
  const unsync = syncSelection(model);
  return () => { unsync(); dispose(); };
}

/** Each view of the model (a widget shown twice is two views): the page in a shadow root. */
function render({ model, el }: RenderProps<Model>): () => void {
  // shortcuts typed into the viewer (the table's search) are not the notebook's commands
  el.dataset.lmSuppressShortcuts = 'true';
  const root = el.shadowRoot ?? el.attachShadow({ mode: 'open' });
  const style = document.createElement('style');
  style.textContent = `${hostStyles}\n:host { display: block; background: var(--bg); border: 1px solid var(--border); border-radius: 8px; overflow: hidden; }`;
  const frame = document.createElement('div');
  const size = () => { frame.style.height = `${model.get('height')}px`; };
  size();
  model.on('change:height', size);
  root.replaceChildren(style, frame);
  const app = mount(App, { target: frame, props: { embed: { run: model.get('run'), view: viewName(model.get('view')) } } });
  return () => {
    model.off('change:height', size);
    void unmount(app);
  };
}

export default { initialize, render };
