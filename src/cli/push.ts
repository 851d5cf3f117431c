// `kiln push <source> <repository:tag>`: copies an image into kiln with every blob uploaded in chunks
// (PATCH with Content-Range, each request under the Worker's body limit), so that layers of any size
// can be pushed where docker and podman (one request per layer) get a 413. Sources as skopeo names
// them: `oci:<dir>[:<tag>]`, `docker-archive:<file>` (docker save), `docker://<registry>/<name>:<tag>`.
import { createHash } from "node:crypto";
import { closeSync, createReadStream, openSync, readFileSync, readSync, statSync } from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { pushBlob, UPLOAD_CHUNK } from "../runner/client";
import { MediaType, isIndex } from "../oci/mediatypes";
import { isRepositoryName, isTag, splitReference } from "../oci/names";
import type { Descriptor, ImageIndex, ImageManifest } from "../oci/image";
import { authHeaders, CliError, httpError, request } from "./http";

/** A manifest as stored: its bytes are what is pushed (the digest is theirs). */
interface RawManifest {
  mediaType: string;
  bytes: Uint8Array;
}

/** Where an image comes from. */
interface ImageSource {
  name: string;
  root(): Promise<RawManifest>;
  /** A manifest an index names. */
  manifest(d: Descriptor): Promise<RawManifest>;
  /** A blob's bytes from the start. */
  blob(d: Descriptor): Promise<Readable>;
}

export type SourceSpec =
  | { kind: "oci"; dir: string; tag?: string }
  | { kind: "docker-archive"; file: string }
  | { kind: "docker"; registry: string; repository: string; reference: string };

/** Parses skopeo's transport syntax. */
export function parseSource(spec: string): SourceSpec {
  if (spec.startsWith("oci:")) {
    const rest = spec.slice(4);
    // oci:<dir>[:<tag>] — the last colon splits a tag unless what follows looks like a path
    const colon = rest.lastIndexOf(":");
    if (colon > 0 && !rest.slice(colon + 1).includes("/")) return { kind: "oci", dir: rest.slice(0, colon), tag: rest.slice(colon + 1) || undefined };
    if (!rest) throw new CliError("oci: needs a directory (oci:<dir>[:<tag>])");
    return { kind: "oci", dir: rest };
  }
  if (spec.startsWith("docker-archive:")) {
    const file = spec.slice("docker-archive:".length).replace(/:[^/:]+:[^/:]+$/, "");
    if (!file) throw new CliError("docker-archive: needs a file (docker-archive:<file> from docker save)");
    return { kind: "docker-archive", file };
  }
  if (spec.startsWith("docker://")) {
    const ref = spec.slice("docker://".length);
    const slash = ref.indexOf("/");
    const first = slash > 0 ? ref.slice(0, slash) : "";
    const hasHost = first.includes(".") || first.includes(":") || first === "localhost";
    const registry = hasHost ? first : "registry-1.docker.io";
    let name = hasHost ? ref.slice(slash + 1) : ref;
    let reference = "latest";
    const at = name.indexOf("@");
    if (at > 0) {
      reference = name.slice(at + 1);
      name = name.slice(0, at);
    } else {
      const colon = name.lastIndexOf(":");
      if (colon > name.lastIndexOf("/")) {
        reference = name.slice(colon + 1);
        name = name.slice(0, colon);
      }
    }
    if (!hasHost && !name.includes("/")) name = `library/${name}`;
    if (!name) throw new CliError(`docker://: no image name in ${spec}`);
    return { kind: "docker", registry, repository: name, reference };
  }
  throw new CliError(`unknown source ${spec}: expected oci:<dir>[:<tag>], docker-archive:<file> or docker://<registry>/<name>:<tag>`);
}

const MANIFEST_ACCEPT = [MediaType.OciIndex, MediaType.OciManifest, MediaType.DockerManifestList, MediaType.DockerManifest].join(", ");

function readJson<T>(file: string, what: string): T {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as T;
  } catch (e) {
    throw new CliError(`cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (e as Error).message}`);
  }
}

