// The dashboard's sign-in, session cookie, CSRF protection and authorization (workerd, the real Worker).
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ADMIN, createToken, uniqueRepo } from "../auth/helpers";
import { build, makeTar, postBuild, waitBuild } from "../builds/helpers";

const ORIGIN = "http://kiln.test";

/** The `name=value` of a Set-Cookie header line for `name`, with its attributes. */
function setCookies(res: Response): string[] {
  return (res.headers as unknown as { getSetCookie(): string[] }).getSetCookie();
}
function cookieLine(res: Response, name: string): string | undefined {
  return setCookies(res).find((l) => l.startsWith(`${name}=`));
}
const pair = (line: string) => line.split(";")[0];

async function ui(path: string, init: RequestInit & { cookie?: string; origin?: string | null; base?: string } = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (init.cookie) headers.set("cookie", init.cookie);
  const base = init.base ?? ORIGIN;
  if (init.method === "POST" && init.origin !== null) headers.set("origin", init.origin ?? base);
  return SELF.fetch(`${base}${path}`, { ...init, headers, redirect: "manual" });
}

function form(fields: Record<string, string>): { body: string; headers: Record<string, string> } {
  return { body: new URLSearchParams(fields).toString(), headers: { "content-type": "application/x-www-form-urlencoded" } };
}

/** Signs in with `token`; returns the session cookie pair and the CSRF token of its pages. */
async function signIn(token: string, base = ORIGIN): Promise<{ cookie: string; csrf: string; res: Response }> {
  const get = await ui("/ui/sign-in", { base });
  const pre = pair(cookieLine(get, "kiln_signin_csrf")!);
  const csrf = /name="_csrf" value="([^"]+)"/.exec(await get.text())![1];
  const res = await ui("/ui/sign-in", { method: "POST", cookie: pre, base, ...form({ _csrf: csrf, token }) });
  expect(res.status, await res.clone().text()).toBe(303);
  const cookie = pair(cookieLine(res, "kiln_session")!);
  const page = await ui("/ui/builds", { cookie, base });
  const session = /name="_csrf" value="([^"]+)"/.exec(await page.text())![1];
  return { cookie, csrf: session, res };
}

