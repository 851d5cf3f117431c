/**
 * A form that uploads a file (the "New build" form's context archive) is read as a stream, never
 * whole: the cross-site check comes first, then the form's first part must be its `_csrf` field with
 * the session's token, before a byte of anything else is read. The remaining parts are handed to the
 * route one at a time (readMultipart), so a file part streams straight into its consumer.
 */
import { ByteReader } from "../oci/bytes";
import { readLimited } from "../http/body";
import { boundaryOf, MultipartError, readMultipart, type FormPart } from "../context/multipart";
import { UiError } from "./errors";
import { crossSiteReason, sameToken, type UiContext } from "./session";

/** The POST routes whose forms are read this way (the others are small and read whole). */
export const UPLOAD_FORMS = new Set(["/ui/builds/new"]);

/**
 * What a refused sender may still send before its connection is closed, so that a browser shows the
 * answer: a signed-in user's refused form as much as a refused API upload (src/context/ingest.ts);
 * a post that fails the CSRF check (perhaps not the user's) only a little.
 */
const DRAIN_ON_REFUSAL = 256 * 1024 * 1024;
const DRAIN_ON_FORGERY = 1024 * 1024;
const MAX_CSRF_PART = 256;

export interface UploadForm {
  /** The parts after `_csrf`, in the order the browser sent them (a form's tree order). */
  parts: AsyncGenerator<FormPart>;
  /** Reads what is left of the body (up to a bound, then cancels): after the answer is decided. */
  finish(limit?: number): Promise<void>;
}

/** Opens the request's multipart body after the cross-site and CSRF checks (403 UiError otherwise; nothing else is read). */
export async function openUploadForm(c: UiContext, csrf: string): Promise<UploadForm> {
  const why = crossSiteReason(c);
  if (why) throw new UiError(403, "Refused", `${why}.`);
  const boundary = boundaryOf(c.req.header("content-type") ?? "");
  const body = c.req.raw.body;
  if (!(c.req.header("content-type") ?? "").toLowerCase().startsWith("multipart/form-data") || !boundary || !body) {
    throw new UiError(400, "Not a form", "Send the page's form (multipart/form-data).");
  }
  const source = new ByteReader(body);
  const finish = async (limit = DRAIN_ON_REFUSAL) => {
    await source.drain(limit).catch(() => {});
  };
  const parts = readMultipart(source.asStream(), boundary);
  let token = "";
  try {
    const first = await parts.next();
    if (!first.done && first.value.name === "_csrf") {
      token = new TextDecoder().decode(await readLimited(first.value.body, MAX_CSRF_PART, () => new MultipartError("_csrf field too large")));
    }
  } catch {
    /* a malformed body is refused below like a missing token */
  }
  if (!sameToken(token, csrf)) {
    await finish(DRAIN_ON_FORGERY);
    throw new UiError(403, "Refused", "The form's CSRF token does not match your session (it must be the form's first field): reload the page and try again.");
  }
  return { parts, finish };
}

/** A text part's value (UTF-8), refusing one over `max` bytes with `what` named. */
export async function readTextPart(part: FormPart, max: number, what: string): Promise<string> {
  const bytes = await readLimited(part.body, max, () => new UiError(413, "Field too large", `${what} is limited to ${max} bytes.`));
  return new TextDecoder().decode(bytes);
}
