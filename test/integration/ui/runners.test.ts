// The dashboard's runners page: online state, platforms and the job a runner holds.
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { uniqueRepo } from "../auth/helpers";
import { makeTar, postBuild, waitBuild } from "../builds/helpers";

const ORIGIN = "http://kiln.test";
const ADMIN = "kiln-test-admin";

async function adminSession(): Promise<string> {
  const get = await SELF.fetch(`${ORIGIN}/ui/sign-in`);
  const pre = (get.headers as unknown as { getSetCookie(): string[] }).getSetCookie().find((l) => l.startsWith("kiln_signin_csrf="))!.split(";")[0];
  const csrf = /name="_csrf" value="([^"]+)"/.exec(await get.text())![1];
  const res = await SELF.fetch(`${ORIGIN}/ui/sign-in`, {
    method: "POST", redirect: "manual", body: new URLSearchParams({ _csrf: csrf, token: ADMIN }).toString(),
    headers: { cookie: pre, origin: ORIGIN, "content-type": "application/x-www-form-urlencoded" },
  });
  return (res.headers as unknown as { getSetCookie(): string[] }).getSetCookie().find((l) => l.startsWith("kiln_session="))!.split(";")[0];
}

describe("dashboard runners page", () => {
  it("shows a runner online with its platform and the build step it is running", async () => {
    const repo = `${uniqueRepo("uirun")}/app`;
    const res = await postBuild(await makeTar({ Dockerfile: "FROM scratch\nRUN echo on a runner\n" }), `?tag=${repo}:1&platform=linux/riscv64`);
    const { id } = (await res.json()) as { id: string };
    // a runner of that platform claims the RUN job (long-polls until the step is queued)
    const claim = await SELF.fetch(`${ORIGIN}/v1/runners/claim`, {
      method: "POST", headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
      body: JSON.stringify({ runnerId: "riscv-box", platforms: ["linux/riscv64"], waitSeconds: 10 }),
    });
    expect(claim.status).toBe(200);
    const { job } = (await claim.json()) as { job: { buildId: string; stepIndex: number } };
    expect(job.buildId).toBe(id);

    const cookie = await adminSession();
    const html = await (await SELF.fetch(`${ORIGIN}/ui/admin/runners`, { headers: { cookie } })).text();
    const row = html.split("<tr>").find((r) => r.includes("riscv-box"))!;
    expect(row).toContain(">online<");
    expect(row).toContain("linux/riscv64");
    expect(row).toContain(`<a href="/ui/builds/${id}">${id}</a> step ${job.stepIndex}`);

    await SELF.fetch(`${ORIGIN}/v1/builds/${id}`, { method: "DELETE", headers: { authorization: `Bearer ${ADMIN}` } });
    expect((await waitBuild(id)).status).toBe("cancelled");
    const after = await (await SELF.fetch(`${ORIGIN}/ui/admin/runners`, { headers: { cookie } })).text();
    expect(after.split("<tr>").find((r) => r.includes("riscv-box"))).toContain("idle");
  });
});