describe("dashboard sign-in and session cookie", () => {
  it("sends a signed-out visitor to the sign-in page, which has no external resources and a strict CSP", async () => {
    const res = await ui("/ui/builds");
    expect(res.status).toBe(303);
    expect(res.headers.get("location")).toBe("/ui/sign-in");
    const page = await ui("/ui/sign-in");
    expect(page.status).toBe(200);
    const csp = page.headers.get("content-security-policy")!;
    expect(csp).toContain("default-src 'none'");
    expect(csp).toMatch(/script-src 'nonce-[A-Za-z0-9_-]+'/);
    expect(page.headers.get("cache-control")).toBe("no-store");
    expect(page.headers.get("x-frame-options")).toBe("DENY");
    expect(csp).toContain("frame-ancestors 'none'");
    const text = await page.text();
    expect(text).not.toMatch(/(src|href)="(https?:)?\/\//);
    const pre = cookieLine(page, "kiln_signin_csrf")!;
    expect(pre).toMatch(/HttpOnly/);
    expect(pre).toMatch(/SameSite=Strict/);
    expect(pre).toMatch(/Path=\/ui/);
  });

  it("sets an HttpOnly, SameSite=Strict session cookie that does not hold the token in clear; Secure on https", async () => {
    const { token } = await createToken([`repository:${uniqueRepo("uic")}/*:pull`], "cookie-test");
    const { res } = await signIn(token);
    const line = cookieLine(res, "kiln_session")!;
    expect(line).toMatch(/HttpOnly/);
    expect(line).toMatch(/SameSite=Strict/);
    expect(line).toMatch(/Path=\/ui/);
    expect(line).not.toMatch(/Secure/);
    expect(line).not.toContain(token);
    expect(decodeURIComponent(line)).not.toContain(token);
    const https = await signIn(token, "https://kiln.test");
    expect(cookieLine(https.res, "kiln_session")).toMatch(/; Secure/);
  });

  it("refuses a token it does not know, a sign-in without the form's CSRF token and one posted from another site", async () => {
    const get = await ui("/ui/sign-in");
    const pre = pair(cookieLine(get, "kiln_signin_csrf")!);
    const csrf = /name="_csrf" value="([^"]+)"/.exec(await get.text())![1];
    const bad = await ui("/ui/sign-in", { method: "POST", cookie: pre, ...form({ _csrf: csrf, token: "kiln_" + "x".repeat(43) }) });
    expect(bad.status).toBe(401);
    expect(await bad.text()).toContain("unknown or revoked token");
    expect(cookieLine(bad, "kiln_session")).toBeUndefined();
    const noCsrf = await ui("/ui/sign-in", { method: "POST", cookie: pre, ...form({ _csrf: "forged", token: ADMIN }) });
    expect(noCsrf.status).toBe(403);
    expect(cookieLine(noCsrf, "kiln_session")).toBeUndefined();
    const noCookie = await ui("/ui/sign-in", { method: "POST", ...form({ _csrf: csrf, token: ADMIN }) });
    expect(noCookie.status).toBe(403);
    const cross = await ui("/ui/sign-in", { method: "POST", cookie: pre, origin: "http://evil.test", ...form({ _csrf: csrf, token: ADMIN }) });
    expect(cross.status).toBe(403);
    expect(cookieLine(cross, "kiln_session")).toBeUndefined();
    const huge = await ui("/ui/sign-in", { method: "POST", cookie: pre, ...form({ _csrf: csrf, token: "x".repeat(70_000) }) });
    expect(huge.status).toBe(413);
    const sameSite = await ui("/ui/sign-in", { method: "POST", cookie: pre, origin: null, headers: { "sec-fetch-site": "cross-site", ...form({}).headers }, body: new URLSearchParams({ _csrf: csrf, token: ADMIN }).toString() });
    expect(sameSite.status).toBe(403);
  });

  it("refuses every form without the session's CSRF token, or from another origin, and signs out with it", async () => {
    const { cookie, csrf } = await signIn(ADMIN);
    const forged = await ui("/ui/sign-out", { method: "POST", cookie, ...form({ _csrf: "nope" }) });
    expect(forged.status).toBe(403);
    const cross = await ui("/ui/sign-out", { method: "POST", cookie, origin: "http://evil.test", ...form({ _csrf: csrf }) });
    expect(cross.status).toBe(403);
    // another session's CSRF token does not fit this one
    const other = await signIn(ADMIN);
    const mixed = await ui("/ui/admin/tokens", { method: "POST", cookie, ...form({ _csrf: other.csrf, name: "x", scopes: "admin" }) });
    expect(mixed.status).toBe(403);
    expect(await (await ui("/ui/builds", { cookie })).text()).toContain("Signed in as");
    for (const root of ["/ui", "/ui/"]) {
      const res = await ui(root, { cookie });
      expect(res.status, root).toBe(303);
      expect(res.headers.get("location"), root).toBe("/ui/builds");
    }
    const out = await ui("/ui/sign-out", { method: "POST", cookie, ...form({ _csrf: csrf }) });
    expect(out.status).toBe(303);
    expect(out.headers.get("location")).toBe("/ui/sign-in");
    expect(cookieLine(out, "kiln_session")).toMatch(/Max-Age=0/);
  });

  it("does not open a tampered cookie, and ends the session when its token is revoked", async () => {
    const { id, token } = await createToken([`repository:${uniqueRepo("uir")}/*:pull`], "revoke-me");
    const { cookie } = await signIn(token);
    const [name, value] = cookie.split("=");
    const tampered = `${name}=${decodeURIComponent(value).slice(0, -4)}AAA%3D`;
    expect((await ui("/ui/builds", { cookie: tampered })).status).toBe(303);
    expect((await ui("/ui/builds", { cookie })).status).toBe(200);
    const del = await SELF.fetch(`${ORIGIN}/v1/tokens/${id}`, { method: "DELETE", headers: { authorization: `Bearer ${ADMIN}` } });
    expect(del.status).toBe(204);
    const after = await ui("/ui/builds", { cookie });
    expect(after.status).toBe(303);
    expect(after.headers.get("location")).toBe("/ui/sign-in?ended=revoked");
  });
});

