// Build progress modelled on BuildKit's: every step that runs is a numbered vertex (`#3 [2/5] COPY .
// /app`), numbered in the order it is shown, one number per step; its output is line-buffered and
// shown once, under it; it ends with `#3 CACHED`, `#3 DONE 0.4s` or `#3 ERROR 1.2s`. A failed build
// ends with the failing step's last lines, the Dockerfile lines around the error and one `ERROR:`.
// Three renderers share one model: plain (a log), tty (redraws in place) and quiet.

export interface StepView {
  index: number;
  stage?: string | number | null;
  instruction: string;
  status: string;
  durationMs?: number | null;
  cacheKey?: string | null;
  line?: number | null;
  /** Position within its stage, e.g. 2/5. */
  position?: string;
}

export interface BuildView {
  id: string;
  status: string;
  steps?: StepView[];
  image?: { repository: string; tags: string[]; digest: string };
  error?: { message: string; step?: number; line?: number };
}

/** The Dockerfile as the user named it (`-f Dockerfile.syntax`) and its lines, for the excerpt. */
export interface DockerfileSource {
  name: string;
  lines: string[];
}

export type Write = (s: string) => void;
export type ProgressMode = "plain" | "tty" | "quiet";

/** What the CLI tells a progress renderer. */
export interface Progress {
  /** A line of kiln's own about the build as a whole (queued, reconnecting). */
  status(text: string): void;
  /** kiln's own work outside the build's steps (`[internal] load build context`). */
  begin(key: string, name: string): void;
  note(key: string, text: string): void;
  end(key: string, state: "done" | "failed", durationMs?: number): void;
  step(view: StepView): void;
  /** Output of a step; `kiln` true for kiln's own lines (the event's `source: "kiln"`). */
  log(stepIndex: number, text: string, kiln?: boolean): void;
  /** The build ended: last step states, then the result (image, or the error with its excerpt). */
  done(build: BuildView, source?: DockerfileSource): void;
  /** The build could not start (a 400 for a Dockerfile error): the message with its excerpt. */
  rejected(message: string, line: number | undefined, source?: DockerfileSource): void;
}

type VertexState = "running" | "cached" | "done" | "failed" | "cancelled";

interface VLine {
  /** true: a line of kiln's (waiting for a runner), false: the step's own output. */
  kiln: boolean;
  text: string;
}

export interface Vertex {
  key: string;
  /** `[stage 2/5] RUN make` */
  name: string;
  state: VertexState;
  lines: VLine[];
  partial: string;
  startedAt: number;
  durationMs?: number;
  stepIndex?: number;
}

/** kiln's own log line in a RUN step (the coordinator writes it into the step's log). */
const KILN_LINES = new Set(["waiting for a runner"]);

const terminal = (s: VertexState) => s !== "running";

function secs(ms?: number | null): string {
  return ms != null ? `${(ms / 1000).toFixed(1)}s` : "";
}

/** Adds `position` (`2/5`) per stage, as BuildKit prints it. */
export function withPositions(steps: StepView[]): StepView[] {
  const byStage = new Map<string, StepView[]>();
  for (const s of [...steps].sort((a, b) => a.index - b.index)) {
    const k = String(s.stage ?? "");
    byStage.set(k, [...(byStage.get(k) ?? []), s]);
  }
  return steps.map((s) => {
    const list = byStage.get(String(s.stage ?? ""))!;
    return { ...s, position: `${list.indexOf(s) + 1}/${list.length}` };
  });
}

/**
 * `[build 2/5] COPY . /app`; as BuildKit, an unnamed stage (`stage-0`) is named only when the
 * Dockerfile has several stages.
 */
export function stepLabel(step: StepView, singleStage = false): string {
  const parts: string[] = [];
  const unnamed = typeof step.stage === "string" && /^stage-\d+$/.test(step.stage);
  if (typeof step.stage === "string" && step.stage !== "" && !/^\d+$/.test(step.stage) && !(unnamed && singleStage)) parts.push(step.stage);
  if (step.position) parts.push(step.position);
  return `[${parts.length ? parts.join(" ") : String(step.index)}] ${step.instruction}`;
}

/** The state of a build as its events arrive: the steps that ran, in the order they started. */
export class BuildModel {
  readonly steps = new Map<number, StepView>();
  readonly vertices = new Map<string, Vertex>();
  readonly order: Vertex[] = [];

