// The registry leaks of issue 17 (finding 10): no detail about blobs the caller cannot read, the
// manifest media type checked against its Content-Type, descriptor sizes checked against what is
// stored, and a push never losing to a concurrent delete of the same digest.
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, bytesOf, imageManifest, pushBlob, putManifest, randomBytes, reg, sha256, startUpload } from "./helpers";

type Errors = { errors: { code: string; message: string; detail?: unknown }[] };

async function token(scopes: string[]): Promise<string> {
  const res = await SELF.fetch("http://kiln.test/v1/tokens", {
    method: "POST", headers: { authorization: "Bearer kiln-test-admin", "content-type": "application/json" }, body: JSON.stringify({ name: "tenant", scopes }),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { token: string }).token;
}

describe("a failed push reveals nothing about blobs the caller cannot read", () => {
  it("answers a wrong body for another tenant's digest exactly as for a digest never stored", async () => {
    const secret = randomBytes(5000);
    const digest = await pushBlob("victim-ns/private", secret); // admin: tenant B cannot read it
    const b = `Basic ${btoa(`b:${await token(["repository:attacker-ns/*:pull,push"])}`)}`;
    expect((await reg(`/v2/victim-ns/private/blobs/${digest}`, { method: "HEAD", headers: { authorization: b } })).status).toBe(403);
    const neverStored = await sha256(randomBytes(5000));
    const probe = async (d: string) => {
      const res = await reg(`/v2/attacker-ns/probe/blobs/uploads/?digest=${d}`, { method: "POST", body: bytesOf("x"), headers: { authorization: b } });
      return { status: res.status, body: (await res.json()) as Errors };
    };
    const stored = await probe(digest);
    const fresh = await probe(neverStored);
    expect(stored.status).toBe(400);
    expect(JSON.stringify(stored.body)).not.toContain("storedSize");
    expect(JSON.stringify(stored.body)).not.toContain("5000");
    // Same code, message and detail shape whether or not the digest exists somewhere.
    expect(stored.body.errors[0].code).toBe(fresh.body.errors[0].code);
    expect(stored.body.errors[0].message).toBe(fresh.body.errors[0].message);
    expect(Object.keys(stored.body.errors[0].detail as object).sort()).toEqual(Object.keys(fresh.body.errors[0].detail as object).sort());
    expect((await reg(`/v2/attacker-ns/probe/blobs/${digest}`, { method: "HEAD" })).status).toBe(404);
  });
});

describe("manifest media type must match the Content-Type", () => {
  it("refuses text/plain, application/json, a missing type and a type the body contradicts", async () => {
    const repo = "ct/app";
    const body = await imageManifest(repo);
    const digest = await sha256(body);
    for (const ct of ["text/plain", "application/json", "application/octet-stream", DOCKER_MANIFEST, OCI_INDEX]) {
      const res = await putManifest(repo, "t", body, ct);
      expect(res.status, ct).toBe(400);
      const err = ((await res.json()) as Errors).errors[0];
      expect(err.code, ct).toBe("MANIFEST_INVALID");
    }
    const none = await reg(`/v2/${repo}/manifests/t`, { method: "PUT", body: new Blob([body]) });
    expect(none.status).toBe(400);
    expect(((await none.json()) as Errors).errors[0].code).toBe("MANIFEST_INVALID");
    expect((await reg(`/v2/${repo}/manifests/${digest}`)).status).toBe(404);
    expect((await reg(`/v2/${repo}/manifests/t`)).status).toBe(404);

    const ok = await putManifest(repo, "t", body, `${OCI_MANIFEST}; charset=utf-8`);
    expect(ok.status).toBe(201);
    expect((await reg(`/v2/${repo}/manifests/t`)).headers.get("content-type")).toBe(OCI_MANIFEST);
  });
});

describe("descriptor sizes must match what is stored", () => {
  it("refuses a layer, a config or an index child declared with another size", async () => {
    const repo = "size/app";
    const good = JSON.parse(await imageManifest(repo));
    const bad = async (doc: unknown, ct = OCI_MANIFEST) => {
      const res = await putManifest(repo, "bad", JSON.stringify(doc), ct);
      expect(res.status).toBe(400);
      const err = ((await res.json()) as Errors).errors[0];
      expect(err.code).toBe("MANIFEST_INVALID");
      expect(err.message).toMatch(/size/);
      return err;
    };
    const layerErr = await bad({ ...good, layers: [{ ...good.layers[0], size: good.layers[0].size + 1 }] });
    expect(layerErr.message).toContain(good.layers[0].digest);
    await bad({ ...good, config: { ...good.config, size: 1 } });
    expect((await reg(`/v2/${repo}/manifests/bad`)).status).toBe(404);

    const text = JSON.stringify(good);
    expect((await putManifest(repo, "good", text, OCI_MANIFEST)).status).toBe(201);
    const child = { mediaType: OCI_MANIFEST, digest: await sha256(text), size: bytesOf(text).length };
    await bad({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ ...child, size: child.size + 10 }] }, OCI_INDEX);
    const idx = await putManifest(repo, "index", JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [child] }), OCI_INDEX);
    expect(idx.status).toBe(201);
  });
});

