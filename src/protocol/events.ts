/**
 * The event stream of a build (`GET /v1/builds/:id/events`, Server-Sent Events): one frame format,
 * written by the BuildCoordinator and read by the CLI and the tests. Pure: no runtime imports.
 *
 * Every frame is `id: <seq>\nevent: <type>\ndata: <one line of JSON>\n\n`. `seq` grows by one per
 * event of the build; a client that reconnects with `Last-Event-ID: <seq>` gets only the events after it.
 */

/** `step`: a StepView; `log`: a LogEvent; `done`: the final BuildView (the stream ends after it). */
export type BuildEventType = "step" | "log" | "done";

/** Output of a step. `source: "kiln"` marks kiln's own lines (waiting for a runner, ERROR: …). */
export interface LogEvent {
  step: number;
  text: string;
  source?: "kiln";
}

export interface SseEvent {
  event: string;
  data: string;
  id?: string;
}

const enc = new TextEncoder();

/** One SSE frame. `data` is serialized as JSON on one line (JSON never contains a raw newline). */
export function formatFrame(type: BuildEventType, data: unknown, id?: number): string {
  return formatRawFrame(type, JSON.stringify(data), id);
}

/** One SSE frame of already serialized JSON. */
export function formatRawFrame(type: string, json: string, id?: number): string {
  return `${id !== undefined ? `id: ${id}\n` : ""}event: ${type}\ndata: ${json}\n\n`;
}

export function encodeFrame(type: BuildEventType, data: unknown, id?: number): Uint8Array {
  return enc.encode(formatFrame(type, data, id));
}

/** The `Last-Event-ID` of a reconnect as a sequence number (0: from the start). */
export function parseLastEventId(value: string | null | undefined): number {
  if (!value || !/^\d{1,15}$/.test(value.trim())) return 0;
  return Number(value.trim());
}

/**
 * An incremental SSE parser (the text/event-stream grammar: `field: value` lines, events end at an
 * empty line, `:` comments, CRLF or LF). Feed it text; it returns the events completed so far.
 */
export class SseParser {
  private buf = "";
  private event = "message";
  private data: string[] = [];
  private id: string | undefined;

  push(text: string): SseEvent[] {
    this.buf += text;
    const out: SseEvent[] = [];
    let nl: number;
    while ((nl = this.buf.indexOf("\n")) >= 0) {
      let line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      const ev = this.line(line);
      if (ev) out.push(ev);
    }
    return out;
  }

  /** The end of the stream: an event without its closing empty line still counts. */
  end(): SseEvent[] {
    const out = this.buf ? this.push("\n") : [];
    const last = this.line("");
    return last ? [...out, last] : out;
  }

  private line(line: string): SseEvent | undefined {
    if (line === "") {
      const ev = this.data.length ? { event: this.event, data: this.data.join("\n"), ...(this.id !== undefined ? { id: this.id } : {}) } : undefined;
      this.event = "message";
      this.data = [];
      this.id = undefined;
      return ev;
    }
    if (line.startsWith(":")) return undefined;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id") this.id = value;
    return undefined;
  }
}

/** The events of an SSE body as they arrive. */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  const parser = new SseParser();
  const reader = body.getReader();
  let ended = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        ended = true;
        break;
      }
      for (const ev of parser.push(decoder.decode(value, { stream: true }))) yield ev;
    }
    for (const ev of parser.push(decoder.decode())) yield ev;
    for (const ev of parser.end()) yield ev;
  } finally {
    // A reader that stops early (break) cancels the body, as async iteration of a stream does.
    if (!ended) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}
