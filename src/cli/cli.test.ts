import { describe, expect, it } from "vitest";
import { parseArgs, UsageError } from "./main";
import { PlainProgress } from "./progress";
import { readSse } from "./sse";
import { withPositions, readSecrets } from "./build";

const buildSpec = { bool: ["no-cache"], repeat: ["tag", "build-arg"], value: ["file", "target"], alias: { "-t": "tag", "-f": "file" } };

describe("kiln CLI", () => {
  it("parses repeatable, aliased and --flag=value flags", () => {
    const { flags, positional } = parseArgs(["-t", "a:1", "--tag=b:2", "--build-arg", "X=1", "--no-cache", "-f", "D", "ctx"], buildSpec);
    expect(flags).toEqual({ tag: ["a:1", "b:2"], "build-arg": ["X=1"], "no-cache": true, file: "D" });
    expect(positional).toEqual(["ctx"]);
  });

  it("refuses unknown flags and missing values", () => {
    expect(() => parseArgs(["--nope"], buildSpec)).toThrow(UsageError);
    expect(() => parseArgs(["-t"], buildSpec)).toThrow(/needs a value/);
  });

  it("reads server-sent events split across chunks", async () => {
    const enc = new TextEncoder();
    const parts = ["event: step\ndata: {\"index\"", ":0}\n\n: ping\n\nevent: log\r\ndata: a\r\ndata: b\r\n\r\n", "event: done\ndata: {}\n\n"];
    const body = new ReadableStream<Uint8Array>({ start(c) { for (const p of parts) c.enqueue(enc.encode(p)); c.close(); } });
    const events = [];
    for await (const e of readSse(body)) events.push(e);
    expect(events.map((e) => [e.event, e.data])).toEqual([["step", '{"index":0}'], ["log", "a\nb"], ["done", "{}"]]);
  });

  it("numbers steps per stage and prints BuildKit-style progress with the failing line", () => {
    const steps = withPositions([
      { index: 0, stage: "build", instruction: "FROM scratch", status: "done" },
      { index: 1, stage: "build", instruction: "COPY a /a", status: "cached" },
      { index: 2, stage: "build", instruction: "COPY missing /x", status: "failed", durationMs: 1200 },
      { index: 3, stage: "build", instruction: "ENV A=1", status: "skipped" },
    ]);
    let out = "";
    const p = new PlainProgress((s) => { out += s; });
    for (const s of steps) p.step(s);
    p.log(2, "no such file: missing");
    p.done({ id: "b1", status: "failed", steps, error: { message: "COPY failed: missing not found", step: 2, line: 3 } },
      ["FROM scratch", "COPY a /a", "COPY missing /x", "ENV A=1"]);
    expect(out).toContain("#2 [build 2/4] COPY a /a\n#2 CACHED");
    expect(out).toContain("#3 [build 3/4] COPY missing /x\n");
    expect(out).toContain("#3 ERROR 1.2s");
    expect(out).toContain(">>>   3 | COPY missing /x");
    expect(out).toContain("ERROR: COPY failed: missing not found (Dockerfile line 3)");
    expect(out).not.toContain("ENV A=1\n#4");
  });

  it("reads secrets from files and the environment, never from the command line", () => {
    process.env.KILN_TEST_SECRET = "s3cret";
    expect(readSecrets(["id=tok,env=KILN_TEST_SECRET"])).toEqual({ tok: "s3cret" });
    expect(() => readSecrets(["src=/nope"])).toThrow(/id= is required/);
  });
});
