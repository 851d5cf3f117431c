// BuildKit-style plain progress: `#3 [2/5] COPY . /app`, `#3 CACHED`, `#3 DONE 0.4s`, and the
// failing step's output with its Dockerfile line.
export interface StepView {
  index: number;
  stage?: string | number | null;
  instruction: string;
  status: string;
  durationMs?: number | null;
  cacheKey?: string | null;
  /** Position within its stage, e.g. [2/5]. */
  position?: string;
}

export interface BuildView {
  id: string;
  status: string;
  steps?: StepView[];
  image?: { repository: string; tags: string[]; digest: string };
  error?: { message: string; step?: number; line?: number };
}

type Write = (s: string) => void;

export class PlainProgress {
  private announced = new Set<number>();
  private finished = new Set<number>();
  private logs = new Map<number, string[]>();
  private steps = new Map<number, StepView>();

  constructor(private readonly write: Write) {}

  private label(step: StepView): string {
    const parts: string[] = [];
    if (typeof step.stage === "string" && step.stage !== "" && !/^\d+$/.test(step.stage)) parts.push(step.stage);
    if (step.position) parts.push(step.position);
    return `[${parts.length ? parts.join(" ") : String(step.index + 1)}]`;
  }

  private num(step: StepView): string {
    return `#${step.index + 1}`;
  }

  step(step: StepView): void {
    this.steps.set(step.index, step);
    if (!this.announced.has(step.index) && step.status !== "pending" && step.status !== "skipped") {
      this.announced.add(step.index);
      this.write(`${this.num(step)} ${this.label(step)} ${step.instruction}\n`);
    }
    if (this.finished.has(step.index)) return;
    const secs = step.durationMs != null ? ` ${(step.durationMs / 1000).toFixed(1)}s` : "";
    if (step.status === "cached") {
      this.finished.add(step.index);
      this.write(`${this.num(step)} CACHED\n\n`);
    } else if (step.status === "done") {
      this.finished.add(step.index);
      this.write(`${this.num(step)} DONE${secs}\n\n`);
    } else if (step.status === "failed") {
      this.finished.add(step.index);
      this.write(`${this.num(step)} ERROR${secs}\n\n`);
    }
  }

  log(stepIndex: number, text: string, elapsedMs?: number): void {
    const lines = this.logs.get(stepIndex) ?? [];
    const prefix = `#${stepIndex + 1} ${elapsedMs != null ? (elapsedMs / 1000).toFixed(3) + " " : ""}`;
    for (const line of text.replace(/\n$/, "").split("\n")) {
      lines.push(line);
      this.write(`${prefix}${line}\n`);
    }
    this.logs.set(stepIndex, lines.slice(-200));
  }

  done(build: BuildView, dockerfileLines?: string[]): void {
    for (const s of build.steps ?? []) this.step(s);
    if (build.status === "succeeded") {
      if (build.image) {
        const n = `#${Math.max(0, ...(build.steps ?? []).map((s) => s.index)) + 2}`;
        this.write(`${n} exporting to image\n`);
        this.write(`${n} pushing ${build.image.tags.map((t) => `${build.image!.repository}:${t}`).join(", ") || build.image.repository}\n`);
        this.write(`${n} digest ${build.image.digest}\n`);
      }
      this.write(`build ${build.id} succeeded\n`);
      return;
    }
    if (build.status === "cancelled") {
      this.write(`build ${build.id} cancelled\n`);
      return;
    }
    const err = build.error;
    const failed = err?.step !== undefined ? this.steps.get(err.step) : undefined;
    if (failed) {
      this.write("------\n");
      this.write(` > ${this.label(failed)} ${failed.instruction}:\n`);
      for (const line of (this.logs.get(failed.index) ?? []).slice(-20)) this.write(`${line}\n`);
      this.write("------\n");
    }
    if (err?.line && dockerfileLines) {
      this.write(`Dockerfile:${err.line}\n`);
      this.write("--------------------\n");
      const from = Math.max(1, err.line - 2);
      const to = Math.min(dockerfileLines.length, err.line + 2);
      for (let n = from; n <= to; n++) {
        this.write(`${n === err.line ? ">>>" : "   "} ${String(n).padStart(3)} | ${dockerfileLines[n - 1]}\n`);
      }
      this.write("--------------------\n");
    }
    this.write(`ERROR: ${err?.message ?? `build ${build.status}`}${err?.line ? ` (Dockerfile line ${err.line})` : ""}\n`);
  }
}
