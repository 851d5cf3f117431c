// Cache scopes (issue 17, findings 2 and 3; DESIGN.md "Cache keys", "Tenancy and trust"): a build
// finds only cache entries of its own scope (the namespace it pushes into), its RUN jobs carry that
// scope for their cache mounts, and KILN_SHARED_WORKER_CACHE shares Worker-computed steps only.
import { SELF, env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { ClaimedJob } from "../../../src/protocol/jobs";
import type { BuildSpec, ImageState } from "../../../src/builder/model";
import { executeStep, finishRun, type StepContext } from "../../../src/builder/steps";
import { planDockerfile } from "../../../src/plan/graph";
import { ingestContext } from "../../../src/context/ingest";
import { ADMIN, makeTar, streamOf, waitBuild, type BuildResult } from "./helpers";

const BASE = "http://kiln.test";
let seq = 0;
/** Each test runs on its own architecture so it claims only its own builds' jobs. */
const arch = () => `cs${Date.now().toString(36)}${seq++}`;

const DOCKERFILE = [
  "FROM scratch",
  "COPY f /f",
  "WORKDIR /w",
  "RUN --mount=type=secret,id=tok --mount=type=cache,target=/c cat /run/secrets/tok > /f",
  "ENV AFTER=1",
  "",
].join("\n");

/** POST /v1/builds as multipart with a `secrets` part (as `kiln build --secret` sends it). */
async function submit(tag: string, platform: string, secret: string): Promise<string> {
  const boundary = `kiln-${crypto.randomUUID()}`;
  const enc = new TextEncoder();
  const tar = await makeTar({ Dockerfile: DOCKERFILE, f: "context file\n" });
  const body = new Uint8Array(await new Blob([
    enc.encode(`--${boundary}\r\nContent-Disposition: form-data; name="secrets"\r\nContent-Type: application/json\r\n\r\n${JSON.stringify({ tok: secret })}\r\n`),
    enc.encode(`--${boundary}\r\nContent-Disposition: form-data; name="context"; filename="context.tar"\r\nContent-Type: application/x-tar\r\n\r\n`),
    tar,
    enc.encode(`\r\n--${boundary}--\r\n`),
  ]).arrayBuffer());
  const res = await SELF.fetch(`${BASE}/v1/builds?tag=${encodeURIComponent(tag)}&platform=${encodeURIComponent(platform)}`, {
    method: "POST", headers: { ...ADMIN, "content-type": `multipart/form-data; boundary=${boundary}` }, body,
  });
  const started = (await res.json()) as { id: string };
  expect(res.status, JSON.stringify(started)).toBe(202);
  return started.id;
}

async function post(path: string, body: unknown): Promise<Response> {
  return await SELF.fetch(`${BASE}${path}`, { method: "POST", headers: { ...ADMIN, "content-type": "application/json" }, body: JSON.stringify(body) });
}

/** Claims the next job for `architecture` (as a runner would), waiting up to a few seconds. */
async function claim(architecture: string, waitSeconds = 5): Promise<ClaimedJob | null> {
  const res = await post("/v1/runners/claim", { runnerId: `scope-${architecture}`, platforms: [`linux/${architecture}`], waitSeconds });
  if (res.status === 204) return null;
  expect(res.status, await res.clone().text()).toBe(200);
  return (await res.json()) as ClaimedJob;
}

/** Completes a claimed job with a step that changed no file (no layer to upload). */
async function complete(c: ClaimedJob): Promise<void> {
  const res = await post(`/v1/jobs/${c.job.jobId}/complete`, { leaseId: c.leaseId, result: { ok: true, layer: null } });
  expect(res.status, await res.text()).toBe(200);
}

const statuses = (b: BuildResult) => b.steps.map((s) => s.status);
const keys = (b: BuildResult) => b.steps.map((s) => s.cacheKey);

describe("cache scopes through the API", () => {
  it("two namespaces' identical builds share no cache entry; each RUN job carries its own scope and secret", async () => {
    const a = arch();
    // namespace ta builds first
    const first = await submit("ta/app:1", `linux/${a}`, "value-of-a");
    const jobA = await claim(a);
    expect(jobA?.job.buildId).toBe(first);
    expect(jobA!.job.cacheScope).toBe("ta");
    expect(jobA!.job.secrets).toEqual({ tok: "value-of-a" });
    await complete(jobA!);
    const builtA = await waitBuild(first);
    expect(builtA.status, JSON.stringify(builtA.error)).toBe("succeeded");

    // namespace tb, the same Dockerfile and context: nothing is cached, its RUN goes to a runner
    const second = await submit("tb/app:1", `linux/${a}`, "value-of-b");
    const jobB = await claim(a);
    expect(jobB?.job.buildId).toBe(second);
    expect(jobB!.job.cacheScope).toBe("tb");
    expect(jobB!.job.secrets).toEqual({ tok: "value-of-b" });
    await complete(jobB!);
    const builtB = await waitBuild(second);
    expect(builtB.status, JSON.stringify(builtB.error)).toBe("succeeded");
    expect(statuses(builtB)).toEqual(["done", "done", "done", "done", "done"]);
    for (const [i, k] of keys(builtB).entries()) expect(k, `step ${i + 1}`).not.toBe(keys(builtA)[i]);

    // ta again: everything cached with the same keys, and no job is queued
    const third = await submit("ta/app:2", `linux/${a}`, "value-of-a");
    const builtA2 = await waitBuild(third);
    expect(builtA2.status, JSON.stringify(builtA2.error)).toBe("succeeded");
    expect(statuses(builtA2)).toEqual(["cached", "cached", "cached", "cached", "cached"]);
    expect(keys(builtA2)).toEqual(keys(builtA));
    expect(await claim(a, 0)).toBeNull();
  });

  it("the children of a multi-platform build carry the build's scope to their RUN jobs", async () => {
    const [a, b] = [arch(), arch()];
    const id = await submit("tm/multi:1", `linux/${a},linux/${b}`, "value-of-m");
    const jobs = [await claim(a), await claim(b)];
    for (const j of jobs) {
      expect(j, "a job for each platform").not.toBeNull();
      expect(j!.job.cacheScope).toBe("tm");
      await complete(j!);
    }
    const built = await waitBuild(id);
    expect(built.status, JSON.stringify(built.error)).toBe("succeeded");
  });
});

/** The steps of DOCKERFILE, executed as the coordinator does, with RUN results as a runner would report them. */
async function runSteps(e: typeof env, scope: string): Promise<{ statuses: string[]; keys: string[]; jobScopes: string[] }> {
  const platform = { os: "linux", architecture: "amd64" };
  const ingested = await ingestContext(e, streamOf(await makeTar({ Dockerfile: DOCKERFILE, f: "context file\n" })), { contentType: "application/x-tar" });
  const { graph } = await planDockerfile(ingested.dockerfile, { buildArgs: {}, platform: "linux/amd64" });
  const spec: BuildSpec = {
    id: `scope-direct-${crypto.randomUUID()}`, origin: BASE, dockerfile: ingested.dockerfile, dockerfilePath: "Dockerfile",
    context: { pack: ingested.packDigest, index: ingested.indexDigest }, tags: [{ repository: `${scope}/app`, tag: "1" }],
    buildArgs: {}, noCache: false, platform, sourceDateEpoch: 0, secrets: { tok: `secret-${scope}` },
    principal: { kind: "admin" }, scope, plan: graph, createdAt: Date.now(),
  };
  const states = new Map<number, ImageState>();
  const ctx: StepContext = {
    env: e, spec, graph,
    stateOf: (i) => states.get(i)!,
    contextIndex: async () => ingested.index,
    log: async () => {},
  };
  const out = { statuses: [] as string[], keys: [] as string[], jobScopes: [] as string[] };
  for (const step of graph.steps) {
    const o = await executeStep(ctx, step);
    if (o.status === "run") {
      out.jobScopes.push(o.job.cacheScope);
      states.set(step.index, await finishRun(ctx, ctx.stateOf(step.deps[0]), o.key, o.createdBy, null));
      out.statuses.push("run");
      out.keys.push(o.key);
    } else {
      states.set(step.index, o.state);
      out.statuses.push(o.status);
      out.keys.push(o.state.key);
    }
  }
  return out;
}

describe("KILN_SHARED_WORKER_CACHE", () => {
  it("unset: a second namespace finds none of the first one's entries", async () => {
    const n = Date.now().toString(36);
    const a = await runSteps(env, `sa${n}`);
    expect(a.statuses).toEqual(["done", "done", "done", "run", "done"]);
    expect(a.jobScopes).toEqual([`sa${n}`]);
    expect((await runSteps(env, `sa${n}`)).statuses).toEqual(["cached", "cached", "cached", "cached", "cached"]);
    const b = await runSteps(env, `sb${n}`);
    expect(b.statuses).toEqual(["done", "done", "done", "run", "done"]);
    expect(b.jobScopes).toEqual([`sb${n}`]);
    for (let i = 0; i < 5; i++) expect(b.keys[i]).not.toBe(a.keys[i]);
  });

  it("set: FROM, COPY and WORKDIR are shared; RUN and every step after it stay in their scope", async () => {
    const shared = { ...env, KILN_SHARED_WORKER_CACHE: "1" };
    const n = Date.now().toString(36);
    const a = await runSteps(shared, `ha${n}`);
    expect(a.statuses[3]).toBe("run");
    const b = await runSteps(shared, `hb${n}`);
    // the Worker's own steps come from a's build; the RUN goes to a runner again, with b's scope
    expect(b.statuses).toEqual(["cached", "cached", "cached", "run", "done"]);
    expect(b.jobScopes).toEqual([`hb${n}`]);
    expect(b.keys.slice(0, 3)).toEqual(a.keys.slice(0, 3));
    expect(b.keys[3]).not.toBe(a.keys[3]);
    expect(b.keys[4]).not.toBe(a.keys[4]);
    // the shared keys are not the keys of either scope: an unshared build of a's scope misses them
    const unshared = await runSteps(env, `ha${n}`);
    expect(unshared.keys[1]).not.toBe(a.keys[1]);
    expect(unshared.statuses.slice(0, 3)).toEqual(["done", "done", "done"]);
  });
});
