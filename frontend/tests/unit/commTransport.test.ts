import { describe, expect, it } from 'vitest';
import { commTransport, type CommModel } from '../../src/lib/commTransport';

/** A model whose kernel side is a function from a request to an answer (or no answer). */
function fakeModel() {
  const sent: Record<string, unknown>[] = [];
  const sentBuffers: (ArrayBuffer[] | undefined)[] = [];
  let listener: ((msg: unknown, buffers: DataView[]) => void) | null = null;
  const model: CommModel = {
    send: (content, _callbacks, buffers) => { sent.push(content as Record<string, unknown>); sentBuffers.push(buffers); },
    on: (_e, cb) => { listener = cb; },
    off: (_e, cb) => { if (listener === cb) listener = null; },
  };
  const answer = (msg: unknown, body?: Uint8Array) => listener?.(msg, body ? [new DataView(body.buffer)] : []);
  return { model, sent, sentBuffers, answer, listening: () => listener !== null };
}

describe('the API over a widget comm', () => {
  it('sends the request and resolves with the status, headers and body the kernel answered', async () => {
    const { model, sent, answer } = fakeModel();
    const { transport } = commTransport(model);
    const pending = transport('/runs/demo/points?step=3', { method: 'GET' });
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ type: 'request', method: 'GET', path: '/runs/demo/points?step=3' });
    expect(sent[0]).not.toHaveProperty('body');
    answer({ type: 'response', id: sent[0].id, status: 404, headers: { 'content-type': 'application/json', 'x-t3vis-rows': '7' } },
      new TextEncoder().encode('{"detail":"no checkpoint 3"}'));
    const res = await pending;
    expect(res.status).toBe(404);
    expect(res.ok).toBe(false);
    expect(res.headers.get('X-T3vis-Rows')).toBe('7');
    expect(await res.json()).toEqual({ detail: 'no checkpoint 3' });
  });

  it('matches answers to their requests by id, whatever order they come in', async () => {
    const { model, sent, answer } = fakeModel();
    const { transport } = commTransport(model);
    const a = transport('/a', { method: 'GET' });
    const b = transport('/b', { method: 'POST', body: '{"ids":[1]}' });
    expect(sent[1]).toMatchObject({ method: 'POST', body: '{"ids":[1]}' });
    expect(sent[0].id).not.toBe(sent[1].id);
    answer({ type: 'response', id: sent[1].id, status: 200, headers: {} }, new Uint8Array([98]));
    answer({ type: 'response', id: sent[0].id, status: 200, headers: {} }, new Uint8Array([97]));
    expect(await (await a).text()).toBe('a');
    expect(await (await b).text()).toBe('b');
  });

  it('passes binary bodies through byte for byte', async () => {
    const { model, sent, answer } = fakeModel();
    const { transport } = commTransport(model);
    const pending = transport('/bytes', { method: 'GET' });
    const bytes = new Uint8Array([0, 255, 7, 128, 1]);
    answer({ type: 'response', id: sent[0].id, status: 200, headers: { 'x-t3vis-shape': '5' } }, bytes);
    expect([...new Uint8Array(await (await pending).arrayBuffer())]).toEqual([0, 255, 7, 128, 1]);
  });

  it('sends a binary request body as the message buffer, with its content type', async () => {
    const { model, sent, sentBuffers } = fakeModel();
    const { transport } = commTransport(model);
    const ids = new BigInt64Array([3n, 5n, 1n << 40n]);
    void transport('/runs/demo/selections', {
      method: 'POST', body: new Uint8Array(ids.buffer, 8, 16), headers: { 'Content-Type': 'application/octet-stream' },
    });
    expect(sent[0]).toMatchObject({ method: 'POST', content_type: 'application/octet-stream' });
    expect(sent[0]).not.toHaveProperty('body');
    expect(sentBuffers[0]).toHaveLength(1);
    expect([...new BigInt64Array(sentBuffers[0]![0])]).toEqual([5n, 1n << 40n]);    // the view's bytes only
  });

  it('rejects an aborted request as an AbortError and ignores its late answer', async () => {
    const { model, sent, answer } = fakeModel();
    const { transport } = commTransport(model);
    const ctrl = new AbortController();
    const pending = transport('/slow', { method: 'GET', signal: ctrl.signal });
    ctrl.abort();
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    expect(() => answer({ type: 'response', id: sent[0].id, status: 200, headers: {} }, new Uint8Array([1]))).not.toThrow();
  });

  it('answers a 204 without a body, and ignores messages that are not its answers', async () => {
    const { model, sent, answer } = fakeModel();
    const { transport } = commTransport(model);
    const pending = transport('/x', { method: 'POST', body: '{}' });
    answer({ type: 'something-else', id: sent[0].id });
    answer({ type: 'response', id: 'unknown', status: 200, headers: {} });
    answer({ type: 'response', id: sent[0].id, status: 204, headers: {} }, new Uint8Array([1, 2]));
    expect((await pending).status).toBe(204);
  });

  it('stops listening and rejects what is pending when disposed', async () => {
    const { model, listening } = fakeModel();
    const { transport, dispose } = commTransport(model);
    const pending = transport('/never', { method: 'GET' });
    dispose();
    expect(listening()).toBe(false);
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
  });
});
