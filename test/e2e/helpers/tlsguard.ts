// `wrangler dev` (workerd) never answers a TLS ClientHello on its plain-HTTP port: the connection just
// hangs. skopeo/podman with --tls-verify=false try HTTPS first and fall back to HTTP only after Go's
// 10 s TLS handshake timeout — on every command. This TCP front closes TLS attempts at once (so the
// clients fall back immediately, as with docker-registry, which answers 400) and pipes everything else
// unchanged to the server. E2E_NO_TLS_GUARD=1 points the clients at the server directly.
import net from "node:net";

export interface TlsGuard { port: number; host: string; close(): Promise<void> }

export async function startTlsGuard(targetPort: number): Promise<TlsGuard> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => sock.destroy());
    sock.once("data", (first) => {
      if (first[0] === 0x16) { sock.destroy(); return; } // TLS handshake record
      const upstream = net.connect(targetPort, "127.0.0.1");
      sockets.add(upstream);
      upstream.on("close", () => { sockets.delete(upstream); sock.destroy(); });
      upstream.on("error", () => sock.destroy());
      sock.on("close", () => upstream.destroy());
      upstream.write(first);
      sock.pipe(upstream).pipe(sock);
    });
  });
  await new Promise<void>((resolve, reject) => { server.once("error", reject); server.listen(0, "127.0.0.1", resolve); });
  const port = (server.address() as net.AddressInfo).port;
  return {
    port, host: `127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()); }),
  };
}
