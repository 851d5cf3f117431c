// The dashboard in a real browser: headless Chromium from Debian (/usr/bin/chromium) driven by
// playwright-core, against a real kiln (wrangler dev) with a real runner (runc) for RUN steps. The
// failing build is started with the dashboard's New build form (a tar.gz picked as the context archive).
// Every page visited is checked with axe-core (no serious or critical violations).
// KILN_UI_SCREENSHOTS=1 also writes docs/dashboard-build.png and docs/dashboard-image.png.
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import { createRequire } from "node:module";
import path from "node:path";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, ROOT, have, startKiln, type KilnServer } from "./server";
import { BUSYBOX, contextDir } from "./helpers";
import { startRunner, wipeRunnerDir, type RunnerProcess } from "./runner-helpers";

const CHROMIUM = "/usr/bin/chromium";
const canRun = process.getuid?.() === 0 && have("runc") && existsSync(BUSYBOX);
const canBrowse = existsSync(CHROMIUM);
if (!canBrowse) console.warn(`dashboard e2e skipped: ${CHROMIUM} is missing (apt-get install chromium)`);
if (!canRun) console.warn("dashboard e2e skipped: RUN steps need root, runc and busybox-static");

const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const SCREENSHOTS = process.env.KILN_UI_SCREENSHOTS === "1";

/** Line 5 is the step that fails while config.txt is missing from the context. */
const DOCKERFILE = [
  "FROM scratch",
  "COPY busybox /bin/busybox",
  'RUN ["/bin/busybox","--install","-s","/bin"]',
  "RUN for i in 1 2 3 4 5 6 7 8 9 10; do echo tick-$i; sleep 1; done",
  "COPY config.txt /etc/app/config.txt",
  'CMD ["/bin/cat", "/etc/app/config.txt"]',
].join("\n") + "\n";

