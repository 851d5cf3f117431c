// A proxy in front of kiln that counts the request body bytes it forwards: what a client sent over the
// wire, measured outside the client (issue 14's context upload test and bench).
import http from "node:http";

export interface CountingProxy {
  url: string;
  /** Request body bytes forwarded since the start or the last reset. */
  bytes(): number;
  /** The largest single request body since then. */
  biggest(): number;
  reset(): void;
  close(): Promise<void>;
}

export async function countingProxy(target: string): Promise<CountingProxy> {
  let bytes = 0;
  let biggest = 0;
  const t = new URL(target);
  const server = http.createServer((req, res) => {
    let mine = 0;
    const up = http.request({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on("error", () => { res.writeHead(502); res.end(); });
    req.on("data", (d: Buffer) => { bytes += d.length; mine += d.length; biggest = Math.max(biggest, mine); });
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    bytes: () => bytes,
    biggest: () => biggest,
    reset: () => { bytes = 0; biggest = 0; },
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}
