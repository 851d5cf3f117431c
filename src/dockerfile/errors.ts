/** A Dockerfile problem with its place: every parse, instruction and stage error is one of these. */
export class DockerfileError extends Error {
  /** 1-based line where the problem is (the instruction's first line when it spans several). */
  readonly line: number;
  /** Last line of the instruction, when known. */
  readonly endLine?: number;
  /** 1-based column, when known. */
  readonly column?: number;

  constructor(message: string, line: number, opts: { endLine?: number; column?: number } = {}) {
    super(message);
    this.name = "DockerfileError";
    this.line = line;
    if (opts.endLine !== undefined) this.endLine = opts.endLine;
    if (opts.column !== undefined) this.column = opts.column;
  }

  toJSON(): { message: string; line: number; column?: number } {
    const out: { message: string; line: number; column?: number } = { message: this.message, line: this.line };
    if (this.column !== undefined) out.column = this.column;
    return out;
  }
}

/**
 * BuildKit-style excerpt of the lines around an error:
 *
 *     Dockerfile:3
 *     --------------------
 *        2 |     RUN echo ok
 *        3 | >>> COPPY a b
 *     --------------------
 *     ERROR: unknown instruction: COPPY
 */
export function formatDockerfileError(err: DockerfileError, text: string, filename = "Dockerfile"): string {
  const lines = text.split(/\r?\n/);
  const start = Math.max(1, err.line - 2);
  const last = Math.min(lines.length, Math.max(err.endLine ?? err.line, err.line) + 2);
  const width = String(last).length;
  const out = [`${filename}:${err.line}${err.endLine && err.endLine !== err.line ? `-${err.endLine}` : ""}`, "--------------------"];
  for (let n = start; n <= last; n++) {
    if (n === lines.length && lines[n - 1] === "") break;
    const inError = n >= err.line && n <= (err.endLine ?? err.line);
    out.push(`${String(n).padStart(width + 3)} | ${inError ? ">>> " : "    "}${lines[n - 1] ?? ""}`);
  }
  out.push("--------------------", `ERROR: ${err.message}`);
  return out.join("\n");
}
