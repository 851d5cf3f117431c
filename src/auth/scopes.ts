/**
 * API token scopes: `repository:<pattern>:<actions>`, `runner`, `runner:<pattern>`, `admin`.
 *
 * `runner` is the operator's pool: it serves RUN jobs of every namespace. `runner:<pattern>` serves only
 * jobs whose repository the pattern covers (a tenant's own runners, e.g. `runner:team/**`).
 *
 * Patterns name repositories: an exact name (`team/app`), `*` within one path segment (`team/*`,
 * `*`), `**` across segments (`team/**`). Actions are `pull` and `push`; registry `delete` needs `push`.
 */

export type RepositoryAction = "pull" | "push";
/** What a registry request or token can do to a repository. */
export type RegistryGrant = "pull" | "push" | "delete";

export type TokenScope =
  | { kind: "admin" }
  /** `pattern` absent: the operator's pool (every namespace); present: only matching repositories. */
  | { kind: "runner"; pattern?: string }
  | { kind: "repository"; pattern: string; actions: RepositoryAction[] };

export { isRepositoryName } from "../oci/names";

/** One pattern segment: name characters and `*`, at most two stars in a row. */
const PATTERN_SEGMENT = /^[a-z0-9._*-]+$/;

export class ScopeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ScopeError";
  }
}

function validatePattern(pattern: string, scope: string): void {
  if (!pattern) throw new ScopeError(`invalid scope "${scope}": empty repository pattern`);
  if (pattern.length > 255) throw new ScopeError(`invalid scope "${scope}": repository pattern too long`);
  for (const segment of pattern.split("/")) {
    if (!segment) throw new ScopeError(`invalid scope "${scope}": empty path segment in "${pattern}"`);
    if (!PATTERN_SEGMENT.test(segment)) {
      throw new ScopeError(`invalid scope "${scope}": "${pattern}" may contain only a-z, 0-9, ".", "_", "-", "/", "*"`);
    }
    if (segment.includes("***")) throw new ScopeError(`invalid scope "${scope}": use "*" or "**", not "***"`);
  }
}

/** Parses one scope string strictly; throws ScopeError with a message fit for a 400. */
export function parseScope(scope: unknown): TokenScope {
  if (typeof scope !== "string") throw new ScopeError(`invalid scope ${JSON.stringify(scope)}: must be a string`);
  if (scope === "admin") return { kind: "admin" };
  if (scope === "runner") return { kind: "runner" };
  if (scope.startsWith("runner:")) {
    const pattern = scope.slice("runner:".length);
    if (pattern.includes(":")) throw new ScopeError(`invalid scope "${scope}": expected "runner" or "runner:<repository pattern>"`);
    validatePattern(pattern, scope);
    return { kind: "runner", pattern };
  }
  const parts = scope.split(":");
  if (parts.length !== 3 || parts[0] !== "repository") {
    throw new ScopeError(`invalid scope "${scope}": expected "admin", "runner", "runner:<pattern>" or "repository:<pattern>:<pull|push|pull,push>"`);
  }
  const [, pattern, actionList] = parts;
  validatePattern(pattern, scope);
  const actions: RepositoryAction[] = [];
  for (const action of actionList.split(",")) {
    if (action !== "pull" && action !== "push") {
      throw new ScopeError(`invalid scope "${scope}": unknown action "${action}" (allowed: pull, push)`);
    }
    if (!actions.includes(action)) actions.push(action);
  }
  return { kind: "repository", pattern, actions: actions.sort() };
}

export function parseScopes(scopes: unknown): TokenScope[] {
  if (!Array.isArray(scopes) || scopes.length === 0) throw new ScopeError("scopes must be a non-empty array of strings");
  return scopes.map(parseScope);
}

export function formatScope(scope: TokenScope): string {
  if (scope.kind === "repository") return `repository:${scope.pattern}:${scope.actions.join(",")}`;
  if (scope.kind === "runner" && scope.pattern !== undefined) return `runner:${scope.pattern}`;
  return scope.kind;
}

/**
 * The repositories whose RUN jobs `scopes` may run: "all" for the operator's pool (`runner`, or an
 * admin), else the patterns of its `runner:<pattern>` scopes (empty: no runner scope at all).
 */
export function runnerServes(scopes: TokenScope[]): "all" | string[] {
  if (scopes.some((s) => s.kind === "admin" || (s.kind === "runner" && s.pattern === undefined))) return "all";
  return scopes.flatMap((s) => (s.kind === "runner" && s.pattern !== undefined ? [s.pattern] : []));
}

const compiled = new Map<string, RegExp>();

/** Whether `pattern` (exact, `*`, `**`) covers repository `name`. */
export function patternMatches(pattern: string, name: string): boolean {
  let re = compiled.get(pattern);
  if (!re) {
    const source = pattern
      .split(/(\*\*|\*)/)
      .map((part) => (part === "**" ? ".*" : part === "*" ? "[^/]*" : part.replace(/[.\\+?^${}()|[\]]/g, "\\$&")))
      .join("");
    re = new RegExp(`^${source}$`);
    compiled.set(pattern, re);
  }
  return re.test(name);
}

/** The registry actions `scopes` grant on repository `name` (`delete` comes with `push`). */
export function grantedActions(scopes: TokenScope[], name: string): Set<RegistryGrant> {
  const granted = new Set<RegistryGrant>();
  for (const scope of scopes) {
    if (scope.kind === "admin") return new Set(["pull", "push", "delete"]);
    if (scope.kind !== "repository" || !patternMatches(scope.pattern, name)) continue;
    for (const action of scope.actions) granted.add(action);
  }
  if (granted.has("push")) granted.add("delete");
  return granted;
}
