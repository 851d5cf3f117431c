import { describe, expect, it } from "vitest";
import { tokensEqual, verifyHmacHex, type PushEvent } from "./event";
import { giteaArchive, parseGitea, verifyGitea } from "./gitea";
import { githubArchive, parseGithub, verifyGithub } from "./github";
import { gitlabArchive, parseGitlab, verifyGitlab } from "./gitlab";
import { globMatch, shouldBuild, tagsFor } from "./rules";
import { badRefName, refusePush } from "./validate";

const enc = new TextEncoder();

async function hmacHex(secret: string, body: string): Promise<string> {
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return [...new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(body)))].map((b) => b.toString(16).padStart(2, "0")).join("");
}

const SHA = "0123456789abcdef0123456789abcdef01234567";

describe("webhook signatures", () => {
  it("verifies GitHub's X-Hub-Signature-256 over the raw body and refuses forgeries", async () => {
    const body = JSON.stringify({ ref: "refs/heads/main", after: SHA });
    const good = new Headers({ "x-hub-signature-256": `sha256=${await hmacHex("s3cret-value", body)}` });
    expect(await verifyGithub(good, enc.encode(body), "s3cret-value")).toBe(true);
    expect(await verifyGithub(good, enc.encode(body + " "), "s3cret-value")).toBe(false);
    expect(await verifyGithub(good, enc.encode(body), "other-secret")).toBe(false);
    expect(await verifyGithub(new Headers(), enc.encode(body), "s3cret-value")).toBe(false);
    expect(await verifyGithub(new Headers({ "x-hub-signature-256": "sha256=zz" }), enc.encode(body), "s3cret-value")).toBe(false);
  });

  it("verifies Gitea and Forgejo hex signatures and GitLab tokens", async () => {
    const body = "{}";
    const sig = await hmacHex("k3y-k3y-k3y", body);
    expect(await verifyGitea(new Headers({ "x-gitea-signature": sig }), enc.encode(body), "k3y-k3y-k3y")).toBe(true);
    expect(await verifyGitea(new Headers({ "x-forgejo-signature": sig }), enc.encode(body), "k3y-k3y-k3y")).toBe(true);
    expect(await verifyGitea(new Headers({ "x-gitea-signature": sig.replace(/.$/, "0") === sig ? sig.replace(/.$/, "1") : sig.replace(/.$/, "0") }), enc.encode(body), "k3y-k3y-k3y")).toBe(false);
    expect(await verifyGitlab(new Headers({ "x-gitlab-token": "tok-tok-tok" }), enc.encode(body), "tok-tok-tok")).toBe(true);
    expect(await verifyGitlab(new Headers({ "x-gitlab-token": "tok-tok-to" }), enc.encode(body), "tok-tok-tok")).toBe(false);
    expect(await verifyGitlab(new Headers(), enc.encode(body), "tok-tok-tok")).toBe(false);
    expect(await tokensEqual("a", "a")).toBe(true);
    expect(await verifyHmacHex("x", enc.encode("y"), "")).toBe(false);
  });
});

