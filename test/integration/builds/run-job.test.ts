// What a RUN step hands its runner (issue 11, bugs 1 and 4): the env of the frontend's StageEnv (an
// ARG without a value stays unset, never the string "null") and the argv of the frontend's runCommand
// (a `#!` heredoc runs as a file mounted at /dev/pipes/, as BuildKit does, not through the shell).
import { env, runInDurableObject, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { RunJob } from "../../../src/protocol/jobs";
import { ADMIN, layerEntries, makeTar, postBuild } from "./helpers";

/** Builds `df` and returns its first queued RUN job (the build is cancelled after). */
async function firstJob(df: string, tag: string, query = ""): Promise<RunJob> {
  const res = await postBuild(await makeTar({ Dockerfile: df }), `?tag=${tag}${query}`);
  const { id } = (await res.json()) as { id: string };
  expect(res.status).toBe(202);
  const dispatcher = env.DISPATCHER.get(env.DISPATCHER.idFromName("default"));
  let job: RunJob | undefined;
  for (let i = 0; i < 400 && !job; i++) {
    const rows = await runInDurableObject(dispatcher, (_o, state) => state.storage.sql.exec<{ job_json: string }>("SELECT job_json FROM jobs WHERE build_id = ?", id).toArray());
    job = rows[0] ? (JSON.parse(rows[0].job_json) as RunJob) : undefined;
    if (!job) await new Promise((r) => setTimeout(r, 25));
  }
  await SELF.fetch(`http://kiln.test/v1/builds/${id}`, { method: "DELETE", headers: ADMIN });
  expect(job, "a queued RUN job").toBeTruthy();
  return job!;
}

describe("the RunJob of a RUN step", () => {
  it("an ARG without a default or build arg stays unset in RUN's env (it was UNSET=null)", async () => {
    const job = await firstJob('FROM scratch\nARG UNSET\nARG EMPTY=\nARG GIVEN\nRUN echo "unset=${UNSET:-empty}"\n', "runjob/args:1", "&build-arg=GIVEN=g");
    expect(job.env).toEqual(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "EMPTY=", "GIVEN=g"]);
    expect(job.env.some((e) => e.startsWith("UNSET"))).toBe(false);
    expect(job.args).toEqual(["/bin/sh", "-c", 'echo "unset=${UNSET:-empty}"']);
  });

  it("an ARG without value after a global ARG takes the global value", async () => {
    const job = await firstJob("ARG G=global\nFROM scratch\nARG G\nRUN true\n", "runjob/global:1");
    expect(job.env).toContain("G=global");
  });

  it("a #! heredoc runs as a file mounted read-only at /dev/pipes/ (BuildKit), not as a shell command", async () => {
    const script = '#!/usr/bin/env python3\nprint("hi from python")\n';
    const job = await firstJob(`FROM scratch\nRUN <<EOF\n${script}EOF\n`, "runjob/py:1");
    expect(job.args).toEqual(["/bin/sh", "-c", "/dev/pipes/EOF"]);
    const pipes = job.mounts.filter((m) => m.target === "/dev/pipes/");
    expect(pipes).toHaveLength(1);
    expect(pipes[0]).toMatchObject({ type: "bind", source: "/", readonly: true });
    expect(pipes[0].fromLayers).toHaveLength(1);
    // the mounted layer holds the script, executable, readable through the job's repository
    const entries = await layerEntries("runjob/py", pipes[0].fromLayers![0].digest);
    expect(entries).toEqual({ EOF: { type: "file", mode: 0o755, uid: 0, gid: 0, body: script, linkname: undefined } });
  });

  it("a heredoc without #! is the shell's command; heredocs after a command go to the shell whole", async () => {
    const plain = await firstJob("FROM scratch\nRUN <<EOF\necho one\necho two\nEOF\n", "runjob/sh:1");
    expect(plain.args).toEqual(["/bin/sh", "-c", "echo one\necho two\n"]);
    expect(plain.mounts).toEqual([]);
    const piped = await firstJob("FROM scratch\nRUN cat <<EOF > /out\nhello\nEOF\n", "runjob/sh:2");
    expect(piped.args).toEqual(["/bin/sh", "-c", "cat <<EOF > /out\nhello\nEOF"]);
  });
});
