// Content-addressed contexts (issue 14): the index names contents by sha256, the scope's missing ones
// are uploaded in batches (each a pack), the build reads files spread over several packs (pieces too),
// and contents never cross scopes: a token of namespace B naming A's sha256 must upload the bytes itself.
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ADMIN, layerEntries, makeTar, waitBuild } from "./helpers";
import { createToken } from "../auth/helpers";
import { collect } from "../gc/helpers";
import { env } from "cloudflare:test";

const BASE = "http://kiln.test";
const enc = new TextEncoder();

async function sha(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return `sha256:${[...d].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

const auth = (token: string) => ({ authorization: `Bearer ${token}` });

async function missing(token: string, tag: string, digests: string[]): Promise<string[]> {
  const res = await SELF.fetch(`${BASE}/v1/contexts/missing?tag=${tag}`, { method: "POST", headers: { ...auth(token), "content-type": "application/json" }, body: JSON.stringify({ digests }) });
  expect(res.status, await res.clone().text()).toBe(200);
  return ((await res.json()) as { missing: string[] }).missing;
}

async function upload(token: string, tag: string, entries: Record<string, Uint8Array>): Promise<Response> {
  return SELF.fetch(`${BASE}/v1/contexts/contents?tag=${tag}`, { method: "POST", headers: { ...auth(token), "content-type": "application/x-tar" }, body: await makeTar(entries) });
}

async function buildFromIndex(token: string, tag: string, files: unknown[], dockerfile: string): Promise<Response> {
  return SELF.fetch(`${BASE}/v1/builds?tag=${tag}`, { method: "POST", headers: { ...auth(token), "content-type": "application/vnd.kiln.context-index+json" }, body: JSON.stringify({ files, dockerfile }) });
}

describe("content-addressed context upload", () => {
  it("uploads only missing contents, builds from the index, and reads files spread over packs and pieces", async () => {
    const a = enc.encode("alpha contents\n");
    const b = enc.encode("bravo contents\n");
    const big = new Uint8Array(300 * 1024).map((_, i) => (i * 7) % 251);
    const [da, db, dbig] = await Promise.all([sha(a), sha(b), sha(big)]);
    const tag = "ctxidx/app:1";
    expect((await missing("kiln-test-admin", tag, [da, db, dbig])).sort()).toEqual([da, db, dbig].sort());
    // two batches (two packs); the large file in two pieces across them
    const first = await upload("kiln-test-admin", tag, { [da.slice(7)]: a, [`${dbig.slice(7)}.0.${big.length}`]: big.subarray(0, 100_000) });
    expect(first.status).toBe(201);
    expect(await missing("kiln-test-admin", tag, [da, db, dbig])).toEqual(expect.arrayContaining([db, dbig]));
    const second = await upload("kiln-test-admin", tag, { [db.slice(7)]: b, [`${dbig.slice(7)}.100000.${big.length}`]: big.subarray(100_000) });
    expect(second.status).toBe(201);
    expect(await missing("kiln-test-admin", tag, [da, db, dbig])).toEqual([]);

    const files = [
      { path: "src", type: "dir", mode: 0o755 },
      { path: "src/a.txt", type: "file", mode: 0o644, size: a.length, sha256: da },
      { path: "src/b.txt", type: "file", mode: 0o600, size: b.length, sha256: db },
      { path: "src/again.txt", type: "file", mode: 0o644, size: a.length, sha256: da },
      { path: "big.bin", type: "file", mode: 0o644, size: big.length, sha256: dbig },
      { path: "link", type: "symlink", mode: 0o777, linkTarget: "src/a.txt" },
    ];
    const res = await buildFromIndex("kiln-test-admin", tag, files, "FROM scratch\nCOPY src /src/\nCOPY big.bin link /\n");
    expect(res.status, await res.clone().text()).toBe(202);
    const built = await waitBuild(((await res.json()) as { id: string }).id);
    expect(built.status, JSON.stringify(built.error)).toBe("succeeded");
    const srcLayer = await layerEntries("ctxidx/app", built.steps[1].layer!);
    expect(srcLayer["src/a.txt"].body).toBe("alpha contents\n");
    expect(srcLayer["src/again.txt"].body).toBe("alpha contents\n");
    expect(srcLayer["src/b.txt"]).toMatchObject({ body: "bravo contents\n", mode: 0o600 });
    const bigLayer = await layerEntries("ctxidx/app", built.steps[2].layer!);
    expect(bigLayer["big.bin"].body).toBe(new TextDecoder().decode(big));

    // the same context built from a tar gives the same layers (same cache keys, same bytes)
    const tarRes = await SELF.fetch(`${BASE}/v1/builds?tag=ctxidx/tar:1&no-cache=1`, {
      method: "POST", headers: { ...ADMIN, "content-type": "application/x-tar" },
      body: await makeTar({ Dockerfile: "FROM scratch\nCOPY src /src/\nCOPY big.bin link /\n", "src/a.txt": a, "src/b.txt": { body: b, mode: 0o600 }, "src/again.txt": a, "big.bin": big, link: { type: "symlink", linkname: "src/a.txt" } }),
    });
    const fromTar = await waitBuild(((await tarRes.json()) as { id: string }).id);
    expect(fromTar.steps.map((s) => s.layer)).toEqual(built.steps.map((s) => s.layer));
  });

  it("refuses contents whose bytes do not hash to their name, and an index naming contents never uploaded", async () => {
    const wrong = await upload("kiln-test-admin", "ctxidx/bad:1", { ["0".repeat(64)]: enc.encode("not that") });
    expect(wrong.status).toBe(400);
    expect(((await wrong.json()) as { error: { message: string } }).error.message).toMatch(/hash to sha256:[0-9a-f]{64}, not to their name/);
    expect(await missing("kiln-test-admin", "ctxidx/bad:1", [`sha256:${"0".repeat(64)}`])).toHaveLength(1);
    const res = await buildFromIndex("kiln-test-admin", "ctxidx/bad:1", [{ path: "x", type: "file", mode: 0o644, size: 8, sha256: `sha256:${"0".repeat(64)}` }], "FROM scratch\nCOPY x /\n");
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/1 file content was not uploaded to this build's scope \(ctxidx\)/);
  });

  it("never shares contents across scopes: B naming A's sha256 gets no bytes of A and must upload them itself", async () => {
    const tokenA = (await createToken(["repository:ctxa/**:pull,push"], "ctx-a")).token;
    const tokenB = (await createToken(["repository:ctxb/**:pull,push"], "ctx-b")).token;
    const secret = enc.encode(`A's private file ${crypto.randomUUID()}\n`);
    const ds = await sha(secret);
    expect((await upload(tokenA, "ctxa/app:1", { [ds.slice(7)]: secret })).status).toBe(201);
    expect(await missing(tokenA, "ctxa/app:1", [ds])).toEqual([]);

    // B learns nothing: the content is missing in B's scope …
    expect(await missing(tokenB, "ctxb/app:1", [ds])).toEqual([ds]);
    // … and an index claiming it is refused instead of building from A's bytes
    const files = [{ path: "stolen.txt", type: "file", mode: 0o644, size: secret.length, sha256: ds }];
    const steal = await buildFromIndex(tokenB, "ctxb/app:1", files, "FROM scratch\nCOPY stolen.txt /\n");
    expect(steal.status).toBe(400);
    expect(((await steal.json()) as { error: { message: string } }).error.message).toMatch(/not uploaded to this build's scope \(ctxb\)/);
    // B may not upload into A's scope either
    const intoA = await upload(tokenB, "ctxa/app:1", { [ds.slice(7)]: secret });
    expect(intoA.status).toBe(403);

    // once B uploads the bytes itself, its build works from its own copy
    expect((await upload(tokenB, "ctxb/app:1", { [ds.slice(7)]: secret })).status).toBe(201);
    const ok = await buildFromIndex(tokenB, "ctxb/app:1", files, "FROM scratch\nCOPY stolen.txt /\n");
    expect(ok.status, await ok.clone().text()).toBe(202);
    const built = await waitBuild(((await ok.json()) as { id: string }).id);
    expect(built.status).toBe("succeeded");
  });

  it("a collection keeps the packs of uploaded contents; contents unused past the cache's age are forgotten with their pack", async () => {
    const c = enc.encode("kept by the collector\n");
    const dc = await sha(c);
    const tag = "ctxgc/app:1";
    expect((await upload("kiln-test-admin", tag, { [dc.slice(7)]: c })).status).toBe(201);
    const row = await env.DB.prepare("SELECT parts FROM context_contents WHERE sha256 = ?").bind(dc).first<{ parts: string }>();
    const pack = (JSON.parse(row!.parts) as { pack: string }[])[0].pack;
    await collect("graceSeconds=0");
    expect(await env.BUCKET.head(`contexts/sha256/${pack.slice(7)}`)).not.toBeNull();
    expect(await missing("kiln-test-admin", tag, [dc])).toEqual([]);
    const res = await buildFromIndex("kiln-test-admin", tag, [{ path: "c.txt", type: "file", mode: 0o644, size: c.length, sha256: dc }], "FROM scratch\nCOPY c.txt /\n");
    expect(res.status, await res.clone().text()).toBe(202);
    const built = await waitBuild(((await res.json()) as { id: string }).id);
    expect(built.status, JSON.stringify(built.error)).toBe("succeeded");
    // Unused for longer than KILN_CACHE_MAX_AGE_DAYS (30 by default): forgotten, and the pack goes.
    await env.DB.prepare("UPDATE context_contents SET last_used_at = ? WHERE sha256 = ?").bind(Date.now() - 31 * 24 * 3600 * 1000, dc).run();
    await collect("graceSeconds=0");
    expect(await missing("kiln-test-admin", tag, [dc])).toEqual([dc]);
    expect(await env.BUCKET.head(`contexts/sha256/${pack.slice(7)}`)).toBeNull();
  });
});
