// A small OCI Distribution client for e2e tests and benches: the docker token flow (or Basic, or
// none), blob uploads (monolithic, chunked, streamed without Content-Length), pulls and manifests.
// It speaks to kiln and to docker-registry alike.

export interface Credentials { username: string; password: string }

/** The parameters of a `WWW-Authenticate` challenge, e.g. `Bearer realm="…",service="…"`. */
export function parseChallenge(header: string | null): { scheme: string; params: Record<string, string> } | null {
  if (!header) return null;
  const m = /^(\w+)\s*(.*)$/.exec(header.trim());
  if (!m) return null;
  const params: Record<string, string> = {};
  for (const p of m[2].matchAll(/(\w+)=(?:"([^"]*)"|([^,\s]*))/g)) params[p[1].toLowerCase()] = p[2] ?? p[3];
  return { scheme: m[1].toLowerCase(), params };
}

type Init = RequestInit & { duplex?: "half" };

export class RegistryClient {
  private readonly tokens = new Map<string, { value: string | null; until: number }>();
  constructor(readonly url: string, readonly creds?: Credentials) {}

  private basic(): string | undefined {
    return this.creds ? `Basic ${Buffer.from(`${this.creds.username}:${this.creds.password}`).toString("base64")}` : undefined;
  }

  /** The Authorization header for `scope` (e.g. `repository:a/b:pull,push`), following the registry's challenge. */
  async authorization(scope: string): Promise<string | undefined> {
    const cached = this.tokens.get(scope);
    if (cached && cached.until > Date.now()) return cached.value ?? undefined;
    let until = Date.now() + 3600_000;
    const ping = await fetch(`${this.url}/v2/`, { headers: this.basic() ? { authorization: this.basic()! } : {} });
    await ping.body?.cancel();
    let value: string | null = null;
    if (ping.status === 401) {
      const ch = parseChallenge(ping.headers.get("www-authenticate"));
      if (ch?.scheme === "bearer" && ch.params.realm) {
        const u = new URL(ch.params.realm);
        if (ch.params.service) u.searchParams.set("service", ch.params.service);
        u.searchParams.set("scope", scope);
        const res = await fetch(u, { headers: this.basic() ? { authorization: this.basic()! } : {} });
        if (res.ok) {
          const body = (await res.json()) as { token?: string; access_token?: string; expires_in?: number };
          value = `Bearer ${body.token ?? body.access_token}`;
          // refresh well before expiry (long benches outlive a short-lived token)
          until = Date.now() + Math.max(10, (body.expires_in ?? 60) - 30) * 1000;
        } else {
          await res.body?.cancel();
        }
      } else if (ch?.scheme === "basic") {
        value = this.basic() ?? null;
      }
    } else if (this.basic()) {
      // /v2/ answered with our Basic credentials (or needs none): keep sending them.
      value = this.basic()!;
    }
    this.tokens.set(scope, { value, until });
    return value ?? undefined;
  }

  /** A request about repository `repo`; `path` is relative to `/v2/<repo>/` or absolute (from a Location). */
  async request(repo: string, method: string, path: string, init: Init = {}, actions = "pull,push"): Promise<Response> {
    const target = /^https?:/.test(path) ? path : path.startsWith("/") ? `${this.url}${path}` : `${this.url}/v2/${repo}/${path}`;
    const headers = new Headers(init.headers);
    const auth = await this.authorization(`repository:${repo}:${actions}`);
    if (auth && !headers.has("authorization")) headers.set("authorization", auth);
    const streamed = init.body instanceof ReadableStream;
    return await fetch(target, { ...init, method, headers, ...(streamed ? { duplex: "half" } : {}) } as RequestInit);
  }

  async startUpload(repo: string): Promise<string> {
    const res = await this.request(repo, "POST", "blobs/uploads/");
    await expectStatus(res, 202, `POST ${repo}/blobs/uploads/`);
    return this.location(res);
  }

  location(res: Response): string {
    const loc = res.headers.get("location");
    if (!loc) throw new Error(`${res.status} without Location`);
    return new URL(loc, this.url).toString();
  }

  /** POST, then one PUT carrying the whole blob. */
  async pushMonolithic(repo: string, body: BodyInit | Uint8Array | ReadableStream<Uint8Array>, digest: string, size?: number): Promise<Response> {
    const loc = await this.startUpload(repo);
    const headers: Record<string, string> = { "content-type": "application/octet-stream" };
    if (size !== undefined && !(body instanceof ReadableStream)) headers["content-length"] = String(size);
    const res = await this.request(repo, "PUT", withDigest(loc, digest), { body: body as BodyInit, headers });
    await expectStatus(res, 201, `PUT ${repo} blob`);
    return res;
  }

  /**
   * POST, one PATCH per chunk, then an empty PUT. Each chunk is `[start, end)` of the blob; with
   * `streamed`, PATCH bodies are ReadableStreams sent without Content-Length (chunked encoding).
   */
  async pushChunked(repo: string, chunks: Array<{ start: number; end: number; body: () => ReadableStream<Uint8Array> | Uint8Array }>, digest: string, opts: { streamed?: boolean; location?: string } = {}): Promise<Response> {
    let loc = opts.location ?? (await this.startUpload(repo));
    for (const c of chunks) {
      loc = await this.patch(repo, loc, c.start, c.end, c.body(), opts.streamed);
    }
    const res = await this.request(repo, "PUT", withDigest(loc, digest), { body: "" });
    await expectStatus(res, 201, `PUT ${repo} blob (close)`);
    return res;
  }

  /** One PATCH of bytes `[start, end)`; returns the next Location. */
  async patch(repo: string, loc: string, start: number, end: number, body: ReadableStream<Uint8Array> | Uint8Array, streamed = body instanceof ReadableStream): Promise<string> {
    const headers: Record<string, string> = { "content-type": "application/octet-stream" };
    if (!streamed) {
      headers["content-length"] = String(end - start);
      headers["content-range"] = `${start}-${end - 1}`;
    }
    const res = await this.request(repo, "PATCH", loc, { body: body as BodyInit, headers });
    await expectStatus(res, 202, `PATCH ${repo} ${start}-${end - 1}`);
    const range = res.headers.get("range");
    if (range && range !== `0-${end - 1}`) throw new Error(`PATCH ${start}-${end - 1}: server reports Range ${range}`);
    return this.location(res);
  }

  async getBlob(repo: string, digest: string, headers: Record<string, string> = {}): Promise<Response> {
    return await this.request(repo, "GET", `blobs/${digest}`, { headers }, "pull");
  }

  async putManifest(repo: string, ref: string, body: string | Uint8Array, mediaType: string): Promise<Response> {
    return await this.request(repo, "PUT", `manifests/${ref}`, { body: body as BodyInit, headers: { "content-type": mediaType } });
  }

  async getManifest(repo: string, ref: string, accept = ACCEPT_MANIFESTS): Promise<Response> {
    return await this.request(repo, "GET", `manifests/${ref}`, { headers: { accept } }, "pull");
  }

  async tags(repo: string): Promise<string[]> {
    const res = await this.request(repo, "GET", "tags/list", {}, "pull");
    if (res.status === 404) { await res.body?.cancel(); return []; }
    await expectStatus(res, 200, `GET ${repo}/tags/list`);
    return ((await res.json()) as { tags?: string[] | null }).tags ?? [];
  }
}

export const ACCEPT_MANIFESTS = [
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
].join(", ");

export function withDigest(location: string, digest: string): string {
  const u = new URL(location);
  u.searchParams.set("digest", digest);
  return u.toString();
}

export async function expectStatus(res: Response, status: number, what: string): Promise<void> {
  if (res.status !== status) {
    const text = await res.text().catch(() => "");
    throw new Error(`${what}: expected ${status}, got ${res.status} ${text.slice(0, 500)}`);
  }
}

/** Pushes a small blob (config, tiny layer) with POST + PUT. */
export async function pushSmallBlob(client: RegistryClient, repo: string, data: Uint8Array | string): Promise<string> {
  const { sha256 } = await import("./data");
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const digest = sha256(bytes);
  const res = await client.pushMonolithic(repo, bytes, digest, bytes.byteLength);
  await res.body?.cancel();
  return digest;
}
