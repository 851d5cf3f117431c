/**
 * Stream plumbing without `pipeThrough`: a manual pump keeps the original error object of the source
 * (native transforms like CompressionStream in workerd replace it with a generic Error, and their
 * internal pipe promises surface as unhandled rejections), lets a hook see every input and output chunk
 * without an extra TransformStream hop, and runs an async `end` hook before the output closes.
 */

export interface ThroughHooks {
  /** Sees every input chunk before it enters the transform (e.g. to hash it). May throw. */
  input?(chunk: Uint8Array): void;
  /** Sees (and may replace) every output chunk. May throw. */
  output?(chunk: Uint8Array): Uint8Array;
  /** Runs after the last output chunk, before the returned stream closes. */
  end?(): Promise<void> | void;
  /** Called once when the pipeline fails or is cancelled. */
  fail?(reason: unknown): void;
  /** Wraps an error raised by the transform itself (not by the source). */
  transformError?(e: unknown): unknown;
}

export function through(
  src: ReadableStream<Uint8Array>,
  transform: { writable: WritableStream<Uint8Array>; readable: ReadableStream<Uint8Array> },
  hooks: ThroughHooks = {},
): ReadableStream<Uint8Array> {
  let srcError: { e: unknown } | null = null;
  let started = false;
  let failed = false;
  const srcReader = src.getReader();
  const writer = transform.writable.getWriter();
  const reader = transform.readable.getReader();
  writer.closed.catch(() => {});
  reader.closed.catch(() => {});

  const fail = (e: unknown) => {
    if (failed) return;
    failed = true;
    hooks.fail?.(e);
  };

  const pump = async () => {
    for (;;) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await srcReader.read();
        if (!r.done && r.value) hooks.input?.(r.value);
      } catch (e) {
        srcError = { e };
        fail(e);
        srcReader.cancel(e).catch(() => {});
        writer.abort(e).catch(() => {});
        return;
      }
      try {
        if (r.done) {
          await writer.close();
          return;
        }
        await writer.write(r.value);
      } catch (e) {
        // The transform failed; its readable side reports it.
        srcReader.cancel(e).catch(() => {});
        return;
      }
    }
  };

  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        if (!started) {
          started = true;
          void pump();
        }
        for (;;) {
          let r: ReadableStreamReadResult<Uint8Array>;
          try {
            r = await reader.read();
          } catch (e) {
            const err = srcError ? srcError.e : hooks.transformError ? hooks.transformError(e) : e;
            fail(err);
            srcReader.cancel(err).catch(() => {});
            throw err;
          }
          try {
            if (r.done) {
              if (srcError) throw srcError.e;
              await hooks.end?.();
              controller.close();
              return;
            }
            if (!r.value || r.value.length === 0) continue;
            controller.enqueue(hooks.output ? hooks.output(r.value) : r.value);
            return;
          } catch (e) {
            fail(e);
            reader.cancel(e).catch(() => {});
            srcReader.cancel(e).catch(() => {});
            throw e;
          }
        }
      },
      async cancel(reason) {
        const e = reason ?? new Error("stream cancelled");
        fail(e);
        await Promise.all([
          reader.cancel(e).catch(() => {}),
          srcReader.cancel(e).catch(() => {}),
          writer.abort(e).catch(() => {}),
        ]);
      },
    },
    { highWaterMark: 0 },
  );
}