  constructor(private readonly now: () => number = Date.now) {}

  private label(view: StepView): string {
    const stages = new Set([...this.steps.values()].map((s) => String(s.stage ?? "")));
    return stepLabel(this.positioned(view), stages.size <= 1);
  }

  private positioned(view: StepView): StepView {
    const stage = String(view.stage ?? "");
    const list = [...this.steps.values()].filter((s) => String(s.stage ?? "") === stage).sort((a, b) => a.index - b.index);
    const i = list.findIndex((s) => s.index === view.index);
    return { ...view, position: view.position ?? (i >= 0 ? `${i + 1}/${list.length}` : undefined) };
  }

  private add(key: string, name: string, stepIndex?: number): Vertex {
    const v: Vertex = { key, name, state: "running", lines: [], partial: "", startedAt: this.now(), stepIndex };
    this.vertices.set(key, v);
    this.order.push(v);
    return v;
  }

  begin(key: string, name: string): Vertex {
    return this.vertices.get(key) ?? this.add(key, name);
  }

  end(key: string, state: VertexState, durationMs?: number): void {
    const v = this.vertices.get(key);
    if (!v || terminal(v.state)) return;
    this.flush(v);
    v.state = state;
    v.durationMs = durationMs ?? this.now() - v.startedAt;
  }

  /** A step event (or a step of the final view). Returns its vertex once it has started. */
  step(view: StepView): Vertex | undefined {
    const merged = { ...this.steps.get(view.index), ...view };
    this.steps.set(view.index, merged);
    const key = `step:${view.index}`;
    let v = this.vertices.get(key);
    if (view.status === "pending") return v;
    if (view.status === "skipped") {
      // A step that never ran is not shown; a running one that was stopped is.
      if (v && !terminal(v.state)) this.end(key, "cancelled", view.durationMs ?? undefined);
      return v;
    }
    v ??= this.add(key, this.label(merged), view.index);
    if (terminal(v.state)) return v;
    if (view.status === "cached" || view.status === "done" || view.status === "failed") this.end(key, view.status, view.durationMs ?? undefined);
    return v;
  }

  /** Output of a step: complete lines are kept, a partial one waits for its end. */
  log(stepIndex: number, text: string, kiln?: boolean): Vertex | undefined {
    const key = `step:${stepIndex}`;
    let v = this.vertices.get(key);
    if (!v) {
      // Output of a step whose start we did not see: show it as started.
      const view = this.steps.get(stepIndex) ?? { index: stepIndex, instruction: "", status: "running" };
      v = this.add(key, this.label(view), stepIndex);
    }
    // kiln's own closing line of a failed step: the build's error says it once, at the end.
    if ((kiln || v.state === "failed") && text.startsWith("ERROR: ")) return v;
    if (kiln) {
      // a line of kiln's (servers that mark them): never mixed into the step's partial output line
      for (const line of text.replace(/\r\n/g, "\n").replace(/\n$/, "").split("\n")) v.lines.push({ kiln: true, text: line });
      return v;
    }
    // servers that do not mark kiln's lines: recognised by their text
    if (kiln === undefined && KILN_LINES.has(text.replace(/\n$/, "")) && v.partial === "") {
      v.lines.push({ kiln: true, text: text.replace(/\n$/, "") });
      return v;
    }
    this.append(v, text);
    return v;
  }

  /** A line of kiln's own vertex (`[internal] load build context`): all of it is kiln's. */
  note(key: string, text: string): void {
    const v = this.vertices.get(key);
    if (v) v.lines.push({ kiln: false, text });
  }

  private append(v: Vertex, text: string): void {
    const parts = (v.partial + text.replace(/\r\n/g, "\n")).split("\n");
    v.partial = parts.pop()!;
    for (const p of parts) v.lines.push({ kiln: false, text: p });
  }

  private flush(v: Vertex): void {
    if (v.partial !== "") {
      v.lines.push({ kiln: false, text: v.partial });
      v.partial = "";
    }
  }

  /** The final view: every step's last state (events may have been missed). */
  finish(build: BuildView): void {
    for (const s of [...(build.steps ?? [])].sort((a, b) => a.index - b.index)) this.step(s);
    for (const v of this.order) if (!terminal(v.state)) this.end(v.key, build.status === "succeeded" ? "done" : "cancelled");
  }

  failedVertex(build: BuildView): Vertex | undefined {
    const i = build.error?.step;
    return i !== undefined ? this.vertices.get(`step:${i}`) : this.order.find((v) => v.state === "failed");
  }
}

