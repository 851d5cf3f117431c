// The dashboard's build list: what started each build (CLI, API, webhook with its commit) and which
// builds a namespace token finds, however many builds other namespaces have.
import { env, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { createToken, uniqueRepo } from "../auth/helpers";
import { makeTar, postBuild, waitBuild } from "../builds/helpers";
import { CLI_USER_AGENT } from "../../../src/protocol/client";

const ORIGIN = "http://kiln.test";
const ADMIN_JSON = { authorization: "Bearer kiln-test-admin", "content-type": "application/json" };

async function session(token: string): Promise<string> {
  const get = await SELF.fetch(`${ORIGIN}/ui/sign-in`);
  const pre = (get.headers as unknown as { getSetCookie(): string[] }).getSetCookie().find((l) => l.startsWith("kiln_signin_csrf="))!.split(";")[0];
  const csrf = /name="_csrf" value="([^"]+)"/.exec(await get.text())![1];
  const res = await SELF.fetch(`${ORIGIN}/ui/sign-in`, {
    method: "POST", redirect: "manual", body: new URLSearchParams({ _csrf: csrf, token }).toString(),
    headers: { cookie: pre, origin: ORIGIN, "content-type": "application/x-www-form-urlencoded" },
  });
  expect(res.status).toBe(303);
  return (res.headers as unknown as { getSetCookie(): string[] }).getSetCookie().find((l) => l.startsWith("kiln_session="))!.split(";")[0];
}

const page = async (path: string, cookie: string) => SELF.fetch(`${ORIGIN}${path}`, { headers: { cookie }, redirect: "manual" });

/** The Trigger cell of build `id`'s row in the list. */
function triggerCell(html: string, id: string): string {
  const row = html.split("<tr>").find((r) => r.includes(`/ui/builds/${id}"`))!;
  return row.split('<td data-label="Trigger">')[1].replace(/<\/td>[\s\S]*/, "");
}

