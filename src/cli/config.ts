// ~/.config/kiln/config.json: the server and token `kiln login` saved.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

export interface CliConfig {
  server?: string;
  token?: string;
}

export function configPath(): string {
  const base = process.env.KILN_CONFIG_DIR ?? path.join(process.env.XDG_CONFIG_HOME ?? path.join(os.homedir(), ".config"), "kiln");
  return path.join(base, "config.json");
}

export function loadConfig(): CliConfig {
  try {
    return JSON.parse(readFileSync(configPath(), "utf8")) as CliConfig;
  } catch {
    return {};
  }
}

export function saveConfig(cfg: CliConfig): void {
  const file = configPath();
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, JSON.stringify(cfg, null, 2) + "\n", { mode: 0o600 });
}

/** Server and token from flags, then environment, then the saved config, then the local default. */
export function resolveTarget(flags: { server?: string; token?: string }): { server: string; token?: string } {
  const cfg = loadConfig();
  const server = (flags.server ?? process.env.KILN_SERVER ?? cfg.server ?? "http://127.0.0.1:8787").replace(/\/+$/, "");
  const token = flags.token ?? process.env.KILN_TOKEN ?? cfg.token;
  return { server, token };
}
