// Starts a local kiln runner next to `npm start` when this machine can run RUN steps (root, runc,
// overlayfs); otherwise says why not and returns null. Called by scripts/start.mjs once the server
// answers. The runner's token is kept in the state folder and reused (see localRunnerToken).
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

/** Why RUN steps cannot run here, or null when they can. */
export function whyNoRunner() {
  if (process.platform !== "linux") return `RUN steps need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return "RUN steps need root for runc and overlayfs mounts (run `sudo npm start`, or start `kiln runner` as root elsewhere)";
  const runc = spawnSync("runc", ["--version"], { encoding: "utf8" });
  if (runc.error || runc.status !== 0) return "runc is not installed (apt-get install runc)";
  const dir = mkdtempSync(path.join(os.tmpdir(), "kiln-ovl-check-"));
  try {
    for (const d of ["lower", "upper", "work", "merged"]) mkdirSync(path.join(dir, d));
    const m = spawnSync("mount", ["-t", "overlay", "overlay", "-o", `lowerdir=${dir}/lower,upperdir=${dir}/upper,workdir=${dir}/work`, `${dir}/merged`], { encoding: "utf8" });
    if (m.status !== 0) return `overlayfs cannot be mounted here: ${(m.stderr || String(m.error)).trim()}`;
    spawnSync("umount", [`${dir}/merged`]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (spawnSync("perl", ["-e", "1"]).status !== 0) return "perl is missing (the runner uses it for overlayfs xattrs)";
  return null;
}

/** Calls kiln's token API as admin; throws with the server's message when it answers an error. */
async function tokensApi(server, adminToken, method, suffix = "", body) {
  const res = await fetch(`${server}/v1/tokens${suffix}`, {
    method,
    headers: { authorization: `Bearer ${adminToken}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!res.ok) {
    const text = await res.text().catch(() => "");
    let message = text.trim().split("\n")[0] || res.statusText;
    try { message = JSON.parse(text).error?.message ?? message; } catch { /* not JSON */ }
    throw new Error(`${method} /v1/tokens${suffix} answered HTTP ${res.status}: ${message}`);
  }
  return res.status === 204 ? null : await res.json();
}

function readTrimmed(file) {
  try { return readFileSync(file, "utf8").trim(); } catch { return ""; }
}

/** Writes `text` to `file` with mode 0600, atomically (a reader never sees half a token). */
function writeSecret(file, text) {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
}

/**
 * The local runner's token, kept in the state folder (`local-runner.token`, mode 0600, and its id in
 * `local-runner.token-id`): reused while the server still knows it and it is not revoked; otherwise a
 * new one is minted. Earlier local-runner tokens of this host (left by older `npm start`s or replaced
 * now) are revoked, so one stays active.
 */
export async function localRunnerToken({ server, adminToken, stateDir }) {
  mkdirSync(stateDir, { recursive: true });
  const tokenFile = path.join(stateDir, "local-runner.token");
  const idFile = path.join(stateDir, "local-runner.token-id");
  const name = `local-runner-${os.hostname()}`;
  const { tokens } = await tokensApi(server, adminToken, "GET");
  const savedId = readTrimmed(idFile);
  const saved = readTrimmed(tokenFile);
  let id = savedId;
  let reused = Boolean(saved && savedId && tokens.some((t) => t.id === savedId && !t.revoked && t.scopes.includes("runner")));
  if (!reused) {
    const created = await tokensApi(server, adminToken, "POST", "", { name, scopes: ["runner"] });
    writeSecret(tokenFile, `${created.token}\n`);
    writeSecret(idFile, `${created.id}\n`);
    id = created.id;
  } else {
    chmodSync(tokenFile, 0o600);
  }
  const revoked = [];
  for (const t of tokens) {
    if (t.id === id || t.revoked || t.name !== name || t.scopes.join(",") !== "runner") continue;
    await tokensApi(server, adminToken, "DELETE", `/${encodeURIComponent(t.id)}`);
    revoked.push(t.id);
  }
  return { id, tokenFile, reused, revoked };
}

export default async function startLocalRunner({ root, server, adminToken, env, stateDir }) {
  const why = whyNoRunner();
  if (why) {
    console.log(`kiln: no local runner, so RUN steps wait for a remote one: ${why}`);
    return null;
  }
  const { id, tokenFile, reused, revoked } = await localRunnerToken({ server, adminToken, stateDir });
  console.log(`kiln: local runner token ${id} (${reused ? "reused" : "new"}; kept in ${tokenFile})${revoked.length ? `; revoked the previous one${revoked.length > 1 ? `s (${revoked.length})` : ""}` : ""}`);
  // Next to the server's local state (already ignored by git): layers, cache mounts, runc state.
  const workDir = process.env.KILN_RUNNER_DIR ?? path.join(stateDir, "runner");
  // The token goes by file, never on the command line (`ps` shows argv to every user).
  const child = spawn(process.execPath, [path.join(root, "bin", "kiln.mjs"), "runner", "--server", server, "--token-file", tokenFile, "--work-dir", workDir], {
    cwd: root, env, stdio: ["ignore", "inherit", "inherit"], detached: true,
  });
  await new Promise((resolve, reject) => { child.once("spawn", resolve); child.once("error", reject); });
  console.log(`kiln: local runner started (pid ${child.pid}, work dir ${workDir})`);
  return child;
}
