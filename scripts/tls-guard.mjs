// A TCP front for kiln's local server: workerd never answers a TLS ClientHello on its plain-HTTP port
// (the connection just hangs), so skopeo and podman (`--tls-verify=false` tries HTTPS first) would
// wait 10 s for Go's TLS handshake timeout on every command. The front closes TLS attempts at once, so
// they fall back to HTTP immediately (as docker-registry's 400 does), and pipes everything else
// unchanged to the server. No option of workerd answers or refuses a TLS hello on a plain socket, and
// Node cannot hand an accepted socket to workerd, so the bytes of plain connections pass through here.
//
// When the server closes a connection first (workerd does after refusing a request whose body it did
// not read: the response, then FIN), the response is flushed to the client before the client's side
// is ended, and what the client still sends is read and dropped for up to LINGER_MS: closing a socket
// with unread input sends a TCP reset, which can destroy the response before the client reads it.
import net from "node:net";

const LINGER_MS = 30_000;

/** `targetPort`: a port, or a function returning it (undefined while the server is not up yet). */
export async function startTlsGuard({ listenPort, targetPort, host = "127.0.0.1" }) {
  const sockets = new Set();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => sock.destroy());
    sock.once("data", (first) => {
      if (first[0] === 0x16) { sock.destroy(); return; } // a TLS handshake record
      const target = typeof targetPort === "function" ? targetPort() : targetPort;
      if (!target) { sock.destroy(); return; } // the server is not up yet
      const upstream = net.connect(Number(target), host);
      sockets.add(upstream);
      let lingering = false;
      const linger = () => {
        if (lingering) return;
        lingering = true;
        sock.unpipe(upstream);
        sock.end(); // after everything the server sent has been written
        sock.on("data", () => {});
        sock.resume();
        setTimeout(() => sock.destroy(), LINGER_MS).unref();
      };
      upstream.on("end", linger);
      upstream.on("error", linger);
      upstream.on("close", () => { sockets.delete(upstream); linger(); });
      sock.on("close", () => upstream.destroy());
      upstream.write(first);
      sock.pipe(upstream);
      upstream.pipe(sock, { end: false });
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
