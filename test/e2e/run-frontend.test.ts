// RUN semantics that come from the frontend's tested code, on a real runner under runc (issue 11,
// bugs 1 and 4): an ARG with no value is unset in RUN's environment (not the string "null"), and a
// heredoc starting with `#!` runs as a file with its interpreter, not through the shell.
import { chmodSync, existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, have, startKiln, type KilnServer } from "./server";
import { BUSYBOX, build, contextDir } from "./helpers";
import { startRunner, type RunnerProcess } from "./runner-helpers";

const canRun = process.getuid?.() === 0 && have("runc") && existsSync(BUSYBOX);
if (!canRun) console.warn("run-frontend tests skipped: need root, runc and busybox-static");

/** Every `log` text of a finished build (its event stream replays the history). */
async function logOf(url: string, id: string): Promise<string> {
  const res = await fetch(`${url}/v1/builds/${id}/events`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  const text = await res.text();
  let out = "";
  for (const frame of text.split("\n\n")) {
    const type = /^event: (.*)$/m.exec(frame)?.[1];
    const data = /^data: (.*)$/m.exec(frame)?.[1];
    if (type === "log" && data) out += (JSON.parse(data) as { text: string }).text;
  }
  return out;
}

describe.skipIf(!canRun)("RUN through the frontend's code", () => {
  let kiln: KilnServer;
  let runner: RunnerProcess;

  beforeAll(async () => {
    kiln = await startKiln();
    runner = await startRunner(kiln.url);
  }, 180_000);

  afterAll(async () => {
    await runner?.stop();
    await kiln?.stop(true);
  });

  it("an ARG without value is unset for RUN, and a #! heredoc runs with its interpreter", async () => {
    const dockerfile = [
      "FROM scratch",
      "COPY busybox /bin/busybox",
      'RUN ["/bin/busybox","--install","-s","/bin"]',
      "ARG UNSET",
      'RUN echo "unset=${UNSET:-empty} set=${UNSET+yes}"',
      "RUN <<EOF",
      "#!/bin/awk -f",
      'BEGIN { print "awk ran the script" > "/out.txt" }',
      "EOF",
      "RUN cat /out.txt",
    ].join("\n");
    const ctx = contextDir({ Dockerfile: `${dockerfile}\n`, busybox: readFileSync(BUSYBOX) });
    chmodSync(path.join(ctx, "busybox"), 0o755);
    const b = await build(kiln.url, ADMIN_TOKEN, ctx, { tag: "e2e/frontend:1" });
    const log = await logOf(kiln.url, b.id);
    expect(b.status, `${JSON.stringify(b.error)}\n${log}`).toBe("succeeded");
    expect(log).toContain("unset=empty set=\n");
    expect(log).not.toContain("null");
    // through the shell, `BEGIN { … }` is a syntax error; as a file, awk runs it
    expect(log).toContain("awk ran the script");
  });
});
