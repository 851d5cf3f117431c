/**
 * Outbound fetches of URLs a user chose: `ADD <url>`, the archive and status URLs a webhook builds,
 * and registries named in `FROM <host>/…` that have no admin-configured upstream entry.
 *
 * `checkOutboundUrl` allows http(s) URLs of public hosts only. It looks at `URL.hostname` after WHATWG
 * parsing, so the non-canonical IPv4 forms the parser normalizes (`2130706433`, `0x7f.1`,
 * `0177.0.0.1`, `127.1`) are checked as the address they are. Refused:
 * - IPv4 loopback 127/8, private 10/8 172.16/12 192.168/16, link-local 169.254/16 (cloud metadata
 *   169.254.169.254), CGNAT 100.64/10, unspecified 0/8, multicast 224/4, reserved 240/4, broadcast,
 *   documentation and benchmarking ranges;
 * - IPv6 ::, ::1, unique local fc00::/7, link-local fe80::/10, site-local fec0::/10, multicast
 *   ff00::/8, and every form that embeds an IPv4 address (::ffff:a.b.c.d mapped, ::a.b.c.d compatible,
 *   64:ff9b::/96 NAT64, 2002::/16 6to4) when the embedded address is refused;
 * - `localhost` and `*.localhost`, local-network suffixes (`.local`, `.internal`, `.localdomain`,
 *   `.home.arpa`), and single-label names without a dot (`http://gitea/`): those resolve only through
 *   a local resolver or search domain, never publicly, so they always name an internal host;
 * - kiln's own hosts (the origin the build was started with, and KILN_HOSTS), even when allow-listed:
 *   a build must not call the API it runs in. When kiln's own host is a loopback address or
 *   `localhost`, every loopback spelling of that port counts as kiln.
 *
 * The operator setting KILN_OUTBOUND_ALLOW (comma-separated `host`, `host:port`, `[v6]:port`,
 * `*.suffix`, or CIDR `10.0.0.0/8` / `fd00::/8`) lets named internal hosts through.
 *
 * What cannot be checked here: a public DNS name that resolves to a private address. A Worker has no
 * resolver to ask (and the answer could change between the check and the connect). In production,
 * Cloudflare's `fetch` cannot reach private networks or loopback at all, so that stands; under
 * `wrangler dev` (local runs, CI) names go to the machine's resolver, and only the address and name
 * checks above and the allow-list stand. Run kiln locally only where that is acceptable.
 *
 * `safeFetch` fetches with `redirect: "manual"`, checks every redirect hop again (at most 5), drops
 * credentials on a hop to another origin, and puts deadlines on the response headers of each hop and
 * on the whole exchange.
 */

/** The settings this module reads (a subset of Env, so it has no dependency on the Worker's bindings). */
export interface OutboundEnv {
  /** Comma-separated internal hosts user-chosen URLs may reach (see the module comment). */
  KILN_OUTBOUND_ALLOW?: string;
  /** Extra host names kiln answers to (`host[:port]`, comma-separated). */
  KILN_HOSTS?: string;
}

export const OUTBOUND_HINT = "kiln fetches only public addresses; an operator can allow internal hosts with KILN_OUTBOUND_ALLOW";

export type OutboundErrorKind = "refused" | "redirects" | "timeout";

/** A refused URL or redirect, too many redirects, or a missed deadline; the message says which and why. */
export class OutboundError extends Error {
  constructor(readonly kind: OutboundErrorKind, message: string) {
    super(message);
    this.name = "OutboundError";
  }
}

type HostRule =
  | { kind: "host"; hostname: string; port?: number }
  | { kind: "suffix"; suffix: string; port?: number }
  | { kind: "cidr"; v6: boolean; net: bigint; prefix: number };

export interface OutboundPolicy {
  /** From KILN_OUTBOUND_ALLOW. */
  allow: HostRule[];
  /** kiln itself: never fetched, whatever the allow-list says. */
  own: HostRule[];
}

// ---------------------------------------------------------------------------------------------------
// IP addresses