describe("a valid push never loses to a concurrent delete of the same digest", () => {
  const ROUNDS = 12;
  const pause = () => new Promise((r) => setTimeout(r, Math.floor(Math.random() * 4)));

  it("blob push (monolithic and chunked) racing a blob DELETE: never 404, and what is linked is readable", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const data = randomBytes(3000 + i, 1000 + i);
      const digest = await pushBlob("race/one", data);
      // Delete it from the only repository that links it while another repository pushes it.
      const upload = await startUpload("race/two");
      const push = (async () => {
        await pause();
        if (i % 2) return reg(`/v2/race/two/blobs/uploads/?digest=${digest}`, { method: "POST", body: data });
        const sep = upload.includes("?") ? "&" : "?";
        return reg(`${upload}${sep}digest=${digest}`, { method: "PUT", body: data });
      })();
      const del = (async () => { await pause(); return reg(`/v2/race/one/blobs/${digest}`, { method: "DELETE" }); })();
      const [p, d] = await Promise.all([push, del]);
      statuses.push(p.status);
      expect(p.status, `round ${i}: ${await p.text()}`).toBe(201);
      expect(d.status).toBe(202);
      const get = await reg(`/v2/race/two/blobs/${digest}`);
      expect(get.status, `round ${i}`).toBe(200);
      expect(new Uint8Array(await get.arrayBuffer())).toEqual(data);
    }
    expect(statuses).toHaveLength(ROUNDS);
  });

  it("manifest PUT racing a manifest DELETE by digest: never 404, and a manifest that is listed is readable", async () => {
    const repo = "race/man";
    for (let i = 0; i < ROUNDS; i++) {
      const body = await imageManifest(repo);
      const digest = await sha256(body);
      expect((await putManifest(repo, digest, body, OCI_MANIFEST)).status).toBe(201);
      const put = (async () => { await pause(); return putManifest(repo, digest, body, OCI_MANIFEST); })();
      const del = (async () => { await pause(); return reg(`/v2/${repo}/manifests/${digest}`, { method: "DELETE" }); })();
      const [p, d] = await Promise.all([put, del]);
      expect(p.status, `round ${i}: ${await p.text()}`).toBe(201);
      expect([202, 404]).toContain(d.status);
      const head = await reg(`/v2/${repo}/manifests/${digest}`, { method: "HEAD" });
      const get = await reg(`/v2/${repo}/manifests/${digest}`);
      expect(get.status, `round ${i}`).toBe(head.status);
      if (get.status === 200) expect(await get.text()).toBe(body);
      else await get.arrayBuffer();
    }
  });
});
