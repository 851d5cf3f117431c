// Real clients against the registry: umoci builds an OCI layout around busybox-static, skopeo copies it
// in and back out (byte-identical), inspects it and lists tags; podman pulls it and runs it with runc.
// Target: kiln (`wrangler dev`); E2E_REGISTRY=peer runs the same tests against Debian's docker-registry.
import { mkdtempSync, readdirSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { have } from "./server";
import {
  buildBusyboxLayout, containerSandbox, credsArg, podman, podmanReset, readLayout, RegistryClient, sha256, skopeo,
  startTarget, TARGET, type ContainerSandbox, type Credentials, type RegistryTarget,
} from "./helpers";

const haveTools = have("skopeo") && have("umoci") && have("busybox");
if (!haveTools) console.warn("SKIPPING registry client e2e tests: skopeo, umoci and busybox-static are required");
const havePodman = have("podman") && have("runc");
if (!havePodman) console.warn("SKIPPING podman e2e tests: podman and runc are required");

describe.skipIf(!haveTools)(`registry with real clients (${TARGET})`, () => {
  let target: RegistryTarget;
  let sb: ContainerSandbox;
  let creds: Credentials;
  let layout: string;
  let tmp: string;

  beforeAll(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), "kiln-e2e-clients-"));
    target = await startTarget();
    sb = containerSandbox([target.host]);
    creds = await target.creds(["repository:e2e/*:pull,push"]);
    ({ layout } = await buildBusyboxLayout(path.join(tmp, "layout")));
  });
  afterAll(async () => {
    if (sb && havePodman) await podmanReset(sb);
    await target?.stop();
  });

  const image = (ref: string) => `docker://${target.host}/${ref}`;

  it("skopeo copy pushes an umoci-built busybox layout and copies it back out byte-identical", async () => {
    const push = await skopeo(sb, ["copy", "--dest-creds", credsArg(creds), "--dest-tls-verify=false", `oci:${layout}:latest`, image("e2e/busybox:1")]);
    expect(push.stderr + push.stdout, "skopeo copy into the registry").not.toMatch(/FATA|error/i);
    expect(push.code).toBe(0);

    const out = path.join(tmp, "out");
    const pull = await skopeo(sb, ["copy", "--src-creds", credsArg(creds), "--src-tls-verify=false", image("e2e/busybox:1"), `oci:${out}:latest`]);
    expect(pull.code, pull.stderr).toBe(0);

    const a = readLayout(layout);
    const b = readLayout(out);
    // the manifest comes back with the same bytes, hence the same digest and media type
    expect(b.desc.digest).toBe(a.desc.digest);
    expect(b.desc.mediaType).toBe(a.desc.mediaType);
    expect(sha256(b.manifestBytes)).toBe(a.desc.digest);
    expect(Buffer.compare(b.manifestBytes, a.manifestBytes)).toBe(0);
    // every blob (config + layers) byte-identical
    const blobs = [a.manifest.config, ...a.manifest.layers];
    expect(a.manifest.layers.length).toBeGreaterThan(0);
    for (const d of blobs) {
      const got = b.blob(d.digest);
      expect(got.byteLength).toBe(d.size);
      expect(sha256(got)).toBe(d.digest);
      expect(Buffer.compare(got, a.blob(d.digest))).toBe(0);
    }
    expect(readdirSync(path.join(out, "blobs", "sha256")).sort()).toEqual(blobs.concat([a.desc]).map((d) => d.digest.slice(7)).sort());

    // and over plain HTTP: GET by tag returns the pushed bytes, digest and media type
    const client = new RegistryClient(target.url, creds);
    const res = await client.getManifest("e2e/busybox", "1");
    expect(res.status).toBe(200);
    expect(res.headers.get("docker-content-digest")).toBe(a.desc.digest);
    expect(res.headers.get("content-type")).toBe(a.desc.mediaType);
    expect(Buffer.compare(Buffer.from(await res.arrayBuffer()), a.manifestBytes)).toBe(0);
  });

  it("skopeo inspect shows tags, digest, layers and config; list-tags lists every tag", async () => {
    const again = await skopeo(sb, ["copy", "--dest-creds", credsArg(creds), "--dest-tls-verify=false", `oci:${layout}:latest`, image("e2e/busybox:latest")]);
    expect(again.code, again.stderr).toBe(0);
    const a = readLayout(layout);

    const inspect = await skopeo(sb, ["inspect", "--creds", credsArg(creds), "--tls-verify=false", image("e2e/busybox:1")]);
    expect(inspect.code, inspect.stderr).toBe(0);
    const info = JSON.parse(inspect.stdout) as { Name: string; Digest: string; RepoTags: string[]; Layers: string[]; Architecture: string; Os: string; Env: string[] };
    expect(info.Name).toBe(`${target.host}/e2e/busybox`);
    expect(info.Digest).toBe(a.desc.digest);
    expect([...info.RepoTags].sort()).toEqual(["1", "latest"]);
    expect(info.Layers).toEqual(a.manifest.layers.map((l) => l.digest));
    expect(info.Os).toBe("linux");
    expect(info.Env).toContain("PATH=/usr/sbin:/usr/bin:/sbin:/bin");

    const raw = await skopeo(sb, ["inspect", "--raw", "--creds", credsArg(creds), "--tls-verify=false", image("e2e/busybox:1")]);
    expect(raw.code, raw.stderr).toBe(0);
    expect(raw.stdout).toBe(a.manifestBytes.toString("utf8"));

    const config = await skopeo(sb, ["inspect", "--config", "--creds", credsArg(creds), "--tls-verify=false", image("e2e/busybox:1")]);
    expect(config.code, config.stderr).toBe(0);
    expect(JSON.parse(config.stdout)).toMatchObject({ config: { Cmd: ["sh"] }, os: "linux" });

    const tags = await skopeo(sb, ["list-tags", "--creds", credsArg(creds), "--tls-verify=false", image("e2e/busybox")]);
    expect(tags.code, tags.stderr).toBe(0);
    const listed = JSON.parse(tags.stdout) as { Repository: string; Tags: string[] };
    expect(listed.Repository).toBe(`${target.host}/e2e/busybox`);
    // the spec asks for lexical order; docker-registry 2.8 does not sort, kiln must
    expect(target.kind === "kiln" ? listed.Tags : [...listed.Tags].sort()).toEqual(["1", "latest"]);

    // by digest too
    const byDigest = await skopeo(sb, ["inspect", "--creds", credsArg(creds), "--tls-verify=false", image(`e2e/busybox@${a.desc.digest}`)]);
    expect(byDigest.code, byDigest.stderr).toBe(0);
    expect(JSON.parse(byDigest.stdout).Digest).toBe(a.desc.digest);
  });

  describe.skipIf(!havePodman)("podman", () => {
    it("podman login, pull from the registry, and run the image with runc (--network none) → hello", async () => {
      const ref = `${target.host}/e2e/busybox:1`;
      const login = await podman(sb, ["login", "--tls-verify=false", "--username", creds.username, "--password-stdin", target.host], 60_000, creds.password);
      expect(login.code, login.stderr).toBe(0);
      expect(login.stdout).toMatch(/Login Succeeded/);

      const pull = await podman(sb, ["pull", "--tls-verify=false", "--signature-policy", sb.policy, ref]);
      expect(pull.code, pull.stderr).toBe(0);
      const { desc } = readLayout(layout);
      const images = await podman(sb, ["images", "--digests", "--format", "{{.Repository}}:{{.Tag}} {{.Digest}}"]);
      expect(images.stdout).toContain(`${target.host}/e2e/busybox:1 ${desc.digest}`);

      const runRes = await podman(sb, [
        "run", "--rm", "--network", "none", "--pull", "never",
        "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096",
        ref, "echo", "hello",
      ]);
      expect(runRes.stderr).not.toMatch(/error/i);
      expect(runRes.code).toBe(0);
      expect(runRes.stdout.trim()).toBe("hello");
    });

    it("podman run pulls the image itself (podman pull --creds, then run --pull always with the login)", async () => {
      await podmanReset(sb);
      const pull = await podman(sb, ["pull", "--tls-verify=false", "--creds", credsArg(creds), "--signature-policy", sb.policy, `${target.host}/e2e/busybox:1`]);
      expect(pull.code, pull.stderr).toBe(0);
      const runRes = await podman(sb, [
        "run", "--rm", "--network", "none", "--tls-verify=false", "--pull", "always", "--signature-policy", sb.policy,
        "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096",
        `${target.host}/e2e/busybox:1`, "sh", "-c", "echo hello from $(uname -s)",
      ]);
      expect(runRes.code, runRes.stderr).toBe(0);
      expect(runRes.stdout.trim()).toBe("hello from Linux");
    });
  });
});
