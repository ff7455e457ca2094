// The API over a notebook widget's comm: each request is a custom message to the kernel, which
// answers it with the server's app running there (t3vis/notebook/widget.py) and sends the body back
// as the message's one buffer. A binary request body (a selection's ids) goes the same way: as the
// request's one buffer, with its content type. Protocol: docs/api.md "Notebook widget".
import type { Transport } from './transport';

/** The part of an anywidget model this needs. */
export interface CommModel {
  send(content: unknown, callbacks?: unknown, buffers?: ArrayBuffer[]): void;
  on(event: 'msg:custom', callback: (msg: unknown, buffers: DataView[]) => void): void;
  off(event: 'msg:custom', callback: (msg: unknown, buffers: DataView[]) => void): void;
}

interface Answer {
  type: 'response';
  id: string;
  status: number;
  headers: Record<string, string>;
}

function isAnswer(msg: unknown): msg is Answer {
  return !!msg && typeof msg === 'object' && (msg as Answer).type === 'response' && typeof (msg as Answer).id === 'string';
}

/** Statuses a Response may not carry a body with. */
const NO_BODY = new Set([101, 204, 205, 304]);

/** A request body of bytes, as the one buffer a comm message carries; null for text or none. */
function binaryBody(body: BodyInit | null | undefined): ArrayBuffer | null {
  if (body instanceof ArrayBuffer) return body;
  if (ArrayBuffer.isView(body)) return body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength) as ArrayBuffer;
  return null;
}

function contentType(headers: HeadersInit | undefined): string {
  return new Headers(headers).get('Content-Type') ?? 'application/octet-stream';
}

export function commTransport(model: CommModel): { transport: Transport; dispose: () => void } {
  const pending = new Map<string, { resolve: (r: Response) => void; reject: (e: unknown) => void }>();
  let next = 0;
  const prefix = Math.random().toString(36).slice(2, 8);

  const onMessage = (msg: unknown, buffers: DataView[]) => {
    if (!isAnswer(msg)) return;
    const waiting = pending.get(msg.id);
    if (!waiting) return;                      // aborted meanwhile
    pending.delete(msg.id);
    const body = NO_BODY.has(msg.status) ? null : (buffers[0] ?? new Uint8Array(0));
    waiting.resolve(new Response(body as BodyInit | null, { status: msg.status, headers: msg.headers }));
  };
  model.on('msg:custom', onMessage);

  const transport: Transport = (path, init) => new Promise<Response>((resolve, reject) => {
    const signal = init.signal;
    if (signal?.aborted) return reject(new DOMException('The request was aborted.', 'AbortError'));
    const id = `${prefix}-${next++}`;
    pending.set(id, { resolve, reject });
    signal?.addEventListener('abort', () => {
      if (pending.delete(id)) reject(new DOMException('The request was aborted.', 'AbortError'));
    }, { once: true });
    const request = { type: 'request', id, method: init.method ?? 'GET', path };
    const bytes = binaryBody(init.body);
    if (bytes) model.send({ ...request, content_type: contentType(init.headers) }, undefined, [bytes]);
    else model.send(typeof init.body === 'string' ? { ...request, body: init.body } : request);
  });

  return {
    transport,
    dispose: () => {
      model.off('msg:custom', onMessage);
      for (const { reject } of pending.values()) reject(new DOMException('The widget was closed.', 'AbortError'));
      pending.clear();
    },
  };
}
