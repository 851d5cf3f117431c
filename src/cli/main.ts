// The `kiln` command: build, login, logs, cancel, gc, usage, runner.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline/promises";
import { follow, runBuild } from "./build";
import { runPush } from "./push";
import { configPath, loadConfig, resolveTarget, saveConfig } from "./config";
import { authHeaders, CliError, httpError, request, statusHint } from "./http";
import { makeProgress, type BuildView, type ProgressMode } from "./progress";
import { gcCommand, usageCommand } from "./lifecycle";

const USAGE = `usage:
  kiln build [-t repo:tag]... [-f Dockerfile] [--build-arg K=V]... [--target T] [--no-cache]
             [--platform os/arch] [--secret id=x,src=file]... [--progress plain|tty|quiet] [-q]
             [--server URL] [--token T] <dir>
  kiln push [--src-creds USER:PASS] [--server URL] [--token T] <source> <repository:tag>
             copies an image into kiln in chunks (layers of any size; docker and podman push a
             layer in one request, over the 100 MB body limit of a deployed Worker); <source> is
             oci:<dir>[:<tag>], docker-archive:<file> (docker save) or docker://<registry>/<name>:<tag>
  kiln login [--server URL] [--token T]     (reads the token from stdin when not given)
  kiln logs <build-id> [--progress plain|tty|quiet] [--server URL] [--token T]
  kiln cancel <build-id> [--server URL] [--token T]
  kiln gc [--dry-run] [--grace-seconds N] [--json] [--server URL] [--token T]     (admin)
  kiln usage [--json] [--server URL] [--token T]
  kiln runner --server URL [--token-file F] [--work-dir D] [--concurrency N] [--allow-host-network]
              (the token from --token-file, or KILN_TOKEN; --token T shows it to every user in ps)
`;

/** --progress: plain (a log), tty (redraws in place; plain when stdout is no terminal), quiet; default tty. */
function progressMode(flags: Record<string, unknown>): ProgressMode {
  if (flags.quiet) return "quiet";
  const mode = (flags.progress as string | undefined) ?? process.env.KILN_PROGRESS ?? "auto";
  if (mode === "auto") return "tty";
  if (mode === "plain" || mode === "tty" || mode === "quiet") return mode;
  throw new UsageError(`--progress ${mode}: expected plain, tty or quiet`);
}

/** `kiln runner`: --token-file F (or KILN_TOKEN) so that the token stays out of argv. */
export function runnerArgs(argv: string[]): string[] {
  const out: string[] = [];
  let file: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--token-file") {
      file = argv[++i];
      if (file === undefined) throw new UsageError("flag --token-file needs a value");
    } else if (a.startsWith("--token-file=")) {
      file = a.slice("--token-file=".length);
    } else {
      out.push(a);
    }
  }
  if (file !== undefined) {
    let token: string;
    try {
      token = readFileSync(file, "utf8").split("\n").map((l) => l.trim()).find((l) => l !== "") ?? "";
    } catch (e) {
      throw new CliError(`cannot read the token file ${file}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (e as Error).message}`);
    }
    if (!token) throw new CliError(`the token file ${file} is empty`);
    // In this process only: runnerMain reads it like --token, nothing shows it to ps.
    out.unshift("--token", token);
  }
  return out;
}

