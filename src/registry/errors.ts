/** Storage's refusals as the OCI errors /v2 clients expect (status, error body, resume headers). */
import { OciError } from "../errors";
import type { StorageError } from "../storage/errors";
import { uploadHeaders } from "./http";

export function registryError(err: StorageError): OciError {
  switch (err.code) {
    case "MANIFEST_TOO_LARGE":
      return new OciError("MANIFEST_INVALID", err.message, { status: 413, detail: err.detail });
    case "RANGE_INVALID":
      // the client resumes from where the upload stands
      return new OciError("RANGE_INVALID", err.message, { detail: err.detail, headers: err.upload ? uploadHeaders(err.upload) : {} });
    default:
      return new OciError(err.code, err.message, { detail: err.detail });
  }
}
