/**
 * A client for other registries (OCI Distribution / Docker Registry v2): the Bearer token challenge
 * with tokens cached until they expire, Basic auth, content negotiation, mirrors, clear errors.
 */

import { OutboundError, outboundPolicy, safeFetch, type OutboundEnv, type OutboundPolicy } from "../http/outbound";

export const MANIFEST_ACCEPT = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
].join(", ");

export type UpstreamErrorKind = "not-found" | "unauthorized" | "rate-limited" | "unreachable" | "bad-response" | "refused";

export class UpstreamError extends Error {
  constructor(readonly kind: UpstreamErrorKind, message: string, readonly status?: number) {
    super(message);
    this.name = "UpstreamError";
  }
}

export interface UpstreamEndpoint {
  /** Host as it appears in references (docker.io, ghcr.io, 127.0.0.1:5000). */
  host: string;
  /** Base URL of the registry API, e.g. https://registry-1.docker.io. */
  endpoint: string;
  mirrors?: string[];
  username?: string;
  password?: string;
  /**
   * Set for a host a build named that has no admin-configured or built-in entry (the endpoint is
   * `https://<host>` as the user wrote it): every request, the token realm the registry points to and
   * every redirect hop included, is checked by src/http/outbound.ts under these settings. Entries an
   * admin configured (endpoint and mirrors) are trusted and not checked.
   */
  outbound?: OutboundEnv;
}

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

interface CachedToken {
  token: string;
  expiresAt: number;
}

/** Tokens by endpoint, user and scope; they live as long as the isolate or until they expire. */
const tokenCache = new Map<string, CachedToken>();

export function clearTokenCache(): void {
  tokenCache.clear();
}

/** Parses `Bearer realm="…",service="…",scope="…"` (and `Basic realm=…`). */
export function parseChallenge(header: string): { scheme: string; params: Record<string, string> } | null {
  const m = /^\s*(\w+)\s*(.*)$/s.exec(header);
  if (!m) return null;
  const params: Record<string, string> = {};
  const re = /([a-zA-Z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m[2]))) params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, "$1") : p[3];
  return { scheme: m[1].toLowerCase(), params };
}

function basic(user: string, pass: string): string {
  const bytes = new TextEncoder().encode(`${user}:${pass}`);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return `Basic ${btoa(bin)}`;
}

/** How long the plain-HTTP probe of a failed https connection may take (it only explains a failure). */
const PROBE_TIMEOUT_MS = 10_000;

export class RegistryClient {
  private readonly fetchImpl: FetchLike;

  constructor(readonly upstream: UpstreamEndpoint, fetchImpl?: FetchLike) {
    const transport: FetchLike = fetchImpl ?? ((input, init) => fetch(input, init));
    const outbound = upstream.outbound;
    this.fetchImpl = outbound ? this.checkedFetch(outbound, transport) : transport;
  }

  /** Requests to a user-named host: refused for internal addresses (UpstreamError "refused"), redirects checked. */
  private checkedFetch(outbound: OutboundEnv, transport: FetchLike): FetchLike {
    const host = this.upstream.host;
    const hint = `; an admin can also configure an upstream entry for ${host} (PUT /v1/upstreams/${host})`;
    let policy: OutboundPolicy | undefined;
    return async (input, init) => {
      try {
        policy ??= outboundPolicy(outbound);
        const origin = new URL(input).origin;
        const label = origin === `https://${host}` ? host : `${host}: ${origin}`;
        return await safeFetch(input, init, { policy, label, fetch: transport, timeoutMs: 30 * 60_000 });
      } catch (err) {
        if (err instanceof OutboundError) throw new UpstreamError("refused", err.kind === "refused" ? `${err.message}${hint}` : err.message);
        if (!policy) throw new UpstreamError("refused", `${host}: ${(err as Error).message}`);
        throw err;
      }
    };
  }

