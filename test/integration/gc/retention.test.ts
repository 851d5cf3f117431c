import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { OCI_MANIFEST, imageManifest, putManifest, reg, sha256 } from "../registry/helpers";
import { collect } from "./helpers";

const ADMIN = { authorization: "Bearer kiln-test-admin", "content-type": "application/json" };
const DAY = 24 * 3600 * 1000;

async function policy(pattern: string, body: unknown): Promise<Response> {
  return reg(`/v1/retention/${pattern}`, { method: "PUT", headers: ADMIN, body: JSON.stringify(body) });
}

/** Pushes one image per tag, each pushed `ageDays` ago (oldest first as given). */
async function pushTags(repo: string, tags: [string, number][]): Promise<Map<string, string>> {
  const digests = new Map<string, string>();
  for (const [tag, ageDays] of tags) {
    const body = await imageManifest(repo);
    expect((await putManifest(repo, tag, body, OCI_MANIFEST)).status).toBe(201);
    digests.set(tag, await sha256(body));
    await env.DB.prepare("UPDATE tags SET updated_at = ? WHERE repo = ? AND tag = ?").bind(Date.now() - ageDays * DAY, repo, tag).run();
  }
  return digests;
}

async function tagsOf(repo: string): Promise<string[]> {
  const res = await reg(`/v2/${repo}/tags/list`);
  return res.status === 200 ? (((await res.json()) as { tags: string[] }).tags ?? []).sort() : [];
}

describe("retention policies", () => {
  it("PUT, GET and DELETE /v1/retention/<pattern>, with clear refusals", async () => {
    const put = await policy("ret/**", { keepLast: 10, keepTags: ["latest", "v*"], untaggedOlderThanDays: 7, olderThanDays: 90 });
    expect(put.status).toBe(200);
    const list = (await (await reg("/v1/retention", { headers: ADMIN })).json()) as { policies: any[] };
    expect(list.policies).toEqual([expect.objectContaining({ pattern: "ret/**", policy: { keepLast: 10, keepTags: ["latest", "v*"], untaggedOlderThanDays: 7, olderThanDays: 90 } })]);
    const bad = await policy("ret/**", { keepLast: -1 });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as any).error.message).toMatch(/keepLast/);
    expect((await policy("ret/**", { keepForever: true })).status).toBe(400);
    expect((await policy("Bad Pattern", {})).status).toBe(400);
    expect((await reg("/v1/retention/ret/**", { method: "DELETE", headers: ADMIN })).status).toBe(204);
    expect((await reg("/v1/retention/ret/**", { method: "DELETE", headers: ADMIN })).status).toBe(404);
  });

  it("keepLast keeps the N most recently pushed tags; keepTags patterns are never deleted; a dry run only lists", async () => {
    const repo = "retlast/app";
    await pushTags(repo, [["v1", 50], ["old-a", 40], ["old-b", 30], ["new-a", 2], ["new-b", 1], ["latest", 60]]);
    expect((await policy("retlast/*", { keepLast: 2, keepTags: ["latest", "v*"] })).status).toBe(200);
    const dry = await collect("graceSeconds=0&dryRun=1");
    const mine = dry.retention.find((r: any) => r.pattern === "retlast/*");
    expect(mine.tags.sort()).toEqual([`${repo}:old-a`, `${repo}:old-b`]);
    expect(await tagsOf(repo)).toEqual(["latest", "new-a", "new-b", "old-a", "old-b", "v1"]);
    await collect("graceSeconds=0");
    expect(await tagsOf(repo)).toEqual(["latest", "new-a", "new-b", "v1"]);
  });

  it("olderThanDays deletes tags last pushed longer ago (the untagged images go with them)", async () => {
    const repo = "retold/app";
    const d = await pushTags(repo, [["ancient", 100], ["recent", 10], ["v0", 200]]);
    expect((await policy("retold/app", { olderThanDays: 90, keepTags: ["v*"] })).status).toBe(200);
    const dry = await collect("graceSeconds=0&dryRun=1");
    expect(dry.retention.find((r: any) => r.pattern === "retold/app").tags).toEqual([`${repo}:ancient`]);
    const report = await collect("graceSeconds=0");
    expect(report.deleted.tags).toContain(`${repo}:ancient`);
    expect(report.deleted.manifests).toContain(`${repo}@${d.get("ancient")}`);
    expect(await tagsOf(repo)).toEqual(["recent", "v0"]);
    expect((await reg(`/v2/${repo}/manifests/${d.get("ancient")}`)).status).toBe(404);
  });

  it("untaggedOlderThanDays: untagged manifests stay until that age, then go (without a policy: after the grace period)", async () => {
    const repo = "retuntag/app";
    const d = await pushTags(repo, [["a", 0], ["b", 0]]);
    for (const t of ["a", "b"]) expect((await reg(`/v2/${repo}/manifests/${t}`, { method: "DELETE" })).status).toBe(202);
    await env.DB.prepare("UPDATE manifests SET created_at = ? WHERE repo = ? AND digest = ?").bind(Date.now() - 3 * DAY, repo, d.get("a")).run();
    await env.DB.prepare("UPDATE manifests SET created_at = ? WHERE repo = ? AND digest = ?").bind(Date.now() - 10 * DAY, repo, d.get("b")).run();
    expect((await policy("retuntag/**", { untaggedOlderThanDays: 7 })).status).toBe(200);
    const dry = await collect("graceSeconds=0&dryRun=1");
    expect(dry.retention.find((r: any) => r.pattern === "retuntag/**").manifests).toEqual([`${repo}@${d.get("b")}`]);
    await collect("graceSeconds=0");
    expect((await reg(`/v2/${repo}/manifests/${d.get("a")}`)).status).toBe(200);
    expect((await reg(`/v2/${repo}/manifests/${d.get("b")}`)).status).toBe(404);
    // without the policy the 3-day-old one goes too
    expect((await reg("/v1/retention/retuntag/**", { method: "DELETE", headers: ADMIN })).status).toBe(204);
    await collect("graceSeconds=0");
    expect((await reg(`/v2/${repo}/manifests/${d.get("a")}`)).status).toBe(404);
  });

  it("a policy touches only the repositories its pattern matches", async () => {
    await pushTags("retscope/app", [["x", 100]]);
    await pushTags("retother/app", [["x", 100]]);
    expect((await policy("retscope/*", { olderThanDays: 1 })).status).toBe(200);
    await collect("graceSeconds=0");
    expect(await tagsOf("retscope/app")).toEqual([]);
    expect(await tagsOf("retother/app")).toEqual(["x"]);
  });
});
