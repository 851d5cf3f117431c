import type { PushEvent } from "./event";

/** Branch globs: `*` matches within a path segment, `**` across segments, `?` one character. */
export function globMatch(pattern: string, value: string): boolean {
  let re = "^";
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i];
    if (ch === "*" && pattern[i + 1] === "*") { re += ".*"; i++; }
    else if (ch === "*") re += "[^/]*";
    else if (ch === "?") re += "[^/]";
    else re += ch.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(re + "$").test(value);
}

/** Docker tags allow [A-Za-z0-9_.-], at most 128 characters, not starting with . or -. */
export function sanitizeTag(s: string): string {
  const t = s.replace(/[^A-Za-z0-9_.-]/g, "-").replace(/^[.-]+/, "").slice(0, 128);
  return t || "unknown";
}

export const DEFAULT_TAG_TEMPLATES = ["{branch}", "{tag}", "{sha:7}", "latest"];

/**
 * The image tags a push produces: `{branch}` for branch pushes, `{tag}` for tag pushes, `{sha}` or
 * `{sha:N}` for both, and the literal `latest` only for the default branch (a branch or git tag named
 * `latest` never makes it). A template whose variable does not apply to this push is left out.
 */
export function tagsFor(ev: PushEvent, templates: string[]): string[] {
  const out = new Set<string>();
  for (const tpl of templates.length ? templates : DEFAULT_TAG_TEMPLATES) {
    if (tpl === "latest") {
      if (ev.refType === "branch" && ev.defaultBranch && ev.name === ev.defaultBranch) out.add("latest");
      continue;
    }
    let applicable = true;
    const value = tpl.replace(/\{(branch|tag|sha)(?::(\d+))?\}/g, (_, v: string, n?: string) => {
      if (v === "branch") { if (ev.refType !== "branch") applicable = false; return ev.name; }
      if (v === "tag") { if (ev.refType !== "tag") applicable = false; return ev.name; }
      return n ? ev.sha.slice(0, Number(n)) : ev.sha;
    });
    // `latest` belongs to the default branch: a branch or git tag named `latest` never produces it
    if (applicable && sanitizeTag(value) !== "latest") out.add(sanitizeTag(value));
  }
  return [...out];
}

/** Whether a push should build: tags always; branches when they match a filter (none = all). */
export function shouldBuild(ev: PushEvent, branches: string[]): boolean {
  if (ev.refType === "tag") return true;
  return branches.length === 0 || branches.some((b) => globMatch(b, ev.name));
}
