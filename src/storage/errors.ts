/**
 * What storage refuses, in storage's words and without HTTP: src/registry/errors.ts turns each into
 * the OCI error (status, body, headers) the client sees.
 */
export type StorageErrorCode =
  /** not a digest, or the bytes do not hash to the digest given */
  | "DIGEST_INVALID"
  /** the bytes are not as many as announced */
  | "SIZE_INVALID"
  /** no such blob (in the repository asked about) */
  | "BLOB_UNKNOWN"
  /** the upload session is gone (finished or cancelled meanwhile) */
  | "BLOB_UPLOAD_UNKNOWN"
  /** a chunk does not continue the upload where it stands */
  | "RANGE_INVALID"
  /** not a manifest kiln accepts, or an invalid tag */
  | "MANIFEST_INVALID"
  | "MANIFEST_TOO_LARGE"
  /** a blob or child manifest the manifest names is not in the repository */
  | "MANIFEST_BLOB_UNKNOWN"
  /** the write would take the namespace past its byte quota */
  | "DENIED";

export class StorageError extends Error {
  readonly code: StorageErrorCode;
  readonly detail: unknown;
  /** For RANGE_INVALID: the upload as it stands, so the client can resume. */
  readonly upload?: { repo: string; id: string; size: number };

  constructor(code: StorageErrorCode, message: string, opts: { detail?: unknown; upload?: { repo: string; id: string; size: number } } = {}) {
    super(message);
    this.name = "StorageError";
    this.code = code;
    this.detail = opts.detail ?? null;
    this.upload = opts.upload;
  }
}
