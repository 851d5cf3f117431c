// Fast small requests (issue 16): what a manifest or blob read costs in D1 queries and R2 reads, cache
// headers and 304s, and the bound on revocation that the per-isolate credential cache keeps.
import { SELF, env } from "cloudflare:test";
import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import type { Env } from "../../../src/env";
import { registryRoutes } from "../../../src/registry/index";
import { AUTH_CACHE_TTL_MS, credentialCache, publicRepositoryCache } from "../../../src/auth/cache";
import { BASE, OCI_MANIFEST, bytesOf, imageManifest, pushBlob, putManifest, reg, sha256 } from "./helpers";

const testEnv = env as unknown as Env;
let counter = 0;
const uniqueRepo = (p: string) => `fast/${p}-${Date.now().toString(36)}-${(counter++).toString(36)}`;

interface Counts {
  d1: number;
  r2Reads: number;
  sql: string[];
}

/** env with DB and BUCKET wrapped so that every D1 query (a batch counts once) and R2 read is counted. */
function countingEnv(): { env: Env; counts: Counts } {
  const counts: Counts = { d1: 0, r2Reads: 0, sql: [] };
  const realOf = new WeakMap<object, D1PreparedStatement>();
  const wrap = (real: D1PreparedStatement, sql: string): D1PreparedStatement => {
    const query = <T>(f: () => T): T => {
      counts.d1++;
      counts.sql.push(sql);
      return f();
    };
    const w = {
      bind: (...values: unknown[]) => wrap(real.bind(...values), sql),
      first: (col?: string) => query(() => (col === undefined ? real.first() : real.first(col))),
      all: () => query(() => real.all()),
      run: () => query(() => real.run()),
      raw: (opts?: { columnNames?: boolean }) => query(() => real.raw(opts as { columnNames: true })),
    };
    realOf.set(w, real);
    return w as unknown as D1PreparedStatement;
  };
  const db = testEnv.DB;
  const DB = {
    prepare: (sql: string) => wrap(db.prepare(sql), sql),
    batch: (stmts: D1PreparedStatement[]) => {
      counts.d1++;
      counts.sql.push("batch");
      return db.batch(stmts.map((s) => realOf.get(s) ?? s));
    },
    exec: (sql: string) => {
      counts.d1++;
      return db.exec(sql);
    },
    withSession: db.withSession?.bind(db),
    dump: db.dump?.bind(db),
  } as unknown as D1Database;
  const bucket = testEnv.BUCKET;
  const BUCKET = {
    get: (...args: Parameters<R2Bucket["get"]>) => {
      counts.r2Reads++;
      return bucket.get(...args);
    },
    head: (key: string) => {
      counts.r2Reads++;
      return bucket.head(key);
    },
    list: (opts?: R2ListOptions) => {
      counts.r2Reads++;
      return bucket.list(opts);
    },
    put: bucket.put.bind(bucket),
    delete: bucket.delete.bind(bucket),
    createMultipartUpload: bucket.createMultipartUpload.bind(bucket),
    resumeMultipartUpload: bucket.resumeMultipartUpload.bind(bucket),
  } as unknown as R2Bucket;
  return { env: Object.assign({}, testEnv, { DB, BUCKET }), counts };
}

/** The /v2 routes served with a counting env (the same modules, so the same credential cache). */
const app = new Hono<{ Bindings: Env }>();
app.route("/v2", registryRoutes);

async function counted(path: string, init: RequestInit = {}): Promise<{ res: Response; body: Uint8Array; counts: Counts }> {
  const { env: e, counts } = countingEnv();
  const res = await app.fetch(new Request(`${BASE}${path}`, init), e);
  const body = new Uint8Array(await res.arrayBuffer());
  return { res, body, counts };
}

async function createToken(scopes: string[]): Promise<{ id: string; token: string }> {
  const res = await SELF.fetch(`${BASE}/v1/tokens`, {
    method: "POST",
    headers: { authorization: "Bearer kiln-test-admin", "content-type": "application/json" },
    body: JSON.stringify({ name: "fast", scopes }),
  });
  if (res.status !== 201) throw new Error(`create token: ${res.status} ${await res.text()}`);
  return res.json();
}

