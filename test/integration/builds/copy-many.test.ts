import { describe, expect, it } from "vitest";
import { contextReads } from "../../../src/storage/contexts";
import { coalesce } from "../../../src/builder/executors/pack-reader";
import { build, imageOf, layerEntries, type Files } from "./helpers";

describe("COPY of many small files", () => {
  it("reads the context pack with few ranged GETs and writes every file", async () => {
    const N = 20_000;
    const files: Files = { Dockerfile: "FROM scratch\nCOPY d /d\nCOPY big.bin one.txt /x/\n" };
    // spread over directories, bodies of 1 to 3 bytes that differ per file (a wrong offset shows)
    for (let i = 0; i < N; i++) files[`d/${String(i % 40).padStart(2, "0")}/${String(i).padStart(5, "0")}`] = String(i % 997);
    files["big.bin"] = "B".repeat(300 * 1024); // over the small-file size: streamed with its own GET
    files["one.txt"] = "1";
    const before = { ...contextReads };
    const b = await build(files, "?tag=copy/many:1");
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    const reads = contextReads.count - before.count;
    // 20,000 files of ~60 KB in all: one GET for the small ones of each COPY, one for big.bin
    expect(reads).toBeGreaterThan(0);
    expect(reads).toBeLessThanOrEqual(10);
    const { manifest } = await imageOf("copy/many", "1");
    const l = await layerEntries("copy/many", manifest.layers[0].digest);
    const paths = Object.keys(l).filter((p) => l[p].type === "file");
    expect(paths).toHaveLength(N);
    for (let i = 0; i < N; i++) {
      const p = `d/${String(i % 40).padStart(2, "0")}/${String(i).padStart(5, "0")}`;
      expect(l[p]?.body, p).toBe(String(i % 997));
    }
    const x = await layerEntries("copy/many", manifest.layers[1].digest);
    expect(x["x/big.bin"].body).toBe("B".repeat(300 * 1024));
    expect(x["x/one.txt"].body).toBe("1");
  });

  it("coalesces adjacent and near ranges, up to a read size, and keeps far ones apart", () => {
    const spans = [
      { offset: 10, size: 5 },
      { offset: 0, size: 10 },
      { offset: 15, size: 1 },
      { offset: 100, size: 1 }, // within the gap
      { offset: 10_000, size: 10 }, // too far
      { offset: 10_010, size: 5_000 }, // would make the read too large
    ];
    const reads = coalesce(spans, 1000, 4000);
    expect(reads.map((r) => [r.offset, r.length, r.spans.length])).toEqual([
      [0, 101, 4],
      [10_000, 10, 1],
      [10_010, 5_000, 1],
    ]);
  });
});
