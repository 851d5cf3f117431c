/**
 * Typed instructions and stages (BuildKit's frontend/dockerfile/instructions). Words are kept UNexpanded;
 * `expandInstruction` expands exactly the fields BuildKit expands, with the env known at build time.
 */
import type { Heredoc } from "./ast";

export type { Heredoc } from "./ast";

export interface Location {
  startLine: number;
  endLine: number;
}

interface InstructionBase {
  location: Location;
  /** The instruction as written (continuations joined); BuildKit's `Original`, used for history. */
  original: string;
}

/** An inline file from a heredoc used as a COPY/ADD source. */
export interface SourceContent {
  /** Path of the file (the heredoc name). */
  path: string;
  /** Content (already chomped for `<<-`). */
  data: string;
  /** Whether variables in `data` are expanded (unquoted delimiter). */
  expand: boolean;
}

export type MountType = "bind" | "cache" | "tmpfs" | "secret" | "ssh";

/** One `RUN --mount=...` (BuildKit's instructions.Mount). */
export interface RunMount {
  type: MountType;
  from?: string;
  source?: string;
  target?: string;
  readOnly: boolean;
  /** Cache id (`id=`) for cache mounts, secret id for secrets, ssh id for ssh. */
  id?: string;
  sharing?: "shared" | "private" | "locked";
  required?: boolean;
  mode?: number;
  uid?: number;
  gid?: number;
  /** Secret exposed as an environment variable (`env=`). */
  env?: string;
  /** tmpfs size in bytes. */
  size?: number;
}

export interface RunInstruction extends InstructionBase {
  kind: "RUN";
  /** Exec form: argv. Shell form: one element, the command line (heredoc markers included). */
  args: string[];
  /** True for the shell form (`RUN cmd`): the stage's SHELL is prepended. */
  prependShell: boolean;
  heredocs: Heredoc[];
  mounts: RunMount[];
  /** The raw `--mount` values, re-parsed with expansion by expandInstruction. */
  mountSpecs: string[];
  network?: "default" | "none" | "host";
  security?: "sandbox" | "insecure";
}

export interface CopyInstruction extends InstructionBase {
  kind: "COPY";
  /** Context (or --from stage/image) paths. */
  sources: string[];
  /** Heredoc sources (`COPY <<EOF /dest`). */
  sourceContents: SourceContent[];
  dest: string;
  from?: string;
  chown?: string;
  chmod?: string;
  link: boolean;
  parents: boolean;
  exclude: string[];
  /** Exec (JSON) form was used. */
  json: boolean;
}

export interface AddInstruction extends InstructionBase {
  kind: "ADD";
  sources: string[];
  sourceContents: SourceContent[];
  dest: string;
  chown?: string;
  chmod?: string;
  link: boolean;
  exclude: string[];
  checksum?: string;
  keepGitDir: boolean;
  json: boolean;
}

export interface KeyValue {
  key: string;
  value: string;
}

export interface EnvInstruction extends InstructionBase {
  kind: "ENV";
  pairs: KeyValue[];
}

export interface LabelInstruction extends InstructionBase {
  kind: "LABEL";
  pairs: KeyValue[];
}

export interface MaintainerInstruction extends InstructionBase {
  kind: "MAINTAINER";
  maintainer: string;
}

export interface ArgInstruction extends InstructionBase {
  kind: "ARG";
  /** `comment`: the doc comment above the ARG that starts with the arg's name (`# NAME does x`). */
  args: { key: string; value?: string; comment?: string }[];
}

export interface ExposeInstruction extends InstructionBase {
  kind: "EXPOSE";
  /** As written (sorted like BuildKit); each may expand to several words. */
  ports: string[];
}

export interface VolumeInstruction extends InstructionBase {
  kind: "VOLUME";
  volumes: string[];
}

export interface UserInstruction extends InstructionBase {
  kind: "USER";
  user: string;
}

export interface WorkdirInstruction extends InstructionBase {
  kind: "WORKDIR";
  path: string;
}

