// Storage's refusals become the OCI errors /v2 clients expect.
import { describe, expect, it } from "vitest";
import { registryError } from "../../../src/registry/errors";
import { StorageError } from "../../../src/storage/errors";

describe("registryError", () => {
  it("keeps the code and detail, with the spec's status", async () => {
    const res = registryError(new StorageError("BLOB_UNKNOWN", "gone", { detail: { digest: "sha256:x" } })).toResponse();
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ errors: [{ code: "BLOB_UNKNOWN", message: "gone", detail: { digest: "sha256:x" } }] });
    expect(registryError(new StorageError("DIGEST_INVALID", "bad")).status).toBe(400);
    expect(registryError(new StorageError("BLOB_UPLOAD_UNKNOWN", "gone")).status).toBe(404);
  });

  it("answers a too large manifest with 413 MANIFEST_INVALID", async () => {
    const res = registryError(new StorageError("MANIFEST_TOO_LARGE", "too big")).toResponse();
    expect(res.status).toBe(413);
    expect(((await res.json()) as { errors: { code: string }[] }).errors[0].code).toBe("MANIFEST_INVALID");
  });

  it("tells the client where an upload stands on RANGE_INVALID", () => {
    const res = registryError(new StorageError("RANGE_INVALID", "gap", { upload: { repo: "a/b", id: "u1", size: 10 } })).toResponse();
    expect(res.status).toBe(416);
    expect(res.headers.get("range")).toBe("0-9");
    expect(res.headers.get("location")).toBe("/v2/a/b/blobs/uploads/u1");
    expect(res.headers.get("docker-upload-uuid")).toBe("u1");
  });
});