/** axe-core on the current page: the serious and critical violations, described. */
async function axeViolations(page: Page): Promise<string[]> {
  await page.evaluate(AXE);
  const results = await page.evaluate(async () => {
    const r = await (window as unknown as { axe: { run(): Promise<{ violations: { id: string; impact: string; help: string; nodes: { target: string[] }[] }[] }> } }).axe.run();
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, targets: v.nodes.map((n) => n.target.join(" ")) }));
  });
  return results.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.targets.join(", ")}`);
}

async function expectAccessible(page: Page): Promise<void> {
  expect(await axeViolations(page), `axe on ${page.url()}`).toEqual([]);
}

async function signIn(page: Page, url: string, token: string): Promise<void> {
  await page.goto(`${url}/ui/`);
  expect(new URL(page.url()).pathname).toBe("/ui/sign-in");
  await page.fill("#token", token);
  await Promise.all([page.waitForURL(`${url}/ui/builds`), page.click("button[type=submit]")]);
}

describe.skipIf(!canBrowse || !canRun)("dashboard in headless Chromium", () => {
  let kiln: KilnServer;
  let runner: RunnerProcess;
  let browser: Browser;
  let ownerToken: string;
  let strangerToken: string;
  const contexts: BrowserContext[] = [];
  const state: { failedId?: string; fixedId?: string; digest?: string } = {};

  async function newPage(opts: { javaScriptEnabled?: boolean; width?: number } = {}): Promise<Page> {
    const ctx = await browser.newContext({ javaScriptEnabled: opts.javaScriptEnabled ?? true, viewport: { width: opts.width ?? 1100, height: 900 } });
    contexts.push(ctx);
    return await ctx.newPage();
  }

  async function token(name: string, scopes: string[]): Promise<string> {
    const res = await fetch(`${kiln.url}/v1/tokens`, { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" }, body: JSON.stringify({ name, scopes }) });
    expect(res.status).toBe(201);
    return ((await res.json()) as { token: string }).token;
  }

  function context(files: Record<string, string | Uint8Array>): string {
    const dir = contextDir({ Dockerfile: DOCKERFILE, busybox: readFileSync(BUSYBOX), ...files });
    execFileSync("chmod", ["0755", path.join(dir, "busybox")]);
    return dir;
  }

  /** `kiln build` (the real CLI) of `dir`, as the owner; resolves when it exits. */
  function cliBuild(dir: string): Promise<{ code: number; out: string }> {
    const config = mkdtempSync(path.join(os.tmpdir(), "kiln-ui-cli-"));
    const child = spawn(process.execPath, [path.join(ROOT, "bin", "kiln.mjs"), "build", "--server", kiln.url, "--token", ownerToken, "--progress", "plain", "-t", "uidemo/app:1", dir], {
      env: { ...process.env, KILN_CONFIG_DIR: config }, stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => { out += d; });
    child.stderr.on("data", (d) => { out += d; });
    return new Promise((resolve) => child.on("close", (code) => { rmSync(config, { recursive: true, force: true }); resolve({ code: code ?? 1, out }); }));
  }

  /** A tar.gz of the context `files` (the file a user picks in the New build form). */
  function archive(files: Record<string, string | Uint8Array>): string {
    const dir = context(files);
    const file = path.join(mkdtempSync(path.join(os.tmpdir(), "kiln-ui-archive-")), "context.tar.gz");
    execFileSync("tar", ["-C", dir, "-czf", file, "."]);
    rmSync(dir, { recursive: true, force: true });
    return file;
  }

  /** Pushes an artifact (an "SBOM" with an empty config) whose subject is `subject`, as an OCI client would. */
  async function pushReferrer(subject: string): Promise<string> {
    const auth = { authorization: `Basic ${Buffer.from(`ui:${ownerToken}`).toString("base64")}` };
    const empty = Buffer.from("{}");
    const emptyDigest = `sha256:${createHash("sha256").update(empty).digest("hex")}`;
    const up = await fetch(`${kiln.url}/v2/uidemo/app/blobs/uploads/?digest=${emptyDigest}`, { method: "POST", headers: { ...auth, "content-type": "application/octet-stream" }, body: empty });
    expect(up.status).toBe(201);
    const head = await fetch(`${kiln.url}/v2/uidemo/app/manifests/${subject}`, { method: "HEAD", headers: { ...auth, accept: "application/vnd.oci.image.manifest.v1+json" } });
    const desc = { mediaType: "application/vnd.oci.empty.v1+json", digest: emptyDigest, size: 2 };
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", artifactType: "application/vnd.example.sbom+json",
      config: desc, layers: [desc],
      subject: { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: subject, size: Number(head.headers.get("content-length")) },
      annotations: { "org.example.tool": "ui-e2e" },
    }));
    const digest = `sha256:${createHash("sha256").update(manifest).digest("hex")}`;
    const put = await fetch(`${kiln.url}/v2/uidemo/app/manifests/${digest}`, { method: "PUT", headers: { ...auth, "content-type": "application/vnd.oci.image.manifest.v1+json" }, body: manifest });
    expect(put.status, await put.text()).toBe(201);
    return digest;
  }

  beforeAll(async () => {
    kiln = await startKiln();
    runner = await startRunner(kiln.url, { leaseSeconds: 3, runnerId: "ui-runner" });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    ownerToken = await token("uidemo-dev", ["repository:uidemo/*:pull,push"]);
    strangerToken = await token("other-dev", ["repository:other/*:pull,push"]);
  });

  afterAll(async () => {
    for (const c of contexts) await c.close().catch(() => {});
    await browser?.close();
    await runner?.stop();
    if (runner) await wipeRunnerDir(runner.workDir);
    await kiln?.stop(true);
  });

  it("signs in, starts a build with the New build form, follows its log live, shows where it failed, shows the cached steps of the fix, opens the image and signs out", async () => {
    const page = await newPage();
    await page.goto(`${kiln.url}/ui/sign-in`);
    await expectAccessible(page);
    await signIn(page, kiln.url, ownerToken);
    await expect(page.textContent("header")).resolves.toContain("uidemo-dev");
    await expectAccessible(page);

    // A build whose fifth line copies a file the context lacks, started with the New build form: a
    // tar.gz picked as the context archive. First with a tag of another namespace: the form comes back
    // with the reason on the tag field.
    const tarball = archive({});
    await Promise.all([page.waitForURL(`${kiln.url}/ui/builds/new`), page.click("text=New build")]);
    await expectAccessible(page);
    await page.fill("#nb-tag", "other/app:1");
    await page.setInputFiles("#nb-context", tarball);
    const refused = await Promise.all([page.waitForResponse((r) => r.url() === `${kiln.url}/ui/builds/new` && r.request().method() === "POST"), page.click("text=Start build")]);
    expect(refused[0].status()).toBe(403);
    await page.waitForSelector("#form-error");
    expect(await page.textContent("#form-error")).toContain("token lacks scope repository:other/app:push");
    expect(await page.getAttribute("#nb-tag", "aria-invalid")).toBe("true");
    expect(await page.inputValue("#nb-tag")).toBe("other/app:1");
    await expectAccessible(page);
    expect(((await (await fetch(`${kiln.url}/v1/builds`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json()) as { builds: unknown[] }).builds).toEqual([]);
    await page.fill("#nb-tag", "uidemo/app:1");
    await page.setInputFiles("#nb-context", tarball);
    await Promise.all([page.waitForURL(/\/ui\/builds\/b[0-9a-z]+$/), page.click("text=Start build")]);
    rmSync(path.dirname(tarball), { recursive: true, force: true });
    const id = new URL(page.url()).pathname.split("/").pop()!;
    state.failedId = id;
    expect(await page.textContent("#main")).toContain("dashboard");
    await page.evaluate(() => { (window as unknown as { loadedOnce: boolean }).loadedOnce = true; });
    // Ticks arrive one a second while the build runs: the log grows in place (no reload).
    await page.waitForFunction(() => document.getElementById("log")!.textContent!.includes("tick-2"), undefined, { timeout: 180_000 });
    const mid = await page.evaluate(() => ({
      same: (window as unknown as { loadedOnce?: boolean }).loadedOnce === true,
      status: document.getElementById("build-status")!.textContent,
      log: document.getElementById("log")!.textContent!,
      runStep: Array.from(document.querySelectorAll(".timeline li")).find((li) => li.textContent!.includes("echo tick"))!.querySelector(".badge")!.textContent,
    }));
    expect(mid.same).toBe(true);
    expect(mid.status).toBe("running");
    expect(mid.runStep).toBe("running");
    expect(mid.log).not.toContain("tick-10");
    // When it ends, the page shows its outcome: the failing Dockerfile line with the error.
    await page.waitForSelector("#build-status.s-failed", { timeout: 120_000 });
    await page.waitForSelector("#error-line", { timeout: 30_000 });
    expect(await page.textContent("#error-line")).toBe("5COPY config.txt /etc/app/config.txt");
    expect(await page.getAttribute("#error-line", "aria-label")).toContain("line 5");
    expect(await page.textContent("[role=alert]")).toContain("config.txt");
    const copyStep = page.locator(".timeline li", { hasText: "COPY config.txt" });
    expect(await copyStep.locator(".badge").textContent()).toBe("failed");
    expect(await page.textContent("#log")).toContain("tick-10");
    await expectAccessible(page);
    if (SCREENSHOTS) {
      mkdirSync(path.join(ROOT, "docs"), { recursive: true });
      await page.screenshot({ path: path.join(ROOT, "docs/dashboard-build-failed.png"), fullPage: true });
    }

    // The fix, built with the kiln CLI: the file is there; every step before it comes from the cache.
    const dir = context({ "config.txt": "colour=blue\n" });
    const cli = cliBuild(dir);
    // The list names the CLI as the trigger; the newest build is the fix.
    const deadline = Date.now() + 60_000;
    while ((await page.goto(`${kiln.url}/ui/builds`), await page.locator("tbody tr", { hasText: "CLI" }).count()) === 0) {
      expect(Date.now(), "a build started by the CLI in the list").toBeLessThan(deadline);
      await page.waitForTimeout(300);
    }
    const row = page.locator("tbody tr", { hasText: "CLI" });
    const fixed = (await row.locator("code").first().textContent())!;
    state.fixedId = fixed;
    await Promise.all([page.waitForURL(`${kiln.url}/ui/builds/${fixed}`), row.locator("a").first().click()]);
    // (a page loaded while the build ran reloads when it ends; the reloaded one is not live)
    await page.waitForSelector("#build:not([data-live]) #build-status.s-succeeded", { timeout: 120_000 });
    const steps = await page.$$eval(".timeline li", (lis) => lis.map((li) => [li.querySelector(".instr")!.textContent!.trim(), li.querySelector(".badge")!.textContent]));
    expect(steps).toEqual([
      ["FROM scratch", "cached"],
      ["COPY busybox /bin/busybox", "cached"],
      ['RUN ["/bin/busybox","--install","-s","/bin"]', "cached"],
      ["RUN for i in 1 2 3 4 5 6 7 8 9 10; do echo tick-$i; sleep 1; done", "cached"],
      ["COPY config.txt /etc/app/config.txt", "done"],
      ['CMD ["/bin/cat", "/etc/app/config.txt"]', "done"],
    ]);
    expect(await page.textContent("#main")).toContain("4 of 6 steps");
    const pull = await page.inputValue("#pull-cmd");
    const digest = /@(sha256:[0-9a-f]{64})$/.exec(pull)![1];
    state.digest = digest;
    expect(pull).toBe(`docker pull 127.0.0.1:${kiln.port}/uidemo/app@${digest}`);
    await expectAccessible(page);
    if (SCREENSHOTS) await page.screenshot({ path: path.join(ROOT, "docs/dashboard-build.png"), fullPage: true });
    const done = await cli;
    expect(done.code, done.out).toBe(0);
    expect(done.out).toMatch(/CACHED/);
    rmSync(dir, { recursive: true, force: true });

    // The image: its platform, each layer with the instruction that made it, and its referrers.
    const sbom = await pushReferrer(digest);
    await Promise.all([page.waitForURL(/\/ui\/image\//), page.click(`a[href="/ui/image/uidemo/app@${digest}"] >> nth=0`)]);
    const main = await page.textContent("#main");
    expect(main).toContain("linux/amd64");
    const layers = await page.$$eval("h2 + .scroll tbody tr", (rows) => rows.map((r) => r.querySelectorAll("td")[2]?.textContent ?? ""));
    expect(layers.some((t) => t.includes("COPY config.txt /etc/app/config.txt"))).toBe(true);
    expect(layers.some((t) => t.includes("busybox --install"))).toBe(true);
    const referrers = page.locator("h2:has-text('Referrers') + .scroll tbody");
    expect(await referrers.textContent()).toContain("application/vnd.example.sbom+json");
    expect(await referrers.textContent()).toContain("org.example.tool=ui-e2e");
    expect(await referrers.locator("a").getAttribute("href")).toBe(`/ui/image/uidemo/app@${sbom}`);
    await expectAccessible(page);
    if (SCREENSHOTS) await page.screenshot({ path: path.join(ROOT, "docs/dashboard-image.png"), fullPage: true });

    await page.goto(`${kiln.url}/ui/repositories`);
    await expectAccessible(page);
    await page.click("text=uidemo/app");
    expect(await page.textContent("tbody")).toContain(digest.slice(0, 19));
    await expectAccessible(page);

    // A narrow window: nothing wider than the screen.
    await page.setViewportSize({ width: 360, height: 740 });
    await page.goto(`${kiln.url}/ui/builds/${fixed}`);
    expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1)).toBe(true);
    await page.goto(`${kiln.url}/ui/builds`);
    expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1)).toBe(true);

    await Promise.all([page.waitForURL(`${kiln.url}/ui/sign-in`), page.click("text=Sign out")]);
    await page.goto(`${kiln.url}/ui/builds/${fixed}`);
    expect(new URL(page.url()).pathname).toBe("/ui/sign-in");
  });

  it("a token for another namespace sees nothing of it, in lists or by direct URL", async () => {
    expect(state.fixedId && state.digest).toBeTruthy();
    const page = await newPage();
    await signIn(page, kiln.url, strangerToken);
    const list = await page.textContent("#main");
    expect(list).not.toContain("uidemo");
    expect(list).not.toContain(state.fixedId!);
    await page.goto(`${kiln.url}/ui/repositories`);
    expect(await page.textContent("#main")).not.toContain("uidemo");
    for (const p of [`/ui/builds/${state.fixedId}`, `/ui/builds/${state.failedId}`, `/ui/builds/${state.fixedId}/events`, "/ui/repositories/uidemo/app", `/ui/image/uidemo/app@${state.digest}`]) {
      const res = await page.goto(`${kiln.url}${p}`);
      expect(res!.status(), p).toBe(404);
      const text = await page.textContent("body");
      expect(text, p).not.toContain(state.digest!);
      expect(text, p).not.toContain("tick-");
    }
    await expectAccessible(page);
    expect((await page.goto(`${kiln.url}/ui/builds?repository=uidemo/app`))!.status()).toBe(403);
    expect((await page.goto(`${kiln.url}/ui/admin/tokens`))!.status()).toBe(403);
  });

  it("admin pages (runners, webhooks, tokens) work and are accessible; build pages read and the New build form works without JavaScript", async () => {
    const page = await newPage();
    await signIn(page, kiln.url, ADMIN_TOKEN);
    await page.goto(`${kiln.url}/ui/admin/runners`);
    const runnerRow = await page.textContent("tbody");
    expect(runnerRow).toContain("ui-runner");
    expect(runnerRow).toContain("online");
    expect(runnerRow).toContain("linux/amd64");
    await expectAccessible(page);
    const hook = await fetch(`${kiln.url}/v1/webhooks`, {
      method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ provider: "github", repository: "acme/ui-hook", secret: "ui-hook-secret", image: "uidemo/app" }),
    });
    expect(hook.status).toBe(201);
    const { url: receiver } = (await hook.json()) as { url: string };
    await page.goto(`${kiln.url}/ui/admin/webhooks`);
    expect(await page.textContent("tbody")).toContain(receiver);
    await expectAccessible(page);
    await Promise.all([page.waitForURL(`${kiln.url}/ui/admin/webhooks`), page.click('button[aria-label="Delete the webhook of acme/ui-hook"]')]);
    expect(await page.textContent("#main")).toContain("No webhooks.");
    const hooks = await fetch(`${kiln.url}/v1/webhooks`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(((await hooks.json()) as { webhooks: unknown[] }).webhooks).toEqual([]);
    await page.goto(`${kiln.url}/ui/admin/tokens`);
    await expectAccessible(page);
    await page.fill("#t-name", "made-in-browser");
    await page.fill("#t-scopes", "repository:uidemo/*:pull");
    await page.click("text=Create token");
    const secret = await page.inputValue("#new-token");
    expect(secret).toMatch(/^kiln_/);
    await expectAccessible(page);
    const check = await fetch(`${kiln.url}/v1/builds/${state.fixedId}`, { headers: { authorization: `Bearer ${secret}` } });
    expect(check.status).toBe(200);
    await page.goto(`${kiln.url}/ui/admin/tokens`);
    expect(await page.content()).not.toContain(secret);
    await page.click('button[aria-label="Revoke made-in-browser"]');
    expect((await fetch(`${kiln.url}/v1/builds/${state.fixedId}`, { headers: { authorization: `Bearer ${secret}` } })).status).toBe(401);
    await page.goto(`${kiln.url}/ui/builds?status=failed`);
    expect(await page.textContent("tbody")).toContain(state.failedId!);
    expect(await page.textContent("tbody")).toContain("dashboard");
    await expectAccessible(page);

    // Without JavaScript: sign in with the form and read the failed build's log and error.
    const plain = await newPage({ javaScriptEnabled: false });
    await signIn(plain, kiln.url, ownerToken);
    await plain.goto(`${kiln.url}/ui/builds/${state.failedId}`);
    expect(await plain.textContent("#log")).toMatch(/#\d+ tick-10/);
    expect(await plain.textContent("#error-line")).toContain("COPY config.txt /etc/app/config.txt");
    // and start a build with the New build form: a Dockerfile typed in, no archive (an empty context)
    await plain.goto(`${kiln.url}/ui/builds/new`);
    await plain.fill("#nb-tag", "uidemo/app:no-js");
    await plain.fill("#nb-dockerfile", "FROM scratch\nLABEL started-by=no-js\n");
    await Promise.all([plain.waitForURL(/\/ui\/builds\/b[0-9a-z]+$/), plain.click("text=Start build")]);
    const deadline = Date.now() + 60_000;
    while (!(await plain.textContent("#build-status"))!.includes("succeeded")) {
      expect(Date.now(), "the no-JavaScript build succeeds").toBeLessThan(deadline);
      await plain.waitForTimeout(300);
      await plain.reload();
    }
    expect(await plain.textContent("#main")).toContain("uidemo/app:no-js");
  });
});
