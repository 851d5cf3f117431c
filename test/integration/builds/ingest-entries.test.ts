import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ingestContext } from "../../../src/context/ingest";
import { ApiError } from "../../../src/errors";
import { SourceError, stripArchive } from "../../../src/git/source";
import { makeTar, streamOf } from "./helpers";

// A git host's archive: everything under one top-level folder named after the commit.
async function archive(): Promise<Uint8Array> {
  return makeTar({
    "repo-abc/": { type: "dir" },
    "repo-abc/README.md": "top\n",
    "repo-abc/app/": { type: "dir", mode: 0o750 },
    "repo-abc/app/Dockerfile": "FROM scratch\nCOPY . /\n",
    "repo-abc/app/src/main.c": "int main(){}\n",
    "repo-abc/app/copy.c": { type: "hardlink", linkname: "repo-abc/app/src/main.c" },
    "repo-abc/app/link": { type: "symlink", linkname: "src/main.c" },
  }, { gzip: true });
}

describe("context ingest of tar entries (webhook archives)", () => {
  it("ingests a re-rooted archive as the same context as the equivalent tar", async () => {
    const fromEntries = await ingestContext(env, stripArchive(streamOf(await archive()), "app"), { contentType: "application/x-tar" });
    const plain = await makeTar({
      "Dockerfile": "FROM scratch\nCOPY . /\n",
      "src/main.c": "int main(){}\n",
      "copy.c": { type: "hardlink", linkname: "src/main.c" },
      "link": { type: "symlink", linkname: "src/main.c" },
    });
    const fromTar = await ingestContext(env, streamOf(plain), { contentType: "application/x-tar" });
    expect(fromEntries.dockerfile).toBe("FROM scratch\nCOPY . /\n");
    const shape = (c: typeof fromTar) => c.index.files.map((f) => [f.path, f.type, f.size, f.sha256, f.linkTarget]);
    expect(shape(fromEntries)).toEqual(shape(fromTar));
    expect(fromEntries.packDigest).toBe(fromTar.packDigest);
    const whole = await ingestContext(env, stripArchive(streamOf(await archive()), ""), { contentType: "application/x-tar", dockerfilePath: "app/Dockerfile" });
    expect(whole.index.files.map((f) => f.path)).toContain("README.md");
  });

  it("counts entries against the size limit and refuses archives that escape the context", async () => {
    const big = await makeTar({ "r/Dockerfile": "FROM scratch\n", "r/big.bin": "y".repeat(200_000) }, { gzip: true });
    const refused = ingestContext(env, stripArchive(streamOf(big), ""), { contentType: "application/x-tar", maxBytes: 100_000 });
    await expect(refused).rejects.toThrow(ApiError);
    await expect(ingestContext(env, stripArchive(streamOf(big), ""), { contentType: "application/x-tar", maxBytes: 100_000 })).rejects.toThrow(/larger than the limit of 100000 bytes/);
    const outside = await makeTar({ "r/a/Dockerfile": "FROM scratch\n", "r/b.txt": "b", "r/a/b.txt": { type: "hardlink", linkname: "r/b.txt" } }, { gzip: true });
    await expect(ingestContext(env, stripArchive(streamOf(outside), "a"), { contentType: "application/x-tar" })).rejects.toThrow(SourceError);
    const garbage = new Uint8Array(await new Response(new Blob([new TextEncoder().encode("not a tar".repeat(100))]).stream().pipeThrough(new CompressionStream("gzip"))).arrayBuffer());
    await expect(ingestContext(env, stripArchive(streamOf(garbage), ""), { contentType: "application/x-tar" })).rejects.toThrow(/not a valid tar/);
  });
});
