/**
 * The web dashboard under /ui/: server-rendered pages (Hono's html helper), one inline stylesheet and
 * one small script, nothing fetched from elsewhere. Sign in with an API token (sealed into an HttpOnly,
 * SameSite=Strict cookie, session.ts); every page then authorizes as the API does for that token.
 */
import { Hono } from "hono";
import { ApiError, OciError } from "../errors";
import { base64url, randomBytes } from "../auth/crypto";
import { principalFromSecret } from "../auth/principal";
import { contentSecurityPolicy, h, messagePage, page } from "./layout";
import { UiError, pageOptions } from "./errors";
import {
  crossSiteReason, endSession, readSession, sameToken, sessionPrincipal, signInCsrf, signInCsrfCookie, startSession, type UiContext, type UiEnv,
} from "./session";
import { uiBuilds } from "./builds";
import { uiNewBuild } from "./new-build";
import { openUploadForm, UPLOAD_FORMS } from "./upload";
import { uiImages, uiRepositories } from "./repositories";
import { uiAdmin } from "./admin";

export const uiRoutes = new Hono<UiEnv>();

/** Forms are small: a bigger body is refused before it is read. */
const MAX_FORM_BYTES = 64 * 1024;

uiRoutes.use("*", async (c, next) => {
  c.set("nonce", base64url(randomBytes(16)));
  await next();
  const headers = c.res.headers;
  if ((headers.get("content-type") ?? "").startsWith("text/html")) headers.set("content-security-policy", contentSecurityPolicy(c.get("nonce")));
  headers.set("x-content-type-options", "nosniff");
  headers.set("referrer-policy", "same-origin");
  headers.set("x-frame-options", "DENY");
  if (!headers.has("cache-control")) headers.set("cache-control", "no-store");
});

/** Reads a form body (refusing a large one) after the cross-site check. */
async function readForm(c: UiContext): Promise<FormData> {
  const why = crossSiteReason(c);
  if (why) throw new UiError(403, "Refused", `${why}.`);
  const length = Number(c.req.header("content-length") ?? NaN);
  if (!Number.isFinite(length) || length > MAX_FORM_BYTES) {
    throw new UiError(413, "Form too large", `A form is sent with a Content-Length of at most ${MAX_FORM_BYTES} bytes.`);
  }
  const type = c.req.header("content-type") ?? "";
  if (!type.startsWith("application/x-www-form-urlencoded") && !type.startsWith("multipart/form-data")) {
    throw new UiError(400, "Not a form", "Send the page's form.");
  }
  return await c.req.formData();
}

function signInPage(c: UiContext, message?: string, status: 200 | 401 | 403 = 200) {
  const csrf = signInCsrf(c);
  const body = h`<h1>Sign in to kiln</h1>
${message ? h`<p class="error" role="alert">${message}</p>` : ""}
<form method="post" action="/ui/sign-in"><input type="hidden" name="_csrf" value="${csrf}">
<label for="token">API token</label><input id="token" name="token" type="password" autocomplete="current-password" required size="50">
<p class="muted">An admin token or a token made with <code>POST /v1/tokens</code>. It is kept only in this browser, in a sealed cookie.</p>
<p><button type="submit">Sign in</button></p></form>`;
  return c.html(page({ title: "Sign in", nonce: c.get("nonce") }, body), status);
}

uiRoutes.get("/", (c) => c.redirect("/ui/builds", 303));

uiRoutes.get("/sign-in", async (c) => {
  const session = await readSession(c);
  if (session && "principal" in (await sessionPrincipal(c.env, session))) return c.redirect("/ui/builds", 303);
  const ended = c.req.query("ended");
  return signInPage(c, ended === "revoked" ? "Your session ended: the token is no longer valid. Sign in again." : ended === "expired" ? "Your session expired. Sign in again." : undefined);
});

uiRoutes.post("/sign-in", async (c) => {
  const form = await readForm(c);
  if (!sameToken(String(form.get("_csrf") ?? ""), signInCsrfCookie(c))) {
    return signInPage(c, "The sign-in form expired (or cookies are off). Try again.", 403);
  }
  const token = String(form.get("token") ?? "").trim();
  const r = token ? await principalFromSecret(c.env, token, false) : { reason: "empty token" };
  if (!("principal" in r) || r.principal.kind === "registry") return signInPage(c, `That token was refused: ${"reason" in r ? r.reason : "registry tokens are valid only on /v2"}.`, 401);
  await startSession(c, token);
  return c.redirect("/ui/builds", 303);
});

// Everything below needs a session; POSTs also a matching CSRF token.
uiRoutes.use("*", async (c, next) => {
  const session = await readSession(c);
  if (!session) {
    if (c.req.method === "GET" || c.req.method === "HEAD") return c.redirect(c.req.header("cookie")?.includes("kiln_session=") ? "/ui/sign-in?ended=expired" : "/ui/sign-in", 303);
    throw new UiError(403, "Signed out", "Sign in first.");
  }
  const resolved = await sessionPrincipal(c.env, session);
  if (!("principal" in resolved)) {
    endSession(c);
    return c.redirect("/ui/sign-in?ended=revoked", 303);
  }
  c.set("session", session);
  c.set("principal", resolved.principal);
  if (c.req.method === "POST" && UPLOAD_FORMS.has(c.req.path)) {
    // a form with a file streams: its first part is the CSRF token, checked before anything else is read
    c.set("upload", await openUploadForm(c, session.csrf));
  } else if (c.req.method !== "GET" && c.req.method !== "HEAD") {
    const form = await readForm(c);
    if (!sameToken(String(form.get("_csrf") ?? ""), session.csrf)) {
      throw new UiError(403, "Refused", "The form's CSRF token does not match your session: reload the page and try again.");
    }
    c.set("form", form);
  }
  await next();
});

uiRoutes.post("/sign-out", (c) => {
  endSession(c);
  return c.redirect("/ui/sign-in", 303);
});

uiRoutes.route("/builds/new", uiNewBuild);
uiRoutes.route("/builds", uiBuilds);
uiRoutes.route("/repositories", uiRepositories);
uiRoutes.route("/image", uiImages);
uiRoutes.route("/admin", uiAdmin);

uiRoutes.all("*", (c) => {
  if (c.req.path === "/ui/" && c.req.method === "GET") return c.redirect("/ui/builds", 303);
  throw new UiError(404, "Not found", `There is no page ${c.req.path}.`);
});

uiRoutes.onError((err, c) => {
  const opts = pageOptions(c, "Error");
  if (err instanceof UiError) return c.html(messagePage({ ...opts, title: err.heading }, err.heading, err.message), err.status);
  if (err instanceof ApiError || err instanceof OciError) {
    const status = (err instanceof ApiError ? err.status : 400) as 400;
    return c.html(messagePage(opts, "Refused", err.message), status);
  }
  console.error("dashboard error", c.req.method, c.req.path, err);
  return c.html(messagePage(opts, "Something went wrong", "kiln could not show this page; the error is in the server's log."), 500);
});
