/**
 * A build's event log: every event (step changes, logs, done) is stored in order and sent to the
 * open event streams in the one frame format of src/protocol/events.ts, with its sequence number as
 * the SSE `id`; a reconnect with `Last-Event-ID` continues after it.
 */
import { encodeFrame, formatRawFrame, parseLastEventId, type BuildEventType, type LogEvent } from "../protocol/events";
import type { BuildStore } from "./build-store";
import type { StepView } from "./model";

const enc = new TextEncoder();

export class EventLog {
  private subscribers = new Set<WritableStreamDefaultWriter<Uint8Array>>();

  /** `forward`: called with every step and log event (a multi-platform child passes them to its parent). */
  constructor(private readonly store: BuildStore, private readonly forward?: (type: "step" | "log", data: StepView | LogEvent) => void) {}

  emit(type: BuildEventType, data: unknown): void {
    const seq = this.store.appendEvent(type, JSON.stringify(data));
    const frame = encodeFrame(type, data, seq);
    for (const w of this.subscribers) {
      w.write(frame).catch(() => this.subscribers.delete(w));
      if (type === "done") w.close().catch(() => {});
    }
    if (type === "done") this.subscribers.clear();
    else this.forward?.(type, data as StepView | LogEvent);
  }

  /** Output of step `step`; `kiln`: a line of kiln's own (waiting for a runner, ERROR: …). */
  log(step: number, text: string, kiln = false): void {
    const ev: LogEvent = kiln ? { step, text, source: "kiln" } : { step, text };
    this.emit("log", ev);
  }

  step(view: StepView): void {
    this.emit("step", view);
  }

  /** The SSE response: the events after `Last-Event-ID` (all without it), then live ones until `done`. */
  stream(req: Request, ended: boolean): Response {
    const after = parseLastEventId(req.headers.get("last-event-id"));
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
    const w = writable.getWriter();
    for (const e of this.store.eventsAfter(after)) w.write(enc.encode(formatRawFrame(e.type, e.data, e.seq))).catch(() => {});
    if (ended) w.close().catch(() => {});
    else this.subscribers.add(w);
    return new Response(readable, { headers: { "content-type": "text/event-stream", "cache-control": "no-cache" } });
  }
}
