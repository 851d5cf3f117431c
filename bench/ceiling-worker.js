// The local runtime's own ceiling for kiln's data path: a bare Worker that streams a request body into
// R2 and back out, with nothing else (no auth, no digest, no D1). bench/registry.ts runs it under the
// same local server as kiln (scripts/local-server.mjs --script) and reports kiln's push and pull as a
// fraction of it.
//   PUT /<key>  body (Content-Length required) → R2 object ceiling/<key> → 201
//   GET /<key>  → the object's bytes
export default {
  async fetch(request, env) {
    const path = new URL(request.url).pathname;
    if (path === "/healthz") return new Response("ok");
    const key = `ceiling/${path.slice(1)}`;
    if (request.method === "PUT") {
      const length = Number(request.headers.get("content-length"));
      if (!request.body || !Number.isSafeInteger(length)) return new Response("Content-Length required\n", { status: 411 });
      await env.BUCKET.put(key, request.body.pipeThrough(new FixedLengthStream(length)));
      return new Response(null, { status: 201 });
    }
    if (request.method === "GET") {
      const object = await env.BUCKET.get(key);
      if (!object) return new Response("not found\n", { status: 404 });
      return new Response(object.body, { headers: { "content-type": "application/octet-stream", "content-length": String(object.size) } });
    }
    return new Response("PUT or GET\n", { status: 405 });
  },
};
