import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ingestContext } from "../../../src/context/ingest";
import { ApiError } from "../../../src/errors";
import { makeTar, r2Keys, rawTarEntry, streamOf } from "./helpers";

const TAR = "application/x-tar";

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(ApiError);
    expect((e as ApiError).status).toBe(400);
    return (e as ApiError).message;
  }
  throw new Error("expected a refusal");
}

describe("context ingest", () => {
  it("indexes files, dirs and symlinks with sha256, applies .dockerignore, keeps the Dockerfile", async () => {
    const tar = await makeTar({
      "Dockerfile": "FROM scratch\n",
      "src/": { type: "dir", mode: 0o750 },
      "src/a.txt": "hello",
      "logs/x.log": "noise",
      "link": { type: "symlink", linkname: "src/a.txt" },
      ".dockerignore": "logs\n*.tmp\n",
      "b.tmp": "TMPDATA",
      "run.sh": { body: "#!/bin/sh\n", mode: 0o755 },
    });
    const c = await ingestContext(env, streamOf(tar), { contentType: TAR });
    expect(c.dockerfile).toBe("FROM scratch\n");
    const byPath = Object.fromEntries(c.index.files.map((f) => [f.path, f]));
    expect(Object.keys(byPath).sort()).toEqual([".dockerignore", "Dockerfile", "link", "run.sh", "src", "src/a.txt"]);
    expect(byPath["src"]).toMatchObject({ type: "dir", mode: 0o750 });
    expect(byPath["src/a.txt"]).toMatchObject({ type: "file", size: 5, uid: 1000, sha256: "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" });
    expect(byPath["link"]).toMatchObject({ type: "symlink", linkTarget: "src/a.txt" });
    expect(byPath["run.sh"].mode).toBe(0o755);
    // ignored file contents are not stored (logs/x.log came before .dockerignore: indexed out)
    const pack = await env.BUCKET.get(`contexts/sha256/${c.packDigest.slice(7)}`);
    const text = await pack!.text();
    expect(text).toContain("hello");
    expect(text).not.toContain("TMPDATA");
    expect(await r2Keys(`contexts/sha256/${c.packDigest.slice(7)}.index/`)).toHaveLength(1);
  });

  it("reads gzip contexts and multipart with a separate dockerfile part", async () => {
    const tgz = await makeTar({ "app/main.txt": "x" }, { gzip: true });
    const boundary = "xyzBOUNDARY";
    const enc = new TextEncoder();
    const head = enc.encode(
      `--${boundary}\r\nContent-Disposition: form-data; name="dockerfile"\r\n\r\nFROM scratch\nCOPY app /app\n\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="context"; filename="c.tgz"\r\nContent-Type: application/gzip\r\n\r\n`,
    );
    const tail = enc.encode(`\r\n--${boundary}--\r\n`);
    const body = new Uint8Array(head.length + tgz.length + tail.length);
    body.set(head);
    body.set(tgz, head.length);
    body.set(tail, head.length + tgz.length);
    const c = await ingestContext(env, streamOf(body), { contentType: `multipart/form-data; boundary=${boundary}` });
    expect(c.dockerfile).toBe("FROM scratch\nCOPY app /app\n");
    expect(c.index.files.map((f) => f.path)).toEqual(["app", "app/main.txt"]);
  });

  it("honours a dockerfile path and follows a symlinked Dockerfile inside the context", async () => {
    const tar = await makeTar({ "docker/Build.df": "FROM scratch\n", "Dockerfile": { type: "symlink", linkname: "docker/Build.df" } });
    expect((await ingestContext(env, streamOf(tar), { contentType: TAR, dockerfilePath: "docker/Build.df" })).dockerfile).toBe("FROM scratch\n");
    expect((await ingestContext(env, streamOf(tar), { contentType: TAR })).dockerfile).toBe("FROM scratch\n");
  });

  const before = async () => (await r2Keys("contexts/")).length;

  it("refuses absolute paths, '..', device nodes, fifos — and stores nothing", async () => {
    const n = await before();
    const df = await makeTar({ Dockerfile: "FROM scratch\n" });
    const strip = df.slice(0, df.length - 1024);
    const cases: [Uint8Array, RegExp][] = [
      [rawTarEntry("/etc/passwd", "0", new Uint8Array(3)), /absolute path/],
      [rawTarEntry("a/../../x", "0"), /'\.\.'/],
      [rawTarEntry("dev/null", "3"), /device node/],
      [rawTarEntry("dev/sda", "4"), /device node/],
      [rawTarEntry("pipe", "6"), /fifo/],
    ];
    for (const [bad, re] of cases) {
      const body = new Uint8Array(strip.length + bad.length);
      body.set(strip);
      body.set(bad, strip.length);
      expect(await refusal(ingestContext(env, streamOf(body), { contentType: TAR }))).toMatch(re);
    }
    expect(await before()).toBe(n);
  });

  it("refuses a missing Dockerfile, one over 1 MiB, a context over the limit, and garbage", async () => {
    const n = await before();
    expect(await refusal(ingestContext(env, streamOf(await makeTar({ "a.txt": "a" })), { contentType: TAR }))).toMatch(/Dockerfile not found.*Dockerfile/);
    expect(await refusal(ingestContext(env, streamOf(await makeTar({ Dockerfile: "x" })), { contentType: TAR, dockerfilePath: "other/Dockerfile" }))).toMatch(/other\/Dockerfile/);
    const big = "#".repeat(1024 * 1024 + 1);
    expect(await refusal(ingestContext(env, streamOf(await makeTar({ Dockerfile: big })), { contentType: TAR }))).toMatch(/larger than 1 MiB/);
    const tar = await makeTar({ Dockerfile: "FROM scratch\n", "big.bin": "y".repeat(200_000) });
    await expect(ingestContext(env, streamOf(tar), { contentType: TAR, maxBytes: 100_000 })).rejects.toMatchObject({ status: 413, message: expect.stringMatching(/larger than the limit of 100000 bytes/) });
    expect(await refusal(ingestContext(env, streamOf(new TextEncoder().encode("hello world".repeat(100))), { contentType: TAR }))).toMatch(/not a valid tar/);
    expect(await before()).toBe(n);
  });

  it("stores a multi-part (> 8 MiB) context once by digest", async () => {
    const big = "z".repeat(9 * 1024 * 1024);
    const tar = await makeTar({ Dockerfile: "FROM scratch\n", "big.txt": big });
    const a = await ingestContext(env, streamOf(tar), { contentType: TAR });
    const b = await ingestContext(env, streamOf(tar), { contentType: TAR });
    expect(a.packDigest).toBe(b.packDigest);
    const ptr = await env.BUCKET.head(`contexts/sha256/${a.packDigest.slice(7)}`);
    const data = await env.BUCKET.head(ptr!.customMetadata!.location);
    expect(data!.size).toBe(big.length + "FROM scratch\n".length);
    expect(await r2Keys("contexts/data/")).toEqual([ptr!.customMetadata!.location]); // the second upload was dropped
    const { readContextRange } = await import("../../../src/storage/contexts");
    const f = a.index.files.find((x) => x.path === "big.txt")!;
    expect(await new Response(await readContextRange(env, a.packDigest, f.offset! + f.size - 3, 3)).text()).toBe("zzz");
  });
});
