// Kept-alive connections of the local server (`npm start`'s path: the TLS guard in front of
// scripts/local-server.mjs): a large upload or a refused one must not harm the next request on the
// same connection. Under `wrangler dev` both did: after `kiln build` streamed a 200 MB context, the
// CLI's next request on that connection was held 78–300 s (`kiln: fetch failed` at times), and after
// a request refused without its body read, the next request with a body got 503 "Your worker
// restarted mid-request"; and workerd itself closes a connection whose body was left unread, with a
// TCP reset that can destroy the refusal on its way (through the TLS guard, often). kiln now drains a
// refused body of declared length up to 64 MiB (src/http/body.ts discardRefusedBody).
import dc from "node:diagnostics_channel";
import { randomBytes } from "node:crypto";
import { createWriteStream, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runBuild } from "../../src/cli/build";
import { makeProgress } from "../../src/cli/progress";
import { sha256, startTlsGuard, type TlsGuard } from "./helpers";
import { ADMIN_TOKEN, startKiln, type KilnServer } from "./server";

const MiB = 1024 * 1024;
/** How long the request after an upload may take before it counts as held (it used to be ≥ 78 s). */
const NEXT_REQUEST_DEADLINE_MS = 30_000;

let kiln: KilnServer;
let guard: TlsGuard;
let base: string;

beforeAll(async () => {
  kiln = await startKiln();
  guard = await startTlsGuard(kiln.port);
  base = `http://${guard.host}`;
});
afterAll(async () => {
  await guard?.close();
  await kiln?.stop(true);
});

/** Writes `bytes` of random (incompressible) data to `file`, 4 MiB at a time. */
async function randomFile(file: string, bytes: number): Promise<void> {
  const out = createWriteStream(file);
  for (let left = bytes; left > 0; left -= 4 * MiB) {
    if (!out.write(randomBytes(Math.min(left, 4 * MiB)))) await new Promise<void>((r) => out.once("drain", () => r()));
  }
  await new Promise<void>((resolve, reject) => { out.once("error", reject); out.end(() => resolve()); });
}

describe("kiln build of a 200 MB context", () => {
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "kiln-conn-ctx-"));
    writeFileSync(path.join(dir, "Dockerfile"), "FROM scratch\nCOPY small.txt /small.txt\nLABEL e2e=connections\n");
    writeFileSync(path.join(dir, "small.txt"), "small\n");
    await randomFile(path.join(dir, "big.bin"), 200 * MiB);
  });
  afterAll(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

  it("after the 202, the CLI's next request on the same connection answers at once and the build succeeds", async () => {
    // Which socket each request of the CLI's fetch went out on, and when its response headers came.
    const numbered = new WeakMap<object, number>();
    let socketCount = 0;
    const sent: { method: string; path: string; socket: number; at: number; answeredAt?: number; request: object }[] = [];
    const onSend = (m: unknown) => {
      const { request, socket } = m as { request: { method: string; path: string }; socket: object };
      if (!numbered.has(socket)) numbered.set(socket, ++socketCount);
      sent.push({ method: request.method, path: request.path, socket: numbered.get(socket)!, at: Date.now(), request });
    };
    const onHeaders = (m: unknown) => {
      const r = sent.find((s) => s.request === (m as { request: object }).request && s.answeredAt === undefined);
      if (r) r.answeredAt = Date.now();
    };
    dc.subscribe("undici:client:sendHeaders", onSend);
    dc.subscribe("undici:request:headers", onHeaders);
    let out = "";
    try {
      const code = await Promise.race([
        runBuild({ dir, server: base, token: ADMIN_TOKEN, tags: ["e2e/connections:big"], buildArgs: [], noCache: false, secrets: [], progress: "quiet" },
          makeProgress("quiet", { write: (s) => { out += s; }, writeErr: (s) => { out += s; } })),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`kiln build did not finish within 240 s; requests: ${JSON.stringify(sent.map(({ request: _r, ...s }) => s))}`)), 240_000)),
      ]);
      expect(code, out).toBe(0);
    } finally {
      dc.unsubscribe("undici:client:sendHeaders", onSend);
      dc.unsubscribe("undici:request:headers", onHeaders);
    }
    expect(out).toMatch(/sha256:[0-9a-f]{64}/);
    const post = sent.findIndex((s) => s.method === "POST" && s.path.startsWith("/v1/builds?"));
    expect(post, JSON.stringify(sent)).toBeGreaterThanOrEqual(0);
    const next = sent[post + 1];
    expect(next?.method).toBe("GET");
    expect(next.path).toMatch(/^\/v1\/builds\/[^/]+$/);
    // The same kept-alive connection as the upload, answered well within the deadline.
    expect(next.socket, JSON.stringify(sent.map(({ request: _r, ...s }) => s))).toBe(sent[post].socket);
    expect(next.answeredAt, "the request after the upload got no answer").toBeDefined();
    expect(next.answeredAt! - next.at).toBeLessThan(NEXT_REQUEST_DEADLINE_MS);
  }, 300_000);
});

