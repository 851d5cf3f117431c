// A TCP front for `wrangler dev`: workerd never answers a TLS ClientHello on its plain-HTTP port, so
// skopeo and podman (`--tls-verify=false` tries HTTPS first) would wait 10 s for Go's TLS handshake
// timeout on every command. The front closes TLS attempts at once, so they fall back to HTTP
// immediately, and pipes everything else unchanged to the server.
import net from "node:net";

export async function startTlsGuard({ listenPort, targetPort, host = "127.0.0.1" }) {
  const sockets = new Set();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => sock.destroy());
    sock.once("data", (first) => {
      if (first[0] === 0x16) { sock.destroy(); return; } // a TLS handshake record
      const upstream = net.connect(targetPort, host);
      sockets.add(upstream);
      upstream.on("close", () => { sockets.delete(upstream); sock.destroy(); });
      upstream.on("error", () => sock.destroy());
      sock.on("close", () => upstream.destroy());
      upstream.write(first);
      sock.pipe(upstream).pipe(sock);
    });
  });
  // listenPort 0: any free port; the bound one is returned as `port`
  await new Promise((resolve, reject) => { server.once("error", reject); server.listen(Number(listenPort), host, resolve); });
  const { port } = server.address();
  return {
    port,
    close: () => new Promise((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()); }),
  };
}

export async function freePort(host = "127.0.0.1") {
  return await new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, host, () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
    srv.on("error", reject);
  });
}