async function setPublic(repo: string, value: boolean): Promise<void> {
  const res = await SELF.fetch(`${BASE}/v1/repositories/${repo}`, {
    method: "PUT",
    headers: { authorization: "Bearer kiln-test-admin", "content-type": "application/json" },
    body: JSON.stringify({ public: value }),
  });
  if (res.status !== 200) throw new Error(`set public: ${res.status} ${await res.text()}`);
}

async function registryJwt(basicPassword: string, repo: string): Promise<string> {
  const res = await SELF.fetch(`${BASE}/v2/token?service=kiln.test&scope=repository:${repo}:pull`, {
    headers: { authorization: `Basic ${btoa(`u:${basicPassword}`)}` },
  });
  const body = await res.json() as { token: string };
  if (res.status !== 200 || !body.token) throw new Error(`token: ${res.status}`);
  return body.token;
}

/** A manifest whose exact bytes matter: odd spacing, non-ASCII text, a trailing newline. */
async function pushOddManifest(repo: string, padding = 0): Promise<{ bytes: Uint8Array; digest: string }> {
  const text = (await imageManifest(repo, {
    extra: { annotations: { "org.example.note": "grüße, 日本, \u{1F600}", pad: "x".repeat(padding) } },
  })).replace(/\n/g, "\r\n") + "\n";
  const bytes = bytesOf(text);
  const res = await putManifest(repo, "v1", bytes, OCI_MANIFEST);
  expect(res.status).toBe(201);
  return { bytes, digest: await sha256(bytes) };
}

describe("manifest reads cost at most one D1 query and one R2 read", () => {
  it("GET by tag with a registry JWT: one D1 query and no R2 read once the token is known; bytes exact", async () => {
    const repo = uniqueRepo("tag");
    const { bytes, digest } = await pushOddManifest(repo);
    const { token } = await createToken([`repository:${repo}:pull`]);
    const jwt = await registryJwt(token, repo);
    const auth = { authorization: `Bearer ${jwt}` };

    const cold = await counted(`/v2/${repo}/manifests/v1`, { headers: auth });
    expect(cold.res.status).toBe(200);
    // First sight of the token: its liveness lookup, then the manifest.
    expect(cold.counts.d1).toBeLessThanOrEqual(2);

    const warm = await counted(`/v2/${repo}/manifests/v1`, { headers: auth });
    expect(warm.res.status).toBe(200);
    expect(warm.counts.d1).toBe(1);
    expect(warm.counts.r2Reads).toBe(0);
    expect(warm.body).toEqual(bytes);
    expect(warm.res.headers.get("docker-content-digest")).toBe(digest);
    expect(warm.res.headers.get("content-length")).toBe(String(bytes.byteLength));
    expect(warm.res.headers.get("etag")).toBe(`"${digest}"`);
    expect(warm.res.headers.get("cache-control")).toBe("no-cache");
  });

  it("GET and HEAD by digest with an API token: one D1 query once the token is known", async () => {
    const repo = uniqueRepo("digest");
    const { bytes, digest } = await pushOddManifest(repo);
    const { token } = await createToken([`repository:${repo}:pull`]);
    const auth = { authorization: `Basic ${btoa(`u:${token}`)}` };
    expect((await counted(`/v2/${repo}/manifests/${digest}`, { headers: auth })).res.status).toBe(200);

    const get = await counted(`/v2/${repo}/manifests/${digest}`, { headers: auth });
    expect(get.res.status).toBe(200);
    expect(get.counts).toMatchObject({ d1: 1, r2Reads: 0 });
    expect(get.body).toEqual(bytes);
    expect(get.res.headers.get("cache-control")).toBe("private, max-age=31536000, immutable");

    const head = await counted(`/v2/${repo}/manifests/${digest}`, { method: "HEAD", headers: auth });
    expect(head.res.status).toBe(200);
    expect(head.counts).toMatchObject({ d1: 1, r2Reads: 0 });
    expect(head.res.headers.get("content-length")).toBe(String(bytes.byteLength));
  });

  it("anonymous GET of a public repository: one D1 query once the repository is known to be public", async () => {
    const repo = uniqueRepo("public");
    const { bytes } = await pushOddManifest(repo);
    await setPublic(repo, true);
    expect((await counted(`/v2/${repo}/manifests/v1`)).res.status).toBe(200);
    const warm = await counted(`/v2/${repo}/manifests/v1`);
    expect(warm.res.status).toBe(200);
    expect(warm.counts).toMatchObject({ d1: 1, r2Reads: 0 });
    expect(warm.body).toEqual(bytes);
  });

  it("a manifest too large for its row: one D1 query and one R2 read, bytes exact", async () => {
    const repo = uniqueRepo("large");
    const { bytes, digest } = await pushOddManifest(repo, 70 * 1024);
    const row = await testEnv.DB.prepare("SELECT body FROM manifests WHERE repo = ? AND digest = ?").bind(repo, digest).first<{ body: string | null }>();
    expect(row).toEqual({ body: null });
    const { token } = await createToken([`repository:${repo}:pull`]);
    const auth = { authorization: `Basic ${btoa(`u:${token}`)}` };
    await counted(`/v2/${repo}/manifests/v1`, { headers: auth });
    const warm = await counted(`/v2/${repo}/manifests/v1`, { headers: auth });
    expect(warm.res.status).toBe(200);
    expect(warm.counts).toMatchObject({ d1: 1, r2Reads: 1 });
    expect(warm.body).toEqual(bytes);
  });

  it("a row whose body does not hash to its digest is not served: the bytes come from R2", async () => {
    const repo = uniqueRepo("tampered");
    const { bytes, digest } = await pushOddManifest(repo);
    await testEnv.DB.prepare("UPDATE manifests SET body = ? WHERE repo = ? AND digest = ?")
      .bind(new TextDecoder().decode(bytes).replace("grüße", "grusse"), repo, digest).run();
    const res = await reg(`/v2/${repo}/manifests/v1`);
    expect(res.status).toBe(200);
    expect(new Uint8Array(await res.arrayBuffer())).toEqual(bytes);
  });
});