/** DELETE /v1/builds/:id, said as a sentence: what was cancelled, or why nothing was. */
async function cancelBuild(server: string, token: string | undefined, id: string): Promise<number> {
  const path = `/v1/builds/${encodeURIComponent(id)}`;
  const notFound = "check the build id (and that your token may pull its repository)";
  const before = await request(server, path, { headers: authHeaders(token) });
  if (!before.ok) throw await httpError(`cancelling build ${id}`, before, before.status === 404 ? notFound : undefined);
  const was = (await before.json()) as BuildView;
  if (["succeeded", "failed", "cancelled"].includes(was.status)) {
    process.stdout.write(`build ${id} had already ${was.status === "cancelled" ? "been cancelled" : was.status}; nothing to cancel\n`);
    return 0;
  }
  const res = await request(server, path, { method: "DELETE", headers: authHeaders(token) });
  if (!res.ok) {
    throw await httpError(`cancelling build ${id}`, res, res.status === 404 ? notFound : res.status === 403 ? "cancelling needs push on the build's repository" : statusHint(res.status));
  }
  const after = (await res.json()) as BuildView;
  if (after.status === "cancelled") {
    const steps = was.steps ?? [];
    const running = steps.filter((s) => s.status === "running").map((s) => s.instruction);
    const done = steps.filter((s) => ["done", "cached"].includes(s.status)).length;
    const where = was.status === "running"
      ? ` (it was running${running.length ? ` ${running.join(", ")}` : ""}; ${done} of ${steps.length} steps done)`
      : ` (it was ${was.status})`;
    process.stdout.write(`cancelled build ${id}${where}\n`);
    return 0;
  }
  process.stdout.write(`build ${id} ${after.status} before it could be cancelled\n`);
  return 0;
}

export class UsageError extends Error {}

