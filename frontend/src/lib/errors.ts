// The one error type of the API client, shared by api.ts and the decoders (decode.ts, also run in a worker).

/** An error answer of the API ({detail}) or a network failure. */
export class ApiError extends Error {
  status: number;
  detail: string;
  constructor(status: number, detail: string) {
    super(status ? `${detail} (HTTP ${status})` : detail);
    this.status = status;
    this.detail = detail;
  }
}

