// Upstream registry fixtures: multi-platform OCI layouts made by hand, and a counting/auth proxy that
// speaks the Bearer token challenge in front of Debian's docker-registry.
import { createHash } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { freePort } from "../server";

const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** A one-file tar (ustar) with `name` holding `content`. */
export function tinyTar(name: string, content: string): Buffer {
  const body = Buffer.from(content);
  const header = Buffer.alloc(512);
  header.write(name, 0);
  header.write("0000644\0", 100);
  header.write("0000000\0", 108);
  header.write("0000000\0", 116);
  header.write(body.length.toString(8).padStart(11, "0") + "\0", 124);
  header.write("00000000000\0", 136);
  header.write("        ", 148);
  header.write("0", 156);
  header.write("ustar\0" + "00", 257);
  let sum = 0;
  for (const b of header) sum += b;
  header.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
  const pad = Buffer.alloc((512 - (body.length % 512)) % 512);
  return Buffer.concat([header, body, pad, Buffer.alloc(1024)]);
}

export interface LayoutImage {
  arch: string;
  variant?: string;
  env: string[];
  cmd: string[];
  file: { name: string; content: string };
  labels?: Record<string, string>;
  user?: string;
  workdir?: string;
}

/**
 * Writes an OCI layout at `dir` whose tag `tag` is an index over `images` (or a single manifest when
 * `single`). Returns the digests of the index and of each platform manifest.
 */
export function writeLayout(dir: string, tag: string, images: LayoutImage[], single = false) {
  mkdirSync(path.join(dir, "blobs", "sha256"), { recursive: true });
  writeFileSync(path.join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  const put = (b: Buffer) => { const d = sha(b); writeFileSync(path.join(dir, "blobs", "sha256", d.slice(7)), b); return d; };
  const manifests: Array<{ mediaType: string; digest: string; size: number; platform: { os: string; architecture: string; variant?: string } }> = [];
  for (const img of images) {
    const tar = tinyTar(img.file.name, img.file.content);
    const layer = gzipSync(tar);
    const layerDigest = put(layer);
    const config = Buffer.from(JSON.stringify({
      architecture: img.arch, os: "linux", ...(img.variant ? { variant: img.variant } : {}),
      config: { Env: img.env, Cmd: img.cmd, Labels: img.labels ?? {}, User: img.user ?? "", WorkingDir: img.workdir ?? "" },
      rootfs: { type: "layers", diff_ids: [sha(tar)] },
      history: [{ created_by: `fixture ${img.arch}` }],
    }));
    const configDigest = put(config);
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: config.length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: layerDigest, size: layer.length }],
    }));
    manifests.push({ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: put(manifest), size: manifest.length, platform: { os: "linux", architecture: img.arch, ...(img.variant ? { variant: img.variant } : {}) } });
  }
  let top: { mediaType: string; digest: string; size: number };
  if (single) {
    top = { mediaType: manifests[0].mediaType, digest: manifests[0].digest, size: manifests[0].size };
  } else {
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests }));
    top = { mediaType: "application/vnd.oci.image.index.v1+json", digest: put(index), size: index.length };
  }
  writeFileSync(path.join(dir, "index.json"), JSON.stringify({
    schemaVersion: 2, manifests: [{ ...top, annotations: { "org.opencontainers.image.ref.name": tag } }],
  }));
  return { top: top.digest, manifests: Object.fromEntries(manifests.map((m) => [m.platform.architecture, m.digest])) };
}

export interface UpstreamProxy {
  url: string;
  host: string;
  requests: string[];
  tokenRequests: number;
  close(): Promise<void>;
}

/**
 * A proxy on 127.0.0.1 in front of `target` that records every request and, with `auth`, demands a
 * Bearer token from its own /token endpoint (Basic user:pass), as Docker Hub does.
 */
export async function startUpstreamProxy(target: string, auth?: { user: string; pass: string }): Promise<UpstreamProxy> {
  const port = await freePort();
  const state: UpstreamProxy = { url: `http://127.0.0.1:${port}`, host: `127.0.0.1:${port}`, requests: [], tokenRequests: 0, close: async () => {} };
  const issued = new Set<string>();
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", state.url);
    if (url.pathname === "/token") {
      state.tokenRequests++;
      const want = auth ? `Basic ${Buffer.from(`${auth.user}:${auth.pass}`).toString("base64")}` : undefined;
      if (want && req.headers.authorization !== want) { res.writeHead(401).end('{"errors":[{"code":"UNAUTHORIZED"}]}'); return; }
      const token = `t-${Math.random().toString(36).slice(2)}`;
      issued.add(token);
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ token, expires_in: 300 }));
      return;
    }
    state.requests.push(`${req.method} ${url.pathname}`);
    if (auth && url.pathname !== "/v2/" ) {
      const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? "");
      if (!m || !issued.has(m[1])) {
        res.writeHead(401, { "www-authenticate": `Bearer realm="${state.url}/token",service="upstream-test",scope="repository:${url.pathname.split("/").slice(2, -2).join("/")}:pull"` }).end();
        return;
      }
    }
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string" && k !== "host" && k !== "authorization") headers[k] = v;
    const upstream = await fetch(`${target}${url.pathname}${url.search}`, { method: req.method, headers });
    const out: Record<string, string> = {};
    upstream.headers.forEach((v, k) => { out[k] = v; });
    delete out["content-encoding"];
    res.writeHead(upstream.status, out);
    if (req.method === "HEAD" || !upstream.body) { res.end(); return; }
    for await (const chunk of upstream.body as unknown as AsyncIterable<Uint8Array>) res.write(chunk);
    res.end();
  });
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  state.close = () => new Promise((r) => server.close(() => r()));
  return state;
}