describe("dashboard authorization", () => {
  it("keeps admin pages for admins and creates a token shown once that the API accepts, then revokes it", async () => {
    const { token } = await createToken([`repository:${uniqueRepo("uia")}/*:pull,push`], "not-admin");
    const user = await signIn(token);
    for (const p of ["/ui/admin/tokens", "/ui/admin/runners", "/ui/admin/webhooks"]) {
      const res = await ui(p, { cookie: user.cookie });
      expect(res.status, p).toBe(403);
    }
    const made = await ui("/ui/admin/tokens", { method: "POST", cookie: user.cookie, ...form({ _csrf: user.csrf, name: "sneaky", scopes: "admin" }) });
    expect(made.status).toBe(403);
    expect((await ui("/ui/builds", { cookie: user.cookie })).status).toBe(200);

    const admin = await signIn(ADMIN);
    const repo = uniqueRepo("uit");
    const res = await ui("/ui/admin/tokens", { method: "POST", cookie: admin.cookie, ...form({ _csrf: admin.csrf, name: "from-ui", scopes: `repository:${repo}/*:pull,push\nrunner` }) });
    expect(res.status).toBe(201);
    const page = await res.text();
    const secret = /id="new-token" readonly value="(kiln_[A-Za-z0-9_-]{43})"/.exec(page)![1];
    const api = await SELF.fetch(`${ORIGIN}/v1/tokens`, { headers: { authorization: `Bearer ${ADMIN}` } });
    const listed = ((await api.json()) as { tokens: { id: string; name: string; scopes: string[] }[] }).tokens.find((t) => t.name === "from-ui")!;
    expect(listed.scopes).toEqual([`repository:${repo}/*:pull,push`, "runner"]);
    // the list page never shows it again
    const again = await (await ui("/ui/admin/tokens", { cookie: admin.cookie })).text();
    expect(again).not.toContain(secret);
    expect((await SELF.fetch(`${ORIGIN}/v1/repositories/${repo}/x`, { headers: { authorization: `Bearer ${secret}` } })).status).toBe(404);
    const bad = await ui("/ui/admin/tokens", { method: "POST", cookie: admin.cookie, ...form({ _csrf: admin.csrf, name: "x", scopes: "repository:Bad:pull" }) });
    expect(bad.status).toBe(400);
    expect(await bad.text()).toContain("invalid scope");
    const revoke = await ui(`/ui/admin/tokens/${listed.id}/revoke`, { method: "POST", cookie: admin.cookie, ...form({ _csrf: admin.csrf }) });
    expect(revoke.status).toBe(303);
    expect((await SELF.fetch(`${ORIGIN}/v1/repositories/${repo}/x`, { headers: { authorization: `Bearer ${secret}` } })).status).toBe(401);
  });

  it("shows a namespace's builds, repositories and images to its token and nothing of them to another namespace's", async () => {
    const ns = uniqueRepo("uia");
    const other = uniqueRepo("uib");
    const b = await build({ Dockerfile: "FROM scratch\nCOPY a.txt /a.txt\n", "a.txt": "hello" }, `?tag=${ns}/app:1`);
    expect(b.status).toBe("succeeded");
    const owner = await signIn((await createToken([`repository:${ns}/*:pull`], "owner")).token);
    const stranger = await signIn((await createToken([`repository:${other}/*:pull,push`], "stranger")).token);

    const list = await (await ui("/ui/builds", { cookie: owner.cookie })).text();
    expect(list).toContain(b.id);
    expect(list).toContain(`${ns}/app:1`);
    const page = await ui(`/ui/builds/${b.id}`, { cookie: owner.cookie });
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain(b.image!.digest);
    expect(html).toContain(`docker pull kiln.test/${ns}/app@${b.image!.digest}`);
    expect(html).not.toContain("Cancel build");
    expect((await ui(`/ui/repositories/${ns}/app`, { cookie: owner.cookie })).status).toBe(200);
    const image = await ui(`/ui/image/${ns}/app@${b.image!.digest}`, { cookie: owner.cookie });
    expect(image.status).toBe(200);
    expect(await image.text()).toContain("COPY a.txt /a.txt");
    // a build on top of it names the base it resolved
    const child = await build({ Dockerfile: `FROM kiln.test/${ns}/app:1\nCOPY b.txt /b.txt\n`, "b.txt": "b" }, `?tag=${ns}/child:1`);
    expect(child.status).toBe("succeeded");
    const childPage = await (await ui(`/ui/builds/${child.id}`, { cookie: owner.cookie })).text();
    const bases = childPage.slice(childPage.indexOf("Resolved bases"));
    expect(bases).toContain(`<code>kiln.test/${ns}/app:1</code>`);
    expect(bases).toContain(`<code>${b.image!.digest}</code>`);
    const events = await ui(`/ui/builds/${b.id}/events`, { cookie: owner.cookie });
    expect(events.headers.get("content-type")).toBe("text/event-stream");
    expect(await events.text()).toContain("event: done");

    const strangerList = await (await ui("/ui/builds", { cookie: stranger.cookie })).text();
    expect(strangerList).not.toContain(b.id);
    expect(strangerList).not.toContain(ns);
    expect(await (await ui("/ui/repositories", { cookie: stranger.cookie })).text()).not.toContain(ns);
    for (const p of [`/ui/builds/${b.id}`, `/ui/builds/${b.id}/events`, `/ui/repositories/${ns}/app`, `/ui/image/${ns}/app@${b.image!.digest}`]) {
      const res = await ui(p, { cookie: stranger.cookie });
      expect(res.status, p).toBe(404);
      expect(await res.text(), p).not.toContain(b.image!.digest);
    }
    expect((await ui(`/ui/builds?repository=${ns}/app`, { cookie: stranger.cookie })).status).toBe(403);
    const cancel = await ui(`/ui/builds/${b.id}/cancel`, { method: "POST", cookie: stranger.cookie, ...form({ _csrf: stranger.csrf }) });
    expect(cancel.status).toBe(404);
    // pull but not push: the owner reads the build but may not cancel it
    const ownerCancel = await ui(`/ui/builds/${b.id}/cancel`, { method: "POST", cookie: owner.cookie, ...form({ _csrf: owner.csrf }) });
    expect(ownerCancel.status).toBe(403);
  });

  it("cancels a running build from its page for a token with push, with the session's CSRF token", async () => {
    const ns = uniqueRepo("uicx");
    const res = await postBuild(await makeTar({ Dockerfile: "FROM scratch\nRUN echo waiting for a runner\n" }), `?tag=${ns}/app:1`);
    const { id } = (await res.json()) as { id: string };
    const pusher = await signIn((await createToken([`repository:${ns}/*:pull,push`], "pusher")).token);
    const page = await (await ui(`/ui/builds/${id}`, { cookie: pusher.cookie })).text();
    expect(page).toContain("Cancel build");
    expect(page).toContain('data-live="1"');
    const forged = await ui(`/ui/builds/${id}/cancel`, { method: "POST", cookie: pusher.cookie, ...form({ _csrf: "x" }) });
    expect(forged.status).toBe(403);
    const cancel = await ui(`/ui/builds/${id}/cancel`, { method: "POST", cookie: pusher.cookie, ...form({ _csrf: pusher.csrf }) });
    expect(cancel.status).toBe(303);
    expect(cancel.headers.get("location")).toBe(`/ui/builds/${id}`);
    expect((await waitBuild(id)).status).toBe("cancelled");
    const after = await (await ui(`/ui/builds/${id}`, { cookie: pusher.cookie })).text();
    expect(after).not.toContain("Cancel build");
    expect(after).not.toContain("data-live");
  });

  it("filters the build list by repository and status and names the trigger", async () => {
    const ns = uniqueRepo("uif");
    const ok = await build({ Dockerfile: "FROM scratch\nCOPY a /a\n", a: "1" }, `?tag=${ns}/app:ok`);
    const bad = await build({ Dockerfile: "FROM scratch\nCOPY missing /m\n" }, `?tag=${ns}/app:bad`);
    expect([ok.status, bad.status]).toEqual(["succeeded", "failed"]);
    const admin = await signIn(ADMIN);
    const failed = await (await ui(`/ui/builds?repository=${ns}/app&status=failed`, { cookie: admin.cookie })).text();
    expect(failed).toContain(bad.id);
    expect(failed).not.toContain(ok.id);
    expect(failed).toMatch(/<td data-label="Trigger">API<\/td>/);
    const page = await (await ui(`/ui/builds/${bad.id}`, { cookie: admin.cookie })).text();
    expect(page).toMatch(/<mark id="error-line"[^>]*><span class="ln">2<\/span>COPY missing \/m<\/mark>/);
    expect((await ui("/ui/builds?status=bogus", { cookie: admin.cookie })).status).toBe(400);
  });
});
