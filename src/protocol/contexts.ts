/**
 * The content-addressed context upload, as `kiln build` (src/cli) sends it and the Worker
 * (src/context/contents.ts, POST /v1/builds) reads it. Keep it free of runtime imports.
 *
 *   POST /v1/contexts/missing   {digests: ["sha256:<hex>", …]} → {missing: [...]}
 *   POST /v1/contexts/contents  a plain tar of entries named `<hex>` (or `<hex>.<start>.<total>`, a piece)
 *   POST /v1/builds             Content-Type CONTEXT_INDEX_TYPE, a ContextIndexUpload
 */

export const CONTEXT_INDEX_TYPE = "application/vnd.kiln.context-index+json";

/** One file, directory or symlink of the context; a file's contents are named by `sha256`. */
export interface ContextIndexEntry {
  path: string;
  type: "file" | "dir" | "symlink";
  mode: number;
  uid?: number;
  gid?: number;
  size?: number;
  sha256?: string;
  linkTarget?: string;
}

/** The request body of POST /v1/builds with Content-Type CONTEXT_INDEX_TYPE. */
export interface ContextIndexUpload {
  files: ContextIndexEntry[];
  dockerfile: string;
  secrets?: Record<string, string>;
}
