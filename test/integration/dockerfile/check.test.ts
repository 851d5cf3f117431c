import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";

const URL_ = "http://kiln.test/v1/dockerfile/check";

interface CheckOk {
  ok: true;
  target: number;
  buildOrder: number[];
  stages: { index: number; name: string | null; base: string; resolvedBase: string | null; planned: boolean; instructions: { kind: string; line: number; original: string; classification: string }[] }[];
  warnings: { message: string; line: number }[];
}
interface CheckErr {
  ok: false;
  error: { message: string; line?: number; column?: number };
  errors: { message: string; line: number }[];
  excerpt: string;
}

describe("POST /v1/dockerfile/check", () => {
  it("returns stages with classified instructions for a plain-text Dockerfile, without auth", async () => {
    const res = await SELF.fetch(URL_, {
      method: "POST",
      headers: { "content-type": "text/plain" },
      body: "FROM golang AS build\nRUN go build\nFROM alpine AS unused\nFROM scratch\nCOPY --from=build /app /app\nCMD [\"/app\"]\n",
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as CheckOk;
    expect(body.ok).toBe(true);
    expect(body.buildOrder).toEqual([0, 2]);
    expect(body.stages.map((s) => [s.index, s.name, s.base, s.planned])).toEqual([
      [0, "build", "golang", true],
      [1, "unused", "alpine", false],
      [2, null, "scratch", true],
    ]);
    expect(body.stages[2].instructions).toEqual([
      { kind: "COPY", line: 5, endLine: 5, original: "COPY --from=build /app /app", classification: "layer" },
      { kind: "CMD", line: 6, endLine: 6, original: 'CMD ["/app"]', classification: "metadata" },
    ]);
  });

  it("accepts JSON with build args and a target", async () => {
    const res = await SELF.fetch(URL_, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ dockerfile: "ARG V=1\nFROM alpine:${V} AS a\nFROM busybox AS b\n", buildArgs: { V: "3.20" }, target: "a" }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as CheckOk;
    expect(body.target).toBe(0);
    expect(body.stages[0]).toMatchObject({ base: "alpine:${V}", resolvedBase: "alpine:3.20", planned: true });
    expect(body.stages[1].planned).toBe(false);
  });

  it("reports errors with line numbers, all of them at once", async () => {
    const res = await SELF.fetch(URL_, { method: "POST", body: "FROM alpine\nRUN echo ok\nCOPPY a b\nCOPY --chwon=1 a b\n" });
    expect(res.status).toBe(400);
    const body = (await res.json()) as CheckErr;
    expect(body.ok).toBe(false);
    expect(body.error).toMatchObject({ line: 3, column: 1 });
    expect(body.error.message).toContain("unknown instruction: COPPY");
    expect(body.errors.map((e) => e.line)).toEqual([3, 4]);
    expect(body.errors[1].message).toContain("unknown flag: chwon");
    expect(body.excerpt).toContain("   3 | >>> COPPY a b");
  });

  it("reports an unknown target and a parse error", async () => {
    const t = await SELF.fetch(URL_ + "?target=nope", { method: "POST", body: "FROM a AS one\n" });
    expect(t.status).toBe(400);
    expect(((await t.json()) as CheckErr).error.message).toContain('target stage "nope" could not be found');
    const p = await SELF.fetch(URL_, { method: "POST", body: "FROM a\nRUN <<EOF\nnever ends\n" });
    expect(p.status).toBe(400);
    expect(((await p.json()) as CheckErr).error).toEqual({ message: "unterminated heredoc", line: 2 });
  });

  it("rejects malformed JSON bodies and bodies over 1 MiB", async () => {
    const bad = await SELF.fetch(URL_, { method: "POST", headers: { "content-type": "application/json" }, body: "{" });
    expect(bad.status).toBe(400);
    const big = await SELF.fetch(URL_, { method: "POST", body: "FROM a\n" + "# x\n".repeat(300_000) });
    expect(big.status).toBe(413);
  });
});

describe("POST /v1/dockerfile/check: build checks", () => {
  it("returns BuildKit-style check warnings with rule names and lines", async () => {
    const res = await SELF.fetch(URL_, { method: "POST", body: "FROM alpine as Build\nRUN a \\\n\n  b\nCMD ./run\n" });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { warnings: { rule: string; line: number; url: string }[] };
    expect(body.warnings.map((w) => [w.rule, w.line])).toEqual([
      ["FromAsCasing", 1],
      ["StageNameCasing", 1],
      ["NoEmptyContinuation", 4],
      ["JSONArgsRecommended", 5],
    ]);
    expect(body.warnings[0].url).toBe("https://docs.docker.com/go/dockerfile/rule/from-as-casing/");
  });
});

describe("POST /v1/dockerfile/check: build-time errors found early", () => {
  it("rejects an invalid STOPSIGNAL and EXPOSE in a stage that gets built", async () => {
    const res = await SELF.fetch(URL_, { method: "POST", body: "FROM a\nEXPOSE 80/tpc\nSTOPSIGNAL SIGNOPE\n" });
    expect(res.status).toBe(400);
    const body = (await res.json()) as CheckErr;
    expect(body.errors).toEqual([
      { message: "invalid proto: tpc", line: 2 },
      { message: "Invalid signal: SIGNOPE", line: 3 },
    ]);
    const unused = await SELF.fetch(URL_, { method: "POST", body: "FROM a AS unused\nSTOPSIGNAL SIGNOPE\nFROM b\n" });
    expect(unused.status).toBe(200);
  });
});

describe("POST /v1/dockerfile/check: options", () => {
  it("uses the platform for the predefined args and rejects a malformed one", async () => {
    const ok = await SELF.fetch(URL_ + "?platform=linux/arm64", { method: "POST", body: "FROM golang:${TARGETARCH}\n".replace("${TARGETARCH}", "1-${TARGETARCH}") });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { stages: { resolvedBase: string }[] }).stages[0].resolvedBase).toBe("golang:1-arm64");
    const bad = await SELF.fetch(URL_ + "?platform=linux//", { method: "POST", body: "FROM a\n" });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as CheckErr).error.message).toContain("invalid platform");
  });
});
