// `kiln build`: stream the context, follow the build's events, exit non-zero on failure.
import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import { batchStream, contentBatches, contextIndex, contextStream } from "./context";
import { authHeaders, CliError, httpError, request, requestIdempotent, serverMessage } from "./http";
import { CLI_USER_AGENT } from "../protocol/client";
import { CONTEXT_INDEX_TYPE, type ContextIndexUpload } from "../protocol/contexts";
import { makeProgress, type BuildView, type DockerfileSource, type Progress, type ProgressMode, type StepView } from "./progress";
import { readSse } from "./sse";

export { withPositions } from "./progress";

export interface BuildOptions {
  dir: string;
  server: string;
  token?: string;
  tags: string[];
  dockerfile?: string;
  buildArgs: string[];
  target?: string;
  noCache: boolean;
  platform?: string;
  secrets: string[];
  progress?: ProgressMode;
}

/** Reads `--secret id=x,src=file` (or env=VAR) into { id: value }. */
export function readSecrets(specs: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const spec of specs) {
    const kv = Object.fromEntries(spec.split(",").map((p) => { const i = p.indexOf("="); return i < 0 ? [p, ""] : [p.slice(0, i), p.slice(i + 1)]; }));
    const id = kv.id;
    if (!id) throw new Error(`--secret ${spec}: id= is required`);
    if (kv.src ?? kv.source) out[id] = readFileSync(kv.src ?? kv.source, "utf8");
    else if (kv.env) out[id] = process.env[kv.env] ?? "";
    else if (process.env[id] !== undefined) out[id] = process.env[id]!;
    else throw new Error(`--secret ${spec}: give src=<file> or env=<VAR>`);
  }
  return out;
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n}B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)}kB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)}MB`;
  return `${(n / 1024 ** 3).toFixed(2)}GB`;
}

export async function runBuild(opts: BuildOptions, progress: Progress = makeProgress(opts.progress ?? "plain", { firstNumber: 1 })): Promise<number> {
  const dir = path.resolve(opts.dir);
  if (!statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw new CliError(`build context ${opts.dir} is not a directory`);
  const dockerfileAbs = path.resolve(opts.dockerfile ? opts.dockerfile : path.join(dir, "Dockerfile"));
  const relDockerfile = path.relative(dir, dockerfileAbs).split(path.sep).join("/");
  const outside = relDockerfile.startsWith("../") || path.isAbsolute(relDockerfile);
  let dockerfileText: string;
  try {
    dockerfileText = readFileSync(dockerfileAbs, "utf8");
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (e as Error).message;
    throw new CliError(`cannot read the Dockerfile ${opts.dockerfile ?? path.join(opts.dir, "Dockerfile")}: ${why}${opts.dockerfile ? "" : " (name another one with -f)"}`);
  }
  // The excerpt of an error names the file as the user did (`-f Dockerfile.syntax`).
  const source: DockerfileSource = { name: opts.dockerfile ?? "Dockerfile", lines: dockerfileText.split(/\r?\n/) };

  const q = new URLSearchParams();
  for (const t of opts.tags) q.append("tag", t);
  if (!outside) q.set("dockerfile", relDockerfile);
  for (const a of opts.buildArgs) q.append("build-arg", a.includes("=") ? a : `${a}=${process.env[a] ?? ""}`);
  if (opts.target) q.set("target", opts.target);
  if (opts.noCache) q.set("no-cache", "1");
  if (opts.platform) q.set("platform", opts.platform);

  const secrets = readSecrets(opts.secrets);
  const started = Date.now();
  progress.begin("context", "[internal] load build context");
  let res: Response;
  let files: number;
  let sent: number;
  try {
    // content-addressed: only the contents the server lacks cross the wire; a server without
    // /v1/contexts gets the whole context as a tar
    const indexed = await sendIndexed(opts, dir, outside ? undefined : relDockerfile, q, dockerfileText, secrets);
    ({ res, files, sent } = indexed ?? (await sendTar(opts, dir, outside, relDockerfile, q, dockerfileText, secrets)));
  } catch (e) {
    progress.end("context", "failed");
    throw e;
  }
  progress.note("context", `transferring context: ${files} file${files === 1 ? "" : "s"}, ${formatBytes(sent)} done`);
  if (res.status === 400) {
    // The Dockerfile (or a parameter) is wrong: the message, with the excerpt when it has a line.
    const { message, line } = await serverMessage(res);
    progress.end("context", "done", Date.now() - started);
    progress.rejected(message, line, source);
    return 1;
  }
  if (!res.ok) {
    progress.end("context", "failed", Date.now() - started);
    if (res.status === 403 && opts.tags.length === 0) {
      throw new CliError("starting the build failed: untagged builds need an admin token; add -t <repository>:<tag> to push the image somewhere your token may push");
    }
    throw await httpError("starting the build", res);
  }
  const created = (await res.json().catch(() => ({}))) as { id?: string };
  if (!created.id) throw new CliError(`starting the build failed: the server answered ${res.status} without a build id; is ${opts.server} a kiln server?`);
  progress.end("context", "done", Date.now() - started);
  progress.status(`build ${created.id} queued`);
  return await follow(opts.server, opts.token, created.id, progress, source);
}

/** The whole context as one gzip tar (multipart when the Dockerfile is outside it or secrets go along). */
async function sendTar(opts: BuildOptions, dir: string, outside: boolean, relDockerfile: string, q: URLSearchParams, dockerfileText: string, secrets: Record<string, string>): Promise<{ res: Response; files: number; sent: number }> {
  const { stream, files } = contextStream(dir, outside ? undefined : relDockerfile);
  let sent = 0;
  let body: ReadableStream<Uint8Array> = stream.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, ctrl) { sent += chunk.byteLength; ctrl.enqueue(chunk); },
  }));
  let contentType = "application/x-tar";
  if (outside || Object.keys(secrets).length) {
    // multipart/form-data, streamed: optional `dockerfile` and `secrets` parts, then the `context`.
    const boundary = `kiln-${crypto.randomUUID()}`;
    contentType = `multipart/form-data; boundary=${boundary}`;
    const enc = new TextEncoder();
    const head: string[] = [];
    if (outside) head.push(`--${boundary}\r\nContent-Disposition: form-data; name="dockerfile"; filename="Dockerfile"\r\nContent-Type: text/plain\r\n\r\n${dockerfileText}\r\n`);
    if (Object.keys(secrets).length) head.push(`--${boundary}\r\nContent-Disposition: form-data; name="secrets"\r\nContent-Type: application/json\r\n\r\n${JSON.stringify(secrets)}\r\n`);
    head.push(`--${boundary}\r\nContent-Disposition: form-data; name="context"; filename="context.tar.gz"\r\nContent-Type: application/gzip\r\n\r\n`);
    const reader = body.getReader();
    let stage = 0;
    body = new ReadableStream<Uint8Array>({
      async pull(ctrl) {
        if (stage === 0) { ctrl.enqueue(enc.encode(head.join(""))); stage = 1; return; }
        if (stage === 1) {
          const r = await reader.read();
          if (!r.done) { ctrl.enqueue(r.value); return; }
          stage = 2;
        }
        ctrl.enqueue(enc.encode(`\r\n--${boundary}--\r\n`));
        ctrl.close();
      },
      cancel(reason) { return reader.cancel(reason); },
    });
  }

  const res = await request(opts.server, `/v1/builds?${q}`, {
    method: "POST",
    // names the CLI as the build's trigger (the dashboard's list shows it)
    headers: { "content-type": contentType, "user-agent": CLI_USER_AGENT, ...authHeaders(opts.token) },
    body,
    duplex: "half",
  } as RequestInit);
  return { res, files, sent };
}

/** Contents per upload request: well under the 100 MB body limit of a deployed Worker. */
export const CONTENT_BATCH_BYTES = 32 * 1024 * 1024;

/**
 * The content-addressed upload: the file index goes first, the server answers which contents this
 * build's scope lacks, those go in batches (large files in pieces), then the build starts from the
 * index. `sent` counts every request body. Null when the server has no /v1/contexts (an older kiln).
 */
async function sendIndexed(opts: BuildOptions, dir: string, dockerfile: string | undefined, q: URLSearchParams, dockerfileText: string, secrets: Record<string, string>): Promise<{ res: Response; files: number; sent: number } | null> {
  const index = await contextIndex(dir, dockerfile);
  const tags = new URLSearchParams(q.getAll("tag").map((t) => ["tag", t]));
  const headers = authHeaders(opts.token);
  const digests = [...index.sources.keys()];
  const ask = JSON.stringify({ digests });
  let sent = ask.length;
  // both requests below may be sent again on a new connection: their bodies are made again from the
  // context, and storing the same contents twice changes nothing
  const m = await requestIdempotent(opts.server, `/v1/contexts/missing?${tags}`, () => ({ method: "POST", headers: { ...headers, "content-type": "application/json" }, body: ask }));
  if (m.status === 404) {
    await m.body?.cancel();
    return null;
  }
  // a refusal here (a tag the token may not push, …) is the build's: its message as POST /v1/builds would give it
  if (!m.ok) return { res: m, files: index.files.length, sent };
  const { missing } = (await m.json()) as { missing: string[] };
  const todo = missing.map((d) => ({ sha256: d, ...index.sources.get(d)! })).filter((x) => x.abs);
  for (const batch of contentBatches(todo, CONTENT_BATCH_BYTES)) {
    let bytes = 0;
    const up = await requestIdempotent(opts.server, `/v1/contexts/contents?${tags}`, () => {
      const body = batchStream(batch).pipeThrough(new TransformStream<Uint8Array, Uint8Array>({ transform(chunk, ctrl) { bytes += chunk.byteLength; ctrl.enqueue(chunk); } }));
      return { method: "POST", headers: { ...headers, "content-type": "application/x-tar" }, body, duplex: "half" } as RequestInit;
    });
    sent += bytes;
    if (!up.ok) throw await httpError("uploading the build context", up);
    await up.body?.cancel();
  }
  const upload: ContextIndexUpload = { files: index.files, dockerfile: dockerfileText, secrets };
  const json = JSON.stringify(upload);
  sent += Buffer.byteLength(json);
  const res = await request(opts.server, `/v1/builds?${q}`, { method: "POST", headers: { ...headers, "user-agent": CLI_USER_AGENT, "content-type": CONTEXT_INDEX_TYPE }, body: json });
  return { res, files: index.files.length, sent };
}

async function getBuild(server: string, token: string | undefined, id: string): Promise<BuildView> {
  const r = await request(server, `/v1/builds/${encodeURIComponent(id)}`, { headers: authHeaders(token) });
  if (!r.ok) throw await httpError(`reading build ${id}`, r, r.status === 404 ? "check the build id (and that your token may pull its repository)" : undefined);
  return (await r.json()) as BuildView;
}

/**
 * Follows a build's events until `done`; returns the exit code. A reconnect sends `Last-Event-ID`, so
 * the server sends only what came after; against a server that numbers no events (it replays the
 * whole history), the events already seen are skipped by count. Nothing is shown twice.
 */
export async function follow(server: string, token: string | undefined, id: string, progress: Progress, source?: DockerfileSource): Promise<number> {
  const first = await getBuild(server, token, id);
  // Every step first, so that positions ([2/5]) are known before any step starts.
  for (const s of first.steps ?? []) if (s.status === "pending") progress.step(s);
  const terminal = new Set(["succeeded", "failed", "cancelled"]);
  let seen = 0;
  let lastId: string | undefined;
  let lastError: unknown;
  for (let attempt = 0; attempt < 6; attempt++) {
    let count = 0;
    try {
      const resume: Record<string, string> = lastId !== undefined ? { "last-event-id": lastId } : {};
      const res = await request(server, `/v1/builds/${encodeURIComponent(id)}/events`, { headers: { accept: "text/event-stream", ...resume, ...authHeaders(token) } });
      if (!res.ok || !res.body) throw await httpError(`following build ${id}`, res);
      for await (const ev of readSse(res.body)) {
        // a server that numbers its events also marks kiln's own lines (source: "kiln")
        if (ev.id !== undefined) {
          if (lastId !== undefined && Number(ev.id) <= Number(lastId)) continue;
          lastId = ev.id;
        } else {
          if (count++ < seen) continue;
          seen = count;
        }
        let data: any;
        try { data = JSON.parse(ev.data); } catch { data = { text: ev.data }; }
        if (ev.event === "step") {
          progress.step((data.step ?? data) as StepView);
        } else if (ev.event === "log") {
          progress.log(Number(data.step ?? data.index ?? 0), String(data.text ?? data.line ?? ""), ev.id !== undefined ? data.source === "kiln" : undefined);
        } else if (ev.event === "done") {
          const b = await getBuild(server, token, id);
          progress.done(b, source);
          return b.status === "succeeded" ? 0 : 1;
        }
      }
    } catch (e) {
      if (e instanceof CliError && !/cannot reach/.test(e.message)) throw e;
      lastError = e;
    }
    const b = await getBuild(server, token, id).catch((e) => { lastError = e; return undefined; });
    if (b && terminal.has(b.status)) {
      progress.done(b, source);
      return b.status === "succeeded" ? 0 : 1;
    }
    await new Promise((r) => setTimeout(r, 500 * (attempt + 1)));
  }
  const why = lastError instanceof Error ? `: ${lastError.message}` : "";
  throw new CliError(`lost the event stream of build ${id}${why}; follow it again with kiln logs ${id}`);
}
