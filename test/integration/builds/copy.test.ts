import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { build, imageOf, layerEntries, r2Keys } from "./helpers";

const ctx = {
  "app/": { type: "dir" as const, mode: 0o750 },
  "app/main.txt": "main",
  "app/sub/deep.txt": { body: "deep", mode: 0o600 },
  "app/link": { type: "symlink" as const, linkname: "main.txt" },
  "bin/run.sh": { body: "#!/bin/sh\necho hi\n", mode: 0o755 },
  "a.conf": "A",
  "b.conf": "B",
  "outside": { type: "symlink" as const, linkname: "../../etc/passwd" },
  "etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345::/home/app:/bin/sh\n",
  "etc/group": "root:x:0:\nstaff:x:50:\n",
};

async function lastLayer(repo: string, tag: string) {
  const { manifest } = await imageOf(repo, tag);
  return await layerEntries(repo, manifest.layers[manifest.layers.length - 1].digest);
}

describe("COPY", () => {
  it("copies a directory's contents, keeps modes and symlinks, owner 0:0, mtime from SOURCE_DATE_EPOCH", async () => {
    const b = await build({ ...ctx, Dockerfile: "FROM scratch\nCOPY app /dst\n" }, "?tag=copy/a:1");
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    const l = await lastLayer("copy/a", "1");
    expect(Object.keys(l)).toEqual(["dst/", "dst/link", "dst/main.txt", "dst/sub/", "dst/sub/deep.txt"]);
    expect(l["dst/"]).toMatchObject({ type: "dir", mode: 0o750, uid: 0, gid: 0 });
    expect(l["dst/main.txt"]).toMatchObject({ type: "file", mode: 0o644, uid: 0, gid: 0, body: "main" });
    expect(l["dst/sub/deep.txt"].mode).toBe(0o600);
    expect(l["dst/link"]).toMatchObject({ type: "symlink", linkname: "main.txt" });
  });

  it("applies trailing-slash, multiple-source and wildcard rules and creates parents", async () => {
    const b = await build(
      {
        ...ctx,
        Dockerfile: [
          "FROM scratch",
          "COPY a.conf /etc/app/renamed.conf",
          "COPY a.conf /opt/dir/",
          "COPY *.conf /conf",
          "COPY a.conf b.conf /multi/",
          "WORKDIR /w",
          "COPY bin/run.sh .",
          "",
        ].join("\n"),
      },
      "?tag=copy/b:1",
    );
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    const { manifest, config } = await imageOf("copy/b", "1");
    const layers = await Promise.all(manifest.layers.map((l) => layerEntries("copy/b", l.digest)));
    expect(Object.keys(layers[0])).toEqual(["etc/", "etc/app/", "etc/app/renamed.conf"]);
    expect(layers[0]["etc/"]).toMatchObject({ mode: 0o755, uid: 0 });
    expect(Object.keys(layers[1])).toEqual(["opt/", "opt/dir/", "opt/dir/a.conf"]);
    expect(Object.keys(layers[2])).toEqual(["conf/", "conf/a.conf", "conf/b.conf"]);
    expect(Object.keys(layers[3])).toEqual(["multi/", "multi/a.conf", "multi/b.conf"]);
    expect(Object.keys(layers[4])).toEqual(["w/"]); // WORKDIR created the missing dir
    expect(layers[5]["w/run.sh"]).toMatchObject({ mode: 0o755, body: "#!/bin/sh\necho hi\n" });
    expect(config.config.WorkingDir).toBe("/w");
    expect(config.history.map((h: { created_by: string; empty_layer?: boolean }) => [h.created_by, !!h.empty_layer])).toEqual([
      ["COPY a.conf /etc/app/renamed.conf # buildkit", false],
      ["COPY a.conf /opt/dir/ # buildkit", false],
      ["COPY *.conf /conf # buildkit", false],
      ["COPY a.conf b.conf /multi/ # buildkit", false],
      ["WORKDIR /w", false],
      ["COPY bin/run.sh . # buildkit", false],
    ]);
    expect(config.rootfs.diff_ids).toHaveLength(6);
  });

  it("--chown by name (from the image's /etc/passwd and /etc/group) and numeric, --chmod", async () => {
    const b = await build(
      {
        ...ctx,
        Dockerfile: "FROM scratch\nCOPY etc /etc\nCOPY --chown=app:staff a.conf /x/a\nCOPY --chown=7 --chmod=0640 b.conf /y/b\n",
      },
      "?tag=copy/c:1",
    );
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    const { manifest } = await imageOf("copy/c", "1");
    const l1 = await layerEntries("copy/c", manifest.layers[1].digest);
    expect(l1["x/a"]).toMatchObject({ uid: 1234, gid: 50 });
    expect(l1["x/"]).toMatchObject({ uid: 1234, gid: 50 });
    const l2 = await layerEntries("copy/c", manifest.layers[2].digest);
    expect(l2["y/b"]).toMatchObject({ uid: 7, gid: 7, mode: 0o640 });
  });

  it("COPY --from another stage keeps the source owners; a symlink leaving the context stays inside", async () => {
    const b = await build(
      {
        ...ctx,
        Dockerfile: "FROM scratch AS base\nCOPY --chown=5:6 app/main.txt /m.txt\nFROM scratch\nCOPY --from=base /m.txt /copied.txt\nCOPY outside /o\n",
      },
      "?tag=copy/d:1",
    );
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    const { manifest } = await imageOf("copy/d", "1");
    expect(manifest.layers).toHaveLength(2);
    const l0 = await layerEntries("copy/d", manifest.layers[0].digest);
    expect(l0["copied.txt"]).toMatchObject({ uid: 5, gid: 6, body: "main" });
    // ../../etc/passwd resolves inside the context root: the context's own etc/passwd
    const l1 = await layerEntries("copy/d", manifest.layers[1].digest);
    expect(l1["o"].body).toContain("app:x:1234");
  });

  it("--exclude drops matching files; independent stages build concurrently and feed the last one", async () => {
    const b = await build(
      {
        ...ctx,
        Dockerfile: [
          "FROM scratch AS one",
          "COPY a.conf /one.conf",
          "FROM scratch AS two",
          "COPY b.conf /two.conf",
          "FROM scratch",
          "COPY --exclude=*.conf --exclude=app/sub . /all/",
          "COPY --from=one /one.conf /x/",
          "COPY --from=two /two.conf /x/",
          "",
        ].join("\n"),
      },
      "?tag=copy/f:1",
    );
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    expect(b.steps.map((s) => s.stage)).toEqual(["one", "one", "two", "two", "stage-2", "stage-2", "stage-2", "stage-2"]);
    const { manifest } = await imageOf("copy/f", "1");
    expect(manifest.layers).toHaveLength(3);
    const all = await layerEntries("copy/f", manifest.layers[0].digest);
    expect(Object.keys(all).filter((p) => p.endsWith(".conf"))).toEqual([]);
    expect(Object.keys(all)).toContain("all/app/main.txt");
    expect(Object.keys(all)).not.toContain("all/app/sub/deep.txt");
    const x = await layerEntries("copy/f", manifest.layers[2].digest);
    expect(Object.keys(x)).toEqual(["x/two.conf"]);
  });

  it("--parents keeps source paths (from a /./ pivot) under the destination", async () => {
    const b = await build({ ...ctx, Dockerfile: "FROM scratch\nCOPY --parents app/sub/deep.txt bin/*.sh /keep/\nCOPY --parents ./app/./sub /pivot/\n" }, "?tag=copy/p:1");
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    const { manifest, config } = await imageOf("copy/p", "1");
    const l0 = await layerEntries("copy/p", manifest.layers[0].digest);
    expect(Object.keys(l0)).toEqual(["keep/", "keep/app/", "keep/app/sub/", "keep/app/sub/deep.txt", "keep/bin/", "keep/bin/run.sh"]);
    const l1 = await layerEntries("copy/p", manifest.layers[1].digest);
    expect(Object.keys(l1)).toEqual(["pivot/", "pivot/sub/", "pivot/sub/deep.txt"]);
    expect(config.history[0].created_by).toBe("COPY --parents app/sub/deep.txt bin/*.sh /keep/ # buildkit");
  });

  it("the uploader's uid/gid and mtimes do not change COPY cache keys (docker makes context files 0:0)", async () => {
    const { makeTar, postBuild, waitBuild } = await import("./helpers");
    const df = "FROM scratch\nCOPY owned.txt /owned.txt\n";
    const a = await build({ Dockerfile: df, "owned.txt": { body: "same", uid: 501, gid: 20 } }, "?tag=copy/own:1");
    const tar = await makeTar({ Dockerfile: df, "owned.txt": { body: "same", uid: 1000, gid: 1000 } });
    const res = await postBuild(tar, "?tag=copy/own:2");
    const b = await waitBuild(((await res.json()) as { id: string }).id);
    expect(b.steps.map((s) => s.status)).toEqual(["cached", "cached"]);
    expect(b.image!.digest).toBe(a.image!.digest);
  });

  it("ADD extracts a local tar archive", async () => {
    const { makeTar } = await import("./helpers");
    const inner = await makeTar({ "pkg/": { type: "dir" }, "pkg/x.txt": "X" }, { gzip: true });
    const b = await build({ "bundle.tgz": inner, "plain.txt": "p", Dockerfile: "FROM scratch\nADD bundle.tgz /opt/\nADD plain.txt /p/\n" }, "?tag=copy/e:1");
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    const { manifest } = await imageOf("copy/e", "1");
    const l0 = await layerEntries("copy/e", manifest.layers[0].digest);
    expect(Object.keys(l0)).toEqual(["opt/", "opt/pkg/", "opt/pkg/x.txt"]);
    expect(l0["opt/pkg/x.txt"]).toMatchObject({ body: "X", uid: 1000, gid: 1000 });
    const l1 = await layerEntries("copy/e", manifest.layers[1].digest);
    expect(Object.keys(l1)).toEqual(["p/", "p/plain.txt"]);
  });

  it("a failing COPY fails the build with its line, skips later steps, writes no cache entry", async () => {
    const before = (await r2Keys("cache/")).length;
    const b = await build({ ...ctx, Dockerfile: "FROM scratch\nCOPY a.conf /a\nCOPY missing.txt /x\nENV A=1\nCOPY b.conf /b\n" });
    expect(b.status).toBe("failed");
    expect(b.steps.map((s) => s.status).slice(1)).toEqual(["done", "failed", "skipped", "skipped"]);
    expect(b.steps[2].cacheKey).toBeNull();
    expect(b.error).toMatchObject({ step: 3, line: 3 });
    expect(b.error!.message).toMatch(/missing\.txt.*not found/);
    expect((await r2Keys("cache/")).length - before).toBeLessThanOrEqual(2);
    void env;
  });
});