describe("cache headers and If-None-Match", () => {
  it("a manifest answers 304 by digest and by tag, without reading R2; another ETag gets the bytes", async () => {
    const repo = uniqueRepo("etag");
    const { digest } = await pushOddManifest(repo, 70 * 1024); // in R2 only: a 304 must not read it
    const byDigest = await counted(`/v2/${repo}/manifests/${digest}`, { headers: { authorization: "Bearer kiln-test-admin", "if-none-match": `"${digest}"` } });
    expect(byDigest.res.status).toBe(304);
    expect(byDigest.body.byteLength).toBe(0);
    expect(byDigest.counts.r2Reads).toBe(0);
    expect(byDigest.res.headers.get("etag")).toBe(`"${digest}"`);
    expect(byDigest.res.headers.get("cache-control")).toBe("private, max-age=31536000, immutable");

    const byTag = await reg(`/v2/${repo}/manifests/v1`, { headers: { "if-none-match": `W/"sha256:0", "${digest}"` } });
    expect(byTag.status).toBe(304);
    expect(byTag.headers.get("cache-control")).toBe("no-cache");
    expect(byTag.headers.get("docker-content-digest")).toBe(digest);

    const other = await reg(`/v2/${repo}/manifests/v1`, { headers: { "if-none-match": `"sha256:${"0".repeat(64)}"` } });
    expect(other.status).toBe(200);
    expect((await other.arrayBuffer()).byteLength).toBeGreaterThan(70 * 1024);
  });

  it("a blob answers 304 only after the gate and the repository's link", async () => {
    const repo = uniqueRepo("blob");
    const elsewhere = uniqueRepo("blob-other");
    const digest = await pushBlob(repo, `blob-${Math.random()}`);
    await pushBlob(elsewhere, "another");
    const inm = { "if-none-match": `"${digest}"` };

    const ok = await reg(`/v2/${repo}/blobs/${digest}`, { headers: inm });
    expect(ok.status).toBe(304);
    expect(ok.headers.get("cache-control")).toBe("private, max-age=31536000, immutable");
    expect(ok.headers.get("etag")).toBe(`"${digest}"`);
    const full = await reg(`/v2/${repo}/blobs/${digest}`);
    expect(full.status).toBe(200);
    expect(full.headers.get("cache-control")).toBe("private, max-age=31536000, immutable");
    await full.arrayBuffer();

    expect((await reg(`/v2/${elsewhere}/blobs/${digest}`, { headers: inm })).status).toBe(404);
    expect((await SELF.fetch(`${BASE}/v2/${repo}/blobs/${digest}`, { headers: inm })).status).toBe(401);
  });
});

