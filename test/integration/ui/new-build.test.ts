// The dashboard's "New build" form: a plain multipart form post whose first field is the CSRF token,
// authorized exactly as POST /v1/builds, with the context archive streamed into the context store.
import { createExecutionContext, env, SELF, waitOnExecutionContext } from "cloudflare:test";
import worker from "../../../src/index";
import { describe, expect, it } from "vitest";
import { createToken, uniqueRepo } from "../auth/helpers";
import { imageOf, makeTar, postBuild, waitBuild } from "../builds/helpers";

const ORIGIN = "http://kiln.test";
const ADMIN_JSON = { authorization: "Bearer kiln-test-admin", "content-type": "application/json" };
const setCookies = (res: Response) => (res.headers as unknown as { getSetCookie(): string[] }).getSetCookie();

/** Signs in with `token` through the sign-in form; the session cookie and the CSRF token of its forms. */
async function session(token: string): Promise<{ cookie: string; csrf: string }> {
  const get = await SELF.fetch(`${ORIGIN}/ui/sign-in`);
  const pre = setCookies(get).find((l) => l.startsWith("kiln_signin_csrf="))!.split(";")[0];
  const signInCsrf = /name="_csrf" value="([^"]+)"/.exec(await get.text())![1];
  const res = await SELF.fetch(`${ORIGIN}/ui/sign-in`, {
    method: "POST", redirect: "manual", body: new URLSearchParams({ _csrf: signInCsrf, token }).toString(),
    headers: { cookie: pre, origin: ORIGIN, "content-type": "application/x-www-form-urlencoded" },
  });
  expect(res.status).toBe(303);
  const cookie = setCookies(res).find((l) => l.startsWith("kiln_session="))!.split(";")[0];
  const form = await (await SELF.fetch(`${ORIGIN}/ui/builds/new`, { headers: { cookie } })).text();
  return { cookie, csrf: /name="_csrf" value="([^"]+)"/.exec(form)![1] };
}

type Field = [name: string, value: string | File];

/** Posts the form's fields in the given order (a browser sends them in the form's order). */
async function submit(cookie: string, fields: Field[], headers: Record<string, string> = { origin: ORIGIN }): Promise<Response> {
  const body = new FormData();
  for (const [name, value] of fields) body.append(name, value);
  return await SELF.fetch(`${ORIGIN}/ui/builds/new`, { method: "POST", body, headers: { cookie, ...headers }, redirect: "manual" });
}

/** The form as the page sends it: `_csrf` first, the archive last. */
function formFields(csrf: string, o: { tag?: string; dockerfile?: string; buildArgs?: string; noCache?: boolean; archive?: Uint8Array; name?: string }): Field[] {
  return [
    ["_csrf", csrf], ["tag", o.tag ?? ""], ["dockerfile", o.dockerfile ?? ""], ["dockerfile-path", ""], ["target", ""], ["platform", ""],
    ["build-arg", o.buildArgs ?? ""], ...(o.noCache ? [["no-cache", "1"] as Field] : []),
    ["context", new File([o.archive ?? new Uint8Array(0)], o.name ?? "context.tar", { type: "application/x-tar" })],
  ];
}

/** The builds of `repository` as /v1 lists them. */
async function buildsOf(repository: string): Promise<{ id: string; trigger: string }[]> {
  const res = await SELF.fetch(`${ORIGIN}/v1/builds?repository=${repository}`, { headers: ADMIN_JSON });
  return ((await res.json()) as { builds: { id: string; trigger: string }[] }).builds;
}