/** An OCI image layout directory (skopeo copy … oci:<dir>:<tag>, buildah push … oci:…). */
function ociSource(dir: string, tag?: string): ImageSource {
  const blobPath = (digest: string) => {
    const [alg, hex] = digest.split(":");
    if (!/^[a-f0-9]{64,128}$/.test(hex ?? "") || !/^sha(256|512)$/.test(alg)) throw new CliError(`bad digest ${digest} in ${dir}`);
    return path.join(dir, "blobs", alg, hex);
  };
  const read = (d: Descriptor): RawManifest => ({ mediaType: d.mediaType, bytes: readFileSync(blobPath(d.digest)) });
  return {
    name: `oci:${dir}${tag ? `:${tag}` : ""}`,
    async root() {
      const index = readJson<ImageIndex>(path.join(dir, "index.json"), "the OCI layout index");
      const named = (d: Descriptor) => d.annotations?.["org.opencontainers.image.ref.name"];
      const matches = tag ? index.manifests.filter((d) => named(d) === tag) : index.manifests;
      if (matches.length !== 1) {
        const names = index.manifests.map(named).filter(Boolean).join(", ") || "none";
        throw new CliError(tag ? `no image tagged ${tag} in ${dir} (tags: ${names})` : `${dir} holds ${matches.length} images; name one as oci:${dir}:<tag> (tags: ${names})`);
      }
      return read(matches[0]);
    },
    async manifest(d) {
      return read(d);
    },
    async blob(d) {
      return createReadStream(blobPath(d.digest));
    },
  };
}

interface ArchiveMember {
  offset: number;
  size: number;
}

/** The members of a tar file with their body offsets (headers read with ranged reads; bodies skipped). */
export function tarMembers(file: string): Map<string, ArchiveMember> {
  const fd = openSync(file, "r");
  const out = new Map<string, ArchiveMember>();
  const block = Buffer.alloc(512);
  const str = (b: Buffer, off: number, len: number) => b.subarray(off, off + len).toString("utf8").replace(/\0.*$/s, "");
  const num = (b: Buffer, off: number, len: number) => parseInt(str(b, off, len).trim() || "0", 8);
  try {
    let pos = 0;
    let longName: string | undefined;
    for (;;) {
      if (readSync(fd, block, 0, 512, pos) < 512) break;
      if (block.every((x) => x === 0)) break;
      const size = num(block, 124, 12);
      const type = String.fromCharCode(block[156] || 0x30);
      const body = pos + 512;
      const readBody = () => {
        const b = Buffer.alloc(size);
        readSync(fd, b, 0, size, body);
        return b;
      };
      if (type === "x") {
        const m = /\d+ path=([^\n]*)\n/.exec(readBody().toString("utf8"));
        if (m) longName = m[1];
      } else if (type === "L") {
        longName = readBody().toString("utf8").replace(/\0.*$/s, "");
      } else {
        const prefix = str(block, 345, 155);
        const name = longName ?? (prefix ? `${prefix}/${str(block, 0, 100)}` : str(block, 0, 100));
        longName = undefined;
        if (type === "0" || type === "\0") out.set(name.replace(/^\.\//, ""), { offset: body, size });
      }
      pos = body + Math.ceil(size / 512) * 512;
    }
  } finally {
    closeSync(fd);
  }
  return out;
}

function hashRange(file: string, m: ArchiveMember): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    if (m.size === 0) return resolve(`sha256:${h.digest("hex")}`);
    createReadStream(file, { start: m.offset, end: m.offset + m.size - 1 })
      .on("data", (d) => h.update(d))
      .on("end", () => resolve(`sha256:${h.digest("hex")}`))
      .on("error", reject);
  });
}