describe("revocation with cached credentials", () => {
  it("revoking through the API refuses the token and its JWTs at once in this isolate", async () => {
    const repo = uniqueRepo("revoke");
    await pushOddManifest(repo);
    const { id, token } = await createToken([`repository:${repo}:pull`]);
    const jwt = await registryJwt(token, repo);
    const basic = { authorization: `Basic ${btoa(`u:${token}`)}` };
    const bearer = { authorization: `Bearer ${jwt}` };
    expect((await counted(`/v2/${repo}/manifests/v1`, { headers: basic })).res.status).toBe(200);
    expect((await counted(`/v2/${repo}/manifests/v1`, { headers: bearer })).res.status).toBe(200);

    const del = await SELF.fetch(`${BASE}/v1/tokens/${id}`, { method: "DELETE", headers: { authorization: "Bearer kiln-test-admin" } });
    expect(del.status).toBe(204);
    expect((await counted(`/v2/${repo}/manifests/v1`, { headers: basic })).res.status).toBe(401);
    expect((await counted(`/v2/${repo}/manifests/v1`, { headers: bearer })).res.status).toBe(401);
  });

  it("a token revoked elsewhere (another isolate) is refused once the cache TTL has passed", async () => {
    const repo = uniqueRepo("ttl");
    await pushOddManifest(repo);
    const { id, token } = await createToken([`repository:${repo}:pull`]);
    const jwt = await registryJwt(token, repo);
    const basic = { authorization: `Basic ${btoa(`u:${token}`)}` };
    const bearer = { authorization: `Bearer ${jwt}` };
    expect((await counted(`/v2/${repo}/manifests/v1`, { headers: basic })).res.status).toBe(200);
    expect((await counted(`/v2/${repo}/manifests/v1`, { headers: bearer })).res.status).toBe(200);

    // As another isolate's DELETE /v1/tokens would: the row only, this isolate's cache untouched.
    await testEnv.DB.prepare("UPDATE tokens SET revoked_at = ? WHERE id = ?").bind(Date.now(), id).run();
    const stale = await counted(`/v2/${repo}/manifests/v1`, { headers: basic });
    expect(stale.res.status).toBe(200); // served from the cache: no token lookup
    expect(stale.counts.d1).toBe(1);

    const start = credentialCache.clock();
    credentialCache.clock = () => start + AUTH_CACHE_TTL_MS;
    try {
      expect((await counted(`/v2/${repo}/manifests/v1`, { headers: basic })).res.status).toBe(401);
      expect((await counted(`/v2/${repo}/manifests/v1`, { headers: bearer })).res.status).toBe(401);
    } finally {
      credentialCache.clock = () => Date.now();
    }
  });

  it("a repository made private stops anonymous pulls at once here, and within the TTL elsewhere", async () => {
    const repo = uniqueRepo("private");
    await pushOddManifest(repo);
    await setPublic(repo, true);
    expect((await counted(`/v2/${repo}/manifests/v1`)).res.status).toBe(200);
    await setPublic(repo, false);
    expect((await counted(`/v2/${repo}/manifests/v1`)).res.status).toBe(401);

    await setPublic(repo, true);
    expect((await counted(`/v2/${repo}/manifests/v1`)).res.status).toBe(200);
    // As another isolate's PUT /v1/repositories would: the row only.
    await testEnv.DB.prepare("UPDATE repositories SET public = 0 WHERE name = ?").bind(repo).run();
    expect((await counted(`/v2/${repo}/manifests/v1`)).res.status).toBe(200); // remembered as public
    const start = publicRepositoryCache.clock();
    publicRepositoryCache.clock = () => start + AUTH_CACHE_TTL_MS;
    try {
      expect((await counted(`/v2/${repo}/manifests/v1`)).res.status).toBe(401);
    } finally {
      publicRepositoryCache.clock = () => Date.now();
    }
  });
});