/** ` 3 | >>> RUN false`: the lines around `line` (3 either side), BuildKit's format. */
export function dockerfileExcerpt(source: DockerfileSource, line: number, context = 3): string {
  const lines = source.lines.length && source.lines[source.lines.length - 1] === "" ? source.lines.slice(0, -1) : source.lines;
  const from = Math.max(1, line - context);
  const to = Math.min(lines.length, line + context);
  let out = `${source.name}:${line}\n--------------------\n`;
  for (let n = from; n <= to; n++) out += ` ${String(n).padStart(3)} | ${n === line ? ">>>" : "   "} ${lines[n - 1]}\n`;
  return `${out}--------------------\n`;
}

/** The server's message without a leading `Dockerfile:3: ` (the excerpt names file and line). */
function withoutLocation(message: string, line?: number): string {
  if (!line) return message;
  return message.replace(new RegExp(`^[^\\s:]*:${line}:\\s*`), "");
}

/** How a failed build ends: the failing step's last lines, the excerpt, one ERROR line. */
export function failureSummary(model: BuildModel, build: BuildView, source?: DockerfileSource, lastLines = 10): string {
  const err = build.error;
  let out = "";
  const [first, ...rest] = (err?.message ?? `build ${build.status}`).split("\n");
  const failed = build.status === "failed" ? model.failedVertex(build) : undefined;
  if (failed) {
    // The step's own output; the runner also appends the output's tail to the message: used only
    // when the output itself never arrived.
    let tail = failed.lines.filter((l) => !l.kiln).map((l) => l.text);
    if (!tail.length) tail = rest.filter((l) => l.trim() !== "");
    if (tail.length) out += `------\n > ${failed.name}:\n${tail.slice(-lastLines).map((l) => `${l}\n`).join("")}------\n`;
  }
  const line = err?.line ?? undefined;
  if (line && source?.lines.length) {
    out += dockerfileExcerpt(source, line);
    out += `ERROR: ${withoutLocation(first, line)}\n`;
  } else if (line) {
    const name = source?.name ?? "Dockerfile";
    out += `ERROR: ${name}:${line}: ${withoutLocation(first, line)}\n`;
  } else {
    out += `ERROR: ${first}\n`;
  }
  return out;
}

function successLines(build: BuildView, n: number): string[] {
  if (!build.image) return [];
  const refs = build.image.tags.map((t) => `${build.image!.repository}:${t}`).join(", ") || build.image.repository;
  return [`#${n} exporting to image`, `#${n} pushing ${refs}`, `#${n} digest ${build.image.digest}`, `#${n} DONE`, ""];
}

/**
 * Plain progress, as `docker build --progress=plain`: a log that only grows. The vertex in focus is
 * printed as its events arrive; another step that runs meanwhile is printed, as one block, once the
 * one in focus ends, so every step's lines stay together under its number.
 */
export class PlainProgress implements Progress {
  readonly model: BuildModel;
  private next: number;
  private focus?: Vertex;
  private readonly numbers = new Map<Vertex, number>();
  private readonly shown = new Map<Vertex, number>();
  private readonly closed = new Set<Vertex>();

  constructor(private readonly write: Write, opts: { firstNumber?: number; now?: () => number } = {}) {
    this.model = new BuildModel(opts.now);
    this.next = opts.firstNumber ?? 1;
  }

  private pump(): void {
    for (;;) {
      if (!this.focus) {
        this.focus = this.model.order.find((v) => !this.closed.has(v));
        if (!this.focus) return;
        const n = this.next++;
        this.numbers.set(this.focus, n);
        this.write(`#${n} ${this.focus.name}\n`);
      }
      const v = this.focus;
      const n = this.numbers.get(v)!;
      const lines = v.lines;
      for (let i = this.shown.get(v) ?? 0; i < lines.length; i++) {
        this.write(lines[i].kiln ? `#${n} kiln: ${lines[i].text}\n` : `#${n} ${lines[i].text}\n`);
      }
      this.shown.set(v, lines.length);
      if (!terminal(v.state)) return;
      const end = v.state === "cached" ? "CACHED" : v.state === "done" ? `DONE ${secs(v.durationMs)}` : v.state === "failed" ? `ERROR ${secs(v.durationMs)}` : "CANCELED";
      this.write(`#${n} ${end.trim()}\n\n`);
      this.closed.add(v);
      this.focus = undefined;
    }
  }

