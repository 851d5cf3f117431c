// Cache scopes end to end (issue 17, findings 2 and 3): a real kiln server, a real runner under runc,
// two tenants A (`repository:a/*:pull,push`) and B (`repository:b/*:pull,push`) submitting the same
// Dockerfiles. A RUN result (secret value included) never serves the other tenant, in either order,
// and a `--mount=type=cache` directory of one tenant is invisible to the other.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { have, startKiln, type KilnServer } from "./server";
import { BUSYBOX, contextDir, createToken, tarOf, waitForBuild, type BuildResult } from "./helpers";
import { startRunner, wipeRunnerDir, type RunnerProcess } from "./runner-helpers";
import { collect, readTar } from "../../src/oci/tar";

const canRun = process.getuid?.() === 0 && have("runc") && existsSync(BUSYBOX);
if (!canRun) console.warn("tenancy-cache tests skipped: need root, runc and busybox-static");

const BASE = ["FROM scratch", "COPY busybox /bin/busybox", 'RUN ["/bin/busybox","--install","-s","/bin"]'];

describe.skipIf(!canRun)("cache scopes: RUN results and cache mounts never cross namespaces", () => {
  let kiln: KilnServer;
  let runner: RunnerProcess;
  let a: string;
  let b: string;

  /** Submits `dockerfile` (over the busybox base) with `secrets` as the multipart `secrets` part and waits for it. */
  async function buildWith(token: string, tag: string, dockerfile: string[], secrets: Record<string, string> = {}): Promise<BuildResult> {
    const dir = contextDir({ Dockerfile: [...BASE, ...dockerfile, ""].join("\n"), busybox: readFileSync(BUSYBOX) });
    execFileSync("chmod", ["0755", path.join(dir, "busybox")]);
    const boundary = `kiln-${Date.now()}-${Math.random().toString(36).slice(2)}`;
    const body = Buffer.concat([
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="secrets"\r\nContent-Type: application/json\r\n\r\n${JSON.stringify(secrets)}\r\n`),
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="context"; filename="context.tar"\r\nContent-Type: application/x-tar\r\n\r\n`),
      await tarOf(dir),
      Buffer.from(`\r\n--${boundary}--\r\n`),
    ]);
    rmSync(dir, { recursive: true, force: true });
    const res = await fetch(`${kiln.url}/v1/builds?tag=${encodeURIComponent(tag)}`, {
      method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": `multipart/form-data; boundary=${boundary}` }, body,
    });
    const started = (await res.json()) as { id: string };
    expect(res.status, JSON.stringify(started)).toBe(202);
    const built = await waitForBuild(kiln.url, token, started.id);
    expect(built.status, JSON.stringify(built.error) + runner.output().slice(-2000)).toBe("succeeded");
    return built;
  }

  /** The content of `file` (no leading slash) in the image `repo:tag`, read through /v2 with `token`. */
  async function fileInImage(token: string, repo: string, tag: string, file: string): Promise<string | null> {
    const auth = { authorization: `Basic ${Buffer.from(`kiln:${token}`).toString("base64")}` };
    const m = await fetch(`${kiln.url}/v2/${repo}/manifests/${tag}`, { headers: { ...auth, accept: "application/vnd.oci.image.manifest.v1+json" } });
    expect(m.status, await m.clone().text()).toBe(200);
    const manifest = (await m.json()) as { layers: { digest: string }[] };
    // the top-most layer that has the file wins
    for (const layer of [...manifest.layers].reverse()) {
      const blob = await fetch(`${kiln.url}/v2/${repo}/blobs/${layer.digest}`, { headers: auth });
      expect(blob.status).toBe(200);
      const tar = new Blob([await blob.arrayBuffer()]).stream().pipeThrough(new DecompressionStream("gzip"));
      for await (const e of readTar(tar)) {
        if (e.header.path !== file) continue;
        return new TextDecoder().decode(await collect(e.body));
      }
    }
    return null;
  }

  beforeAll(async () => {
    kiln = await startKiln();
    a = (await createToken(kiln.url, ["repository:a/*:pull,push"], "tenant-a")).token;
    b = (await createToken(kiln.url, ["repository:b/*:pull,push"], "tenant-b")).token;
    runner = await startRunner(kiln.url, { runnerId: "tenancy-cache" });
  });

  afterAll(async () => {
    if (runner) { await runner.stop(); await wipeRunnerDir(runner.workDir); }
    await kiln?.stop(true);
  });

  const SECRET_RUN = "RUN --mount=type=secret,id=tok cat /run/secrets/tok > /f";

  it("(2a) A's build of B's Dockerfile gets A's own secret in its layer, not B's cached one", async () => {
    const fromB = await buildWith(b, "b/app:1", [SECRET_RUN], { tok: "b-secret-7d41" });
    expect(fromB.steps.map((s) => s.status)).toEqual(["done", "done", "done", "done"]);
    expect(await fileInImage(b, "b/app", "1", "f")).toBe("b-secret-7d41");

    const fromA = await buildWith(a, "a/app:1", [SECRET_RUN], { tok: "a-secret-93c0" });
    // nothing of B's build serves A: the RUN with the secret ran again for A
    expect(fromA.steps.map((s) => s.status)).toEqual(["done", "done", "done", "done"]);
    expect(fromA.steps[3].cacheKey).not.toBe(fromB.steps[3].cacheKey);
    expect(await fileInImage(a, "a/app", "1", "f")).toBe("a-secret-93c0");

    // inside one namespace the cache still works
    const again = await buildWith(a, "a/app:2", [SECRET_RUN], { tok: "a-secret-93c0" });
    expect(again.steps.map((s) => s.status)).toEqual(["cached", "cached", "cached", "cached"]);
    expect(await fileInImage(a, "a/app", "2", "f")).toBe("a-secret-93c0");
  });

  it("(2b) A cannot poison B: A builds first with a hostile value, B's later build has B's value", async () => {
    const step = "RUN --mount=type=secret,id=tok cat /run/secrets/tok > /poison";
    const hostile = await buildWith(a, "a/poison:1", [step], { tok: "hostile-from-a" });
    expect(await fileInImage(a, "a/poison", "1", "poison")).toBe("hostile-from-a");
    const victim = await buildWith(b, "b/app:2", [step], { tok: "b-own-value" });
    expect(victim.steps[3].status).toBe("done");
    expect(await fileInImage(b, "b/app", "2", "poison")).toBe("b-own-value");
  });

  it("(3) a cache mount of A is not B's: B sees no marker of A and its writes do not reach A", async () => {
    const write = "RUN --mount=type=cache,id=tool,target=/c echo a-marker > /c/marker";
    const read = "RUN --mount=type=cache,id=tool,target=/c (cat /c/marker 2>/dev/null || echo none) > /seen; echo b-was-here > /c/marker";
    await buildWith(a, "a/cache:1", [write]);
    await buildWith(b, "b/cache:1", [read]);
    expect(await fileInImage(b, "b/cache", "1", "seen")).toBe("none\n");
    // A's next build (another step, same cache id) still sees A's marker, untouched by B
    const readA = "RUN --mount=type=cache,id=tool,target=/c cat /c/marker > /seen-a";
    await buildWith(a, "a/cache:2", [readA]);
    expect(await fileInImage(a, "a/cache", "2", "seen-a")).toBe("a-marker\n");
    // and B's own cache mount kept what B wrote
    await buildWith(b, "b/cache:2", ["RUN --mount=type=cache,id=tool,target=/c cat /c/marker > /seen-b"]);
    expect(await fileInImage(b, "b/cache", "2", "seen-b")).toBe("b-was-here\n");
  });
});
