/**
 * The context bytes of a COPY, read the way the pack lies: the small files of a layer are gathered
 * into batches (in layer order, up to BATCH_BYTES of contents), and each batch is read with few ranged
 * GETs: its files' ranges sorted by offset and coalesced (across gaps up to MAX_GAP, up to MAX_READ
 * per GET). A context of 100,000 one-byte files is then one GET instead of 100,000. Large files stream
 * with their own GET. Between batches the work yields to the event loop, so that a long COPY never
 * starves the other requests of the isolate.
 */
import type { Env } from "../../env";
import { readContextBytes, readContextRange } from "../../storage/contexts";
import { yieldEvery } from "../layers";

/** Files up to this size are read in batches (larger ones stream with their own GET). */
export const SMALL_FILE = 256 * 1024;
/** Contents of one batch (what is held in memory at once, plus gaps). */
const BATCH_BYTES = 4 * 1024 * 1024;
/** Unneeded bytes between two ranges that are read rather than split into two GETs. */
const MAX_GAP = 64 * 1024;
/** Largest single GET. */
const MAX_READ = 8 * 1024 * 1024;

export interface PackSpan {
  offset: number;
  size: number;
  /** The pack of this file when not the reader's (content-addressed contexts: one pack per uploaded batch). */
  pack?: string;
  /** A file stored in pieces: its ranges in order (read as one stream). */
  parts?: { pack: string; offset: number; size: number }[];
}

/** A context file's bytes as one stream: its range of its pack, or its pieces one after another. */
export async function readContextFile(env: Env, defaultPack: string, s: PackSpan): Promise<ReadableStream<Uint8Array>> {
  if (!s.parts) return await readContextRange(env, s.pack ?? defaultPack, s.offset, s.size);
  const parts = s.parts;
  let i = 0;
  let current: ReadableStreamDefaultReader<Uint8Array> | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      for (;;) {
        if (!current) {
          if (i >= parts.length) return c.close();
          const p = parts[i++];
          current = (await readContextRange(env, p.pack, p.offset, p.size)).getReader();
        }
        const { done, value } = await current.read();
        if (!done) return c.enqueue(value);
        current = undefined;
      }
    },
    cancel: (r) => current?.cancel(r),
  });
}

interface Batch {
  members: PackSpan[];
  loaded?: Map<PackSpan, Uint8Array>;
}

/** Coalesces ranges (sorted by offset) into reads: adjacent or near ones share a read of at most `maxRead` bytes. */
export function coalesce(spans: PackSpan[], maxGap = MAX_GAP, maxRead = MAX_READ): { offset: number; length: number; spans: PackSpan[] }[] {
  const sorted = [...spans].sort((a, b) => a.offset - b.offset);
  const reads: { offset: number; length: number; spans: PackSpan[] }[] = [];
  let cur: { offset: number; length: number; spans: PackSpan[] } | undefined;
  for (const s of sorted) {
    const end = s.offset + s.size;
    if (cur && s.offset <= cur.offset + cur.length + maxGap && Math.max(end, cur.offset + cur.length) - cur.offset <= maxRead) {
      cur.length = Math.max(end, cur.offset + cur.length) - cur.offset;
      cur.spans.push(s);
    } else {
      cur = { offset: s.offset, length: s.size, spans: [s] };
      reads.push(cur);
    }
  }
  return reads;
}

const turn = () => new Promise<void>((r) => setTimeout(r, 0));

/**
 * Serves the bodies of a pack's files in the order given to the constructor (the layer's order);
 * `body` must be asked in that order (a batch is dropped once the next one is loaded).
 */
export class PackReader {
  private batchOf = new Map<PackSpan, Batch>();
  private current?: Batch;

  constructor(
    private env: Env,
    private pack: string,
    spans: PackSpan[],
  ) {
    let batch: Batch = { members: [] };
    let bytes = 0;
    for (const s of spans) {
      if (s.size === 0 || s.size > SMALL_FILE || s.parts || this.batchOf.has(s)) continue;
      if (bytes + s.size > BATCH_BYTES && batch.members.length) {
        batch = { members: [] };
        bytes = 0;
      }
      batch.members.push(s);
      bytes += s.size;
      this.batchOf.set(s, batch);
    }
  }

  async body(s: PackSpan): Promise<ReadableStream<Uint8Array> | Uint8Array> {
    const batch = this.batchOf.get(s);
    if (!batch) return (await readContextFile(this.env, this.pack, s)).pipeThrough(yieldEvery(4 * 1024 * 1024));
    if (batch !== this.current) {
      if (this.current) this.current.loaded = undefined; // the previous batch's bytes can go
      this.current = undefined;
      await turn(); // a turn for the isolate's other requests between batches
      await this.load(batch);
      this.current = batch;
    }
    return batch.loaded!.get(s)!;
  }

  private async load(batch: Batch): Promise<void> {
    const loaded = new Map<PackSpan, Uint8Array>();
    // ranges of one pack coalesce (a content-addressed context spreads its files over several packs)
    const byPack = new Map<string, PackSpan[]>();
    for (const s of batch.members) {
      const pack = s.pack ?? this.pack;
      const list = byPack.get(pack);
      if (list) list.push(s);
      else byPack.set(pack, [s]);
    }
    for (const [pack, members] of byPack) {
      for (const read of coalesce(members)) {
        const bytes = await readContextBytes(this.env, pack, read.offset, read.length);
        for (const s of read.spans) loaded.set(s, bytes.subarray(s.offset - read.offset, s.offset - read.offset + s.size));
      }
    }
    batch.loaded = loaded;
  }
}