describe("dashboard: New build form", () => {
  it("is linked from the builds list and renders a labelled multipart form whose first field is the session's CSRF token", async () => {
    const { cookie, csrf } = await session("kiln-test-admin");
    expect(await (await SELF.fetch(`${ORIGIN}/ui/builds`, { headers: { cookie } })).text()).toContain('href="/ui/builds/new"');
    const res = await SELF.fetch(`${ORIGIN}/ui/builds/new`, { headers: { cookie } });
    expect(res.status).toBe(200);
    const html = await res.text();
    const form = html.slice(html.indexOf('<form method="post" action="/ui/builds/new"'));
    expect(form).toMatch(/^<form method="post" action="\/ui\/builds\/new" enctype="multipart\/form-data">\s*<input type="hidden" name="_csrf" value="([^"]+)">/);
    expect(csrf).toMatch(/^[A-Za-z0-9_-]{43}$/);
    // every control has its label
    for (const id of ["nb-tag", "nb-dockerfile", "nb-path", "nb-target", "nb-platform", "nb-args", "nb-nocache", "nb-context"]) {
      expect(html).toContain(`id="${id}"`);
      expect(html).toContain(`for="${id}"`);
    }
    expect(html).toContain('type="file"');
    // the archive is the form's last field: the fields before it are read first
    expect(form.indexOf('name="context"')).toBeGreaterThan(form.indexOf('name="no-cache"'));
    expect(form.indexOf('name="context"')).toBeGreaterThan(form.indexOf('name="dockerfile"'));
  });

  it("builds a posted tar.gz, as the signed-in token, and answers 303 to the new build's page", async () => {
    const repo = `${uniqueRepo("uinb")}/app`;
    const { token } = await createToken([`repository:${repo.split("/")[0]}/*:pull,push`], "form-builder");
    const { cookie, csrf } = await session(token);
    // the textarea's Dockerfile replaces the archive's; build args arrive one a line
    const archive = await makeTar({ Dockerfile: "FROM scratch\nCOPY missing /x\n", "a.txt": "from the archive\n" }, { gzip: true });
    const res = await submit(cookie, formFields(csrf, {
      tag: `${repo}:1 ${repo}:latest`, dockerfile: "FROM scratch\nARG WHO\nLABEL who=$WHO\nCOPY a.txt /a.txt\n", buildArgs: "WHO=browser\nUNUSED=1\n", archive, name: "ctx.tar.gz",
    }));
    expect(res.status, await res.clone().text()).toBe(303);
    const id = /^\/ui\/builds\/([A-Za-z0-9]+)$/.exec(res.headers.get("location") ?? "")?.[1];
    expect(id).toBeTruthy();
    const done = await waitBuild(id!);
    expect(done.status, JSON.stringify(done)).toBe("succeeded");
    expect((done as unknown as { image: { repository: string; tags: string[] } }).image).toMatchObject({ repository: repo, tags: ["1", "latest"] });
    const image = await imageOf(repo, "1");
    expect(image.config.config.Labels).toEqual({ who: "browser" });
    expect(image.manifest.layers).toHaveLength(1);
    // the build page and the list name the dashboard as its trigger
    const pageHtml = await (await SELF.fetch(`${ORIGIN}/ui/builds/${id}`, { headers: { cookie } })).text();
    expect(pageHtml).toContain("<dt>Trigger</dt><dd>dashboard</dd>");
    expect((await buildsOf(repo)).find((b) => b.id === id)?.trigger).toBe("dashboard");
  });

  it("refuses a post without the CSRF token, with a wrong one, with it after other fields, or from another site, and starts nothing", async () => {
    const repo = `${uniqueRepo("uicsrf")}/app`;
    const { cookie, csrf } = await session("kiln-test-admin");
    const archive = await makeTar({ Dockerfile: "FROM scratch\nCOPY a /a\n", a: "1" });
    const good = formFields(csrf, { tag: `${repo}:1`, archive });
    const attempts: [string, Field[], Record<string, string>?][] = [
      ["no token", good.slice(1)],
      ["a wrong token", [["_csrf", "A".repeat(43)], ...good.slice(1)]],
      ["another session's token", [["_csrf", (await session("kiln-test-admin")).csrf], ...good.slice(1)]],
      ["the token after the tag", [good[1], good[0], ...good.slice(2)]],
      ["another site's form", good, { origin: "https://evil.example" }],
      ["a cross-site fetch", good, { "sec-fetch-site": "cross-site" }],
    ];
    for (const [what, fields, headers] of attempts) {
      const res = await submit(cookie, fields, headers);
      expect(res.status, what).toBe(403);
      expect(await res.text(), what).toContain("Refused");
    }
    // without a session at all
    const anon = await submit("", good);
    expect(anon.status).toBe(403);
    expect(await buildsOf(repo)).toEqual([]);
    // the same form with its token goes through
    const ok = await submit(cookie, good);
    expect(ok.status).toBe(303);
    expect(await buildsOf(repo)).toHaveLength(1);
    await waitBuild((await buildsOf(repo))[0].id);
  });

  it("a token of namespace B cannot start a build that tags A's repository, alone or beside its own tag", async () => {
    const a = uniqueRepo("uinsa");
    const b = uniqueRepo("uinsb");
    const { token } = await createToken([`repository:${b}/*:pull,push`, `repository:${a}/*:pull`], "b-dev");
    const { cookie, csrf } = await session(token);
    const archive = await makeTar({ Dockerfile: "FROM scratch\nCOPY a /a\n", a: "poison" });
    for (const tag of [`${a}/app:latest`, `${b}/app:1 ${a}/app:latest`, `127.0.0.1:8787/${a}/app:latest`]) {
      const res = await submit(cookie, formFields(csrf, { tag, archive }));
      expect(res.status, tag).toBe(403);
      const html = await res.text();
      expect(html).toContain(`token lacks scope repository:${a}/app:push`);
      // the form comes back with the reason tied to the tag field, and the typed values
      expect(html).toMatch(/<div id="form-error" class="error" role="alert">/);
      expect(html).toMatch(/id="nb-tag" name="tag" value="[^"]*"[^>]* aria-invalid="true" aria-describedby="form-error nb-tag-hint"/);
      expect(html).toContain(`value="${tag}"`);
    }
    // untagged builds are admin's
    const untagged = await submit(cookie, formFields(csrf, { tag: "", archive }));
    expect(untagged.status).toBe(403);
    expect(await untagged.text()).toContain("token lacks scope admin");
    expect(await buildsOf(`${a}/app`)).toEqual([]);
    expect(await buildsOf(`${b}/app`)).toEqual([]);
  });

  it("shows a bad Dockerfile's line and keeps what was typed; a Dockerfile missing from the archive is named", async () => {
    const repo = `${uniqueRepo("uibad")}/app`;
    const { cookie, csrf } = await session("kiln-test-admin");
    const archive = await makeTar({ "a.txt": "1" });
    const res = await submit(cookie, formFields(csrf, { tag: `${repo}:1`, dockerfile: "FROM scratch\nCOPY a.txt /a.txt\nFROBNICATE now\n", buildArgs: "X=1", archive }));
    expect(res.status).toBe(400);
    const html = await res.text();
    expect(html).toMatch(/Line 3 of the Dockerfile: Dockerfile:3: [^<]*FROBNICATE/i);
    expect(html).toMatch(/<textarea id="nb-dockerfile" name="dockerfile"[^>]* aria-invalid="true" aria-describedby="form-error nb-dockerfile-hint">FROM scratch\nCOPY a.txt \/a.txt\nFROBNICATE now\n<\/textarea>/);
    expect(html).toContain(">X=1</textarea>");
    // the archive's own Dockerfile, bad on line 2
    const own = await submit(cookie, formFields(csrf, { tag: `${repo}:1`, archive: await makeTar({ Dockerfile: "FROM scratch\nCOPY\n" }) }));
    expect(own.status).toBe(400);
    expect(await own.text()).toContain("Line 2 of the Dockerfile: Dockerfile:2:");
    // neither a Dockerfile in the archive nor in the form
    const none = await submit(cookie, formFields(csrf, { tag: `${repo}:1`, archive }));
    expect(none.status).toBe(400);
    expect(await none.text()).toContain("Dockerfile not found in the build context: Dockerfile");
    // not an archive
    const junk = await submit(cookie, formFields(csrf, { tag: `${repo}:1`, archive: new TextEncoder().encode("this is not a tar file at all, just text".repeat(20)) }));
    expect(junk.status).toBe(400);
    expect(await junk.text()).toMatch(/aria-invalid="true" aria-describedby="form-error nb-context-hint"/);
    expect(await buildsOf(repo)).toEqual([]);
  });

  it("refuses a namespace at its quota with the usage and quota, as POST /v1/builds does", async () => {
    const ns = uniqueRepo("uiquota");
    const archive = await makeTar({ Dockerfile: "FROM scratch\nCOPY a /a\n", a: "some bytes" });
    const first = (await (await postBuild(archive, `?tag=${ns}/app:1`)).json()) as { id: string };
    expect((await waitBuild(first.id)).status).toBe("succeeded");
    expect((await SELF.fetch(`${ORIGIN}/v1/quotas/${ns}`, { method: "PUT", headers: ADMIN_JSON, body: JSON.stringify({ bytes: 1 }) })).status).toBe(200);
    const { cookie, csrf } = await session("kiln-test-admin");
    const res = await submit(cookie, formFields(csrf, { tag: `${ns}/app:2`, archive }));
    expect(res.status).toBe(403);
    expect(await res.text()).toMatch(new RegExp(`namespace ${ns} has reached its quota: it uses \\d+ of 1 bytes`));
    expect(await buildsOf(`${ns}/app`)).toHaveLength(1);
  });

  it("keeps to KILN_MAX_REQUEST_BYTES: names the limit, and refuses a larger archive, declared or streamed, starting nothing", async () => {
    const LIMIT = 64 * 1024;
    const call = async (req: Request) => {
      const ctx = createExecutionContext();
      const res = await worker.fetch(req as Request<unknown, IncomingRequestCfProperties>, { ...env, KILN_MAX_REQUEST_BYTES: String(LIMIT) } as typeof env, ctx);
      await waitOnExecutionContext(ctx);
      return res;
    };
    const repo = `${uniqueRepo("uilimit")}/app`;
    const { cookie, csrf } = await session("kiln-test-admin");
    expect(await (await call(new Request(`${ORIGIN}/ui/builds/new`, { headers: { cookie } }))).text()).toContain("at most 64 KiB (KILN_MAX_REQUEST_BYTES)");
    const big = crypto.getRandomValues(new Uint8Array(60 * 1024));
    const archive = await makeTar({ Dockerfile: "FROM scratch\nCOPY big /big\n", big, big2: big });
    const form = new FormData();
    for (const [name, value] of formFields(csrf, { tag: `${repo}:1`, archive })) form.append(name, value);
    const encoded = new Response(form);
    const type = encoded.headers.get("content-type")!;
    const bytes = new Uint8Array(await encoded.arrayBuffer());
    expect(bytes.byteLength).toBeGreaterThan(LIMIT);
    const declared = await call(new Request(`${ORIGIN}/ui/builds/new`, { method: "POST", body: bytes, headers: { cookie, origin: ORIGIN, "content-type": type } }));
    expect(declared.status).toBe(413);
    expect(await declared.text()).toContain("KILN_MAX_REQUEST_BYTES");
    let sent = 0;
    const streamed = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent >= bytes.byteLength) return c.close();
        c.enqueue(bytes.slice(sent, sent + 8192));
        sent += 8192;
      },
    });
    const chunked = await call(new Request(`${ORIGIN}/ui/builds/new`, { method: "POST", body: streamed, headers: { cookie, origin: ORIGIN, "content-type": type }, duplex: "half" } as RequestInit));
    expect(chunked.status).toBe(413);
    expect(await chunked.text()).toContain("KILN_MAX_REQUEST_BYTES");
    expect(await buildsOf(repo)).toEqual([]);
  });
});