/** Dotted-decimal IPv4 (as URL parsing canonicalizes it) → 32-bit value, else null. */
export function parseIPv4(s: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  let v = 0;
  for (let i = 1; i <= 4; i++) {
    const n = Number(m[i]);
    if (n > 255 || (m[i].length > 1 && m[i][0] === "0")) return null;
    v = v * 256 + n;
  }
  return v;
}

/** IPv6 text (no brackets, `::` compression and a trailing dotted IPv4 allowed) → 8 16-bit words, else null. */
export function parseIPv6(s: string): number[] | null {
  if (!/^[0-9a-fA-F:.]+$/.test(s) || s.length > 45) return null;
  if (s.includes(".")) {
    // a trailing dotted IPv4 stands for the last two words
    const lastColon = s.lastIndexOf(":");
    const v4 = parseIPv4(s.slice(lastColon + 1));
    if (v4 === null) return null;
    s = `${s.slice(0, lastColon + 1)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const words = (part: string): number[] | null => {
    if (part === "") return [];
    const out: number[] = [];
    for (const w of part.split(":")) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(w)) return null;
      out.push(parseInt(w, 16));
    }
    return out;
  };
  const head = words(halves[0]);
  const rest = halves.length === 2 ? words(halves[1]) : [];
  if (!head || !rest) return null;
  const given = head.length + rest.length;
  if (halves.length === 1) return given === 8 ? head : null;
  if (given > 7) return null;
  return [...head, ...new Array<number>(8 - given).fill(0), ...rest];
}

function v4Text(v: number): string {
  return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join(".");
}

function v6Big(w: number[]): bigint {
  let b = 0n;
  for (const x of w) b = (b << 16n) | BigInt(x);
  return b;
}

const V4_RANGES: Array<[string, number, string]> = [
  ["255.255.255.255", 32, "a broadcast address"],
  ["169.254.169.254", 32, "a link-local address (the cloud metadata service)"],
  ["0.0.0.0", 8, "an unspecified address (0.0.0.0/8)"],
  ["10.0.0.0", 8, "a private address (10.0.0.0/8)"],
  ["100.64.0.0", 10, "a shared CGNAT address (100.64.0.0/10)"],
  ["127.0.0.0", 8, "a loopback address"],
  ["169.254.0.0", 16, "a link-local address (169.254.0.0/16)"],
  ["172.16.0.0", 12, "a private address (172.16.0.0/12)"],
  ["192.0.0.0", 24, "a reserved address (192.0.0.0/24)"],
  ["192.0.2.0", 24, "a reserved documentation address"],
  ["192.88.99.0", 24, "a reserved address (6to4 relay)"],
  ["192.168.0.0", 16, "a private address (192.168.0.0/16)"],
  ["198.18.0.0", 15, "a reserved benchmarking address"],
  ["198.51.100.0", 24, "a reserved documentation address"],
  ["203.0.113.0", 24, "a reserved documentation address"],
  ["224.0.0.0", 4, "a multicast address"],
  ["240.0.0.0", 4, "a reserved address (240.0.0.0/4)"],
];

function inV4(v: number, net: number, prefix: number): boolean {
  if (prefix === 0) return true;
  const shift = 32 - prefix;
  return Math.floor(v / 2 ** shift) === Math.floor(net / 2 ** shift);
}

/** Why an IPv4 address is not public ("a loopback address"), or null when it is. */
export function classifyIPv4(v: number): string | null {
  for (const [net, prefix, what] of V4_RANGES) if (inV4(v, parseIPv4(net)!, prefix)) return what;
  return null;
}

function inV6(b: bigint, net: string, prefix: number): boolean {
  const shift = BigInt(128 - prefix);
  return b >> shift === v6Big(parseIPv6(net)!) >> shift;
}

/** Why an IPv6 address is not public, or null when it is. Embedded IPv4 addresses are checked as IPv4. */
export function classifyIPv6(w: number[]): string | null {
  const b = v6Big(w);
  if (b === 0n) return "an unspecified address (::)";
  if (b === 1n) return "a loopback address";
  const embedded = (v4: number, form: string): string | null => {
    const why = classifyIPv4(v4);
    return why ? `${form} of ${v4Text(v4)}, ${why}` : null;
  };
  const low32 = Number(b & 0xffffffffn);
  if (inV6(b, "::ffff:0:0", 96)) return embedded(low32, "an IPv4-mapped address");
  if (inV6(b, "::ffff:0:0:0", 96)) return embedded(low32, "an IPv4-translated address");
  if (inV6(b, "::", 96)) return embedded(low32, "an IPv4-compatible address") ?? "a reserved address (deprecated IPv4-compatible ::/96)";
  if (inV6(b, "64:ff9b::", 96)) return embedded(low32, "a NAT64 address");
  if (inV6(b, "64:ff9b:1::", 48)) return "a private address (local-use NAT64 64:ff9b:1::/48)";
  if (inV6(b, "2002::", 16)) return embedded(Number((b >> 80n) & 0xffffffffn), "a 6to4 address");
  if (inV6(b, "100::", 64)) return "a reserved address (discard-only 100::/64)";
  if (inV6(b, "2001:db8::", 32)) return "a reserved documentation address";
  if (inV6(b, "fc00::", 7)) return "a private address (unique local fc00::/7)";
  if (inV6(b, "fe80::", 10)) return "a link-local address (fe80::/10)";
  if (inV6(b, "fec0::", 10)) return "a private address (site-local fec0::/10)";
  if (inV6(b, "ff00::", 8)) return "a multicast address";
  return null;
}

// ---------------------------------------------------------------------------------------------------
// Host names

type Host = { v4: number } | { v6: number[] } | { name: string };

/** The `URL.hostname` (canonical after WHATWG parsing) as an address or a lowercase name without a trailing dot. */
function hostOf(hostname: string): Host {
  const h = hostname.toLowerCase();
  if (h.startsWith("[") && h.endsWith("]")) {
    const w = parseIPv6(h.slice(1, -1));
    if (w) return { v6: w };
  }
  const v4 = parseIPv4(h);
  if (v4 !== null) return { v4 };
  return { name: h.replace(/\.$/, "") };
}

const LOCAL_SUFFIXES = [".local", ".internal", ".localdomain", ".home.arpa"];

/** Why a host is not public, or null when it is (for names: when it may be). */
function classifyHost(host: Host): string | null {
  if ("v4" in host) return classifyIPv4(host.v4);
  if ("v6" in host) return classifyIPv6(host.v6);
  const n = host.name;
  if (n === "localhost" || n.endsWith(".localhost")) return "a local name (localhost)";
  for (const s of LOCAL_SUFFIXES) if (n.endsWith(s) || n === s.slice(1)) return `a local-network name (*${s})`;
  if (!n.includes(".")) return "a single-label name, which only a local resolver answers";
  return null;
}

/** Whether a host is this machine (loopback, unspecified or a localhost name). */
function isLocalMachine(host: Host): boolean {
  if ("name" in host) return host.name === "localhost" || host.name.endsWith(".localhost");
  const why = classifyHost(host);
  return !!why && (why.includes("loopback") || why.includes("unspecified"));
}

function effectivePort(url: URL): number {
  return url.port ? Number(url.port) : url.protocol === "https:" ? 443 : 80;
}

function displayHost(host: Host): string {
  if ("v4" in host) return v4Text(host.v4);
  if ("v6" in host) return `[${host.v6.map((x) => x.toString(16)).join(":")}]`;
  return host.name;
}

// ---------------------------------------------------------------------------------------------------
// Policy

/** Parses one `host`, `host:port`, `[v6]:port`, `*.suffix[:port]` or CIDR entry; throws on nonsense. */
function parseRule(entry: string, setting: string): HostRule {
  const cidr = /^([0-9a-fA-F:.]+)\/(\d{1,3})$/.exec(entry);
  if (cidr) {
    const prefix = Number(cidr[2]);
    const v4 = parseIPv4(cidr[1]);
    if (v4 !== null && prefix <= 32) return { kind: "cidr", v6: false, net: BigInt(v4), prefix };
    const v6 = parseIPv6(cidr[1]);
    if (v6 && prefix <= 128) return { kind: "cidr", v6: true, net: v6Big(v6), prefix };
    throw new Error(`${setting}: invalid CIDR ${entry}`);
  }
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\[\]\/\s]+)(?::(\d{1,5}))?$/.exec(entry);
  if (!m) throw new Error(`${setting}: invalid entry ${JSON.stringify(entry)} (expected host, host:port, *.suffix or a CIDR)`);
  const port = m[2] ? Number(m[2]) : undefined;
  if (port !== undefined && (port < 1 || port > 65535)) throw new Error(`${setting}: invalid port in ${entry}`);
  if (m[1].startsWith("*.")) return { kind: "suffix", suffix: m[1].slice(1).toLowerCase(), port };
  let hostname: string;
  try {
    hostname = new URL(`http://${m[1]}/`).hostname;
  } catch {
    throw new Error(`${setting}: invalid host in ${JSON.stringify(entry)}`);
  }
  return { kind: "host", hostname: displayHost(hostOf(hostname)), port };
}