/** A `docker save` archive: manifest.json names the config and the layers (plain or gzip tars). */
function dockerArchiveSource(file: string): ImageSource {
  const blobs = new Map<string, ArchiveMember>();
  return {
    name: `docker-archive:${file}`,
    async root() {
      if (!statSync(file, { throwIfNoEntry: false })?.isFile()) throw new CliError(`docker-archive: ${file} is not a file`);
      const members = tarMembers(file);
      const entry = members.get("manifest.json");
      if (!entry) throw new CliError(`${file} is not a docker save archive (no manifest.json)`);
      const b = Buffer.alloc(entry.size);
      const fd = openSync(file, "r");
      readSync(fd, b, 0, entry.size, entry.offset);
      const list = JSON.parse(b.toString("utf8")) as { Config: string; Layers: string[] }[];
      if (list.length !== 1) throw new CliError(`${file} holds ${list.length} images; kiln push takes one (docker save one image)`);
      const member = (name: string) => {
        const m = members.get(name);
        if (!m) {
          closeSync(fd);
          throw new CliError(`${file}: manifest.json names ${name}, which the archive lacks`);
        }
        return m;
      };
      const cfgMember = member(list[0].Config);
      const config = Buffer.alloc(cfgMember.size);
      readSync(fd, config, 0, cfgMember.size, cfgMember.offset);
      const layers: Descriptor[] = [];
      for (const name of list[0].Layers) {
        const m = member(name);
        const magic = Buffer.alloc(2);
        readSync(fd, magic, 0, 2, m.offset);
        const digest = await hashRange(file, m);
        blobs.set(digest, m);
        const gzip = magic[0] === 0x1f && magic[1] === 0x8b;
        layers.push({ mediaType: gzip ? MediaType.OciLayerGzip : MediaType.OciLayer, digest, size: m.size });
      }
      closeSync(fd);
      const configDigest = `sha256:${createHash("sha256").update(config).digest("hex")}`;
      blobs.set(configDigest, cfgMember);
      const manifest: ImageManifest = {
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: { mediaType: MediaType.OciConfig, digest: configDigest, size: config.byteLength },
        layers,
      };
      return { mediaType: MediaType.OciManifest, bytes: new TextEncoder().encode(JSON.stringify(manifest)) };
    },
    async manifest() {
      throw new CliError(`${file}: a docker save archive holds no index`);
    },
    async blob(d) {
      const m = blobs.get(d.digest)!;
      if (m.size === 0) return Readable.from([]);
      return createReadStream(file, { start: m.offset, end: m.offset + m.size - 1 });
    },
  };
}

