import { concat } from "../oci/bytes";

/** Streaming multipart/form-data reader: parts are handed out one at a time with a streaming body. */
export interface FormPart {
  name: string;
  filename?: string;
  contentType?: string;
  body: ReadableStream<Uint8Array>;
}

export class MultipartError extends Error {}

const enc = new TextEncoder();
const dec = new TextDecoder();

export function boundaryOf(contentType: string): string | null {
  const m = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  return m ? (m[1] ?? m[2]) : null;
}

function indexOf(hay: Uint8Array, needle: Uint8Array, from = 0): number {
  outer: for (let i = from; i <= hay.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

export async function* readMultipart(stream: ReadableStream<Uint8Array>, boundary: string): AsyncGenerator<FormPart> {
  const reader = stream.getReader();
  let buf: Uint8Array = new Uint8Array(0);
  let eof = false;
  const fill = async () => {
    if (eof) return false;
    const { value, done } = await reader.read();
    if (done) {
      eof = true;
      return false;
    }
    buf = buf.length ? concat(buf, value) : value;
    return true;
  };
  const delim = enc.encode(`\r\n--${boundary}`);
  // The first delimiter may be at the very start (no preceding CRLF).
  buf = concat(enc.encode("\r\n"), buf);
  for (;;) {
    const i = indexOf(buf, delim);
    if (i >= 0) {
      buf = buf.subarray(i + delim.length);
      break;
    }
    if (buf.length > delim.length) buf = buf.subarray(buf.length - delim.length);
    if (!(await fill())) throw new MultipartError("multipart body without its boundary");
  }
  for (;;) {
    while (buf.length < 2) if (!(await fill())) throw new MultipartError("truncated multipart body");
    if (buf[0] === 0x2d && buf[1] === 0x2d) {
      await reader.cancel().catch(() => {});
      return;
    }
    // headers up to CRLFCRLF (after the CRLF that ends the boundary line)
    let end: number;
    while ((end = indexOf(buf, enc.encode("\r\n\r\n"))) < 0) {
      if (buf.length > 64 * 1024) throw new MultipartError("multipart part headers too large");
      if (!(await fill())) throw new MultipartError("truncated multipart headers");
    }
    const headerText = dec.decode(buf.subarray(0, end));
    buf = buf.subarray(end + 4);
    const headers: Record<string, string> = {};
    for (const line of headerText.split("\r\n")) {
      const c = line.indexOf(":");
      if (c > 0) headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
    }
    const disp = headers["content-disposition"] ?? "";
    const name = /\bname="([^"]*)"/i.exec(disp)?.[1] ?? "";
    const filename = /\bfilename="([^"]*)"/i.exec(disp)?.[1];
    let finished = false;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        for (;;) {
          const i = indexOf(buf, delim);
          if (i >= 0) {
            if (i > 0) controller.enqueue(buf.slice(0, i));
            buf = buf.subarray(i + delim.length);
            finished = true;
            controller.close();
            return;
          }
          const safe = buf.length - delim.length + 1;
          if (safe > 0) {
            controller.enqueue(buf.slice(0, safe));
            buf = buf.subarray(safe);
            return;
          }
          if (!(await fill())) {
            controller.error(new MultipartError("truncated multipart part"));
            return;
          }
        }
      },
    });
    yield { name, filename, contentType: headers["content-type"], body };
    if (!finished) {
      if (body.locked) throw new MultipartError("multipart part was not read to its end");
      const r = body.getReader();
      while (!(await r.read()).done);
    }
  }
}