function parseList(value: string | undefined, setting: string): HostRule[] {
  return (value ?? "").split(",").map((s) => s.trim()).filter(Boolean).map((e) => parseRule(e, setting));
}

/**
 * The policy for one fetch: the operator's allow-list, and kiln's own hosts (`origin`, the request
 * origin a build or webhook was started with, plus KILN_HOSTS). Throws when a setting is malformed.
 */
export function outboundPolicy(env: OutboundEnv, origin?: string): OutboundPolicy {
  const own = parseList(env.KILN_HOSTS, "KILN_HOSTS");
  if (origin) {
    try {
      const u = new URL(origin);
      own.push({ kind: "host", hostname: displayHost(hostOf(u.hostname)), port: effectivePort(u) });
    } catch {
      /* no usable origin */
    }
  }
  return { allow: parseList(env.KILN_OUTBOUND_ALLOW, "KILN_OUTBOUND_ALLOW"), own };
}

function matches(rule: HostRule, host: Host, port: number): boolean {
  if (rule.kind === "cidr") {
    let addr: bigint | null = null;
    if (!rule.v6 && "v4" in host) addr = BigInt(host.v4);
    else if (!rule.v6 && "v6" in host && v6Big(host.v6) >> 32n === 0xffffn) addr = v6Big(host.v6) & 0xffffffffn;
    else if (rule.v6 && "v6" in host) addr = v6Big(host.v6);
    if (addr === null) return false;
    const shift = BigInt((rule.v6 ? 128 : 32) - rule.prefix);
    return addr >> shift === rule.net >> shift;
  }
  if (rule.port !== undefined && rule.port !== port) return false;
  const name = displayHost(host);
  if (rule.kind === "suffix") return "name" in host && name.endsWith(rule.suffix);
  return rule.hostname === name;
}

