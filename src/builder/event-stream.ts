import type { Env } from "../env";

/**
 * The Server-Sent Events of build `id` (src/protocol/events.ts) from its coordinator: the events after
 * `lastEventId` (all without it), then live ones until `done`. Null when the build never reached its
 * coordinator. Callers authorize first (GET /v1/builds/:id/events, the dashboard's build page).
 */
export async function buildEventStream(
  env: Env, ctx: { waitUntil(p: Promise<unknown>): void }, id: string, lastEventId?: string,
): Promise<Response | null> {
  const stub = env.BUILD_COORDINATOR.get(env.BUILD_COORDINATOR.idFromName(id));
  const res = await stub.fetch(new Request(`https://coordinator/${id}/events`, { headers: lastEventId ? { "last-event-id": lastEventId } : {} }));
  if (!res.ok || !res.body) return null;
  // Pipe through a TransformStream so the stream outlives the DO response object under wrangler dev.
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
  ctx.waitUntil(res.body.pipeTo(writable).catch(() => {}));
  return new Response(readable, { headers: { "content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no" } });
}
