// COPY --from a stage whose files came from RUN steps (issue 11, bug 2): the RUN results are
// simulated as a runner would report them (layers stored in the blob store), so the Worker-side
// COPY reads real runner-shaped layers: symlinks, chowned directories, an empty file.
import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { storeLayer } from "../../../src/builder/layers";
import type { TarEntry } from "../../../src/oci/tar";
import { imageOf, layerEntries, makeTar, postBuild, waitBuild } from "./helpers";

type Stub = DurableObjectStub<import("../../../src/builder/coordinator").BuildCoordinator>;

/** Waits until step `idx` of the build has a queued RUN job; its job id. */
async function jobOf(stub: Stub, idx: number): Promise<string> {
  for (let i = 0; i < 400; i++) {
    const row = await runInDurableObject(stub, (_o, state) => state.storage.sql.exec<{ job_id: string | null; status: string }>("SELECT job_id, status FROM steps WHERE idx = ?", idx).toArray()[0]);
    if (row?.job_id) return row.job_id;
    if (row && (row.status === "failed" || row.status === "skipped")) throw new Error(`step ${idx} ${row.status}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`step ${idx} never queued a job`);
}

const dir = (path: string, uid = 0, gid = 0): TarEntry => ({ path, type: "dir", mode: 0o755, uid, gid, mtime: 0 });
const link = (path: string, linkname: string): TarEntry => ({ path, type: "symlink", mode: 0o777, uid: 0, gid: 0, mtime: 0, linkname });

describe("COPY --from a stage built by RUN steps", () => {
  it("copies the stage's directory with its owners and finishes (it used to stay running)", async () => {
    const df = [
      "FROM scratch AS base",
      "COPY busybox /bin/busybox",
      'RUN ["/bin/busybox","--install","-s","/bin"]',
      "RUN mkdir -p /etc /home/app && chown 1001:1002 /home/app",
      "FROM base AS prep",
      "WORKDIR /home/app/work",
      "RUN touch made",
      "FROM base",
      "COPY --from=prep /home/app /home/app",
      "",
    ].join("\n");
    const res = await postBuild(await makeTar({ Dockerfile: df, busybox: { body: "#!busybox", mode: 0o755 } }), "?tag=copyfrom/app:1");
    const { id } = (await res.json()) as { id: string };
    expect(res.status).toBe(202);
    const stub = env.BUILD_COORDINATOR.get(env.BUILD_COORDINATOR.idFromName(id)) as Stub;

    // what runc + the differ report for each RUN
    const install = await storeLayer(env, [dir("bin"), link("bin/ls", "/bin/busybox"), link("bin/mkdir", "/bin/busybox"), link("bin/sh", "/bin/busybox"), link("bin/touch", "/bin/busybox")]);
    await stub.runStepFinished(await jobOf(stub, 3), 3, { ok: true, layer: install });
    const mkdir = await storeLayer(env, [dir("etc"), dir("home"), dir("home/app", 1001, 1002)]);
    await stub.runStepFinished(await jobOf(stub, 4), 4, { ok: true, layer: mkdir });
    const touch = await storeLayer(env, [dir("home"), dir("home/app", 1001, 1002), dir("home/app/work"), { path: "home/app/work/made", type: "file", mode: 0o644, uid: 0, gid: 0, mtime: 0, body: new Uint8Array(0) }]);
    await stub.runStepFinished(await jobOf(stub, 7), 7, { ok: true, layer: touch });

    const b = await waitBuild(id, 20_000);
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    expect(b.steps.map((s) => s.status)).toEqual(["done", "done", "done", "done", "done", "done", "done", "done", "done"]);
    const { manifest } = await imageOf("copyfrom/app", "1");
    expect(manifest.layers).toHaveLength(4); // COPY busybox, two RUNs of base, the COPY --from
    const copied = await layerEntries("copyfrom/app", manifest.layers[3].digest);
    expect(Object.keys(copied).sort()).toEqual(["home/app/", "home/app/work/", "home/app/work/made"]);
    expect(copied["home/app/"]).toMatchObject({ type: "dir", uid: 1001, gid: 1002 });
    expect(copied["home/app/work/"]).toMatchObject({ type: "dir", uid: 0, gid: 0 });
    expect(copied["home/app/work/made"]).toMatchObject({ type: "file", body: "", mode: 0o644 });
  });
});
