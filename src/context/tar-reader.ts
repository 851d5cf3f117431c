import { readTar as readOciTar, TarError, type TarHeader, type TarReadEntry } from "../oci/tar";
import type { ByteReader } from "../oci/bytes";

/**
 * Tar entries for context ingest and layer reading, over src/oci's streaming reader (ustar, GNU long
 * names, PAX). The source stays owned by the ByteReader, so callers can count what was read and
 * drain the rest of a request after a refusal. An entry's data must be read through `body()` before
 * asking for the next one (or it is skipped).
 */
/** src/oci's header fields that ingest and layer reading use (mode masked to 0o7777, mtime whole seconds). */
export interface TarEntry extends Pick<TarHeader, "path" | "type" | "typeflag" | "mode" | "uid" | "gid" | "size" | "mtime" | "linkname"> {
  /** Streams the entry's data to `sink` (once). */
  body(sink: (chunk: Uint8Array) => void | Promise<void>): Promise<void>;
}

export class TarFormatError extends Error {}

export function readTar(r: ByteReader): AsyncGenerator<TarEntry> {
  return contextEntries(readOciTar(r.asStream()));
}

/** src/oci's entries (from a tar stream, or already read, e.g. a git host's re-rooted archive) as TarEntry. */
export async function* contextEntries(entries: AsyncIterable<TarReadEntry>): AsyncGenerator<TarEntry> {
  try {
    for await (const { header: h, body } of entries) {
      let read = false;
      yield {
        path: h.path,
        type: h.type,
        typeflag: h.typeflag,
        mode: h.mode & 0o7777,
        uid: h.uid,
        gid: h.gid,
        size: h.size,
        mtime: Math.floor(h.mtime),
        linkname: h.linkname,
        async body(sink) {
          if (read) throw new Error("tar entry body already read");
          read = true;
          const reader = body.getReader();
          for (;;) {
            const { done, value } = await reader.read();
            if (done) return;
            await sink(value);
          }
        },
      };
    }
  } catch (e) {
    if (e instanceof TarError) throw new TarFormatError(e.message);
    throw e;
  }
}
