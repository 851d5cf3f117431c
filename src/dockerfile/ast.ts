/** The lossless syntax tree of a Dockerfile, as BuildKit's parser builds it (frontend/dockerfile/parser). */

export interface Heredoc {
  /** Terminator word with quotes removed (`EOF` for `<<"EOF"`). */
  name: string;
  /** Lines between the instruction and the terminator, each with its line ending. */
  content: string;
  /** False when the delimiter was quoted (`<<"EOF"`, `<<'EOF'`): no variable expansion in the content. */
  expand: boolean;
  /** `<<-EOF`: leading tabs are stripped from the content (and the terminator line). */
  chomp: boolean;
  /** `3<<EOF` → 3; 0 when not given. */
  fileDescriptor: number;
}

/**
 * One instruction line (continuations joined). `args` are what BuildKit's line parser produced for the
 * instruction (its Node.Next chain), `sub` is the nested instruction of ONBUILD.
 */
export interface InstructionNode {
  /** Keyword as written (`run`, `RUN`, `Run`…). */
  cmd: string;
  /** Builder flags (`--from=x`) in order, quotes removed, as BuildKit's extractBuilderFlags returns them. */
  flags: string[];
  /** The arguments after line parsing (strings; for ENV/LABEL triples key, value, "=" or ""). */
  args: string[];
  /** ONBUILD's trigger instruction. */
  sub?: InstructionNode;
  /** True when the arguments were a JSON array (exec form). */
  json: boolean;
  /** Heredoc bodies attached to this instruction, in order. */
  heredocs: Heredoc[];
  /** The logical line: continuation characters removed, comment lines inside it dropped. */
  original: string;
  /** 1-based first and last physical line (the last line includes heredoc bodies). */
  startLine: number;
  endLine: number;
  /** 1-based column of the keyword on its first line. */
  column?: number;
  /** Comment lines right before the instruction (without `#`). */
  comments: string[];
  /** True when the line parser had nothing to keep (unknown instruction): dumps as `""`. */
  ignored?: boolean;
}

export interface Directive {
  name: string;
  value: string;
  line: number;
}

export interface Warning {
  message: string;
  line: number;
}

export interface DockerfileAst {
  children: InstructionNode[];
  escapeToken: string;
  directives: Directive[];
  startLine: number;
  endLine: number;
}

export interface ParseResult {
  ast: DockerfileAst;
  directives: Record<string, string>;
  warnings: Warning[];
}
