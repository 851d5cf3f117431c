// kiln push's source syntax (skopeo's) and kiln build's content batches (issue 14).
import { describe, expect, it } from "vitest";
import { parseSource, parseTarget } from "./push";
import { contentBatches } from "./context";

describe("kiln push sources", () => {
  it("reads skopeo's transports", () => {
    expect(parseSource("oci:./layout:v1")).toEqual({ kind: "oci", dir: "./layout", tag: "v1" });
    expect(parseSource("oci:/tmp/a/layout")).toEqual({ kind: "oci", dir: "/tmp/a/layout" });
    expect(parseSource("docker-archive:app.tar")).toEqual({ kind: "docker-archive", file: "app.tar" });
    expect(parseSource("docker://busybox")).toEqual({ kind: "docker", registry: "registry-1.docker.io", repository: "library/busybox", reference: "latest" });
    expect(parseSource("docker://127.0.0.1:5000/team/app:1")).toEqual({ kind: "docker", registry: "127.0.0.1:5000", repository: "team/app", reference: "1" });
    expect(parseSource("docker://ghcr.io/o/app@sha256:" + "a".repeat(64))).toMatchObject({ registry: "ghcr.io", repository: "o/app", reference: "sha256:" + "a".repeat(64) });
    expect(() => parseSource("./layout")).toThrow(/expected oci:<dir>\[:<tag>\], docker-archive:<file> or docker:\/\//);
  });

  it("takes a kiln repository:tag, with or without the server's host", () => {
    expect(parseTarget("team/app:1", "http://127.0.0.1:8787")).toEqual({ repository: "team/app", tag: "1" });
    expect(parseTarget("127.0.0.1:8787/team/app", "http://127.0.0.1:8787")).toEqual({ repository: "team/app", tag: "latest" });
    expect(() => parseTarget("docker.io/team/app:1", "http://127.0.0.1:8787")).toThrow(/names another registry/);
  });
});

describe("context content batches", () => {
  it("keeps every request's contents under the limit, splitting large files into pieces", () => {
    const hex = (c: string) => `sha256:${c.repeat(64)}`;
    const batches = contentBatches([
      { sha256: hex("a"), abs: "/a", size: 6 },
      { sha256: hex("b"), abs: "/b", size: 5 },
      { sha256: hex("c"), abs: "/c", size: 25 },
    ], 10);
    for (const b of batches) expect(b.bytes).toBeLessThanOrEqual(10);
    const names = batches.flatMap((b) => b.entries.map((e) => e.name));
    expect(names).toEqual(["a".repeat(64), "b".repeat(64), `${"c".repeat(64)}.0.25`, `${"c".repeat(64)}.10.25`, `${"c".repeat(64)}.20.25`]);
    expect(batches.flatMap((b) => b.entries).filter((e) => e.abs === "/c").map((e) => [e.start, e.size])).toEqual([[0, 10], [10, 10], [20, 5]]);
  });
});
