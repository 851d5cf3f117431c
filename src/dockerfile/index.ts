/**
 * Dockerfile frontend (pure): text → lossless AST → typed instructions and stages → expansion.
 *
 *   parse(text)                          AST with lines, directives, warnings (BuildKit's parser)
 *   dumpBuildkit(ast)                    BuildKit's parser test dump format
 *   parseDockerfile(text, options?)      { directives, escapeToken, globalArgs, stages, warnings }
 *   resolveStageBases(parsed, buildArgs, platformArgs)   FROM expanded with global args
 *   stageDependencies(parsed, resolved)  stage graph (base, COPY --from, RUN --mount from=)
 *   expandInstruction(inst, env, shell)  the fields BuildKit expands, at build time
 *   runCommand(run, shell)               RUN's argv with BuildKit's heredoc rules
 *   new StageEnv(baseEnv, opts)          ENV/ARG bookkeeping of a stage (config env vs build env)
 *
 * Every error is a DockerfileError { message, line, column? }.
 */
export { parse } from "./parser";
export { dumpBuildkit } from "./dump";
export { DockerfileError, formatDockerfileError } from "./errors";
export { parseInstruction, parseMount, checkLiteralValues, checkSignal, checkPortSpec, INSTRUCTION_NAMES } from "./instructions";
export type { FromInstruction } from "./instructions";
export {
  parseDockerfile,
  resolveStageBases,
  stageDependencies,
  findTargetStage,
  findStageByName,
  argValueInStage,
  platformArgs,
  proxyEnv,
  PROXY_ARGS,
} from "./stages";
export type { StageDependency, StageGraphNode, ExternalSource } from "./stages";
export { formatPlatform, parsePlatform, type Platform } from "../oci/platform";
export { expandInstruction } from "./expand";
export { lintDockerfile } from "./lint";
export { parseOnbuildTriggers } from "./onbuild";
export { StageEnv, DEFAULT_PATH_ENV } from "./env";
export type { StageEnvOptions } from "./env";
export type { LintWarning } from "./lint";
export { runCommand, withShell, DEFAULT_SHELL } from "./run";
export type { RunCommand, RunFile } from "./run";
export { parseGoDuration } from "./flags";
export type { DockerfileAst, InstructionNode, Directive, ParseResult, Warning } from "./ast";
export type * from "./types";