  status(text: string): void {
    this.write(`kiln: ${text}\n\n`);
  }

  begin(key: string, name: string): void { this.model.begin(key, name); this.pump(); }
  note(key: string, text: string): void { this.model.note(key, text); this.pump(); }
  end(key: string, state: "done" | "failed", durationMs?: number): void { this.model.end(key, state, durationMs); this.pump(); }
  step(view: StepView): void { this.model.step(view); this.pump(); }
  log(stepIndex: number, text: string, kiln?: boolean): void { this.model.log(stepIndex, text, kiln); this.pump(); }

  done(build: BuildView, source?: DockerfileSource): void {
    this.model.finish(build);
    this.pump();
    const pushed = build.status === "succeeded" ? successLines(build, this.next++).map((l) => `${l}\n`).join("") : "";
    this.write(outcomeText(this.model, build, source, pushed));
  }

  rejected(message: string, line: number | undefined, source?: DockerfileSource): void {
    this.pump();
    this.write(rejectedText(this.model, message, line, source));
  }
}

/** The end of a followed build: what was pushed and "succeeded", "was cancelled", or the failure summary. */
function outcomeText(model: BuildModel, build: BuildView, source: DockerfileSource | undefined, pushed: string): string {
  if (build.status === "succeeded") return `${pushed}kiln: build ${build.id} succeeded\n`;
  if (build.status === "cancelled") return `kiln: build ${build.id} was cancelled\n`;
  return failureSummary(model, build, source);
}

/** A build refused at submit (a Dockerfile error): the excerpt and the error. */
function rejectedText(model: BuildModel, message: string, line: number | undefined, source?: DockerfileSource): string {
  return failureSummary(model, { id: "", status: "failed", error: { message, line } }, source);
}

/** Only the result: the image digest on success; the failure summary (to `writeErr`) otherwise. */
export class QuietProgress implements Progress {
  readonly model = new BuildModel();
  constructor(private readonly write: Write, private readonly writeErr: Write) {}
  status(): void {}
  begin(key: string, name: string): void { this.model.begin(key, name); }
  note(key: string, text: string): void { this.model.note(key, text); }
  end(key: string, state: "done" | "failed", durationMs?: number): void { this.model.end(key, state, durationMs); }
  step(view: StepView): void { this.model.step(view); }
  log(stepIndex: number, text: string, kiln?: boolean): void { this.model.log(stepIndex, text, kiln); }
  done(build: BuildView, source?: DockerfileSource): void {
    this.model.finish(build);
    if (build.status === "succeeded") this.write(`${build.image?.digest ?? build.id}\n`);
    else if (build.status === "cancelled") this.writeErr(`kiln: build ${build.id} was cancelled\n`);
    else this.writeErr(failureSummary(this.model, build, source));
  }
  rejected(message: string, line: number | undefined, source?: DockerfileSource): void {
    this.writeErr(failureSummary(this.model, { id: "", status: "failed", error: { message, line } }, source));
  }
}

/**
 * For a terminal: finished steps scroll up as one line each (` => CACHED [2/5] COPY . /app  0.0s`);
 * the running ones stay in a block at the bottom with their last lines, redrawn in place.
 */
export class TtyProgress implements Progress {
  readonly model: BuildModel;
  private committed = 0;
  private liveLines = 0;
  private timer?: ReturnType<typeof setInterval>;
  private pending?: ReturnType<typeof setTimeout>;
  private readonly started: number;
  private title = "Building";

  constructor(private readonly write: Write, private readonly opts: { columns?: () => number; rows?: () => number; now?: () => number; tailLines?: number; intervalMs?: number } = {}) {
    this.model = new BuildModel(opts.now);
    this.started = this.now();
  }

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  private fit(line: string): string {
    const cols = this.opts.columns?.() ?? 80;
    return line.length > cols - 1 ? `${line.slice(0, Math.max(0, cols - 2))}…` : line;
  }

  private vertexLine(v: Vertex): string {
    const t = terminal(v.state) ? v.durationMs : this.now() - v.startedAt;
    const prefix = v.state === "cached" ? "CACHED " : v.state === "failed" ? "ERROR " : v.state === "cancelled" ? "CANCELED " : "";
    const left = ` => ${prefix}${v.name}`;
    const right = secs(t);
    const cols = (this.opts.columns?.() ?? 80) - 1;
    const room = cols - right.length - 1;
    const shown = left.length > room ? `${left.slice(0, Math.max(0, room - 1))}…` : left;
    return `${shown}${" ".repeat(Math.max(1, cols - shown.length - right.length))}${right}`;
  }

