import type { PageOptions } from "./layout";
import type { UiContext } from "./session";

/** A refusal of the dashboard, answered as an HTML page with `status` (the API's JSON errors stay on /v1). */
export class UiError extends Error {
  constructor(readonly status: 400 | 403 | 404 | 409 | 413 | 500, readonly heading: string, message: string) {
    super(message);
    this.name = "UiError";
  }
}

/** The page options of a signed-in page: the CSP nonce, who is signed in, the CSRF token for its forms. */
export function pageOptions(c: UiContext, title: string, current?: PageOptions["current"]): PageOptions {
  return { title, nonce: c.get("nonce"), principal: c.get("principal"), csrf: c.get("session")?.csrf, current };
}