/** Parses flags: repeatable ones collect into arrays; `--flag=value` and `--flag value` both work. */
export function parseArgs(argv: string[], spec: { bool: string[]; repeat: string[]; value: string[]; alias: Record<string, string> }) {
  const flags: Record<string, string | boolean | string[]> = {};
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    if (arg === "--") { positional.push(...argv.slice(i + 1)); break; }
    if (!arg.startsWith("-") || arg === "-") { positional.push(arg); continue; }
    let value: string | undefined;
    const eq = arg.indexOf("=");
    if (arg.startsWith("--") && eq > 0) { value = arg.slice(eq + 1); arg = arg.slice(0, eq); }
    const name = spec.alias[arg] ?? arg.replace(/^--?/, "");
    if (spec.bool.includes(name)) { flags[name] = true; continue; }
    if (!spec.repeat.includes(name) && !spec.value.includes(name)) throw new UsageError(`unknown flag ${arg}`);
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new UsageError(`flag ${arg} needs a value`);
      value = argv[++i];
    }
    if (spec.repeat.includes(name)) flags[name] = [...((flags[name] as string[]) ?? []), value];
    else flags[name] = value;
  }
  return { flags, positional };
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case "build": {
      const { flags, positional } = parseArgs(rest, {
        bool: ["no-cache", "quiet"],
        repeat: ["tag", "build-arg", "secret"],
        value: ["file", "target", "platform", "server", "token", "progress"],
        alias: { "-t": "tag", "-f": "file", "-q": "quiet" },
      });
      if (positional.length !== 1) throw new UsageError("kiln build needs exactly one context directory");
      const { server, token } = resolveTarget({ server: flags.server as string, token: flags.token as string });
      return await runBuild({
        dir: positional[0], server, token,
        tags: (flags.tag as string[]) ?? [],
        dockerfile: flags.file as string | undefined,
        buildArgs: (flags["build-arg"] as string[]) ?? [],
        target: flags.target as string | undefined,
        noCache: Boolean(flags["no-cache"]),
        platform: flags.platform as string | undefined,
        secrets: (flags.secret as string[]) ?? [],
        progress: progressMode(flags),
      });
    }
    case "push": {
      const { flags, positional } = parseArgs(rest, { bool: [], repeat: [], value: ["server", "token", "src-creds", "chunk-size"], alias: {} });
      if (positional.length !== 2) throw new UsageError("kiln push needs a source and a repository:tag");
      const { server, token } = resolveTarget({ server: flags.server as string, token: flags.token as string });
      const chunk = flags["chunk-size"] !== undefined ? Number(flags["chunk-size"]) : undefined;
      if (chunk !== undefined && !(Number.isInteger(chunk) && chunk >= 5 * 1024 * 1024)) throw new UsageError("--chunk-size must be a whole number of bytes, at least 5 MiB");
      await runPush({ source: positional[0], target: positional[1], server, token, srcCreds: flags["src-creds"] as string | undefined, chunkSize: chunk });
      return 0;
    }
    case "login": {
      const { flags } = parseArgs(rest, { bool: [], repeat: [], value: ["server", "token"], alias: {} });
      const server = ((flags.server as string) ?? loadConfig().server ?? "http://127.0.0.1:8787").replace(/\/+$/, "");
      let token = flags.token as string | undefined;
      if (!token) {
        const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: false });
        process.stderr.write("token: ");
        for await (const line of rl) { token = line.trim(); break; }
        rl.close();
      }
      if (!token) throw new UsageError("no token given");
      // Check the token against the registry's token endpoint before saving it.
      const res = await request(server, "/v2/token?service=kiln", { headers: { authorization: `Basic ${Buffer.from(`kiln:${token}`).toString("base64")}` } });
      if (res.status === 401) throw new CliError(`login failed: ${server} refused the token; check it, or ask an admin for a new one`);
      if (!res.ok) throw await httpError(`logging in to ${server}`, res);
      saveConfig({ ...loadConfig(), server, token });
      process.stdout.write(`Login Succeeded (${server}; token saved in ${configPath()})\n`);
      return 0;
    }
    case "logs": {
      const { flags, positional } = parseArgs(rest, { bool: ["quiet"], repeat: [], value: ["server", "token", "progress"], alias: { "-q": "quiet" } });
      if (positional.length !== 1) throw new UsageError("kiln logs needs a build id");
      const { server, token } = resolveTarget({ server: flags.server as string, token: flags.token as string });
      return await follow(server, token, positional[0], makeProgress(progressMode(flags)));
    }
    case "cancel": {
      const { flags, positional } = parseArgs(rest, { bool: [], repeat: [], value: ["server", "token"], alias: {} });
      if (positional.length !== 1) throw new UsageError("kiln cancel needs a build id");
      const { server, token } = resolveTarget({ server: flags.server as string, token: flags.token as string });
      return await cancelBuild(server, token, positional[0]);
    }
    case "gc": {
      const { flags, positional } = parseArgs(rest, { bool: ["dry-run", "json"], repeat: [], value: ["server", "token", "grace-seconds"], alias: { "-n": "dry-run" } });
      if (positional.length) throw new UsageError("kiln gc takes no arguments");
      const { server, token } = resolveTarget({ server: flags.server as string, token: flags.token as string });
      return await gcCommand(server, token, { dryRun: Boolean(flags["dry-run"]), graceSeconds: flags["grace-seconds"] as string | undefined, json: Boolean(flags.json) });
    }
    case "usage": {
      const { flags, positional } = parseArgs(rest, { bool: ["json"], repeat: [], value: ["server", "token"], alias: {} });
      if (positional.length) throw new UsageError("kiln usage takes no arguments");
      const { server, token } = resolveTarget({ server: flags.server as string, token: flags.token as string });
      return await usageCommand(server, token, { json: Boolean(flags.json) });
    }
    case "runner": {
      const mod = await import("../runner/main");
      return (await mod.runnerMain(runnerArgs(rest))) ?? 0;
    }
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE);
      return cmd === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command ${cmd}`);
  }
}

/** A reader that went away (`kiln logs … | head`) ends the command quietly. */
function quietOnEpipe(stream: NodeJS.WriteStream): void {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(0);
    throw err;
  });
}

export async function cli(argv: string[]): Promise<void> {
  quietOnEpipe(process.stdout);
  quietOnEpipe(process.stderr);
  try {
    process.exitCode = await main(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`kiln: ${err.message}\n${USAGE}`);
      process.exitCode = 2;
    } else if (err instanceof CliError) {
      process.stderr.write(`kiln: ${err.message}\n`);
      process.exitCode = 1;
    } else {
      // Not one of ours: still one line (KILN_DEBUG=1 for the stack).
      process.stderr.write(`kiln: ${(err as Error)?.message ?? String(err)}\n`);
      if (process.env.KILN_DEBUG) process.stderr.write(`${(err as Error)?.stack}\n`);
      process.exitCode = 1;
    }
  }
}
