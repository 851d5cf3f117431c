import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ADMIN, imageOf, layerEntries, makeTar, postBuild, readSse, waitBuild, type BuildResult } from "./helpers";

type MultiResult = BuildResult & { children?: { platform: string; id: string; status: string; digest?: string }[] };

const PLATFORMS = "linux/amd64,linux/arm64";

async function start(files: Record<string, string>, query: string): Promise<string> {
  const res = await postBuild(await makeTar(files), query);
  const body = (await res.json()) as { id: string; status: string; error?: unknown };
  if (res.status !== 202) throw new Error(`POST /v1/builds ${res.status}: ${JSON.stringify(body)}`);
  expect(body.status).toBe("queued");
  return body.id;
}

async function index(repo: string, ref: string): Promise<{ digest: string; mediaType: string | null; doc: { mediaType: string; manifests: { digest: string; mediaType: string; size: number; platform?: { os: string; architecture: string } }[] } }> {
  const res = await SELF.fetch(`http://kiln.test/v2/${repo}/manifests/${ref}`, { headers: { ...ADMIN, accept: "application/vnd.oci.image.index.v1+json" } });
  if (!res.ok) throw new Error(`manifest ${repo}:${ref}: ${res.status} ${await res.text()}`);
  return { digest: res.headers.get("docker-content-digest")!, mediaType: res.headers.get("content-type"), doc: (await res.json()) as any };
}

const FILES = { Dockerfile: "FROM scratch\nCOPY hello.txt /hello.txt\nENV GREETING=hi\n", "hello.txt": "hello\n" };

