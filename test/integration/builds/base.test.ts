import { env, runInDurableObject, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { storeLayer } from "../../../src/builder/layers";
import { ADMIN, build, imageOf, layerEntries, makeTar, postBuild, waitBuild } from "./helpers";

describe("FROM an image in kiln's registry", () => {
  it("reuses the base's layers and config, resolves --chown names from its /etc/passwd, fires ONBUILD", async () => {
    const base = await build(
      {
        Dockerfile: "FROM scratch\nCOPY etc /etc\nENV BASE=1\nCMD [\"base\"]\nONBUILD COPY trigger.txt /from-trigger.txt\nONBUILD ENV TRIGGERED=yes\n",
        "etc/passwd": "root:x:0:0::/root:/bin/sh\nsvc:x:501:502::/home/svc:/bin/sh\n",
        "etc/group": "root:x:0:\nsvc:x:502:\n",
      },
      "?tag=base/os:1",
    );
    expect(base.status, JSON.stringify(base.error)).toBe("succeeded");
    const child = await build(
      { Dockerfile: "FROM kiln.test/base/os:1\nCOPY --chown=svc:svc app.txt /app.txt\n", "app.txt": "app", "trigger.txt": "t" },
      "?tag=base/child:1",
    );
    expect(child.status, JSON.stringify(child.error)).toBe("succeeded");
    expect(child.steps.map((s) => s.instruction)).toEqual(["FROM kiln.test/base/os:1", "COPY trigger.txt /from-trigger.txt", "ENV TRIGGERED=yes", "COPY --chown=svc:svc app.txt /app.txt"]);
    const b = await imageOf("base/os", "1");
    const c = await imageOf("base/child", "1");
    expect(c.manifest.layers.slice(0, 1)).toEqual(b.manifest.layers);
    expect(c.manifest.layers).toHaveLength(3);
    expect(c.config.config.Env).toContain("BASE=1");
    expect(c.config.config.Env).toContain("TRIGGERED=yes");
    expect(c.config.config.Cmd).toEqual(["base"]);
    expect(c.config.config.OnBuild).toBeUndefined();
    expect(c.config.history).toHaveLength(b.config.history.length + 3);
    const l = await layerEntries("base/child", c.manifest.layers[2].digest);
    expect(l["app.txt"]).toMatchObject({ uid: 501, gid: 502 });
  });

  it("COPY --from an image in kiln's registry and COPY <<heredoc", async () => {
    const base = await build({ Dockerfile: "FROM scratch\nCOPY --chown=3:4 f.txt /data/f.txt\n", "f.txt": "from image" }, "?tag=base/files:1");
    expect(base.status, JSON.stringify(base.error)).toBe("succeeded");
    const b = await build({ Dockerfile: "FROM scratch\nCOPY --from=kiln.test/base/files:1 /data /copied\nCOPY <<EOF /etc/motd\nhello\nEOF\n" }, "?tag=base/usefiles:1");
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    const { manifest, config } = await imageOf("base/usefiles", "1");
    const l0 = await layerEntries("base/usefiles", manifest.layers[0].digest);
    expect(l0["copied/f.txt"]).toMatchObject({ body: "from image", uid: 3, gid: 4 });
    const l1 = await layerEntries("base/usefiles", manifest.layers[1].digest);
    expect(l1["etc/motd"]).toMatchObject({ body: "hello\n", mode: 0o644 });
    expect(config.history[1].created_by).toBe("COPY <<EOF /etc/motd # buildkit");
  });

  it("GET /v1/builds lists builds with their image digest", async () => {
    const b = await build({ Dockerfile: "FROM scratch\nENV L=1\n" }, "?tag=base/listed:1");
    const res = await SELF.fetch("http://kiln.test/v1/builds?repository=base/listed", { headers: ADMIN });
    const { builds } = (await res.json()) as { builds: { id: string; status: string; digest: string; tags: string[] }[] };
    expect(builds[0]).toMatchObject({ id: b.id, status: "succeeded", digest: b.image!.digest, tags: ["base/listed:1"] });
  });

  it("FROM an unreachable registry is a clear error on the FROM step", async () => {
    const b = await build({ Dockerfile: "FROM 127.0.0.1:9/acme/tool:1\nENV A=1\n" });
    expect(b.status).toBe("failed");
    expect(b.error).toMatchObject({ step: 1, line: 1 });
    expect(b.error!.message).toMatch(/^127\.0\.0\.1:9: https:\/\/127\.0\.0\.1:9 unreachable/);
  });
});

describe("RUN steps", () => {
  async function startRunBuild(tag: string, v = "2") {
    const res = await postBuild(await makeTar({ Dockerfile: "FROM scratch\nARG V=2\nRUN make all\nCMD [\"x\"]\n" }), `?tag=${tag}&build-arg=V=${v}`);
    const { id } = (await res.json()) as { id: string };
    const stub = env.BUILD_COORDINATOR.get(env.BUILD_COORDINATOR.idFromName(id));
    let jobId: string | null = null;
    for (let i = 0; i < 200 && !jobId; i++) {
      jobId = await runInDurableObject(stub, (_o, state) => state.storage.sql.exec<{ job_id: string | null }>("SELECT job_id FROM steps WHERE idx = 3").one().job_id);
      if (!jobId) await new Promise((r) => setTimeout(r, 25));
    }
    expect(jobId).toBeTruthy();
    return { id, stub, jobId: jobId! };
  }

  it("the runner's result becomes a layer with docker's history; the rebuild is cached", async () => {
    const { id, stub, jobId } = await startRunBuild("run/ok:1");
    const layer = await storeLayer(env, [{ path: "out.txt", type: "file", mode: 0o644, uid: 0, gid: 0, mtime: 0, body: new TextEncoder().encode("built") }]);
    await stub.runStepFinished(jobId, 3, { ok: true, layer });
    const b = await waitBuild(id);
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    expect(b.steps[2]).toMatchObject({ status: "done", layer: layer.digest });
    const { config, manifest } = await imageOf("run/ok", "1");
    expect(manifest.layers.map((l) => l.digest)).toEqual([layer.digest]);
    expect(config.history.map((h: { created_by: string }) => h.created_by)).toEqual(["ARG V=2", "RUN |1 V=2 /bin/sh -c make all # buildkit", 'CMD ["x"]']);
    const again = await build({ Dockerfile: "FROM scratch\nARG V=2\nRUN make all\nCMD [\"x\"]\n" }, "?tag=run/ok:2");
    expect(again.steps.map((s) => s.status)).toEqual(["cached", "cached", "cached", "cached"]);
    expect(again.image!.digest).toBe(b.image!.digest);
  });

  it("a failed RUN fails the build with the step's line and skips the rest", async () => {
    const { id, stub, jobId } = await startRunBuild("run/fail:1", "3");
    await stub.appendLog(3, "make: *** No rule to make target 'all'.  Stop.\n");
    await stub.runStepFinished(jobId, 3, { ok: false, exitCode: 2, message: 'process "/bin/sh -c make all" did not complete successfully: exit code: 2' });
    await stub.runStepFinished(jobId, 3, { ok: true, layer: null }); // late duplicates are ignored
    const b = await waitBuild(id);
    expect(b.status).toBe("failed");
    expect(b.steps.map((s) => s.status).slice(2)).toEqual(["failed", "skipped"]);
    expect(b.error).toEqual({ message: 'process "/bin/sh -c make all" did not complete successfully: exit code: 2', step: 3, line: 3 });
    const ev = await SELF.fetch(`http://kiln.test/v1/builds/${id}/events`, { headers: ADMIN });
    const text = await ev.text();
    expect(text).toContain("No rule to make target");
  });

  it("the RunJob carries docker's argv (SHELL, heredoc), env with build args, workdir, user and the layers below", async () => {
    const df = "FROM scratch\nCOPY f /f\nARG REL=7\nENV HOME=/root\nWORKDIR /src\nUSER 10:10\nSHELL [\"/bin/ash\", \"-eo\", \"pipefail\", \"-c\"]\nRUN <<EOF\necho $REL > /out\nEOF\n";
    const res = await postBuild(await makeTar({ Dockerfile: df, f: "x" }), "?tag=run/job:1");
    const { id } = (await res.json()) as { id: string };
    const dispatcher = env.DISPATCHER.get(env.DISPATCHER.idFromName("default"));
    let job: any;
    for (let i = 0; i < 200 && !job; i++) {
      const rows = await runInDurableObject(dispatcher, (_o, state) => state.storage.sql.exec<{ job_json: string }>("SELECT job_json FROM jobs WHERE build_id = ?", id).toArray());
      job = rows[0] ? JSON.parse(rows[0].job_json) : undefined;
      if (!job) await new Promise((r) => setTimeout(r, 25));
    }
    expect(job).toBeTruthy();
    expect(job.args).toEqual(["/bin/ash", "-eo", "pipefail", "-c", "echo $REL > /out\n"]);
    // the stage's env in the order names were set (StageEnv, as BuildKit's state env): ARG REL before ENV HOME
    expect(job.env).toEqual(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "REL=7", "HOME=/root"]);
    expect(job).toMatchObject({ workdir: "/src", user: "10:10", network: "none", repository: "run/job", stepIndex: 8, buildId: id, sourceDateEpoch: 0 });
    expect(job.layers).toHaveLength(2); // COPY f and the WORKDIR mkdir
    // The queued job carries no registry credential: one is minted per lease when a runner claims it.
    expect(job.registryToken).toBeUndefined();
    await SELF.fetch(`http://kiln.test/v1/builds/${id}`, { method: "DELETE", headers: ADMIN });
  });
});
