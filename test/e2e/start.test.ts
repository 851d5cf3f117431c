// `npm start` (scripts/start.mjs) as a user meets it: a busy port is named with its holder and
// nothing is left running; Ctrl-C while starting stops everything; the local runner's token is kept
// in the state folder, reused by the next start, replaced (and the old one revoked) once revoked,
// and never shown in a command line.
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { freePort, ROOT } from "./server";

const ADMIN = "kiln-e2e-start-admin";

interface Started {
  child: ChildProcess;
  mark: string;
  output: () => string;
  exited: Promise<number>;
}

const live: Started[] = [];

/** Runs `node scripts/start.mjs`; every process it starts inherits KILN_E2E_MARK=<mark>. */
function start(env: Record<string, string>): Started {
  const mark = randomUUID();
  const child = spawn(process.execPath, [path.join(ROOT, "scripts", "start.mjs")], {
    cwd: ROOT,
    env: { ...process.env, CLOUDFLARE_CF_FETCH_ENABLED: "false", WRANGLER_SEND_METRICS: "false", NO_COLOR: "1", KILN_ADMIN_TOKEN: ADMIN, KILN_E2E_MARK: mark, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.on("data", (d) => { out += d; if (process.env.KILN_E2E_VERBOSE) process.stderr.write(d); });
  child.stderr!.on("data", (d) => { out += d; if (process.env.KILN_E2E_VERBOSE) process.stderr.write(d); });
  const exited = new Promise<number>((resolve) => child.on("exit", (code, signal) => resolve(code ?? (signal ? 128 : -1))));
  const s = { child, mark, output: () => out, exited };
  live.push(s);
  return s;
}

/** Processes (other than zombies) whose environment carries the mark: everything `start` spawned. */
function marked(mark: string): { pid: number; cmd: string }[] {
  const found: { pid: number; cmd: string }[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (!readFileSync(`/proc/${name}/environ`, "latin1").split("\0").includes(`KILN_E2E_MARK=${mark}`)) continue;
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) continue;
      found.push({ pid: Number(name), cmd: readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0").join(" ").trim() });
    } catch { /* exited meanwhile */ }
  }
  return found;
}

/** Every command line on this machine (what `ps -eo args` shows). */
function allCommandLines(): string {
  const lines: string[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try { lines.push(readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0").join(" ")); } catch { /* gone */ }
  }
  return lines.join("\n");
}

async function until<T>(what: string, fn: () => T | undefined | false, s: Started, timeoutMs = 150_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; npm start said:\n${s.output()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Nothing with the mark left within a few seconds of start.mjs exiting. */
async function expectNothingLeft(s: Started): Promise<void> {
  const deadline = Date.now() + 10_000;
  let left = marked(s.mark);
  while (left.length && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    left = marked(s.mark);
  }
  expect(left, `left running after npm start exited:\n${left.map((p) => `${p.pid} ${p.cmd}`).join("\n")}\n--- output:\n${s.output()}`).toEqual([]);
}

async function stop(s: Started, signal: NodeJS.Signals = "SIGINT"): Promise<number> {
  s.child.kill(signal);
  const code = await Promise.race([s.exited, new Promise<number>((r) => setTimeout(() => r(-999), 30_000))]);
  return code;
}

afterEach(async () => {
  // A failed test must not leave servers behind: kill what carries our marks.
  for (const s of live.splice(0)) {
    if (s.child.exitCode === null && s.child.signalCode === null) await stop(s);
    for (const p of marked(s.mark)) { try { process.kill(p.pid, "SIGKILL"); } catch { /* gone */ } }
  }
});

async function tokens(url: string): Promise<{ id: string; name: string; scopes: string[]; revoked: boolean }[]> {
  const res = await fetch(`${url}/v1/tokens`, { headers: { authorization: `Bearer ${ADMIN}` } });
  expect(res.status).toBe(200);
  return ((await res.json()) as { tokens: { id: string; name: string; scopes: string[]; revoked: boolean }[] }).tokens;
}

describe("npm start", () => {
  const stateDirs: string[] = [];
  const stateDir = () => { const d = mkdtempSync(path.join(os.tmpdir(), "kiln-start-")); stateDirs.push(d); return d; };
  afterAll(() => { for (const d of stateDirs) rmSync(d, { recursive: true, force: true }); });

  it("on a busy port: names the holder, exits non-zero without a stack trace, leaves nothing running", async () => {
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(0, "127.0.0.1", () => r()));
    const port = (holder.address() as net.AddressInfo).port;
    try {
      const s = start({ PORT: String(port), KILN_STATE_DIR: stateDir() });
      const code = await Promise.race([s.exited, new Promise<number>((r) => setTimeout(() => r(-999), 20_000))]);
      expect(code, s.output()).toBe(1);
      expect(s.output()).toContain(`kiln: port 127.0.0.1:${port} is in use by pid ${process.pid} (`);
      expect(s.output()).toContain("start kiln on another port: PORT=");
      expect(s.output()).not.toMatch(/EADDRINUSE|\n\s+at /);
      await expectNothingLeft(s);
    } finally {
      holder.close();
    }
  });

  it("Ctrl-C while the server is bundling stops wrangler; Ctrl-C while workerd starts stops it and its node", async () => {
    // While the Worker is bundled and the migrations applied: wrangler processes run.
    const early = start({ PORT: String(await freePort()), KILN_STATE_DIR: stateDir(), KILN_NO_RUNNER: "1" });
    await until("wrangler to run", () => marked(early.mark).some((x) => /wrangler/.test(x.cmd)), early);
    expect(await stop(early, "SIGINT")).toBe(130);
    await expectNothingLeft(early);

    const s = start({ PORT: String(await freePort()), KILN_STATE_DIR: stateDir(), KILN_NO_RUNNER: "1" });
    // Wait until the server's processes exist, then interrupt before (or as) it answers.
    const seen = await until("workerd to start", () => { const p = marked(s.mark); return p.some((x) => /workerd/.test(x.cmd)) && p; }, s);
    expect(seen.some((p) => /local-server\.mjs/.test(p.cmd)), JSON.stringify(seen)).toBe(true);
    expect(await stop(s, "SIGINT")).toBe(130);
    expect(s.output()).toContain("kiln: SIGINT: stopping");
    await expectNothingLeft(s);
  });

  it("keeps one local runner token in the state folder: reused by the next start, replaced once revoked, never in ps", async () => {
    const dir = stateDir();
    const tokenFile = path.join(dir, "local-runner.token");
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const env = { PORT: String(port), KILN_STATE_DIR: dir };

    const runOnce = async (expectWord: "new" | "reused") => {
      const t0 = Date.now();
      const s = start(env);
      await until("the local runner", () => /kiln: local runner started/.test(s.output()) || /kiln: no local runner/.test(s.output()) || s.child.exitCode !== null, s);
      expect(s.output(), "this test needs the local runner (root, runc, overlayfs)").toMatch(/kiln: local runner started \(pid \d+/);
      expect(s.output()).toMatch(new RegExp(`kiln: local runner token \\S+ \\(${expectWord}; kept in ${tokenFile.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\)`));
      const token = readFileSync(tokenFile, "utf8").trim();
      const id = readFileSync(path.join(dir, "local-runner.token-id"), "utf8").trim();
      expect(token.length).toBeGreaterThan(20);
      expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
      // The runner got it by file: its command line names the file, no command line holds the token.
      const runner = await until("the runner process", () => marked(s.mark).find((p) => / runner --server /.test(p.cmd)), s);
      expect(runner.cmd).toContain(`--token-file ${tokenFile}`);
      expect(allCommandLines()).not.toContain(token);
      // And the token works: the runner's claims get through (the server saw it since this start).
      const deadline = Date.now() + 60_000;
      let claimed = false;
      while (!claimed && Date.now() < deadline) {
        const r = await fetch(`${url}/v1/runners`, { headers: { authorization: `Bearer ${ADMIN}` } });
        claimed = ((await r.json()) as { runners?: { lastSeen: number }[] }).runners?.some((x) => x.lastSeen >= t0) ?? false;
        if (!claimed) await new Promise((r) => setTimeout(r, 500));
      }
      expect(claimed, s.output()).toBe(true);
      return { s, token, id };
    };

    const first = await runOnce("new");
    let active = (await tokens(url)).filter((t) => t.scopes.includes("runner") && !t.revoked);
    expect(active.map((t) => t.id)).toEqual([first.id]);
    expect(await stop(first.s, "SIGTERM")).toBe(143);
    await expectNothingLeft(first.s);

    const second = await runOnce("reused");
    expect(second.token).toBe(first.token);
    expect(second.id).toBe(first.id);
    active = (await tokens(url)).filter((t) => t.scopes.includes("runner") && !t.revoked);
    expect(active.map((t) => t.id)).toEqual([first.id]);
    // An operator revokes it: the next start mints another one.
    const del = await fetch(`${url}/v1/tokens/${first.id}`, { method: "DELETE", headers: { authorization: `Bearer ${ADMIN}` } });
    expect(del.status).toBe(204);
    expect(await stop(second.s)).toBe(130);
    await expectNothingLeft(second.s);

    const third = await runOnce("new");
    expect(third.token).not.toBe(first.token);
    const all = await tokens(url);
    expect(all.filter((t) => t.scopes.includes("runner") && !t.revoked).map((t) => t.id)).toEqual([third.id]);
    expect(all.find((t) => t.id === first.id)?.revoked).toBe(true);
    expect(await stop(third.s)).toBe(130);
    await expectNothingLeft(third.s);
  });
});
