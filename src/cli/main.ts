// The `kiln` command: build, login, logs, cancel, runner.
import { createInterface } from "node:readline/promises";
import { follow, runBuild } from "./build";
import { loadConfig, resolveTarget, saveConfig } from "./config";
import { PlainProgress } from "./progress";

const USAGE = `usage:
  kiln build [-t repo:tag]... [-f Dockerfile] [--build-arg K=V]... [--target T] [--no-cache]
             [--platform os/arch] [--secret id=x,src=file]... [--server URL] [--token T] <dir>
  kiln login [--server URL] [--token T]     (reads the token from stdin when not given)
  kiln logs <build-id> [--server URL]
  kiln cancel <build-id> [--server URL]
  kiln runner --server URL --token T [--work-dir D] [--concurrency N] [--allow-host-network]
`;

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
        value: ["file", "target", "platform", "server", "token"],
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
      });
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
      const res = await fetch(`${server}/v2/token?service=kiln`, { headers: { authorization: `Basic ${Buffer.from(`kiln:${token}`).toString("base64")}` } });
      if (res.status === 401) { process.stderr.write(`login failed: ${server} refused the token\n`); return 1; }
      if (!res.ok) { process.stderr.write(`login failed: ${server} answered ${res.status}\n`); return 1; }
      saveConfig({ ...loadConfig(), server, token });
      process.stdout.write(`Login Succeeded (${server})\n`);
      return 0;
    }
    case "logs": {
      const { flags, positional } = parseArgs(rest, { bool: [], repeat: [], value: ["server", "token"], alias: {} });
      if (positional.length !== 1) throw new UsageError("kiln logs needs a build id");
      const { server, token } = resolveTarget({ server: flags.server as string, token: flags.token as string });
      return await follow(server, token, positional[0], new PlainProgress((s) => process.stdout.write(s)));
    }
    case "cancel": {
      const { flags, positional } = parseArgs(rest, { bool: [], repeat: [], value: ["server", "token"], alias: {} });
      if (positional.length !== 1) throw new UsageError("kiln cancel needs a build id");
      const { server, token } = resolveTarget({ server: flags.server as string, token: flags.token as string });
      const res = await fetch(`${server}/v1/builds/${positional[0]}`, { method: "DELETE", headers: token ? { authorization: `Bearer ${token}` } : {} });
      process.stdout.write(`${res.status} ${await res.text()}\n`);
      return res.ok ? 0 : 1;
    }
    case "runner": {
      const mod = await import("../runner/main");
      return (await mod.runnerMain(rest)) ?? 0;
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

export async function cli(argv: string[]): Promise<void> {
  try {
    process.exitCode = await main(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`kiln: ${err.message}\n${USAGE}`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`kiln: ${(err as Error).message}\n`);
      process.exitCode = 1;
    }
  }
}
