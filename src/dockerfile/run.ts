/** The command a RUN / CMD / ENTRYPOINT runs, as BuildKit's dispatchRun and withShell build it. */
import { chompHeredocContent, mustParseHeredocWord } from "./parser";
import type { RunInstruction } from "./types";

/** The shell used when the image config sets none (Linux). */
export const DEFAULT_SHELL: readonly string[] = ["/bin/sh", "-c"];

/** A file a RUN step needs mounted read-only (a heredoc script with a shebang). */
export interface RunFile {
  /** Absolute path inside the container. */
  path: string;
  data: string;
  mode: number;
}

export interface RunCommand {
  /** Final argv (shell prepended for the shell form). */
  args: string[];
  /** Files to mount read-only before running (`/dev/pipes/<name>` for a shebang heredoc). */
  files: RunFile[];
}

/** Shell form: `[...shell, args.join(" ")]`. */
export function withShell(shell: readonly string[], args: readonly string[]): string[] {
  return [...shell, args.join(" ")];
}

/**
 * RUN's argv. Heredocs follow BuildKit: a lone `<<EOF` whose body starts with `#!` runs the body as a
 * script file; a lone `<<EOF` otherwise runs the body as the shell command; any other command line with
 * heredocs is passed to the shell whole (command, then each body and its terminator).
 */
export function runCommand(inst: RunInstruction, shell: readonly string[] = DEFAULT_SHELL, os = "linux"): RunCommand {
  let args = [...inst.args];
  const files: RunFile[] = [];
  if (inst.heredocs.length > 0) {
    if (args.length !== 1 || !inst.prependShell) throw new Error("parsing produced an invalid run command");
    const single = mustParseHeredocWord(args[0]);
    if (single) {
      const first = inst.heredocs[0];
      let data = first.content;
      if (first.chomp) data = chompHeredocContent(data);
      if (os !== "windows" && first.content.startsWith("#!")) {
        const path = "/dev/pipes/" + first.name;
        files.push({ path, data, mode: 0o755 });
        args = [path];
      } else {
        args = [data];
      }
    } else {
      let full = args[0];
      for (const h of inst.heredocs) full += "\n" + h.content + h.name;
      args = [full];
    }
  }
  return { args: inst.prependShell ? withShell(shell, args) : args, files };
}
