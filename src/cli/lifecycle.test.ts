import { afterEach, describe, expect, it, vi } from "vitest";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { gcCommand } from "./lifecycle";

/** A server answering POST /v1/gc as kiln does for a store too large to collect within `wait`. */
async function serve(status: number, body: unknown): Promise<{ url: string; asked: string[]; close: () => void }> {
  const asked: string[] = [];
  const server = http.createServer((req, res) => {
    asked.push(`${req.method} ${req.url}`);
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, asked, close: () => server.close() };
}

describe("kiln gc", () => {
  afterEach(() => vi.restoreAllMocks());

  it("says a collection still running on the server (202) goes on there, and where its report will be", async () => {
    const srv = await serve(202, { id: "run-1", status: "running", startedAt: 1 });
    const out: string[] = [];
    vi.spyOn(process.stdout, "write").mockImplementation((s) => (out.push(String(s)), true));
    try {
      expect(await gcCommand(srv.url, "t", { dryRun: false, json: false })).toBe(0);
    } finally {
      srv.close();
    }
    expect(srv.asked).toEqual(["POST /v1/gc"]);
    expect(out.join("")).toBe("collection run-1 is still running on the server; its report will be in GET /v1/gc when it ends\n");
  });
});