describe("dashboard build list", () => {
  it("names the trigger: the kiln CLI, any other API client, or a webhook with its commit", async () => {
    const repo = `${uniqueRepo("uitr")}/app`;
    const tar = await makeTar({ Dockerfile: "FROM scratch\nCOPY a /a\n", a: "1" });
    const cli = (await (await postBuild(tar, `?tag=${repo}:cli`, { "user-agent": `${CLI_USER_AGENT}/0.1.0` })).json()) as { id: string };
    const api = (await (await postBuild(tar, `?tag=${repo}:api`, { "user-agent": "curl/8.5.0" })).json()) as { id: string };
    await waitBuild(cli.id);
    await waitBuild(api.id);
    // A push webhook: the build is recorded with its commit before the source is fetched (port 9: the fetch fails).
    const secret = "ui-trigger-secret";
    const hookRes = await SELF.fetch(`${ORIGIN}/v1/webhooks`, { method: "POST", headers: ADMIN_JSON, body: JSON.stringify({ provider: "github", repository: "acme/ui-trigger", secret, image: repo, baseUrl: "http://127.0.0.1:9" }) });
    const hook = (await hookRes.json()) as { url: string };
    const sha = "0123456789abcdef0123456789abcdef01234567";
    const payload = JSON.stringify({ ref: "refs/heads/main", after: sha, repository: { full_name: "acme/ui-trigger", default_branch: "main" } });
    const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    const sig = [...new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(payload)))].map((b) => b.toString(16).padStart(2, "0")).join("");
    const delivered = await SELF.fetch(hook.url, { method: "POST", body: payload, headers: { "x-github-event": "push", "x-github-delivery": "ui-1", "x-hub-signature-256": `sha256=${sig}`, "content-type": "application/json" } });
    expect(delivered.status).toBe(202);
    const webhook = (await delivered.json()) as { id: string };

    const html = await (await page(`/ui/builds?repository=${repo}`, await session("kiln-test-admin"))).text();
    expect(triggerCell(html, cli.id)).toBe("CLI");
    expect(triggerCell(html, api.id)).toBe("API");
    expect(triggerCell(html, webhook.id)).toContain(`webhook <code title="${sha}">0123456</code>`);
    // GET /v1/builds says the same
    const listed = (await (await SELF.fetch(`${ORIGIN}/v1/builds?repository=${repo}`, { headers: ADMIN_JSON })).json()) as { builds: { id: string; trigger: string; commit?: string }[] };
    const by = new Map(listed.builds.map((b) => [b.id, b]));
    expect([by.get(cli.id)!.trigger, by.get(api.id)!.trigger, by.get(webhook.id)!.trigger, by.get(webhook.id)!.commit]).toEqual(["cli", "api", "webhook", sha]);
  });

  it("finds a namespace's builds for its token although other namespaces built more since", async () => {
    const mine = uniqueRepo("uimine");
    const tar = await makeTar({ Dockerfile: "FROM scratch\nCOPY a /a\n", a: "1" });
    const own = (await (await postBuild(tar, `?tag=${mine}/app:1`)).json()) as { id: string };
    await waitBuild(own.id);
    const noisy = uniqueRepo("uinoise");
    // More builds of another namespace than the list shows.
    const ids = await Promise.all(Array.from({ length: 55 }, async (_, i) => ((await (await postBuild(tar, `?tag=${noisy}/app:${i}`)).json()) as { id: string }).id));
    expect(ids).toHaveLength(55);
    const cookie = await session((await createToken([`repository:${mine}/*:pull`], "mine")).token);
    const html = await (await page("/ui/builds", cookie)).text();
    expect(html).toContain(own.id);
    expect(html).not.toContain(noisy);
    for (const id of ids) await waitBuild(id);
  });

  it("shows a finished build's cache hits from its D1 row, without asking its coordinator", async () => {
    const repo = `${uniqueRepo("uisteps")}/app`;
    const tar = await makeTar({ Dockerfile: "FROM scratch\nCOPY a /a\nCOPY b /b\n", a: "1", b: "2" });
    const first = (await (await postBuild(tar, `?tag=${repo}:1`)).json()) as { id: string };
    await waitBuild(first.id);
    const again = (await (await postBuild(tar, `?tag=${repo}:2`)).json()) as { id: string };
    await waitBuild(again.id);
    const rows = await env.DB.prepare("SELECT id, steps_total, steps_cached FROM builds WHERE id IN (?, ?)").bind(first.id, again.id).all<{ id: string; steps_total: number; steps_cached: number }>();
    const by = new Map(rows.results.map((r) => [r.id, r]));
    // FROM scratch and two COPYs; the rebuild hits the cache for both COPYs (as the build's own view says)
    const view = (await (await SELF.fetch(`${ORIGIN}/v1/builds/${again.id}`, { headers: ADMIN_JSON })).json()) as { steps: { status: string }[] };
    expect(by.get(again.id)).toMatchObject({ steps_total: view.steps.length, steps_cached: view.steps.filter((x) => x.status === "cached").length });
    expect(by.get(again.id)!.steps_cached).toBeGreaterThanOrEqual(2);
    expect(by.get(first.id)!.steps_cached).toBe(0);
    const cookie = await session("kiln-test-admin");
    const cell = (html: string, id: string) => html.split("<tr>").find((r) => r.includes(`/ui/builds/${id}"`))!.split('<td data-label="Cache hits">')[1].replace(/<\/td>[\s\S]*/, "");
    expect(cell(await (await page(`/ui/builds?repository=${repo}`, cookie)).text(), again.id)).toBe(`${by.get(again.id)!.steps_cached} of ${view.steps.length}`);
    // the list reads the row: counts written there are what it shows
    await env.DB.prepare("UPDATE builds SET steps_total = 9, steps_cached = 7 WHERE id = ?").bind(again.id).run();
    expect(cell(await (await page(`/ui/builds?repository=${repo}`, cookie)).text(), again.id)).toBe("7 of 9");
  });
});