describe("webhook payloads", () => {
  it("reads GitHub push, tag push, deletion and ping", () => {
    const h = (event: string) => new Headers({ "x-github-event": event, "x-github-delivery": "d-1", "content-type": "application/json" });
    const push = parseGithub(h("push"), enc.encode(JSON.stringify({ ref: "refs/heads/feature/x", after: SHA, deleted: false, repository: { full_name: "acme/app", default_branch: "main" } })));
    expect(push).toMatchObject({ kind: "push", deliveryId: "d-1", repository: "acme/app", refType: "branch", name: "feature/x", sha: SHA, deleted: false, defaultBranch: "main" });
    const tag = parseGithub(h("push"), enc.encode(JSON.stringify({ ref: "refs/tags/v1.2.0", after: SHA, repository: { full_name: "acme/app" } })));
    expect(tag).toMatchObject({ refType: "tag", name: "v1.2.0" });
    const del = parseGithub(h("push"), enc.encode(JSON.stringify({ ref: "refs/heads/old", after: "0".repeat(40), deleted: true, repository: { full_name: "acme/app" } })));
    expect(del).toMatchObject({ deleted: true });
    expect(parseGithub(h("ping"), enc.encode(JSON.stringify({ zen: "hi", repository: { full_name: "acme/app" } })))).toMatchObject({ kind: "ping" });
    expect(parseGithub(h("issues"), enc.encode("{}"))).toMatchObject({ kind: "ignored" });
    const form = new Headers({ "x-github-event": "push", "content-type": "application/x-www-form-urlencoded" });
    expect(parseGithub(form, enc.encode(`payload=${encodeURIComponent(JSON.stringify({ ref: "refs/heads/main", after: SHA }))}`))).toMatchObject({ name: "main" });
  });

  it("reads GitLab Push Hook and Tag Push Hook", () => {
    const h = (event: string) => new Headers({ "x-gitlab-event": event, "x-gitlab-event-uuid": "u-1" });
    const push = parseGitlab(h("Push Hook"), enc.encode(JSON.stringify({ ref: "refs/heads/main", after: SHA, checkout_sha: SHA, project_id: 15, project: { id: 15, path_with_namespace: "grp/app", default_branch: "main" } })));
    expect(push).toMatchObject({ kind: "push", deliveryId: "u-1", repository: "grp/app", projectId: "15", refType: "branch", name: "main", sha: SHA, deleted: false });
    const tag = parseGitlab(h("Tag Push Hook"), enc.encode(JSON.stringify({ ref: "refs/tags/v2", after: SHA, checkout_sha: SHA, project: { path_with_namespace: "grp/app" } })));
    expect(tag).toMatchObject({ refType: "tag", name: "v2" });
    const del = parseGitlab(h("Push Hook"), enc.encode(JSON.stringify({ ref: "refs/heads/x", after: "0".repeat(40), checkout_sha: null, project: { path_with_namespace: "grp/app" } })));
    expect(del).toMatchObject({ deleted: true });
  });

  it("reads Gitea/Forgejo push", () => {
    const h = new Headers({ "x-forgejo-event": "push", "x-forgejo-delivery": "f-1" });
    expect(parseGitea(h, enc.encode(JSON.stringify({ ref: "refs/heads/dev", after: SHA, repository: { full_name: "o/r", default_branch: "main" } }))))
      .toMatchObject({ kind: "push", deliveryId: "f-1", repository: "o/r", name: "dev" });
  });
});

describe("webhook rules", () => {
  const ev = (refType: "branch" | "tag", name: string) => ({ kind: "push" as const, deliveryId: "d", repository: "o/r", refType, name, sha: SHA, deleted: false, defaultBranch: "main" });

  it("matches branch globs", () => {
    expect(globMatch("release/*", "release/1.0")).toBe(true);
    expect(globMatch("release/*", "release/1.0/hotfix")).toBe(false);
    expect(globMatch("release/**", "release/1.0/hotfix")).toBe(true);
    expect(globMatch("main", "main2")).toBe(false);
    expect(shouldBuild(ev("branch", "dev"), ["main", "release/*"])).toBe(false);
    expect(shouldBuild(ev("branch", "release/2"), ["main", "release/*"])).toBe(true);
    expect(shouldBuild(ev("tag", "v1"), ["main"])).toBe(true);
    expect(shouldBuild(ev("branch", "anything"), [])).toBe(true);
  });

  it("expands tag templates per kind of push", () => {
    expect(tagsFor(ev("branch", "main"), ["{branch}", "{sha:7}", "latest"])).toEqual(["main", "0123456", "latest"]);
    expect(tagsFor(ev("branch", "feature/x"), ["{branch}", "{sha:7}", "latest"])).toEqual(["feature-x", "0123456"]);
    expect(tagsFor(ev("tag", "v1.0.0"), ["{branch}", "{tag}", "{sha:7}"])).toEqual(["v1.0.0", "0123456"]);
    expect(tagsFor(ev("branch", "main"), [])).toEqual(["main", "0123456", "latest"]);
  });
});