function isOwn(policy: OutboundPolicy, host: Host, port: number): boolean {
  for (const rule of policy.own) {
    if (matches(rule, host, port)) return true;
    // kiln on a loopback address: every loopback spelling of its port is kiln too
    if (rule.kind === "host" && rule.port === port && isLocalMachine(host) && isLocalMachine(hostOf(rule.hostname))) return true;
  }
  return false;
}

export type OutboundVerdict = { ok: true; url: URL } | { ok: false; reason: string };

/** Whether `url` may be fetched under `policy`; the reason names the host and why ("127.0.0.1 is a loopback address (…)"). */
export function checkOutboundUrl(url: string | URL, policy: OutboundPolicy): OutboundVerdict {
  let u: URL;
  try {
    u = typeof url === "string" ? new URL(url) : url;
  } catch {
    return { ok: false, reason: "not a valid URL" };
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") return { ok: false, reason: `${u.protocol.replace(/:$/, "")}: URLs are not fetched (only http and https)` };
  const host = hostOf(u.hostname);
  const port = effectivePort(u);
  if (isOwn(policy, host, port)) return { ok: false, reason: `${u.host} is kiln itself (a build never calls kiln's own API)` };
  if (policy.allow.some((r) => matches(r, host, port))) return { ok: true, url: u };
  const why = classifyHost(host);
  if (why) return { ok: false, reason: `${u.hostname} is ${why} (${OUTBOUND_HINT})` };
  return { ok: true, url: u };
}

// ---------------------------------------------------------------------------------------------------
// Fetching

export interface SafeFetchOptions {
  policy: OutboundPolicy;
  /** What is fetched, starting every error message (`ADD http://…`); default: the URL. */
  label?: string;
  /** Deadline for the response headers of each hop (default 30 s). */
  headersTimeoutMs?: number;
  /** Deadline for the whole exchange, reading the body included (default 10 min). */
  timeoutMs?: number;
  /** Redirects followed at most (default 5). */
  maxRedirects?: number;
  /** The fetch to use (default: the global one). */
  fetch?: (input: string, init: RequestInit) => Promise<Response>;
}

export const MAX_REDIRECTS = 5;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const CREDENTIAL_HEADERS = ["authorization", "proxy-authorization", "cookie", "private-token"];

/**
 * `fetch` for a URL a user chose: the URL and every redirect hop are checked with `checkOutboundUrl`
 * before anything connects; credentials are not sent to another origin on a redirect. Throws
 * OutboundError (refused, too many redirects, missed deadline); network errors pass through as `fetch`
 * throws them. The returned response is the last hop's (a 3xx without Location is returned as is).
 */
export async function safeFetch(input: string | URL, init: RequestInit = {}, opts: SafeFetchOptions): Promise<Response> {
  const label = opts.label ?? String(input);
  const max = opts.maxRedirects ?? MAX_REDIRECTS;
  const headersMs = opts.headersTimeoutMs ?? 30_000;
  const totalMs = opts.timeoutMs ?? 600_000;
  const doFetch = opts.fetch ?? ((i: string, r: RequestInit) => fetch(i, r));
  const total = AbortSignal.timeout(totalMs);
  let url = String(input);
  let method = (init.method ?? "GET").toUpperCase();
  let body = init.body;
  const headers = new Headers(init.headers);
  for (let hop = 0; ; hop++) {
    const verdict = checkOutboundUrl(url, opts.policy);
    if (!verdict.ok) throw new OutboundError("refused", hop === 0 ? `${label}: refused: ${verdict.reason}` : `${label}: refused redirect ${hop} to ${url}: ${verdict.reason}`);
    const waiting = new AbortController();
    const timer = setTimeout(() => waiting.abort(), headersMs);
    const signals = [total, waiting.signal, ...(init.signal ? [init.signal] : [])];
    let res: Response;
    try {
      res = await doFetch(verdict.url.href, { ...init, method, headers, body, redirect: "manual", signal: AbortSignal.any(signals) });
    } catch (err) {
      if (init.signal?.aborted) throw err;
      if (total.aborted) throw new OutboundError("timeout", `${label}: no complete answer within ${totalMs / 1000} s`);
      if (waiting.signal.aborted) throw new OutboundError("timeout", `${label}: ${verdict.url.host} sent no response within ${headersMs / 1000} s`);
      throw err;
    } finally {
      clearTimeout(timer);
    }
    const location = REDIRECTS.has(res.status) ? res.headers.get("location") : null;
    if (location === null) return res;
    await res.body?.cancel();
    if (hop >= max) throw new OutboundError("redirects", `${label}: more than ${max} redirects (the last to ${location})`);
    let next: URL;
    try {
      next = new URL(location, verdict.url);
    } catch {
      throw new OutboundError("refused", `${label}: redirect ${hop + 1} to an invalid URL ${JSON.stringify(location)}`);
    }
    if (res.status === 303 ? method !== "HEAD" : (res.status === 301 || res.status === 302) && method === "POST") {
      method = "GET";
      body = undefined;
      for (const h of ["content-type", "content-length", "content-encoding"]) headers.delete(h);
    } else if (body != null && !(typeof body === "string" || body instanceof ArrayBuffer || ArrayBuffer.isView(body))) {
      throw new OutboundError("redirects", `${label}: redirect ${res.status} would send a streamed body again`);
    }
    if (next.origin !== verdict.url.origin) for (const h of CREDENTIAL_HEADERS) headers.delete(h);
    url = next.href;
  }
}
