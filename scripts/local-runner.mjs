// Starts a local kiln runner next to `npm start` when this machine can run RUN steps (root, runc,
// overlayfs); otherwise says why not and returns null. Called by scripts/start.mjs.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
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

async function waitForServer(server, ms = 90_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const res = await fetch(`${server}/healthz`);
      if (res.ok) return;
    } catch {}
    if (Date.now() > deadline) throw new Error(`kiln did not answer at ${server}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

export default async function startLocalRunner({ root, server, adminToken, env }) {
  const why = whyNoRunner();
  if (why) {
    console.log(`kiln: no local runner, so RUN steps wait for a remote one: ${why}`);
    return null;
  }
  await waitForServer(server);
  const res = await fetch(`${server}/v1/tokens`, {
    method: "POST",
    headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
    body: JSON.stringify({ name: `local-runner-${os.hostname()}`, scopes: ["runner"] }),
  });
  let token = adminToken;
  if (res.status === 201 || res.ok) token = (await res.json()).token;
  else console.log(`kiln: could not create a runner token (HTTP ${res.status}); the local runner uses the admin token`);
  // Next to the server's local state (already ignored by git): layers, cache mounts, runc state.
  const workDir = process.env.KILN_RUNNER_DIR ?? path.join(process.env.KILN_STATE_DIR ?? path.join(root, ".kiln-state"), "runner");
  const child = spawn(process.execPath, ["--import", "tsx", path.join(root, "src/runner/main.ts"), "--server", server, "--token", token, "--work-dir", workDir], {
    cwd: root, env, stdio: "inherit",
  });
  console.log(`kiln: local runner started (pid ${child.pid}, work dir ${workDir})`);
  return child;
}