describe("webhook payloads never choose a URL (issue 17, finding 7)", () => {
  const gl = (body: Record<string, unknown>) => parseGitlab(new Headers({ "x-gitlab-event": "Push Hook", "x-gitlab-event-uuid": "u" }), enc.encode(JSON.stringify(body)));
  const hook = { provider: "gitlab", repository: "grp/app" };

  it("refuses a GitLab project_id that is not a number, before any URL is built", () => {
    const ev = gl({ ref: "refs/heads/main", after: SHA, checkout_sha: SHA, project_id: "../user", project: { path_with_namespace: "grp/app" } });
    if (ev.kind !== "push") throw new Error("not a push");
    expect(refusePush(ev, hook)).toMatch(/project_id must be a positive integer/);
    const mixed = gl({ ref: "refs/heads/main", after: SHA, checkout_sha: SHA, project_id: 15, project: { id: 16, path_with_namespace: "grp/app" } });
    expect(refusePush(mixed as PushEvent, hook)).toMatch(/project_id/);
  });

  it("refuses another project: a different path, or a different id than the registered one", () => {
    const other = gl({ ref: "refs/heads/main", after: SHA, checkout_sha: SHA, project_id: 99, project: { id: 99, path_with_namespace: "victim/secret" } });
    expect(refusePush(other as PushEvent, hook)).toMatch(/victim\/secret.*grp\/app/);
    const wrongId = gl({ ref: "refs/heads/main", after: SHA, checkout_sha: SHA, project_id: 99, project: { id: 99, path_with_namespace: "grp/app" } });
    expect(refusePush(wrongId as PushEvent, { ...hook, projectId: "15" })).toMatch(/project 99.*project 15/);
    const noRepo = gl({ ref: "refs/heads/main", after: SHA, checkout_sha: SHA, project_id: 15 });
    expect(refusePush(noRepo as PushEvent, hook)).toMatch(/names no repository/);
  });

  it("takes the project for API paths from the registration only", () => {
    const ok = gl({ ref: "refs/heads/main", after: SHA, checkout_sha: SHA, project_id: 15, project: { id: 15, path_with_namespace: "GRP/app" } }) as PushEvent;
    expect(refusePush(ok, hook)).toBeNull();
    expect(ok.projectId).toBeUndefined(); // not registered: the encoded path is used
    expect(gitlabArchive("https://gl.example/api/v4", "grp/app", SHA, "t", ok.projectId).url).toBe(`https://gl.example/api/v4/projects/grp%2Fapp/repository/archive.tar.gz?sha=${SHA}`);
    const pinned = gl({ ref: "refs/heads/main", after: SHA, checkout_sha: SHA, project_id: 15, project: { id: 15, path_with_namespace: "grp/app" } }) as PushEvent;
    expect(refusePush(pinned, { ...hook, projectId: "15" })).toBeNull();
    expect(gitlabArchive("https://gl.example/api/v4", "grp/app", SHA, "t", pinned.projectId).url).toBe(`https://gl.example/api/v4/projects/15/repository/archive.tar.gz?sha=${SHA}`);
    expect(() => gitlabArchive("https://gl.example/api/v4", "grp/app", SHA, "t", "../user")).toThrow(/numeric/);
  });

  it("refuses short or odd commit shas and insane refs; encodes every path segment", () => {
    const gh = (ref: string, after: string) => parseGithub(new Headers({ "x-github-event": "push" }), enc.encode(JSON.stringify({ ref, after, repository: { full_name: "acme/app" } }))) as PushEvent;
    const github = { provider: "github", repository: "acme/app" };
    expect(refusePush(gh("refs/heads/main", SHA), github)).toBeNull();
    expect(refusePush(gh("refs/heads/main", "0123456"), github)).toMatch(/sha/);
    expect(refusePush(gh("refs/heads/main", `${SHA}/../../user`), github)).toMatch(/sha/);
    expect(refusePush(gh("refs/heads/main", SHA.toUpperCase()), github)).toMatch(/sha/);
    expect(refusePush(gh("refs/heads/a/../../b", SHA), github)).toMatch(/\.\./);
    expect(refusePush(gh("refs/heads/x\ny", SHA), github)).toMatch(/control/);
    expect(refusePush(gh("refs/heads/main", SHA), { provider: "github", repository: "acme/other" })).toMatch(/acme\/other/);
    expect(githubArchive("https://api.github.com", "acme/app", SHA).url).toBe(`https://api.github.com/repos/acme/app/tarball/${SHA}`);
    expect(githubArchive("https://api.github.com", "a b/c?d", "x/y").url).toBe("https://api.github.com/repos/a%20b/c%3Fd/tarball/x%2Fy");
    expect(giteaArchive("https://g.example/api/v1", "o/r#x", "s/..").url).toBe("https://g.example/api/v1/repos/o/r%23x/archive/s%2F...tar.gz");
    expect(badRefName("release/1.0")).toBeNull();
    expect(badRefName("feature/x.lock")).not.toBeNull();
  });
});