/** Another registry over HTTP (http for loopback hosts), anonymously or with --src-creds, via its token flow. */
function registrySource(src: Extract<SourceSpec, { kind: "docker" }>, creds?: string): ImageSource {
  const local = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$/.test(src.registry);
  const origin = `${local ? "http" : "https"}://${src.registry}`;
  const base = `/v2/${src.repository}`;
  let auth: string | undefined;
  const basic = creds ? `Basic ${Buffer.from(creds).toString("base64")}` : undefined;

  async function get(url: string, accept?: string): Promise<Response> {
    const headers = (): Record<string, string> => ({ ...(accept ? { accept } : {}), ...(auth ? { authorization: auth } : {}) });
    let res = await request(origin, url, { headers: headers() });
    if (res.status === 401) {
      const challenge = res.headers.get("www-authenticate") ?? "";
      await res.body?.cancel();
      if (/^basic/i.test(challenge) && basic) auth = basic;
      else {
        const params = Object.fromEntries([...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
        if (!params.realm) throw new CliError(`${src.registry} asks for credentials it does not say how to get (${challenge || "no WWW-Authenticate"})`);
        const t = new URL(params.realm);
        if (params.service) t.searchParams.set("service", params.service);
        t.searchParams.set("scope", params.scope ?? `repository:${src.repository}:pull`);
        const tr = await request(t.origin, `${t.pathname}${t.search}`, { headers: basic ? { authorization: basic } : {} });
        if (!tr.ok) throw await httpError(`getting a pull token from ${t.origin}`, tr, basic ? "check --src-creds" : "pass --src-creds user:password");
        const body = (await tr.json()) as { token?: string; access_token?: string };
        auth = `Bearer ${body.token ?? body.access_token}`;
      }
      res = await request(origin, url, { headers: headers() });
    }
    return res;
  }

  const hint = (status: number) =>
    status === 404 ? "check the name and tag" : status === 401 || status === 403 ? (creds ? "check --src-creds" : "pass --src-creds user:password") : undefined;

  async function manifest(reference: string): Promise<RawManifest> {
    const res = await get(`${base}/manifests/${reference}`, MANIFEST_ACCEPT);
    if (!res.ok) throw await httpError(`reading ${src.registry}/${src.repository}:${reference}`, res, hint(res.status));
    const bytes = new Uint8Array(await res.arrayBuffer());
    const mediaType = (res.headers.get("content-type") ?? "").split(";")[0].trim() || ((JSON.parse(new TextDecoder().decode(bytes)) as { mediaType?: string }).mediaType ?? MediaType.OciManifest);
    return { mediaType, bytes };
  }

  return {
    name: `docker://${src.registry}/${src.repository}:${src.reference}`,
    root: () => manifest(src.reference),
    manifest: (d) => manifest(d.digest),
    async blob(d) {
      const res = await get(`${base}/blobs/${d.digest}`);
      if (!res.ok || !res.body) throw await httpError(`reading blob ${d.digest} from ${src.registry}/${src.repository}`, res, hint(res.status));
      return Readable.fromWeb(res.body as import("node:stream/web").ReadableStream);
    },
  };
}

export interface PushOptions {
  source: string;
  target: string;
  server: string;
  token?: string;
  srcCreds?: string;
  chunkSize?: number;
  log?: (line: string) => void;
}

/** `repository:tag` in kiln (a host prefix naming the server is dropped). */
export function parseTarget(spec: string, server: string): { repository: string; tag: string } {
  const { host, repository, tag } = splitReference(spec);
  if (host !== undefined && host !== new URL(server).host) throw new CliError(`kiln push copies into kiln (${new URL(server).host}); ${spec} names another registry`);
  if (!isRepositoryName(repository)) throw new CliError(`invalid repository name ${repository}`);
  if (!isTag(tag)) throw new CliError(`invalid tag ${tag} in ${spec}`);
  return { repository, tag };
}

/** Copies the image; returns the digest of what was tagged. */
export async function runPush(opts: PushOptions): Promise<string> {
  const spec = parseSource(opts.source);
  const source = spec.kind === "oci" ? ociSource(spec.dir, spec.tag) : spec.kind === "docker-archive" ? dockerArchiveSource(spec.file) : registrySource(spec, opts.srcCreds);
  const { repository, tag } = parseTarget(opts.target, opts.server);
  const auth = authHeaders(opts.token);
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const done = new Set<string>();

  async function copyBlob(d: Descriptor): Promise<void> {
    if (done.has(d.digest)) return;
    done.add(d.digest);
    try {
      const r = await pushBlob(opts.server, repository, auth, d.digest, d.size, () => source.blob(d), opts.chunkSize ?? UPLOAD_CHUNK);
      log(`${r === "exists" ? "Blob exists  " : "Copied blob  "} ${d.digest} (${d.size} bytes)`);
    } catch (e) {
      if (e instanceof CliError) throw e;
      throw new CliError(`pushing blob ${d.digest} to ${repository} failed: ${(e as Error).message}`);
    }
  }

  async function putManifest(m: RawManifest, reference: string): Promise<string> {
    let res!: Response;
    // A PUT of the same manifest is idempotent: a 503 (the Worker restarted mid-request) is tried again.
    for (let attempt = 0; attempt < 4; attempt++) {
      if (attempt) await new Promise((r) => setTimeout(r, 1000 * attempt));
      res = await request(opts.server, `/v2/${repository}/manifests/${reference}`, { method: "PUT", headers: { ...auth, "content-type": m.mediaType }, body: m.bytes as unknown as BodyInit });
      if (res.status !== 503) break;
      await res.body?.cancel();
    }
    if (res.status !== 201) throw await httpError(`pushing the manifest of ${repository}:${reference}`, res);
    return res.headers.get("docker-content-digest") ?? `sha256:${createHash("sha256").update(m.bytes).digest("hex")}`;
  }

  async function copyImage(m: RawManifest): Promise<void> {
    const manifest = JSON.parse(new TextDecoder().decode(m.bytes)) as ImageManifest;
    await copyBlob(manifest.config);
    for (const l of manifest.layers) await copyBlob(l);
  }

  const root = await source.root();
  if (isIndex(root.mediaType)) {
    const index = JSON.parse(new TextDecoder().decode(root.bytes)) as ImageIndex;
    for (const d of index.manifests) {
      const child = await source.manifest(d);
      await copyImage(child);
      await putManifest(child, d.digest);
    }
  } else {
    await copyImage(root);
  }
  const digest = await putManifest(root, tag);
  log(`Copied ${source.name} to ${repository}:${tag} (${digest})`);
  return digest;
}
