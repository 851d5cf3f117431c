// A git host double on 127.0.0.1 that records every request it gets (method, raw path, credentials)
// and serves GitHub-, GitLab- and Gitea-shaped archives of the commits it was given.
import { execFileSync } from "node:child_process";
import http from "node:http";
import { freePort } from "../server";
import { contextDir } from "./builds";

export interface GitHostRequest {
  method: string;
  /** The request target exactly as sent (path and query, percent-encoding kept). */
  target: string;
  credential?: string;
}

export interface RecordingGitHost {
  url: string;
  host: string;
  archives: Map<string, Buffer>;
  requests: GitHostRequest[];
  close(): Promise<void>;
}

export async function startRecordingGitHost(): Promise<RecordingGitHost> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const gh: RecordingGitHost = { url, host: `127.0.0.1:${port}`, archives: new Map(), requests: [], close: async () => {} };
  const server = http.createServer((req, res) => {
    const target = req.url ?? "/";
    gh.requests.push({ method: req.method ?? "", target, credential: (req.headers["private-token"] as string | undefined) ?? req.headers.authorization });
    req.resume();
    req.on("end", () => {
      if (req.method === "POST" && /\/statuses\//.test(target)) {
        res.writeHead(201, { "content-type": "application/json" }).end("{}");
        return;
      }
      const u = new URL(target, url);
      const sha = u.pathname.match(/\/tarball\/([0-9a-f]+)$/)?.[1] ?? u.searchParams.get("sha") ?? u.pathname.match(/\/archive\/([0-9a-f]+)\.tar\.gz$/)?.[1];
      const archive = sha ? gh.archives.get(sha) : undefined;
      if (!archive) { res.writeHead(404).end("not found"); return; }
      res.writeHead(200, { "content-type": "application/x-gzip" }).end(archive);
    });
  });
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  gh.close = () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); });
  return gh;
}

/** A tar.gz with everything under one top-level folder, as git hosts make them. */
export function gitArchive(files: Record<string, string>, top: string): Buffer {
  const dir = contextDir(Object.fromEntries(Object.entries(files).map(([k, v]) => [`${top}/${k}`, v])));
  return execFileSync("tar", ["-C", dir, "--sort=name", "-czf", "-", top]);
}
