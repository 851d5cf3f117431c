// One claimed job, end to end: lease renewal, live logs, layers, runStep, upload, complete.
import type { ClaimedJob, RunResult } from "../protocol/jobs";
import { Gone, type KilnClient } from "./client";
import { LayerStore } from "./layers";
import { removeJobDir, runStep, type StepOutcome } from "./step";

export interface WorkerOptions {
  client: KilnClient;
  store: LayerStore;
  workDir: string;
  allowHostNetwork: boolean;
  leaseSeconds?: number;
  log?: (msg: string) => void;
}

const TAIL = 4000;

/** Replaces secret values in output (best effort) so they never reach the build log. */
function redact(text: string, secrets: string[]): string {
  for (const s of secrets) if (s.length >= 3) text = text.split(s).join("****");
  return text;
}

export async function executeClaimed(claimed: ClaimedJob, o: WorkerOptions): Promise<RunResult | null> {
  const { job, leaseId } = claimed;
  const log = o.log ?? (() => {});
  const abort = new AbortController();
  const secrets = Object.values(job.secrets ?? {});
  let gone = "";

  // ---- lease renewal: at once (the server holds a fresh claim only briefly until it is acknowledged),
  // then often (at most every 2 s) so a cancel is noticed within seconds even when the step is silent.
  let leaseExpiresAt = claimed.leaseExpiresAt;
  const renew = async () => {
    try {
      leaseExpiresAt = await o.client.renew(job.jobId, leaseId, o.leaseSeconds);
    } catch (e) {
      if (e instanceof Gone) { gone = e.message; abort.abort(); return; }
      log(`job ${job.jobId}: lease renewal failed: ${(e as Error).message}`);
      if (Date.now() > leaseExpiresAt) { gone = "lease expired"; abort.abort(); }
    }
  };
  await renew();
  const leaseMs = Math.max(1000, leaseExpiresAt - Date.now());
  const renewEvery = Math.max(300, Math.min(2000, Math.floor(leaseMs / 3)));
  const renewTimer = setInterval(renew, renewEvery);
  if (gone) {
    clearInterval(renewTimer);
    log(`job ${job.jobId}: lost before it started (${gone})`);
    return null;
  }

  // ---- live logs, batched every 200 ms
  let pending = "";
  let tail = "";
  let sending: Promise<void> = Promise.resolve();
  const decoder = new TextDecoder();
  // A secret split across two batches must not slip through: hold back as many characters as the
  // longest secret minus one until the next batch (or the end).
  const holdBack = Math.max(0, ...secrets.map((x) => x.length - 1));
  const flush = (final = true) => {
    if (!pending) return sending;
    const redacted = redact(pending, secrets);
    const cut = final ? redacted.length : Math.max(0, redacted.length - holdBack);
    const text = redacted.slice(0, cut);
    pending = redacted.slice(cut);
    if (!text) return sending;
    sending = sending.then(async () => {
      if (gone) return;
      try {
        await o.client.logs(job.jobId, leaseId, text);
      } catch (e) {
        if (e instanceof Gone) { gone = e.message; abort.abort(); }
        else log(`job ${job.jobId}: sending logs failed: ${(e as Error).message}`);
      }
    });
    return sending;
  };
  const logTimer = setInterval(() => void flush(false), 200);
  const output = (s: string) => {
    pending += s;
    tail = (tail + s).slice(-(TAIL + holdBack));
    if (pending.length > 256 * 1024) void flush(false);
  };

  let result: RunResult | null = null;
  let jobDir: string | undefined;
  try {
    const fetchOpts = { server: o.client.server, repository: job.repository, registryToken: job.registryToken };
    const layerDirs: string[] = [];
    let prepError: string | null = null;
    try {
      for (const l of job.layers) layerDirs.push(await o.store.ensure(l, fetchOpts));
    } catch (e) {
      prepError = `runner could not prepare the rootfs: ${(e as Error).message}`;
    }
    const outcome: Omit<StepOutcome, "jobDir"> & { jobDir?: string } = prepError ? { status: "error", exitCode: null, message: prepError } : await runStep(job, {
      workDir: o.workDir,
      layersDir: o.store.dir,
      layerDirs,
      ensureLayer: (l) => o.store.ensure(l, fetchOpts),
      allowHostNetwork: o.allowHostNetwork,
      onOutput: (b) => output(decoder.decode(b, { stream: true })),
      signal: abort.signal,
    });
    jobDir = outcome.jobDir;
    const redactedTail = redact(tail, secrets);
    // When the window was cut, drop its first (partial) line.
    const outTail = (redactedTail.length > TAIL ? redactedTail.slice(-TAIL).replace(/^[^\n]*\n/, "") : redactedTail).trimEnd();
    switch (outcome.status) {
      case "cancelled":
        log(`job ${job.jobId}: stopped (${gone || "cancelled"})`);
        return null;
      case "timeout":
        result = { ok: false, exitCode: null, message: `RUN ${outcome.message}${outTail ? `\n${outTail}` : ""}` };
        break;
      case "error":
        result = { ok: false, exitCode: null, message: outcome.message ?? "runner error" };
        break;
      case "failed":
        result = { ok: false, exitCode: outcome.exitCode, message: `process ${JSON.stringify(job.args)} did not complete successfully: exit code ${outcome.exitCode}${outTail ? `\n${outTail}` : ""}` };
        break;
      case "ok": {
        if (!outcome.layer) { result = { ok: true, layer: null }; break; }
        const l = outcome.layer;
        await o.client.uploadBlob(job.repository, job.registryToken, l.path, l.digest, l.size);
        if (outcome.upper) await o.store.adopt(l.diffId, outcome.upper);
        result = { ok: true, layer: { digest: l.digest, diffId: l.diffId, mediaType: l.mediaType, size: l.size } };
        break;
      }
    }
  } catch (e) {
    if (gone) return null;
    result = { ok: false, exitCode: null, message: `runner error: ${(e as Error).message}` };
  } finally {
    clearInterval(logTimer);
    clearInterval(renewTimer);
    await flush();
    if (jobDir) await removeJobDir(jobDir).catch((e) => log(`cleanup of ${jobDir} failed: ${(e as Error).message}`));
  }
  if (gone || !result) return null;
  try {
    await o.client.complete(job.jobId, leaseId, result);
  } catch (e) {
    log(`job ${job.jobId}: completing failed: ${(e as Error).message}`);
    return null;
  }
  return result;
}
