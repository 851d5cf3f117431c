/** The OCI distribution name grammar: repository names, their path components, tags. */

/** One path component of a repository name: lowercase alphanumerics joined by `.`, `_`, `__` or dashes. */
export const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
/** A repository name: path components joined by `/`. */
export const REPOSITORY_NAME_RE = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
/** Longest accepted repository name (as distribution). */
export const REPOSITORY_NAME_MAX = 255;
/** A tag: up to 128 word characters, dots and dashes, not starting with a dot or dash. */
export const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;

export function isPathComponent(s: string): boolean {
  return PATH_COMPONENT_RE.test(s);
}

export function isRepositoryName(name: string): boolean {
  return name.length <= REPOSITORY_NAME_MAX && REPOSITORY_NAME_RE.test(name);
}

export function isTag(s: string): boolean {
  return TAG_RE.test(s);
}

/**
 * Splits a `[host/]repository[:tag]` reference as docker reads it: a first component with a dot, a
 * colon or `localhost` is a registry host; the tag defaults to `latest`. Validates nothing.
 */
export function splitReference(spec: string): { host?: string; repository: string; tag: string } {
  let rest = spec.trim();
  let host: string | undefined;
  const first = rest.split("/")[0];
  if (rest.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost")) {
    host = first;
    rest = rest.slice(first.length + 1);
  }
  let tag = "latest";
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  return { host, repository: rest, tag };
}