  /**
   * Why a request to `url` failed, in words a person can act on. workerd hides the cause of a failed
   * connection ("internal error; reference = …" for a DNS failure or a TLS handshake with a server that
   * speaks plain HTTP; "Network connection lost" for a refused or reset connection), so an https
   * failure is followed by one plain-HTTP probe of the same host and port to tell them apart.
   */
  private async diagnose(url: string, err: unknown): Promise<string> {
    const message = err instanceof Error ? err.message : String(err);
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return `${url} unreachable: ${message}`;
    }
    const where = u.port ? `${u.hostname}:${u.port}` : u.hostname;
    const endpointHint = `PUT /v1/upstreams/${this.upstream.host}`;
    if (/connection lost|connection refused|reset/i.test(message)) {
      return `${u.origin} unreachable: nothing accepted the connection at ${where} (is the registry running, and is the port right?); set its endpoint with ${endpointHint}`;
    }
    if (u.protocol === "https:" && /internal error/i.test(message)) {
      const plain = new URL(url);
      plain.protocol = "http:";
      if (!u.port) plain.port = "443";
      try {
        const probe = await this.fetchImpl(plain.toString(), { method: "GET", redirect: "manual", signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
        await probe.body?.cancel();
        // a TLS server answers a plain request with 400 ("plain HTTP request sent to HTTPS port")
        if (probe.status === 400) {
          return `${u.origin} unreachable: the TLS handshake with ${where} failed (an untrusted or invalid certificate?); check the endpoint with ${endpointHint}`;
        }
        return `${u.origin} unreachable: ${where} answers plain HTTP, not TLS; if that registry is meant to be used over HTTP, set its endpoint to http://${where} with ${endpointHint}`;
      } catch (probeErr) {
        if (probeErr instanceof UpstreamError && probeErr.kind === "refused") throw probeErr;
        const p = probeErr instanceof Error ? probeErr.message : String(probeErr);
        if (/connection lost|connection refused|reset/i.test(p)) {
          return `${u.origin} unreachable: the TLS connection to ${where} failed (bad certificate or not a TLS server); check the endpoint with ${endpointHint}`;
        }
        return `${u.origin} unreachable: the name ${u.hostname} could not be resolved, or no connection could be made (check the registry host in the image reference, or the network of the kiln server)`;
      }
    }
    if (/internal error/i.test(message)) {
      return `${u.origin} unreachable: the name ${u.hostname} could not be resolved, or no connection could be made (check the registry host in the image reference, or the network of the kiln server)`;
    }
    return `${u.origin} unreachable: ${message}`;
  }

  private endpoints(): string[] {
    return [...(this.upstream.mirrors ?? []), this.upstream.endpoint].map((e) => e.replace(/\/+$/, ""));
  }

  private cacheKey(endpoint: string, scope: string): string {
    return `${endpoint}|${this.upstream.username ?? ""}|${this.upstream.password ?? ""}|${scope}`;
  }

  private async fetchToken(endpoint: string, challenge: Record<string, string>, scope: string): Promise<string> {
    const realm = challenge.realm;
    if (!realm) throw new UpstreamError("bad-response", `${this.upstream.host}: Bearer challenge without realm`);
    const url = new URL(realm);
    if (challenge.service) url.searchParams.set("service", challenge.service);
    url.searchParams.set("scope", challenge.scope ?? scope);
    const headers: Record<string, string> = {};
    if (this.upstream.username !== undefined && this.upstream.password !== undefined) {
      headers.authorization = basic(this.upstream.username, this.upstream.password);
    }
    let res: Response;
    try {
      res = await this.fetchImpl(url.toString(), { headers });
    } catch (err) {
      if (err instanceof UpstreamError) throw err;
      throw new UpstreamError("unreachable", `${this.upstream.host}: token service: ${await this.diagnose(url.toString(), err)}`);
    }
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel();
      throw new UpstreamError("unauthorized", `${this.upstream.host}: the token service refused the credentials${this.upstream.username ? ` of ${this.upstream.username}` : " (no credentials configured)"}`, res.status);
    }
    if (res.status === 429) throw new UpstreamError("rate-limited", `${this.upstream.host}: rate limited by the token service`, 429);
    if (!res.ok) throw new UpstreamError("bad-response", `${this.upstream.host}: token service answered ${res.status}`, res.status);
    const body = (await res.json()) as { token?: string; access_token?: string; expires_in?: number };
    const token = body.token ?? body.access_token;
    if (!token) throw new UpstreamError("bad-response", `${this.upstream.host}: token service returned no token`);
    const ttl = Math.max(30, Number(body.expires_in ?? 60));
    tokenCache.set(this.cacheKey(endpoint, scope), { token, expiresAt: Date.now() + (ttl - 10) * 1000 });
    return token;
  }

  /**
   * GET/HEAD `path` (below /v2/) for repository `repository` with pull scope, answering the auth
   * challenge once. Mirrors are tried first; a mirror failure falls through to the next endpoint.
   */
  async request(repository: string, path: string, init: { method?: string; headers?: Record<string, string> } = {}): Promise<Response> {
    const scope = `repository:${repository}:pull`;
    let lastError: unknown;
    const endpoints = this.endpoints();
    for (let i = 0; i < endpoints.length; i++) {
      const endpoint = endpoints[i];
      const isLast = i === endpoints.length - 1;
      try {
        const res = await this.requestAt(endpoint, scope, path, init);
        if (!isLast && !res.ok) {
          await res.body?.cancel();
          lastError = new UpstreamError("bad-response", `mirror ${endpoint} answered ${res.status}`, res.status);
          continue;
        }
        return res;
      } catch (err) {
        lastError = err;
        if (isLast) throw err;
      }
    }
    throw lastError;
  }

