import { describe, expect, it } from "vitest";
import { parseArgs, runnerArgs, UsageError } from "./main";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { httpError, networkReason, requestIdempotent } from "./http";
import { PlainProgress, QuietProgress, TtyProgress, type Progress } from "./progress";
import { readSse } from "./sse";
import { follow, readSecrets } from "./build";
import http from "node:http";

/** The screen a terminal shows after `raw` (newline, carriage return, cursor up, clear to end). */
function emulate(raw: string): string[] {
  const lines: string[] = [""];
  let row = 0;
  let col = 0;
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i];
    if (ch === "\x1b") {
      const m = /^\x1b\[(\d*)([A-Za-z])/.exec(raw.slice(i));
      if (!m) throw new Error(`unknown escape at ${i}`);
      i += m[0].length - 1;
      if (m[2] === "A") row = Math.max(0, row - Number(m[1] || 1));
      else if (m[2] === "J") { lines.length = row + 1; lines[row] = lines[row].slice(0, col); }
      else throw new Error(`unexpected escape ${JSON.stringify(m[0])}`);
    } else if (ch === "\n") {
      row++; col = 0;
      if (lines.length <= row) lines.push("");
    } else if (ch === "\r") {
      col = 0;
    } else {
      const l = lines[row].padEnd(col);
      lines[row] = l.slice(0, col) + ch + l.slice(col + 1);
      col++;
    }
  }
  if (lines[lines.length - 1] === "") lines.pop();
  return lines;
}

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

  // The events a failing RUN build sends, as the coordinator sends them (from a real build).
  const RUN = 'RUN ["/bin/busybox","sh","-c","printf part-one; sleep 1; echo \\" part-two\\"; exit 3"]';
  const MESSAGE = `process ${RUN.slice(4)} did not complete successfully: exit code 3\npart-one part-two`;
  const DOCKERFILE = ["FROM scratch", "COPY a.txt /a", "COPY busybox /bin/busybox", RUN, 'CMD ["x"]', ""];
  const step = (index: number, instruction: string, status: string, durationMs: number | null = null) =>
    ({ index, stage: "stage-0", instruction, status, durationMs, line: index });
  function failingBuild(p: Progress): void {
    const names = ["", "FROM scratch", "COPY a.txt /a", "COPY busybox /bin/busybox", RUN, 'CMD ["x"]'];
    for (let i = 1; i <= 5; i++) p.step(step(i, names[i], "pending"));
    p.step(step(1, names[1], "running"));
    p.step(step(1, names[1], "done", 40));
    p.step(step(2, names[2], "running"));
    p.step(step(2, names[2], "cached", 0));
    p.step(step(3, names[3], "running"));
    p.step(step(3, names[3], "done", 1100));
    p.step(step(4, RUN, "running"));
    p.log(4, "waiting for a runner\n");
    p.log(4, "part-one");
    p.log(4, " part-two\n");
    p.step(step(4, RUN, "failed", 3400));
    p.log(4, `ERROR: ${MESSAGE}\n`);
    p.step(step(5, names[5], "skipped"));
    p.done({
      id: "b1", status: "failed",
      steps: [step(1, names[1], "done", 40), step(2, names[2], "cached", 0), step(3, names[3], "done", 1100), step(4, RUN, "failed", 3400), step(5, names[5], "skipped")],
      error: { message: MESSAGE, step: 4, line: 4 },
    }, { name: "Dockerfile.run", lines: DOCKERFILE });
  }

  it("plain progress: one number per step in order, output once and line-buffered, kiln's lines marked, excerpt with the file's name", () => {
    let out = "";
    failingBuild(new PlainProgress((s) => { out += s; }, { firstNumber: 2 }));
    expect(out).toBe(`#2 [1/5] FROM scratch
#2 DONE 0.0s

#3 [2/5] COPY a.txt /a
#3 CACHED

#4 [3/5] COPY busybox /bin/busybox
#4 DONE 1.1s

#5 [4/5] ${RUN}
#5 kiln: waiting for a runner
#5 part-one part-two
#5 ERROR 3.4s

------
 > [4/5] ${RUN}:
part-one part-two
------
Dockerfile.run:4
--------------------
   1 |     FROM scratch
   2 |     COPY a.txt /a
   3 |     COPY busybox /bin/busybox
   4 | >>> ${RUN}
   5 |     CMD ["x"]
--------------------
ERROR: process ${RUN.slice(4)} did not complete successfully: exit code 3
`);
  });

  it("plain progress keeps a step's lines together when steps run at once, numbered as shown", () => {
    let out = "";
    const p = new PlainProgress((s) => { out += s; });
    const a = { index: 1, stage: "a", instruction: "RUN one", status: "pending" };
    const b = { index: 2, stage: "b", instruction: "RUN two", status: "pending" };
    p.step(a); p.step(b);
    p.step({ ...a, status: "running" });
    p.step({ ...b, status: "running" });
    p.log(2, "b says\n");
    p.log(1, "a sa");
    p.step({ ...b, status: "done", durationMs: 200 });
    p.log(1, "ys\n");
    p.step({ ...a, status: "done", durationMs: 900 });
    p.done({ id: "b9", status: "succeeded", steps: [{ ...a, status: "done", durationMs: 900 }, { ...b, status: "done", durationMs: 200 }], image: { repository: "t/x", tags: ["1"], digest: "sha256:abc" } });
    expect(out).toBe("#1 [a 1/1] RUN one\n#1 a says\n#1 DONE 0.9s\n\n#2 [b 1/1] RUN two\n#2 b says\n#2 DONE 0.2s\n\n"
      + "#3 exporting to image\n#3 pushing t/x:1\n#3 digest sha256:abc\n#3 DONE\n\nkiln: build b9 succeeded\n");
  });

  it("a Dockerfile rejected at submit shows the excerpt under the file's real name, the line once", () => {
    let out = "";
    const p = new PlainProgress((s) => { out += s; });
    p.rejected("Dockerfile:3: unknown instruction: NOPE", 3, { name: "Dockerfile.syntax", lines: ["FROM scratch", "COPY a /a", "NOPE x", 'CMD ["x"]'] });
    expect(out).toBe("Dockerfile.syntax:3\n--------------------\n   1 |     FROM scratch\n   2 |     COPY a /a\n   3 | >>> NOPE x\n   4 |     CMD [\"x\"]\n--------------------\nERROR: unknown instruction: NOPE\n");
  });

  it("tty progress redraws in place: running steps live at the bottom, finished ones once above", () => {
    let raw = "";
    let now = 0;
    const p = new TtyProgress((s) => { raw += s; }, { now: () => now, columns: () => 100, rows: () => 40 });
    const screen = () => emulate(raw);
    p.status("build b1 queued");
    p.step(step(1, "FROM scratch", "pending"));
    p.step(step(2, "RUN make", "pending"));
    p.step(step(1, "FROM scratch", "running"));
    now = 100;
    p.step(step(1, "FROM scratch", "done", 100));
    p.step(step(2, "RUN make", "running"));
    p.log(2, "compiling\n");
    now = 1500;
    p.render();
    expect(screen().map((l) => l.trimEnd())).toEqual([
      "kiln: build b1 queued",
      expect.stringMatching(/^ => \[1\/2\] FROM scratch +0\.1s$/),
      expect.stringMatching(/^ => \[2\/2\] RUN make +1\.4s$/),
      " => => # compiling",
      "[+] Building b1 1.5s (1/2 done)",
    ]);
    p.log(2, "linking\n");
    now = 2500;
    p.step(step(2, "RUN make", "failed", 2400));
    p.done({ id: "b1", status: "failed", steps: [step(1, "FROM scratch", "done", 100), step(2, "RUN make", "failed", 2400)], error: { message: "exit code 2", step: 2, line: 2 } },
      { name: "Dockerfile", lines: ["FROM scratch", "RUN make"] });
    const final = screen().map((l) => l.trimEnd());
    expect(final.slice(0, 5)).toEqual([
      "kiln: build b1 queued",
      expect.stringMatching(/^ => \[1\/2\] FROM scratch +0\.1s$/),
      expect.stringMatching(/^ => ERROR \[2\/2\] RUN make +2\.4s$/),
      " => => # compiling",
      " => => # linking",
    ]);
    expect(final.filter((l) => l.includes("RUN make")).length).toBe(3); // the step, the summary's header, the excerpt
    expect(final.join("\n")).toContain("   2 | >>> RUN make\n--------------------\nERROR: exit code 2");
    expect(final.join("\n")).not.toContain("[+] Building");
    expect(raw).toContain("\x1b[J");
  });

  it("quiet progress prints only the digest, or the failure to stderr", () => {
    let out = "";
    let err = "";
    const q = new QuietProgress((s) => { out += s; }, (s) => { err += s; });
    q.step(step(1, "FROM scratch", "running"));
    q.log(1, "noise\n");
    q.done({ id: "b2", status: "succeeded", steps: [step(1, "FROM scratch", "done", 1)], image: { repository: "t/x", tags: ["1"], digest: "sha256:abc" } });
    expect([out, err]).toEqual(["sha256:abc\n", ""]);
    out = "";
    failingBuild(new QuietProgress((s) => { out += s; }, (s) => { err += s; }));
    expect(out).toBe("");
    expect(err).toContain("------\n > [4/5] ");
    expect(err).toContain("ERROR: process ");
  });

  it("says why a request failed in one sentence: network causes and the server's message, never JSON", async () => {
    const refused = Object.assign(new TypeError("fetch failed"), { cause: Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" }) });
    expect(networkReason(refused)).toBe("connection refused");
    const res = new Response(JSON.stringify({ error: { message: "token lacks scope repository:x/y:push" } }), { status: 403 });
    const e = await httpError("starting the build", res);
    expect(e.message).toBe("starting the build failed: token lacks scope repository:x/y:push (HTTP 403); use a token with that scope (an admin creates one with POST /v1/tokens)");
    const html = await httpError("reading build b1", new Response("<html>bad gateway</html>", { status: 502, statusText: "Bad Gateway" }));
    expect(html.message).toBe("reading build b1 failed: Bad Gateway (HTTP 502); the server's log has the details; try again once it is fixed");
  });

  it("kiln runner --token-file reads the token in-process (nothing in argv); a missing or empty file is a sentence", () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "kiln-cli-token-"));
    writeFileSync(path.join(dir, "t"), "\n  tok_abc  \n", { mode: 0o600 });
    writeFileSync(path.join(dir, "empty"), "\n");
    expect(runnerArgs(["--server", "http://x", "--token-file", path.join(dir, "t"), "--work-dir", "/w"])).toEqual(["--token", "tok_abc", "--server", "http://x", "--work-dir", "/w"]);
    expect(runnerArgs([`--token-file=${path.join(dir, "t")}`])).toEqual(["--token", "tok_abc"]);
    expect(() => runnerArgs(["--token-file", path.join(dir, "nope")])).toThrow(`cannot read the token file ${path.join(dir, "nope")}: no such file`);
    expect(() => runnerArgs(["--token-file", path.join(dir, "empty")])).toThrow("is empty");
    expect(() => runnerArgs(["--token-file"])).toThrow(UsageError);
  });

  it("follow: after the event stream breaks, the replayed history is skipped, so nothing shows twice", async () => {
    const build = { id: "b7", status: "failed", steps: [step(1, "FROM scratch", "done", 5), step(2, "RUN x", "failed", 900)], error: { message: "exit code 1", step: 2, line: 2 } };
    const frames = [
      ["step", step(1, "FROM scratch", "pending")], ["step", step(2, "RUN x", "pending")],
      ["step", step(1, "FROM scratch", "running")], ["step", step(1, "FROM scratch", "done", 5)],
      ["step", step(2, "RUN x", "running")], ["log", { step: 2, text: "one\n" }],
      ["log", { step: 2, text: "two\n" }], ["step", step(2, "RUN x", "failed", 900)],
      ["log", { step: 2, text: "ERROR: exit code 1\n" }], ["done", build],
    ].map(([e, d]) => `event: ${e}\ndata: ${JSON.stringify(d)}\n\n`);
    let connections = 0;
    const server = http.createServer((req, res) => {
      if (req.url === "/v1/builds/b7") { res.setHeader("content-type", "application/json"); res.end(JSON.stringify(connections < 2 ? { ...build, status: "running" } : build)); return; }
      connections++;
      res.writeHead(200, { "content-type": "text/event-stream" });
      // The first connection breaks after six events; the second replays everything.
      if (connections === 1) { res.write(frames.slice(0, 6).join("")); setTimeout(() => res.destroy(), 50); return; }
      res.end(frames.join(""));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    try {
      let out = "";
      const code = await follow(`http://127.0.0.1:${(server.address() as { port: number }).port}`, undefined, "b7", new PlainProgress((x) => { out += x; }));
      expect(code).toBe(1);
      expect(connections).toBe(2);
      expect(out).toBe("#1 [1/2] FROM scratch\n#1 DONE 0.0s\n\n#2 [2/2] RUN x\n#2 one\n#2 two\n#2 ERROR 0.9s\n\n------\n > [2/2] RUN x:\none\ntwo\n------\nERROR: Dockerfile:2: exit code 1\n");
    } finally {
      server.close();
    }
  });

  it("follow: a reconnect sends Last-Event-ID and shows only what came after; kiln's marked lines are kiln's, a step printing the same words is the step's", async () => {
    const build = { id: "b8", status: "succeeded", steps: [step(1, "RUN x", "done", 5)] };
    const events: Array<[string, unknown]> = [
      ["step", step(1, "RUN x", "running")],
      ["log", { step: 1, text: "waiting for a runner\n", source: "kiln" }],
      ["log", { step: 1, text: "waiting for a runner\n" }],
      ["log", { step: 1, text: "part-one " }],
      ["log", { step: 1, text: "part-two\n" }],
      ["step", step(1, "RUN x", "done", 5)], ["done", build],
    ];
    const frames = events.map(([e, d], i) => `id: ${i + 1}\nevent: ${e}\ndata: ${JSON.stringify(d)}\n\n`);
    const lastIds: Array<string | undefined> = [];
    const server = http.createServer((req, res) => {
      if (req.url === "/v1/builds/b8") { res.setHeader("content-type", "application/json"); res.end(JSON.stringify(lastIds.length < 2 ? { ...build, status: "running" } : build)); return; }
      const last = req.headers["last-event-id"] as string | undefined;
      lastIds.push(last);
      res.writeHead(200, { "content-type": "text/event-stream" });
      if (!last) { res.write(frames.slice(0, 3).join("")); setTimeout(() => res.destroy(), 50); return; }
      res.end(frames.slice(Number(last)).join(""));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    try {
      let out = "";
      const code = await follow(`http://127.0.0.1:${(server.address() as { port: number }).port}`, undefined, "b8", new PlainProgress((x) => { out += x; }));
      expect(code).toBe(0);
      expect(lastIds).toEqual([undefined, "3"]);
      expect(out).toBe("#1 [1/1] RUN x\n#1 kiln: waiting for a runner\n#1 waiting for a runner\n#1 part-one part-two\n#1 DONE 0.0s\n\nkiln: build b8 succeeded\n");
    } finally {
      server.close();
    }
  });

  it("reads secrets from files and the environment, never from the command line", () => {
    process.env.KILN_TEST_SECRET = "s3cret";
    expect(readSecrets(["id=tok,env=KILN_TEST_SECRET"])).toEqual({ tok: "s3cret" });
    expect(() => readSecrets(["src=/nope"])).toThrow(/id= is required/);
  });
});

describe("requestIdempotent", () => {
  /** A server whose first `drop` requests have their connection closed before any answer. */
  async function flaky(drop: number, status = 200): Promise<{ url: string; seen: () => number; close: () => Promise<void> }> {
    let seen = 0;
    const srv = http.createServer((req, res) => {
      seen++;
      req.resume();
      req.on("end", () => {
        if (seen <= drop) req.socket.destroy();
        else res.writeHead(status).end(`answer ${seen}`);
      });
    });
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const { port } = srv.address() as import("node:net").AddressInfo;
    return { url: `http://127.0.0.1:${port}`, seen: () => seen, close: () => new Promise((r) => srv.close(() => r())) };
  }

  it("sends a request again, with a new body, when the connection closed before an answer", async () => {
    const s = await flaky(1);
    let made = 0;
    try {
      const res = await requestIdempotent(s.url, "/up", () => ({ method: "POST", body: `body ${++made}` }));
      expect(res.status).toBe(200);
      expect(await res.text()).toBe("answer 2");
      expect(made).toBe(2);
    } finally { await s.close(); }
  });

  it("never sends again a request that got an answer, even an error, and gives up after its tries", async () => {
    const answered = await flaky(0, 500);
    let made = 0;
    try {
      expect((await requestIdempotent(answered.url, "/up", () => ({ method: "POST", body: String(++made) }))).status).toBe(500);
      expect(made).toBe(1);
    } finally { await answered.close(); }
    const gone = await flaky(10);
    try {
      await expect(requestIdempotent(gone.url, "/up", () => ({ method: "POST", body: "x" }))).rejects.toThrow(/cannot reach/);
      expect(gone.seen()).toBe(3);
    } finally { await gone.close(); }
  });
});
