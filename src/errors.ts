/**
 * Errors that carry their ready HTTP response. Routes throw them; the one onError in
 * src/index.ts renders them. /v2 speaks OCI error bodies, /v1 speaks {error:{message}}.
 */

/** Error codes of the OCI Distribution Specification v1.1 with their HTTP status. */
export const OCI_ERROR_STATUS = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  RANGE_INVALID: 416,
} as const;

export type OciErrorCode = keyof typeof OCI_ERROR_STATUS;

export class OciError extends Error {
  readonly code: OciErrorCode;
  readonly status: number;
  readonly detail: unknown;
  readonly headers: Record<string, string>;

  constructor(code: OciErrorCode, message: string, opts: { status?: number; detail?: unknown; headers?: Record<string, string> } = {}) {
    super(message);
    this.name = "OciError";
    this.code = code;
    this.status = opts.status ?? OCI_ERROR_STATUS[code];
    this.detail = opts.detail ?? null;
    this.headers = opts.headers ?? {};
  }

  toResponse(): Response {
    const body = JSON.stringify({ errors: [{ code: this.code, message: this.message, detail: this.detail }] });
    return new Response(body, {
      status: this.status,
      headers: { "content-type": "application/json", ...this.headers },
    });
  }
}

export class ApiError extends Error {
  readonly status: number;
  readonly extra: Record<string, unknown>;
  readonly headers: Record<string, string>;

  constructor(status: number, message: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.extra = extra;
    this.headers = headers;
  }

  toResponse(): Response {
    return new Response(JSON.stringify({ error: { message: this.message, ...this.extra } }), {
      status: this.status,
      headers: { "content-type": "application/json", ...this.headers },
    });
  }
}