  private tail(v: Vertex, n: number): string[] {
    const lines = v.lines.map((l) => (l.kiln ? ` => => kiln: ${l.text}` : ` => => # ${l.text}`));
    if (v.partial) lines.push(` => => # ${v.partial}`);
    return lines.slice(-n).map((l) => this.fit(l));
  }

  private schedule(): void {
    if (!this.timer) {
      this.timer = setInterval(() => this.render(), this.opts.intervalMs ?? 200);
      this.timer.unref?.();
    }
    if (!this.pending) {
      this.pending = setTimeout(() => { this.pending = undefined; this.render(); }, 50);
      this.pending.unref?.();
    }
  }

  /** Redraws: new finished steps above, the live block (running steps, their last lines) below. */
  render(final = false): void {
    let out = this.liveLines ? `\r\x1b[${this.liveLines}A\x1b[J` : "";
    const order = this.model.order;
    while (this.committed < order.length && terminal(order[this.committed].state)) {
      const v = order[this.committed++];
      out += `${this.vertexLine(v)}\n`;
      if (v.state === "failed") for (const l of this.tail(v, this.opts.tailLines ?? 6)) out += `${l}\n`;
    }
    const live: string[] = [];
    if (!final) {
      for (const v of order.slice(this.committed)) {
        live.push(this.vertexLine(v));
        if (!terminal(v.state)) live.push(...this.tail(v, this.opts.tailLines ?? 6));
      }
      live.push(this.fit(`[+] ${this.title} ${secs(this.now() - this.started)} (${order.filter((v) => terminal(v.state)).length}/${order.length} done)`));
      const rows = this.opts.rows?.() ?? 24;
      if (live.length > rows - 1) live.splice(0, live.length - (rows - 1));
    }
    for (const l of live) out += `${l}\n`;
    this.liveLines = live.length;
    this.write(out);
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.pending) clearTimeout(this.pending);
    this.timer = this.pending = undefined;
    this.render(true);
  }

  status(text: string): void {
    const m = /^build (\S+)/.exec(text);
    if (m) this.title = `Building ${m[1]}`;
    // Above the live block, scrolled like a finished step.
    const clear = this.liveLines ? `\r\x1b[${this.liveLines}A\x1b[J` : "";
    this.liveLines = 0;
    this.write(`${clear}kiln: ${text}\n`);
    this.schedule();
  }

  begin(key: string, name: string): void { this.model.begin(key, name); this.schedule(); }
  note(key: string, text: string): void { this.model.note(key, text); this.schedule(); }
  end(key: string, state: "done" | "failed", durationMs?: number): void { this.model.end(key, state, durationMs); this.schedule(); }
  step(view: StepView): void { this.model.step(view); this.schedule(); }
  log(stepIndex: number, text: string, kiln?: boolean): void { this.model.log(stepIndex, text, kiln); this.schedule(); }

  done(build: BuildView, source?: DockerfileSource): void {
    this.model.finish(build);
    this.stop();
    const img = build.image;
    const pushed = build.status === "succeeded" && img ? ` => pushed ${img.tags.map((t) => `${img.repository}:${t}`).join(", ") || img.repository}\n => digest ${img.digest}\n` : "";
    this.write(outcomeText(this.model, build, source, pushed));
  }

  rejected(message: string, line: number | undefined, source?: DockerfileSource): void {
    this.stop();
    this.write(rejectedText(this.model, message, line, source));
  }
}

export function makeProgress(mode: ProgressMode, opts: { write?: Write; writeErr?: Write; isTTY?: boolean; firstNumber?: number } = {}): Progress {
  const write = opts.write ?? ((s: string) => { process.stdout.write(s); });
  const writeErr = opts.writeErr ?? ((s: string) => { process.stderr.write(s); });
  if (mode === "quiet") return new QuietProgress(write, writeErr);
  if (mode === "tty" && (opts.isTTY ?? process.stdout.isTTY)) {
    return new TtyProgress(write, { columns: () => process.stdout.columns || 80, rows: () => process.stdout.rows || 24 });
  }
  return new PlainProgress(write, { firstNumber: opts.firstNumber });
}
