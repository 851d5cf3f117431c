/**
 * Image references as docker normalizes them: `alpine` → docker.io/library/alpine:latest,
 * `ghcr.io/org/img@sha256:…`, hosts with ports, `localhost/x`.
 */
import { PATH_COMPONENT_RE as COMPONENT, TAG_RE as TAG } from "../oci/names";

export interface ImageReference {
  /** Registry host as the user names it, normalized: docker.io for Docker Hub. */
  registry: string;
  /** Repository path inside the registry, e.g. library/alpine. */
  repository: string;
  tag?: string;
  digest?: string;
}

export class ReferenceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ReferenceError";
  }
}

const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const HOST = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$/;

export function parseReference(input: string): ImageReference {
  const ref = input.trim();
  if (!ref) throw new ReferenceError("empty image reference");
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw new ReferenceError(`invalid reference format: bad digest in "${input}"`);
    if (digest.startsWith("sha256:") && !/^sha256:[a-f0-9]{64}$/.test(digest)) {
      throw new ReferenceError(`invalid reference format: sha256 digest must be 64 lowercase hex characters in "${input}"`);
    }
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf("/");
  const colon = rest.lastIndexOf(":");
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw new ReferenceError(`invalid reference format: bad tag "${tag}" in "${input}"`);
  }
  const parts = rest.split("/");
  let registry = "docker.io";
  const first = parts[0];
  if (parts.length > 1 && (first.includes(".") || first.includes(":") || first === "localhost" || first.startsWith("["))) {
    if (!HOST.test(first)) throw new ReferenceError(`invalid reference format: bad registry host "${first}"`);
    registry = first.toLowerCase();
    parts.shift();
  }
  if (registry === "index.docker.io" || registry === "registry-1.docker.io") registry = "docker.io";
  if (parts.length === 0 || parts.some((p) => !COMPONENT.test(p))) {
    const bad = parts.find((p) => !COMPONENT.test(p)) ?? "";
    const why = bad !== bad.toLowerCase() ? "repository name must be lowercase" : `bad repository name component "${bad}"`;
    throw new ReferenceError(`invalid reference format: ${why} in "${input}"`);
  }
  if (registry === "docker.io" && parts.length === 1) parts.unshift("library");
  const repository = parts.join("/");
  if (repository.length > 255) throw new ReferenceError(`invalid reference format: repository name too long in "${input}"`);
  if (!tag && !digest) tag = "latest";
  return { registry, repository, tag, digest };
}

export function formatReference(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ""}${ref.digest ? `@${ref.digest}` : ""}`;
}

/** The reference used to ask the registry: the digest when pinned, else the tag. */
export function referenceTarget(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? "latest";
}