/** One HTTP/1.1 response read off a raw connection. */
interface RawResponse { status: number; headers: Record<string, string>; body: string }

/**
 * A single TCP connection speaking HTTP/1.1 by hand, so that "the same connection" is certain: a
 * request writes its whole body (as a client that announced a Content-Length must) while the
 * response is read; `closed` tells whether the server has closed the connection.
 */
class RawConnection {
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  closed = false;
  private constructor(private readonly socket: net.Socket) {
    socket.on("data", (d) => { this.buf = Buffer.concat([this.buf, d]); this.wake(); });
    socket.on("close", () => { this.closed = true; this.wake(); });
    socket.on("error", () => { this.closed = true; this.wake(); });
  }

  static async open(port: number): Promise<RawConnection> {
    const s = net.connect(port, "127.0.0.1");
    await new Promise<void>((resolve, reject) => { s.once("connect", resolve); s.once("error", reject); });
    return new RawConnection(s);
  }

  private wake() { for (const w of this.waiters.splice(0)) w(); }
  private async more(deadline: number): Promise<void> {
    if (this.closed) throw new Error(`connection closed by the server; unread: ${this.buf.toString("latin1").slice(0, 200)}`);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("no response within 60 s")), Math.max(0, deadline - Date.now()));
      this.waiters.push(() => { clearTimeout(t); resolve(); });
    });
  }

  async request(method: string, target: string, headers: Record<string, string>, body?: Buffer): Promise<RawResponse> {
    const head = [`${method} ${target} HTTP/1.1`, "Host: 127.0.0.1", ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), `Content-Length: ${body?.byteLength ?? 0}`, "", ""].join("\r\n");
    const writing = (async () => {
      this.socket.write(head);
      for (let off = 0; body && off < body.byteLength && !this.closed; off += 256 * 1024) {
        if (!this.socket.write(body.subarray(off, off + 256 * 1024))) {
          await new Promise<void>((r) => { const done = () => { this.socket.off("drain", done); this.socket.off("close", done); r(); }; this.socket.on("drain", done); this.socket.on("close", done); });
        }
      }
    })();
    const deadline = Date.now() + 60_000;
    let end: number;
    while ((end = this.buf.indexOf("\r\n\r\n")) < 0) await this.more(deadline);
    const lines = this.buf.subarray(0, end).toString("latin1").split("\r\n");
    const status = Number(lines[0].split(" ")[1]);
    const hdrs: Record<string, string> = {};
    for (const l of lines.slice(1)) { const i = l.indexOf(":"); hdrs[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim(); }
    this.buf = this.buf.subarray(end + 4);
    let text: string;
    if (hdrs["transfer-encoding"]?.includes("chunked")) {
      const parts: Buffer[] = [];
      for (;;) {
        let eol: number;
        while ((eol = this.buf.indexOf("\r\n")) < 0) await this.more(deadline);
        const size = parseInt(this.buf.subarray(0, eol).toString("latin1"), 16);
        while (this.buf.byteLength < eol + 2 + size + 2) await this.more(deadline);
        parts.push(this.buf.subarray(eol + 2, eol + 2 + size));
        this.buf = this.buf.subarray(eol + 2 + size + 2);
        if (size === 0) break;
      }
      text = Buffer.concat(parts).toString("utf8");
    } else {
      const n = Number(hdrs["content-length"] ?? 0);
      while (this.buf.byteLength < n) await this.more(deadline);
      text = this.buf.subarray(0, n).toString("utf8");
      this.buf = this.buf.subarray(n);
    }
    await writing;
    return { status, headers: hdrs, body: text };
  }

  close() { this.socket.destroy(); }
}

