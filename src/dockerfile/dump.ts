import type { DockerfileAst, InstructionNode } from "./ast";
import { goQuote } from "./text";

function dumpNode(node: InstructionNode): string {
  let s = node.cmd.toLowerCase();
  if (node.flags.length > 0) s += " [" + node.flags.map(goQuote).join(" ") + "]";
  if (node.sub) s += " (" + dumpNode(node.sub) + ")";
  else if (node.ignored) s += ' ""';
  for (const a of node.args) s += " " + goQuote(a);
  return s.trim();
}

/** BuildKit's `Node.Dump()` of the root plus a final newline: the format of parser testfiles' `result`. */
export function dumpBuildkit(ast: DockerfileAst): string {
  let out = "";
  for (const child of ast.children) out += "(" + dumpNode(child) + ")\n";
  return out;
}
