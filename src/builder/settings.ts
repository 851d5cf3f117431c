/**
 * The build engine's documented settings (Worker vars, see src/env.ts and README "Settings"), read
 * from `env` when they are needed, with their defaults.
 */

/** The vars this module reads; any `Env` has them. */
export type SettingsEnv = { [K in keyof BuilderSettingVars]?: string };

interface BuilderSettingVars {
  KILN_STEP_TIMEOUT_SECONDS: string;
  KILN_RUNNER_WAIT_SECONDS: string;
  KILN_RUN_TIMEOUT_SECONDS: string;
  KILN_DISPATCH_PREFER_MS: string;
  KILN_HOST_NETWORK_WAIT_MS: string;
  KILN_JOB_MAX_ATTEMPTS: string;
  KILN_RUNNER_LEASE_SECONDS: string;
  KILN_CLAIM_ACK_SECONDS: string;
}

export interface BuilderSettings {
  /** Deadline of a step computed in the Worker (FROM, COPY, ADD, WORKDIR, metadata). */
  stepTimeoutMs: number;
  /** How long a RUN step waits for a runner of its platform to offer itself. */
  runnerWaitMs: number;
  /** Deadline of a RUN command on its runner (the job's timeoutSeconds). */
  runTimeoutSeconds: number;
  dispatchPreferMs: number;
  hostNetworkWaitMs: number;
  jobMaxAttempts: number;
  /** Default lease length when the runner asks for none. */
  leaseSeconds: number;
  claimAckMs: number;
}

function num(env: SettingsEnv, name: keyof BuilderSettingVars, fallback: number, ok: (v: number) => boolean): number {
  const raw = env[name];
  if (typeof raw !== "string" || raw.trim() === "") return fallback;
  const v = Number(raw);
  return Number.isFinite(v) && ok(v) ? v : fallback;
}

const positive = (v: number) => v > 0;
const nonNegative = (v: number) => v >= 0;

export function builderSettings(env: SettingsEnv): BuilderSettings {
  return {
    stepTimeoutMs: Math.round(num(env, "KILN_STEP_TIMEOUT_SECONDS", 900, positive) * 1000),
    runnerWaitMs: Math.round(num(env, "KILN_RUNNER_WAIT_SECONDS", 600, positive) * 1000),
    runTimeoutSeconds: Math.round(num(env, "KILN_RUN_TIMEOUT_SECONDS", 3600, positive)),
    dispatchPreferMs: num(env, "KILN_DISPATCH_PREFER_MS", 2000, nonNegative),
    hostNetworkWaitMs: num(env, "KILN_HOST_NETWORK_WAIT_MS", 30_000, nonNegative),
    jobMaxAttempts: num(env, "KILN_JOB_MAX_ATTEMPTS", 3, (v) => Number.isInteger(v) && v > 0),
    leaseSeconds: num(env, "KILN_RUNNER_LEASE_SECONDS", 30, positive),
    claimAckMs: Math.round(num(env, "KILN_CLAIM_ACK_SECONDS", 10, positive) * 1000),
  };
}

/** Seconds for messages: `90 s`, `1.5 s`. */
export function secondsText(ms: number): string {
  const s = ms / 1000;
  return `${Number.isInteger(s) ? s : s.toFixed(1)} s`;
}

/** Settles like `work`, or rejects with DeadlineError when `ms` pass first. The work itself is not stopped. */
export function withDeadline<T>(work: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlineError(message)), Math.max(0, ms));
  });
  return Promise.race([work, deadline]).finally(() => {
    if (timer !== undefined) clearTimeout(timer);
  });
}

export class DeadlineError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DeadlineError";
  }
}