describe("a refused upload does not harm the next request on its connection", () => {
  const auth = { Authorization: `Basic ${Buffer.from(`e2e:${ADMIN_TOKEN}`).toString("base64")}` };
  const big = randomBytes(64 * MiB);
  const repo = "e2e/refusals";

  async function uploadSession(conn: RawConnection): Promise<string> {
    const res = await conn.request("POST", `/v2/${repo}/blobs/uploads/`, auth);
    expect(res.status, res.body).toBe(202);
    return res.headers.location;
  }

  /** A normal monolithic push of a fresh 8 MiB blob on `conn`, then its bytes read back. */
  async function pushAndPull(conn: RawConnection): Promise<void> {
    const blob = randomBytes(8 * MiB);
    const digest = sha256(blob);
    const put = await conn.request("POST", `/v2/${repo}/blobs/uploads/?digest=${digest}`, { ...auth, "Content-Type": "application/octet-stream" }, blob);
    expect(put.status, put.body).toBe(201);
    expect(put.headers["docker-content-digest"]).toBe(digest);
    const got = await fetch(`${kiln.url}/v2/${repo}/blobs/${digest}`, { headers: auth });
    expect(got.status).toBe(200);
    expect(sha256(new Uint8Array(await got.arrayBuffer()))).toBe(digest);
  }

  const refusals: { what: string; status: number; message: RegExp; send: (conn: RawConnection) => Promise<RawResponse> }[] = [
    {
      what: "a 64 MiB PATCH whose Content-Range does not match its length (416)", status: 416, message: /Content-Range covers 100 bytes but Content-Length is 67108864/,
      send: async (conn) => conn.request("PATCH", await uploadSession(conn), { ...auth, "Content-Range": "0-99" }, big),
    },
    {
      what: "a 64 MiB PATCH starting past what was received (416)", status: 416, message: /chunk starts at 5, but 0 bytes were received/,
      send: async (conn) => conn.request("PATCH", await uploadSession(conn), { ...auth, "Content-Range": `5-${5 + big.byteLength - 1}` }, big),
    },
    {
      what: "a 64 MiB manifest (413)", status: 413, message: /manifest larger than/,
      send: (conn) => conn.request("PUT", `/v2/${repo}/manifests/too-big`, { ...auth, "Content-Type": "application/vnd.oci.image.manifest.v1+json" }, big),
    },
  ];

  for (const via of ["npm start's TLS guard", "the server directly"] as const) {
    for (const r of refusals) {
      it(`${r.what}, via ${via}: the refusal arrives whole, then a push succeeds`, async () => {
        const port = via === "the server directly" ? kiln.port : guard.port;
        const conn = await RawConnection.open(port);
        try {
          const refused = await r.send(conn);
          expect(refused.status, refused.body).toBe(r.status);
          expect(refused.body).toMatch(r.message);
          // The refused body was drained: the connection stays open for the next request.
          expect(refused.headers.connection ?? "").not.toMatch(/close/i);
          expect(conn.closed, "the server closed the connection after the refusal").toBe(false);
          await pushAndPull(conn);
        } finally {
          conn.close();
        }
      }, 120_000);
    }
  }
});