export interface CmdInstruction extends InstructionBase {
  kind: "CMD";
  /** Exec form: argv; shell form: [commandLine]. */
  args: string[];
  prependShell: boolean;
}

export interface EntrypointInstruction extends InstructionBase {
  kind: "ENTRYPOINT";
  /** Exec form: argv (may be empty: `ENTRYPOINT []` resets); shell form: [commandLine]. */
  args: string[];
  prependShell: boolean;
}

export interface ShellInstruction extends InstructionBase {
  kind: "SHELL";
  shell: string[];
}

export interface StopsignalInstruction extends InstructionBase {
  kind: "STOPSIGNAL";
  signal: string;
}

export interface HealthcheckInstruction extends InstructionBase {
  kind: "HEALTHCHECK";
  /** ["NONE"], ["CMD", ...argv] or ["CMD-SHELL", commandLine] (OCI/Docker config format). */
  test: string[];
  /** Durations in nanoseconds; 0 = inherit/default. */
  interval: number;
  timeout: number;
  startPeriod: number;
  startInterval: number;
  retries: number;
}

export interface OnbuildInstruction extends InstructionBase {
  kind: "ONBUILD";
  /** The trigger as stored in the image config (`RUN echo hi`). */
  expression: string;
}

export type Instruction =
  | RunInstruction
  | CopyInstruction
  | AddInstruction
  | EnvInstruction
  | LabelInstruction
  | MaintainerInstruction
  | ArgInstruction
  | ExposeInstruction
  | VolumeInstruction
  | UserInstruction
  | WorkdirInstruction
  | CmdInstruction
  | EntrypointInstruction
  | ShellInstruction
  | StopsignalInstruction
  | HealthcheckInstruction
  | OnbuildInstruction;

export type InstructionKind = Instruction["kind"];

export interface Stage {
  /** Position among the stages (0-based): what `COPY --from=<n>` refers to. */
  index: number;
  /** Lower-cased `AS` name. */
  name?: string;
  /** FROM's image or stage reference, unexpanded (`${BASE}:latest`). */
  baseName: string;
  /** FROM --platform, unexpanded. */
  platform?: string;
  instructions: Instruction[];
  /** The FROM line (and, in endLine, nothing more). */
  location: Location;
  /** The FROM instruction as written. */
  original: string;
  /** Doc comment above FROM that starts with the stage name (`# build compiles the app`). */
  comment?: string;
}

export interface ParsedDockerfile {
  /** Parser directives: syntax, escape, check. */
  directives: Record<string, string>;
  escapeToken: string;
  /** ARGs before the first FROM. */
  globalArgs: ArgInstruction[];
  stages: Stage[];
  warnings: { message: string; line: number }[];
}

export interface ParseDockerfileOptions {
  buildArgs?: Record<string, string>;
  /** Checked to exist when given. */
  target?: string;
  /** Target platform, `os/arch[/variant]` (default linux/amd64). */
  platform?: string;
  /** Build platform (default: the target platform). */
  buildPlatform?: string;
}

/** The word expander kiln uses: src/dockerfile/shell.ts's ShellLex satisfies it. */
export interface WordExpander {
  processWord(word: string, env: ReadonlyMap<string, string>): string;
  processWords(word: string, env: ReadonlyMap<string, string>): string[];
}

/** What a stage's FROM resolves to once global ARGs and build args are applied. */
export type StageBase =
  | { kind: "scratch" }
  | { kind: "stage"; index: number }
  | { kind: "image"; ref: string };

export interface ResolvedStage {
  index: number;
  name?: string;
  /** FROM after expansion. */
  baseName: string;
  base: StageBase;
  /** FROM --platform after expansion. */
  platform?: string;
}

export interface ResolvedBases {
  stages: ResolvedStage[];
  /**
   * The values of the global (meta) args: platform args, then ARGs before the first FROM, with
   * --build-arg overrides. A stage sees one only after re-declaring it (`ARG NAME`).
   */
  metaArgs: Map<string, string>;
}
