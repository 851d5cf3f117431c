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
