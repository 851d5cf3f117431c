// HTTP for the CLI: every failure becomes one sentence (what failed, why, what to do), never raw
// JSON or a stack trace.

/** An error whose message is ready for the user (`kiln: <message>`). */
export class CliError extends Error {}

const NETWORK_REASONS: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "the connection was reset",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "host name lookup failed (temporary DNS failure)",
  ETIMEDOUT: "connection timed out",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  EPIPE: "the connection was closed",
  UND_ERR_CONNECT_TIMEOUT: "connection timed out",
  UND_ERR_SOCKET: "the connection was closed",
  UND_ERR_HEADERS_TIMEOUT: "the server did not answer in time",
  DEPTH_ZERO_SELF_SIGNED_CERT: "its TLS certificate is self-signed",
  SELF_SIGNED_CERT_IN_CHAIN: "its TLS certificate chain is self-signed",
  CERT_HAS_EXPIRED: "its TLS certificate has expired",
  ERR_TLS_CERT_ALTNAME_INVALID: "its TLS certificate is for another name",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "its TLS certificate cannot be verified",
  ERR_SSL_WRONG_VERSION_NUMBER: "it does not speak TLS (try http:// instead of https://)",
};

/** Why a fetch failed without an HTTP answer, in a few words. */
export function networkReason(err: unknown): string {
  let e: any = err;
  for (let depth = 0; e && depth < 4; depth++, e = e.cause) {
    const code = e.code as string | undefined;
    if (code && NETWORK_REASONS[code]) return NETWORK_REASONS[code];
    if (e instanceof AggregateError && e.errors?.length) return networkReason(e.errors[0]);
    if (code) return `${e.message || code}`;
  }
  const msg = (err as Error)?.message ?? String(err);
  return msg === "fetch failed" ? "the request failed" : msg;
}

function isLocal(server: string): boolean {
  try {
    const h = new URL(server).hostname;
    return h === "localhost" || h === "[::1]" || /^127\./.test(h);
  } catch {
    return false;
  }
}

/** The sentence for a server kiln cannot reach. */
export function unreachable(server: string, err: unknown): CliError {
  const hint = isLocal(server) ? "is kiln running? start it with npm start" : "check --server (or kiln login --server) and the network";
  return new CliError(`cannot reach ${server}: ${networkReason(err)} (${hint})`);
}

/** fetch that turns a network failure into a CliError naming the server. */
export async function request(server: string, path: string, init: RequestInit = {}): Promise<Response> {
  try {
    return await fetch(`${server}${path}`, init);
  } catch (e) {
    if ((e as Error)?.name === "AbortError") throw e;
    throw unreachable(server, e);
  }
}

/**
 * `request` for an idempotent request whose body can be made again (`init()` builds it): a connection
 * the server closed before answering (a kept-alive socket it was closing just then) is retried on a
 * new one, up to `tries` times. A request that got any response is never sent again.
 */
export async function requestIdempotent(server: string, path: string, init: () => RequestInit, tries = 3): Promise<Response> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await request(server, path, init());
    } catch (e) {
      if (!(e instanceof CliError) || attempt >= tries) throw e;
    }
  }
}

/** The server's `{error: {message}}`, or the body's first line, or the status text. */
export async function serverMessage(res: Response): Promise<{ message: string; line?: number }> {
  const text = await res.text().catch(() => "");
  try {
    const body = JSON.parse(text) as { error?: { message?: string; line?: number } | string; errors?: { message?: string }[] };
    if (typeof body.error === "string") return { message: body.error };
    if (body.error?.message) return { message: body.error.message, line: body.error.line };
    if (body.errors?.[0]?.message) return { message: body.errors[0].message };
  } catch { /* not JSON */ }
  const first = text.trim().split("\n")[0]?.trim();
  if (first && first.length <= 200 && !first.startsWith("<")) return { message: first };
  return { message: res.statusText || `HTTP ${res.status}` };
}

/** What to do about an HTTP status, when there is a general answer. */
export function statusHint(status: number): string | undefined {
  if (status === 401) return "log in with a valid token (kiln login) or pass --token";
  if (status === 403) return "use a token with that scope (an admin creates one with POST /v1/tokens)";
  if (status === 413) return "make the context smaller (.dockerignore) or ask the operator to raise the limit";
  if (status === 429) return "wait a moment and try again";
  if (status >= 500) return "the server's log has the details; try again once it is fixed";
  return undefined;
}

/** One sentence for a failed HTTP call: `<what> failed: <server's message> (HTTP n); <what to do>`. */
export async function httpError(what: string, res: Response, hint?: string): Promise<CliError> {
  const { message } = await serverMessage(res);
  const todo = hint ?? statusHint(res.status);
  return new CliError(`${what} failed: ${message.replace(/\s*\n[\s\S]*$/, "")} (HTTP ${res.status})${todo ? `; ${todo}` : ""}`);
}

export function authHeaders(token?: string): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}