describe("multi-platform builds (platform=linux/amd64,linux/arm64)", () => {
  it("builds one image per platform and pushes an OCI index under every tag; a rebuild is cached and gives the same index", async () => {
    const id = await start(FILES, `?tag=mp/app:1&tag=mp/app:latest&platform=${PLATFORMS}`);
    const b = (await waitBuild(id)) as MultiResult;
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    expect(b.steps.map((s) => [s.stage, s.status])).toEqual([["linux/amd64", "done"], ["linux/arm64", "done"]]);
    expect(b.children!.map((c) => [c.platform, c.status])).toEqual([["linux/amd64", "succeeded"], ["linux/arm64", "succeeded"]]);
    expect(b.image).toMatchObject({ repository: "mp/app", tags: ["1", "latest"] });

    const idx = await index("mp/app", "1");
    expect(idx.mediaType).toBe("application/vnd.oci.image.index.v1+json");
    expect(idx.digest).toBe(b.image!.digest);
    expect(idx.doc.mediaType).toBe("application/vnd.oci.image.index.v1+json");
    expect(idx.doc.manifests.map((m) => m.platform)).toEqual([{ os: "linux", architecture: "amd64" }, { os: "linux", architecture: "arm64" }]);
    expect(idx.doc.manifests.map((m) => m.digest)).toEqual(b.children!.map((c) => c.digest));
    expect((await index("mp/app", "latest")).digest).toBe(idx.digest);

    for (const [i, arch] of ["amd64", "arm64"].entries()) {
      const m = idx.doc.manifests[i];
      expect(m.mediaType).toBe("application/vnd.oci.image.manifest.v1+json");
      const img = await imageOf("mp/app", m.digest);
      expect(img.digest).toBe(m.digest);
      expect(img.config.architecture).toBe(arch);
      expect(img.config.os).toBe("linux");
      expect(img.config.config.Env).toContain("GREETING=hi");
      const files = await layerEntries("mp/app", img.manifest.layers[0].digest);
      expect(files["hello.txt"]?.body).toBe("hello\n");
      // each child is a build of its own, inspectable, with no tags
      const child = (await (await SELF.fetch(`http://kiln.test/v1/builds/${b.children![i].id}`, { headers: ADMIN })).json()) as MultiResult & { parent?: string };
      expect(child.status).toBe("succeeded");
      expect(child.parent).toBe(id);
      expect(child.image).toMatchObject({ repository: "mp/app", tags: [], digest: m.digest });
    }

    // SSE of the parent ends with done
    const events = await readSse(await SELF.fetch(`http://kiln.test/v1/builds/${id}/events`, { headers: ADMIN }));
    expect(events[events.length - 1]).toMatchObject({ event: "done", data: { status: "succeeded", image: { digest: idx.digest } } });
    // the children's progress shows in the parent's stream, under the step of their platform
    for (const step of [1, 2]) {
      expect(events.some((e) => e.event === "log" && e.data.step === step && /^#2 COPY hello\.txt \/hello\.txt$/m.test(e.data.text))).toBe(true);
      expect(events.some((e) => e.event === "log" && e.data.step === step && /^#3 DONE/m.test(e.data.text))).toBe(true);
    }

    // the same context again: every child step is cached, the index is byte-identical
    const again = (await waitBuild(await start(FILES, `?tag=mp/app:2&platform=${PLATFORMS}`))) as MultiResult;
    expect(again.status).toBe("succeeded");
    expect(again.steps.map((s) => s.status)).toEqual(["cached", "cached"]);
    expect(again.image!.digest).toBe(idx.digest);
    expect((await index("mp/app", "2")).digest).toBe(idx.digest);
  });

  it("tags in a second repository get the index and its manifests too", async () => {
    const b = (await waitBuild(await start(FILES, `?tag=mp/one:a&tag=mp/two:b&platform=${PLATFORMS}`))) as MultiResult;
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    const two = await index("mp/two", "b");
    expect(two.digest).toBe(b.image!.digest);
    const img = await imageOf("mp/two", two.doc.manifests[1].digest);
    expect(img.config.architecture).toBe("arm64");
  });

  it("a failure in one platform fails the build, naming the platform; nothing is tagged", async () => {
    const files = { Dockerfile: "FROM scratch\nARG TARGETARCH\nCOPY only-${TARGETARCH}.txt /x\nENV A=1\n", "only-amd64.txt": "x" };
    const id = await start(files, `?tag=mp/fail:1&platform=${PLATFORMS}`);
    const b = (await waitBuild(id)) as MultiResult;
    expect(b.status).toBe("failed");
    expect(b.error!.message).toMatch(/^linux\/arm64: /);
    expect(b.error!.message).toMatch(/only-arm64\.txt/);
    expect(b.error!.step).toBe(2);
    expect(b.steps[1]).toMatchObject({ stage: "linux/arm64", status: "failed" });
    expect(b.children![1]).toMatchObject({ platform: "linux/arm64", status: "failed" });
    expect(b.image).toBeUndefined();
    const res = await SELF.fetch("http://kiln.test/v2/mp/fail/manifests/1", { headers: ADMIN });
    expect(res.status).toBe(404);
    const events = await readSse(await SELF.fetch(`http://kiln.test/v1/builds/${id}/events`, { headers: ADMIN }));
    expect(events[events.length - 1]).toMatchObject({ event: "done", data: { status: "failed" } });
    expect(events.some((e) => e.event === "log" && e.data.step === 2 && /^#3 ERROR: .*only-arm64\.txt/m.test(e.data.text))).toBe(true);
  });

  it("cancelling the parent cancels the children", async () => {
    const id = await start({ Dockerfile: "FROM scratch\nRUN make all\n" }, `?tag=mp/cancel:1&platform=${PLATFORMS}`);
    let b: MultiResult | undefined;
    for (let i = 0; i < 200; i++) {
      b = (await (await SELF.fetch(`http://kiln.test/v1/builds/${id}`, { headers: ADMIN })).json()) as MultiResult;
      if (b.status === "running") break;
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(b!.status).toBe("running");
    const del = await SELF.fetch(`http://kiln.test/v1/builds/${id}`, { method: "DELETE", headers: ADMIN });
    expect(del.status).toBe(200);
    const after = (await waitBuild(id)) as MultiResult;
    expect(after.status).toBe("cancelled");
    for (const c of after.children!) {
      const child = await waitBuild(c.id);
      expect(child.status).toBe("cancelled");
    }
  });

  for (const bad of ["linux/amd64,", "linux/amd64,,linux/arm64", "linux/amd64,arm64", "linux/amd64,linux/a b"]) {
    it(`400 for platform=${JSON.stringify(bad)}`, async () => {
      const res = await postBuild(await makeTar(FILES), `?tag=mp/bad:1&platform=${encodeURIComponent(bad)}`);
      expect(res.status).toBe(400);
      const j = (await res.json()) as { error: { message: string } };
      expect(j.error.message).toMatch(/platform/);
    });
  }
});
