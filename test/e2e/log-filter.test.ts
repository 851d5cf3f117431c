// npm start's server log: workerd's reports of a client that closed its socket (seen during ordinary
// skopeo pushes and when `kiln build` stops following an event stream) are not errors and stay out of
// the log; every other line, real errors included, passes unchanged. (Issue 12, item 6.)
import { describe, expect, it } from "vitest";
import { createLogFilter } from "../../scripts/log-filter.mjs";

const ESC = "\x1b";
// Captured from `wrangler dev` while skopeo pushed an image (colours as wrangler prints them).
const BROKEN_PIPE = [
  `${ESC}[31m✘ ${ESC}[41;31m[${ESC}[41;97mERROR${ESC}[41;31m]${ESC}[0m ${ESC}[1mkj::getCaughtExceptionAsKj() = kj/async-io-unix.c++:186: disconnected: ::write(fd, buffer.begin(), buffer.size()): Broken pipe${ESC}[0m`,
  "",
  "  stack: /work/main/node_modules/@cloudflare/workerd-linux-64/bin/workerd@51faac1 /work/main/node_modules/@cloudflare/workerd-linux-64/bin/workerd@51fb771",
  "",
  "",
];

function run(lines: string[], opts = {}) {
  const out: string[] = [];
  const f = createLogFilter((l) => out.push(l), opts);
  for (const l of lines) f.line(l);
  return { out, disconnects: f.disconnects };
}

describe("npm start's log filter", () => {
  it("drops a client-disconnect ERROR block and keeps the request lines around it", () => {
    const { out, disconnects } = run([
      "[wrangler:info] PATCH /v2/e2e/busybox/blobs/uploads/1a69 202 Accepted (175ms)",
      ...BROKEN_PIPE,
      "[wrangler:info] HEAD /v2/e2e/busybox/blobs/sha256:771a 404 Not Found (25ms)",
    ]);
    expect(out).toEqual([
      "[wrangler:info] PATCH /v2/e2e/busybox/blobs/uploads/1a69 202 Accepted (175ms)",
      "[wrangler:info] HEAD /v2/e2e/busybox/blobs/sha256:771a 404 Not Found (25ms)",
    ]);
    expect(disconnects).toBe(1);
  });

  it("keeps real errors with their stacks", () => {
    const real = [
      `${ESC}[31m✘ ${ESC}[41;31m[${ESC}[41;97mERROR${ESC}[41;31m]${ESC}[0m unhandled error POST /v1/builds TypeError: cannot read properties of undefined`,
      "",
      "  stack: at startBuild (src/builder/start.ts:80:3)",
      "[wrangler:info] POST /v1/builds 500 Internal Server Error (12ms)",
    ];
    expect(run(real).out).toEqual(real);
    // a real error right after a swallowed disconnect is still printed
    expect(run([...BROKEN_PIPE, ...real]).out).toEqual(real);
  });

  it("says one quiet line per disconnect when asked (KILN_LOG_DISCONNECTS=1)", () => {
    const { out } = run(BROKEN_PIPE, { showDisconnects: true });
    expect(out).toEqual(["[kiln] a client closed its connection before the response ended (not an error)"]);
  });
});
