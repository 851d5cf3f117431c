// Issue 17, finding 10 (registry leaks), against a real kiln (`wrangler dev`) with two tenants' tokens:
// a failed push says nothing about another tenant's blob, a manifest's Content-Type must be its media
// type, descriptor sizes must be the stored ones, and a push racing a delete never answers 404.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startKiln, type KilnServer } from "./server";
import { createToken, sha256 } from "./helpers";

const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
type Errors = { errors: { code: string; message: string; detail?: unknown }[] };

describe("tenancy: registry leaks", () => {
  let kiln: KilnServer;
  let a: string;
  let b: string;

  beforeAll(async () => {
    kiln = await startKiln();
    a = `Basic ${Buffer.from(`a:${(await createToken(kiln.url, ["repository:ta/**:pull,push"])).token}`).toString("base64")}`;
    b = `Basic ${Buffer.from(`b:${(await createToken(kiln.url, ["repository:tb/**:pull,push"])).token}`).toString("base64")}`;
  });
  afterAll(async () => {
    await kiln?.stop(true);
  });

  const v2 = (path: string, auth: string, init: RequestInit = {}) =>
    fetch(`${kiln.url}/v2/${path}`, { ...init, headers: { authorization: auth, ...(init.headers as Record<string, string>) } });

  async function pushBlob(repo: string, auth: string, data: Buffer): Promise<string> {
    const digest = sha256(data);
    const res = await v2(`${repo}/blobs/uploads/?digest=${digest}`, auth, { method: "POST", body: new Uint8Array(data) });
    expect(res.status, await res.text()).toBe(201);
    return digest;
  }

  async function image(repo: string, auth: string) {
    const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] }, n: Math.random() }));
    const layer = randomBytes(2048);
    const doc = {
      schemaVersion: 2, mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: await pushBlob(repo, auth, config), size: config.length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: await pushBlob(repo, auth, layer), size: layer.length }],
    };
    return doc;
  }

  it("B's failed push of A's private digest reveals nothing about A's blob (no storedSize)", async () => {
    const secret = randomBytes(7777);
    const digest = await pushBlob("ta/private", a, secret);
    expect((await v2(`ta/private/blobs/${digest}`, b, { method: "HEAD" })).status).toBe(403);
    const probe = async (d: string) => {
      const res = await v2(`tb/probe/blobs/uploads/?digest=${d}`, b, { method: "POST", body: "guess" });
      return { status: res.status, text: await res.text() };
    };
    const known = await probe(digest);
    const unknown = await probe(sha256(randomBytes(7777)));
    expect(known.status).toBe(400);
    expect(known.text).not.toContain("storedSize");
    expect(known.text).not.toContain("7777");
    const strip = (t: string) => JSON.stringify((JSON.parse(t) as Errors).errors.map((e) => ({ code: e.code, message: e.message, keys: Object.keys(e.detail as object).sort() })));
    expect(strip(known.text)).toBe(strip(unknown.text));
    // Nor can B mount it into its own repository.
    const mount = await v2(`tb/probe/blobs/uploads/?mount=${digest}&from=ta/private`, b, { method: "POST" });
    expect(mount.status).toBe(202);
    expect((await v2(`tb/probe/blobs/${digest}`, b, { method: "HEAD" })).status).toBe(404);
  });

  it("a manifest sent as text/plain (or any type but its own) is refused, not stored as application/json", async () => {
    const doc = await image("ta/ct", a);
    const body = JSON.stringify(doc);
    for (const ct of ["text/plain", "application/json", OCI_INDEX]) {
      const res = await v2("ta/ct/manifests/v1", a, { method: "PUT", body, headers: { "content-type": ct } });
      expect(res.status, ct).toBe(400);
      expect(((await res.json()) as Errors).errors[0].code, ct).toBe("MANIFEST_INVALID");
    }
    expect((await v2("ta/ct/manifests/v1", a)).status).toBe(404);
    const ok = await v2("ta/ct/manifests/v1", a, { method: "PUT", body, headers: { "content-type": OCI_MANIFEST } });
    expect(ok.status).toBe(201);
    const got = await v2("ta/ct/manifests/v1", a, { headers: { accept: OCI_MANIFEST } });
    expect(got.headers.get("content-type")).toBe(OCI_MANIFEST);
    expect(await got.text()).toBe(body);
  });

  it("a manifest whose descriptor sizes differ from the stored blobs is refused", async () => {
    const doc = await image("ta/size", a);
    for (const bad of [
      { ...doc, layers: [{ ...doc.layers[0], size: doc.layers[0].size * 2 }] },
      { ...doc, config: { ...doc.config, size: 3 } },
    ]) {
      const res = await v2("ta/size/manifests/bad", a, { method: "PUT", body: JSON.stringify(bad), headers: { "content-type": OCI_MANIFEST } });
      expect(res.status).toBe(400);
      const err = ((await res.json()) as Errors).errors[0];
      expect(err.code).toBe("MANIFEST_INVALID");
      expect(err.message).toMatch(/size/);
    }
    expect((await v2("ta/size/manifests/bad", a)).status).toBe(404);
    const body = JSON.stringify(doc);
    expect((await v2("ta/size/manifests/good", a, { method: "PUT", body, headers: { "content-type": OCI_MANIFEST } })).status).toBe(201);
    const index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: sha256(body), size: Buffer.byteLength(body) + 1 }] };
    const res = await v2("ta/size/manifests/index", a, { method: "PUT", body: JSON.stringify(index), headers: { "content-type": OCI_INDEX } });
    expect(res.status).toBe(400);
    expect(((await res.json()) as Errors).errors[0].code).toBe("MANIFEST_INVALID");
  });

  it("a blob push racing a delete of the same digest never answers 404", async () => {
    for (let i = 0; i < 8; i++) {
      const data = randomBytes(4096);
      const digest = await pushBlob("ta/race-one", a, data);
      const [push, del] = await Promise.all([
        v2(`ta/race-two/blobs/uploads/?digest=${digest}`, a, { method: "POST", body: data }),
        v2(`ta/race-one/blobs/${digest}`, a, { method: "DELETE" }),
      ]);
      expect(push.status, `round ${i}: ${await push.text()}`).toBe(201);
      expect(del.status).toBe(202);
      const get = await v2(`ta/race-two/blobs/${digest}`, a);
      expect(get.status, `round ${i}`).toBe(200);
      expect(Buffer.from(await get.arrayBuffer()).equals(data)).toBe(true);
    }
  });
});
