// The auth decisions through the registry's real /v2 routes (src/registry), not a stand-in app.
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { mintRegistryToken } from "../../../src/auth/api";
import { ORIGIN, basic, createToken, fetchRegistryToken, setPublic, testEnv, uniqueRepo } from "./helpers";

const MANIFEST = "application/vnd.oci.image.manifest.v1+json";

function v2(path: string, init: RequestInit = {}, authorization?: string): Promise<Response> {
  const headers = new Headers(init.headers);
  if (authorization) headers.set("authorization", authorization);
  return SELF.fetch(`${ORIGIN}/v2/${path}`, { ...init, headers });
}

async function digestOf(text: string): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  return `sha256:${[...h].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** Pushes a config blob and a manifest referencing it under `tag`; returns the blob and manifest. */
async function pushImage(repo: string, authorization: string, tag = "v1"): Promise<{ blob: string; manifest: string; status: number }> {
  const config = `{"architecture":"amd64","os":"linux","n":"${Math.random()}"}`;
  const blob = await digestOf(config);
  const up = await v2(`${repo}/blobs/uploads/?digest=${blob}`, { method: "POST", body: config }, authorization);
  if (up.status !== 201) return { blob, manifest: "", status: up.status };
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: blob, size: config.length },
    layers: [],
  });
  const put = await v2(`${repo}/manifests/${tag}`, { method: "PUT", body: manifest, headers: { "content-type": MANIFEST } }, authorization);
  return { blob, manifest, status: put.status };
}

describe("auth on the registry routes", () => {
  it("/v2/ ping: 401 with the exact challenge, 200 with credentials", async () => {
    const res = await v2("");
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toBe('Bearer realm="http://kiln.test/v2/token",service="kiln.test"');
    expect(res.headers.get("docker-distribution-api-version")).toBe("registry/2.0");
    expect(((await res.json()) as { errors: { code: string }[] }).errors[0].code).toBe("UNAUTHORIZED");
    expect((await v2("", {}, basic("kiln-test-admin"))).status).toBe(200);
  });

  it("the docker flow end to end: challenge on push → token with Basic → push and pull with Bearer", async () => {
    const repo = `${uniqueRepo("flow")}/app`;
    const { token } = await createToken([`repository:${repo.split("/")[0]}/*:pull,push`]);
    const challenge = await v2(`${repo}/blobs/uploads/`, { method: "POST" });
    expect(challenge.status).toBe(401);
    const header = challenge.headers.get("www-authenticate")!;
    expect(header).toBe(`Bearer realm="http://kiln.test/v2/token",service="kiln.test",scope="repository:${repo}:pull,push"`);
    const scope = /scope="([^"]+)"/.exec(header)![1];

    const issued = await fetchRegistryToken([scope], basic(token, "docker-user"));
    expect(issued.status).toBe(200);
    const auth = `Bearer ${issued.body.token}`;
    const pushed = await pushImage(repo, auth);
    expect(pushed.status).toBe(201);
    const got = await v2(`${repo}/manifests/v1`, { headers: { accept: MANIFEST } }, auth);
    expect(got.status).toBe(200);
    expect(await got.text()).toBe(pushed.manifest);
  });

  it("a token scoped to one repository cannot push to another (403 Basic, 401 insufficient_scope Bearer)", async () => {
    const mine = uniqueRepo("mine");
    const theirs = uniqueRepo("theirs");
    const { token } = await createToken([`repository:${mine}:pull,push`]);
    expect((await pushImage(mine, basic(token))).status).toBe(201);

    const denied = await v2(`${theirs}/blobs/uploads/`, { method: "POST" }, basic(token));
    expect(denied.status).toBe(403);
    expect(((await denied.json()) as { errors: { code: string }[] }).errors[0].code).toBe("DENIED");

    const jwt = (await fetchRegistryToken([`repository:${theirs}:pull,push`, `repository:${mine}:pull,push`], basic(token))).body.token!;
    const insufficient = await v2(`${theirs}/blobs/uploads/`, { method: "POST" }, `Bearer ${jwt}`);
    expect(insufficient.status).toBe(401);
    expect(insufficient.headers.get("www-authenticate")).toContain('error="insufficient_scope"');
    expect((await v2(`${mine}/blobs/uploads/`, { method: "POST" }, `Bearer ${jwt}`)).status).toBe(202);
  });

  it("pull is allowed where granted and refused elsewhere; delete needs push", async () => {
    const repo = uniqueRepo("pullable");
    const other = uniqueRepo("hidden");
    const { blob } = await pushImage(repo, basic("kiln-test-admin"));
    await pushImage(other, basic("kiln-test-admin"));
    const { token } = await createToken([`repository:${repo}:pull`]);
    expect((await v2(`${repo}/manifests/v1`, { headers: { accept: MANIFEST } }, basic(token))).status).toBe(200);
    expect((await v2(`${repo}/blobs/${blob}`, {}, basic(token))).status).toBe(200);
    expect((await v2(`${repo}/tags/list`, {}, basic(token))).status).toBe(200);
    expect((await v2(`${other}/manifests/v1`, {}, basic(token))).status).toBe(403);
    expect((await v2(`${repo}/manifests/v1`, { method: "DELETE" }, basic(token))).status).toBe(403);
    expect((await v2(`${repo}/blobs/${blob}`, { method: "DELETE" }, basic(token))).status).toBe(403);
  });

  it("cross-repository mount checks pull on the source: 201 when readable, 202 when not", async () => {
    const src = uniqueRepo("src");
    const secret = uniqueRepo("secret");
    const dst = uniqueRepo("dst");
    const { blob } = await pushImage(src, basic("kiln-test-admin"));
    const { blob: secretBlob } = await pushImage(secret, basic("kiln-test-admin"));
    const { token } = await createToken([`repository:${dst}:pull,push`, `repository:${src}:pull`]);

    const ok = await v2(`${dst}/blobs/uploads/?mount=${blob}&from=${src}`, { method: "POST" }, basic(token));
    expect(ok.status).toBe(201);
    const refused = await v2(`${dst}/blobs/uploads/?mount=${secretBlob}&from=${secret}`, { method: "POST" }, basic(token));
    expect(refused.status).toBe(202);
    expect((await v2(`${dst}/blobs/${secretBlob}`, { method: "HEAD" }, basic(token))).status).toBe(404);
  });

  it("anonymous pull of a public repository works; of a private one gets 401; push never", async () => {
    const pub = uniqueRepo("public");
    const priv = uniqueRepo("private");
    const pushedPub = await pushImage(pub, basic("kiln-test-admin"));
    await pushImage(priv, basic("kiln-test-admin"));
    await setPublic(pub, true);

    const got = await v2(`${pub}/manifests/v1`, { headers: { accept: MANIFEST } });
    expect(got.status).toBe(200);
    expect(await got.text()).toBe(pushedPub.manifest);
    expect((await v2(`${pub}/blobs/${pushedPub.blob}`)).status).toBe(200);

    const denied = await v2(`${priv}/manifests/v1`);
    expect(denied.status).toBe(401);
    expect(denied.headers.get("www-authenticate")).toContain(`scope="repository:${priv}:pull"`);
    expect((await v2(`${pub}/blobs/uploads/`, { method: "POST" })).status).toBe(401);
    expect((await v2(`${pub}/manifests/v1`, { method: "DELETE" })).status).toBe(401);

    // the anonymous token flow (what docker does) gives the same access
    const anon = await fetchRegistryToken([`repository:${pub}:pull`, `repository:${priv}:pull`]);
    expect((await v2(`${pub}/manifests/v1`, { headers: { accept: MANIFEST } }, `Bearer ${anon.body.token}`)).status).toBe(200);
    expect((await v2(`${priv}/manifests/v1`, {}, `Bearer ${anon.body.token}`)).status).toBe(401);
  });

  it("_catalog lists only the repositories the caller can pull", async () => {
    const prefix = uniqueRepo("cat");
    await pushImage(`${prefix}/a`, basic("kiln-test-admin"));
    await pushImage(`${prefix}-other`, basic("kiln-test-admin"));
    const { token } = await createToken([`repository:${prefix}/*:pull`]);
    const res = await v2("_catalog", {}, basic(token));
    expect(res.status).toBe(200);
    const { repositories } = (await res.json()) as { repositories: string[] };
    expect(repositories).toContain(`${prefix}/a`);
    expect(repositories).not.toContain(`${prefix}-other`);
  });

  it("a job token from mintRegistryToken pushes to its repository only", async () => {
    const repo = uniqueRepo("job");
    const jwt = await mintRegistryToken(testEnv, ORIGIN, [{ repository: repo, actions: ["pull", "push"] }], 300);
    expect((await pushImage(repo, `Bearer ${jwt}`)).status).toBe(201);
    expect((await v2(`${uniqueRepo("elsewhere")}/blobs/uploads/`, { method: "POST" }, `Bearer ${jwt}`)).status).toBe(401);
  });

  it("expired and tampered registry tokens are refused by the routes", async () => {
    const repo = uniqueRepo("tamper");
    await pushImage(repo, basic("kiln-test-admin"));
    const expired = await mintRegistryToken(testEnv, ORIGIN, [{ repository: repo, actions: ["pull"] }], -1);
    expect((await v2(`${repo}/manifests/v1`, {}, `Bearer ${expired}`)).status).toBe(401);
    const good = await mintRegistryToken(testEnv, ORIGIN, [{ repository: repo, actions: ["pull"] }], 300);
    const [h, p, s] = good.split(".");
    const tampered = `${h}.${p}.${s.slice(0, -2)}${s.endsWith("AA") ? "BB" : "AA"}`;
    expect((await v2(`${repo}/manifests/v1`, {}, `Bearer ${tampered}`)).status).toBe(401);
    expect((await v2(`${repo}/manifests/v1`, { headers: { accept: MANIFEST } }, `Bearer ${good}`)).status).toBe(200);
  });
});
