// How the API's requests reach the server: fetch over HTTP in the page `t3vis serve` serves; the
// widget's comm in a notebook (widget.ts), where no port is opened. api.ts asks only this module.

/** Sends one API request; `path` is relative to /api, with its query string. */
export type Transport = (path: string, init: RequestInit) => Promise<Response>;

const overHttp: Transport = (path, init) => fetch(`api${path}`, init);

let current: Transport = overHttp;

export function useTransport(transport: Transport): void {
  current = transport;
}

export function send(path: string, init: RequestInit): Promise<Response> {
  return current(path, init);
}
