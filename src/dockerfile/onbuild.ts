/** ONBUILD triggers of a base image, turned back into instructions (BuildKit's initOnBuildTriggers). */
import { DockerfileError } from "./errors";
import { parseInstruction } from "./instructions";
import { parse } from "./parser";
import type { Instruction, Location } from "./types";

/**
 * Parses the `OnBuild` expressions of a base image config. They run before the stage's own
 * instructions; errors are reported at the stage's FROM line (`at`), where the user can act on them.
 */
export function parseOnbuildTriggers(triggers: readonly string[], at: Location): Instruction[] {
  const fail = (message: string): DockerfileError =>
    new DockerfileError(message, at.startLine, at.endLine !== at.startLine ? { endLine: at.endLine } : {});
  return triggers.map((trigger) => {
    let children;
    try {
      children = parse(trigger).ast.children;
    } catch (e) {
      throw fail(`invalid ONBUILD trigger ${JSON.stringify(trigger)} in the base image: ${(e as Error).message}`);
    }
    if (children.length !== 1) throw fail("onbuild trigger should be a single expression");
    let inst;
    try {
      inst = parseInstruction(children[0]);
    } catch (e) {
      throw fail(`invalid ONBUILD trigger ${JSON.stringify(trigger)} in the base image: ${(e as Error).message}`);
    }
    if (inst.kind === "FROM") throw fail("FROM isn't allowed as an ONBUILD trigger");
    if (inst.kind === "ONBUILD") throw fail("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
    return { ...inst, location: { ...at } };
  });
}
