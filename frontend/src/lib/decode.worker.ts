// The decoding worker: Arrow tables of a million rows are parsed here, off the page's main thread,
// and their typed arrays handed back (transferred, not copied).
import { ApiError } from './errors';
import { decodeTable, spatialIndex, transferables, type DecodeAnswer, type DecodeRequest } from './decode';

self.onmessage = (e: MessageEvent<DecodeRequest>) => {
  const { id } = e.data;
  let answer: DecodeAnswer;
  try {
    if (e.data.kind === 'kdbush') {
      const index = spatialIndex(e.data.x, e.data.y);
      (self as unknown as Worker).postMessage({ id, index } satisfies DecodeAnswer, [index]);
      return;
    }
    const decoded = decodeTable(e.data.kind, e.data.body);
    (self as unknown as Worker).postMessage({ id, decoded } satisfies DecodeAnswer, transferables(decoded));
    return;
  } catch (err) {
    answer = { id, error: (err as Error).message, status: err instanceof ApiError ? err.status : 0 };
  }
  (self as unknown as Worker).postMessage(answer);
};