  private async requestAt(endpoint: string, scope: string, path: string, init: { method?: string; headers?: Record<string, string> }): Promise<Response> {
    const url = `${endpoint}/v2/${path}`;
    const send = async (auth?: string) => {
      try {
        return await this.fetchImpl(url, { method: init.method ?? "GET", headers: { ...init.headers, ...(auth ? { authorization: auth } : {}) }, redirect: "follow" });
      } catch (err) {
        if (err instanceof UpstreamError) throw err;
        throw new UpstreamError("unreachable", `${this.upstream.host}: ${await this.diagnose(url, err)}`);
      }
    };
    const cached = tokenCache.get(this.cacheKey(endpoint, scope));
    // A cached token goes along at once; otherwise the registry's challenge says how to authenticate.
    let res = await send(cached && cached.expiresAt > Date.now() ? `Bearer ${cached.token}` : undefined);
    if (res.status === 401) {
      const challenge = parseChallenge(res.headers.get("www-authenticate") ?? "");
      await res.body?.cancel();
      if (challenge?.scheme === "bearer") {
        const token = await this.fetchToken(endpoint, challenge.params, scope);
        res = await send(`Bearer ${token}`);
      } else if (challenge?.scheme === "basic" && this.upstream.username !== undefined && this.upstream.password !== undefined) {
        res = await send(basic(this.upstream.username, this.upstream.password));
      } else if (challenge?.scheme === "basic") {
        throw new UpstreamError("unauthorized", `${this.upstream.host}: credentials required (configure them with PUT /v1/upstreams/${this.upstream.host})`, 401);
      }
      if (res.status === 401 || res.status === 403) {
        await res.body?.cancel();
        throw new UpstreamError("unauthorized", `${this.upstream.host}: access to ${scope.split(":")[1]} denied${this.upstream.username ? ` for ${this.upstream.username}` : " (no credentials configured)"}`, res.status);
      }
    }
    if (res.status === 429) {
      await res.body?.cancel();
      throw new UpstreamError("rate-limited", `${this.upstream.host}: rate limited (429), retry later or configure credentials or a mirror`, 429);
    }
    return res;
  }

  /** Fetches a manifest by tag or digest: bytes, media type and the digest the registry reports. */
  async getManifest(repository: string, reference: string): Promise<{ bytes: Uint8Array; mediaType: string; digest?: string }> {
    const res = await this.request(repository, `${repository}/manifests/${reference}`, { headers: { accept: MANIFEST_ACCEPT } });
    if (res.status === 404) {
      await res.body?.cancel();
      throw new UpstreamError("not-found", `${this.upstream.host}/${repository}:${reference}: not found`, 404);
    }
    if (!res.ok) {
      const text = await res.text().catch(() => "");
      throw new UpstreamError("bad-response", `${this.upstream.host}/${repository}:${reference}: registry answered ${res.status} ${text.slice(0, 200)}`, res.status);
    }
    const length = Number(res.headers.get("content-length") ?? "0");
    if (length > 8 * 1024 * 1024) throw new UpstreamError("bad-response", `${this.upstream.host}/${repository}:${reference}: manifest too large (${length} bytes)`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    const mediaType = (res.headers.get("content-type") ?? "").split(";")[0].trim();
    return { bytes, mediaType, digest: res.headers.get("docker-content-digest") ?? undefined };
  }

  /** Resolves a tag to the digest the registry serves, without downloading the manifest body. */
  async headManifest(repository: string, reference: string): Promise<{ digest?: string; mediaType: string; size: number } | null> {
    const res = await this.request(repository, `${repository}/manifests/${reference}`, { method: "HEAD", headers: { accept: MANIFEST_ACCEPT } });
    await res.body?.cancel();
    if (res.status === 404) return null;
    if (!res.ok) throw new UpstreamError("bad-response", `${this.upstream.host}/${repository}:${reference}: registry answered ${res.status}`, res.status);
    return {
      digest: res.headers.get("docker-content-digest") ?? undefined,
      mediaType: (res.headers.get("content-type") ?? "").split(";")[0].trim(),
      size: Number(res.headers.get("content-length") ?? "0"),
    };
  }

  /** Streams a blob. The caller verifies the digest while storing it. */
  async getBlob(repository: string, digest: string): Promise<{ body: ReadableStream<Uint8Array>; size?: number }> {
    const res = await this.request(repository, `${repository}/blobs/${digest}`);
    if (res.status === 404) {
      await res.body?.cancel();
      throw new UpstreamError("not-found", `${this.upstream.host}/${repository}: blob ${digest} not found`, 404);
    }
    if (!res.ok || !res.body) throw new UpstreamError("bad-response", `${this.upstream.host}/${repository}: blob ${digest}: registry answered ${res.status}`, res.status);
    const len = res.headers.get("content-length");
    return { body: res.body, size: len ? Number(len) : undefined };
  }
}
