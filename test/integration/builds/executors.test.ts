// Each executor run directly (as the scheduler runs them) on one plan: the state every kind hands the
// next step, through JSON as the coordinator persists it.
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { BuildSpec, ImageState } from "../../../src/builder/model";
import { executeStep, finishRun, type StepContext } from "../../../src/builder/steps";
import { ingestContext } from "../../../src/context/ingest";
import { planDockerfile } from "../../../src/plan/graph";
import { makeTar, streamOf } from "./helpers";

const DF = [
  "FROM scratch", // 1 from
  "ARG NOVAL", // 2 metadata (ARG)
  "ENV A=1", // 3 metadata (ENV)
  "ARG A=2", // 4 ARG after ENV: RUN sees 2, the config keeps 1
  "WORKDIR /w", // 5 workdir
  "COPY f ./", // 6 copy, relative to the workdir
  "ADD <<g /g", // 7 add (heredoc source)
  "hi $A",
  "g",
  "RUN echo $A", // 8 run
  "LABEL l=$A", // 9 metadata after a RUN
  "",
].join("\n");

describe("executors", () => {
  it("from, metadata, workdir, copy, add, run: each step's state and outcome", async () => {
    const ingested = await ingestContext(env, streamOf(await makeTar({ Dockerfile: DF, f: "file" })), { contentType: "application/x-tar" });
    const { graph } = await planDockerfile(ingested.dockerfile, { buildArgs: {}, platform: "linux/amd64" });
    expect(graph.steps.map((s) => s.kind)).toEqual(["from", "metadata", "metadata", "metadata", "workdir", "copy", "add", "run", "metadata"]);
    const spec: BuildSpec = {
      id: `exec-${crypto.randomUUID()}`, origin: "http://kiln.test", dockerfile: ingested.dockerfile, dockerfilePath: "Dockerfile",
      context: { pack: ingested.packDigest, index: ingested.indexDigest }, tags: [{ repository: "exec/app", tag: "1" }],
      buildArgs: {}, noCache: true, platform: { os: "linux", architecture: "amd64" }, sourceDateEpoch: 0,
      principal: { kind: "admin" }, scope: "exec", plan: graph, createdAt: Date.now(),
    };
    const states = new Map<number, ImageState>();
    const ctx: StepContext = { env, spec, graph, stateOf: (i) => states.get(i)!, contextIndex: async () => ingested.index, log: async () => {} };
    const jobs = [];
    for (const step of graph.steps) {
      const o = await executeStep(ctx, step);
      if (o.status === "run") {
        jobs.push(o.job);
        expect(o.createdBy).toBe("RUN |2 NOVAL= A=2 /bin/sh -c echo $A # buildkit");
        states.set(step.index, JSON.parse(JSON.stringify(await finishRun(ctx, ctx.stateOf(step.deps[0]), o.key, o.createdBy, null))));
      } else {
        expect(o.status).toBe("done");
        states.set(step.index, JSON.parse(JSON.stringify(o.state)));
      }
    }
    // metadata: ARG without value declared but unset; ENV in the config; ARG after ENV wins for RUN only
    expect(states.get(2)!.env.args).toEqual([{ key: "NOVAL" }]);
    expect(states.get(4)!.config.config?.Env).toEqual(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1"]);
    // workdir: a layer making /w; copy and add: one layer each
    expect(states.get(5)!.config.config?.WorkingDir).toBe("/w");
    expect(states.get(5)!.layers).toHaveLength(1);
    expect(states.get(7)!.layers).toHaveLength(3);
    // run: the job sees the stage env (no NOVAL), workdir and layers below
    expect(jobs).toHaveLength(1);
    expect(jobs[0]).toMatchObject({ args: ["/bin/sh", "-c", "echo $A"], workdir: "/w", layers: states.get(7)!.layers, cacheScope: "exec" });
    expect(jobs[0].env).toEqual(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=2"]);
    // the label after the RUN expands with A=2 (the ARG), as BuildKit
    expect(states.get(9)!.config.config?.Labels).toEqual({ l: "2" });
    expect(states.get(9)!.config.history?.map((h) => h.created_by)).toEqual([
      "ARG NOVAL", "ENV A=1", "ARG A=2", "WORKDIR /w", "COPY f ./ # buildkit", "ADD <<g /g # buildkit", "RUN |2 NOVAL= A=2 /bin/sh -c echo $A # buildkit", "LABEL l=2",
    ]);
  });
});
