/**
 * Word expansion of typed instructions at build time, field by field as BuildKit's dispatch does
 * (SupportsSingleWordExpansion): RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD and MAINTAINER are
 * left alone (the shell or a later build expands them); RUN's --mount values are expanded. COPY --from
 * and --exclude are taken as written, as BuildKit does.
 */
import { DockerfileError } from "./errors";
import { checkPortSpec, checkSignal, parseMount } from "./instructions";
import { ShellError, ShellLex } from "./shell";
import type { AddInstruction, CopyInstruction, Instruction, SourceContent, WordExpander } from "./types";

/**
 * Returns a copy of `inst` with its words expanded against `env` (the stage's env at this point: the
 * base image's env, then ARG and ENV in order). Throws DockerfileError at the instruction's line (e.g.
 * for `${V:?msg}`).
 */
export function expandInstruction<T extends Instruction>(inst: T, env: ReadonlyMap<string, string>, shell: WordExpander): T {
  return expandAny(inst, env, shell) as T;
}

function expandAny(inst: Instruction, env: ReadonlyMap<string, string>, shell: WordExpander): Instruction {
  const word = (w: string): string => shell.processWord(w, env);
  const opt = (w: string | undefined): string | undefined => (w === undefined ? undefined : word(w));
  /** COPY and ADD: sources, dest, heredoc bodies, --chown and --chmod. */
  const copyLike = <C extends CopyInstruction | AddInstruction>(inst: C): C => {
    const out: C = {
      ...inst,
      sources: inst.sources.map(word),
      dest: word(inst.dest),
      sourceContents: expandContents(inst.sourceContents, env),
    };
    if (inst.chown !== undefined) out.chown = opt(inst.chown);
    if (inst.chmod !== undefined) out.chmod = opt(inst.chmod);
    return out;
  };
  try {
    switch (inst.kind) {
      case "ENV":
      case "LABEL":
        return { ...inst, pairs: inst.pairs.map((p) => ({ key: word(p.key), value: word(p.value) })) };
      case "ARG":
        // BuildKit expands only the defaults, with the env at this point; a --build-arg value replaces
        // the default unexpanded (see argValueInStage).
        return { ...inst, args: inst.args.map((a) => (a.value === undefined ? a : { ...a, value: word(a.value) })) };
      case "WORKDIR":
        return { ...inst, path: word(inst.path) };
      case "USER":
        return { ...inst, user: word(inst.user) };
      case "STOPSIGNAL": {
        const signal = word(inst.signal);
        checkSignal(signal);
        return { ...inst, signal };
      }
      case "VOLUME":
        return { ...inst, volumes: inst.volumes.map(word) };
      case "EXPOSE": {
        const ports = inst.ports.flatMap((p) => shell.processWords(p, env));
        for (const p of ports) checkPortSpec(p);
        return { ...inst, ports };
      }
      case "COPY":
        return copyLike(inst);
      case "ADD": {
        const out = copyLike(inst);
        if (inst.checksum !== undefined) out.checksum = opt(inst.checksum);
        return out;
      }
      case "RUN":
        if (inst.mountSpecs.length === 0) return inst;
        return { ...inst, mounts: inst.mountSpecs.map((spec) => parseMount(spec, word)) };
      default:
        return inst;
    }
  } catch (e) {
    if (e instanceof DockerfileError) throw e;
    const message = e instanceof ShellError || e instanceof Error ? e.message : String(e);
    const loc = inst.location;
    throw new DockerfileError(message, loc.startLine, loc.endLine !== loc.startLine ? { endLine: loc.endLine } : {});
  }
}

/** Heredoc file contents with an unquoted delimiter: variables expanded, quotes kept (SkipProcessQuotes). */
function expandContents(contents: SourceContent[], env: ReadonlyMap<string, string>): SourceContent[] {
  if (contents.every((c) => !c.expand)) return contents;
  const raw = new ShellLex("\\");
  raw.skipProcessQuotes = true;
  return contents.map((c) => (c.expand ? { ...c, data: raw.processWord(c.data, env) } : c));
}
