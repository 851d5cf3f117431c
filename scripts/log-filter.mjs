// The server log of `npm start`: wrangler dev's lines pass through, except workerd's reports of a
// client that went away (a closed socket while the response was still being written: "Broken pipe",
// "Connection reset by peer", "Network connection lost" on the client side). Those are ordinary — a
// client that stops reading an event stream, a registry client that closes a connection early — and
// not failures of kiln; each becomes one quiet line (or nothing unless KILN_LOG_DISCONNECTS=1).
// Everything else, real errors included, is printed unchanged.

const ANSI = /\x1b\[[0-9;]*m/g;
const DISCONNECT = /(Broken pipe|Connection reset by peer|ECONNRESET|EPIPE|disconnected: ::write)/;

/**
 * A line filter: feed it lines (without the newline), it calls `write` with the lines to keep.
 * An ERROR block about a client disconnect (the ERROR line, its `stack:` line and the blank lines
 * around them) is swallowed.
 */
export function createLogFilter(write, opts = {}) {
  let swallowing = false;
  let disconnects = 0;
  return {
    line(raw) {
      const plain = raw.replace(ANSI, "");
      if (/\[ERROR\]/.test(plain) && DISCONNECT.test(plain)) {
        swallowing = true;
        disconnects++;
        if (opts.showDisconnects) write(`[kiln] a client closed its connection before the response ended (not an error)`);
        return;
      }
      if (swallowing) {
        if (plain.trim() === "" || /^\s*stack:/.test(plain)) return;
        swallowing = false;
      }
      write(raw);
    },
    get disconnects() {
      return disconnects;
    },
  };
}

/** Pipes a child's output stream through the filter into `out`, line by line. */
export function pipeFiltered(stream, out, opts = {}) {
  const filter = createLogFilter((l) => out.write(`${l}\n`), opts);
  let buf = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk) => {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      filter.line(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  });
  stream.on("end", () => {
    if (buf) filter.line(buf);
    buf = "";
  });
  return filter;
}
