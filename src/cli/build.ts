// `kiln build`: stream the context, follow the build's events, exit non-zero on failure.
import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import { contextStream } from "./context";
import { PlainProgress, type BuildView, type StepView } from "./progress";
import { readSse } from "./sse";

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
  quiet?: boolean;
}

function authHeaders(token?: string): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}

/** Adds `[i/n]` per stage, as BuildKit prints it. */
export function withPositions(steps: StepView[]): StepView[] {
  const byStage = new Map<string, StepView[]>();
  for (const s of steps) {
    const k = String(s.stage ?? "");
    byStage.set(k, [...(byStage.get(k) ?? []), s]);
  }
  return steps.map((s) => {
    const list = byStage.get(String(s.stage ?? ""))!;
    return { ...s, position: `${list.indexOf(s) + 1}/${list.length}` };
  });
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

export async function runBuild(opts: BuildOptions, out: (s: string) => void = (s) => process.stdout.write(s)): Promise<number> {
  const dir = path.resolve(opts.dir);
  if (!statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`build context ${opts.dir} is not a directory`);
  const dockerfileArg = opts.dockerfile ?? "Dockerfile";
  const dockerfileAbs = path.resolve(opts.dockerfile ? opts.dockerfile : path.join(dir, "Dockerfile"));
  const relDockerfile = path.relative(dir, dockerfileAbs).split(path.sep).join("/");
  const outside = relDockerfile.startsWith("../") || path.isAbsolute(relDockerfile);
  let dockerfileText: string;
  try {
    dockerfileText = readFileSync(dockerfileAbs, "utf8");
  } catch {
    throw new Error(`cannot read Dockerfile ${dockerfileArg}`);
  }

  const q = new URLSearchParams();
  for (const t of opts.tags) q.append("tag", t);
  if (!outside) q.set("dockerfile", relDockerfile);
  for (const a of opts.buildArgs) q.append("build-arg", a.includes("=") ? a : `${a}=${process.env[a] ?? ""}`);
  if (opts.target) q.set("target", opts.target);
  if (opts.noCache) q.set("no-cache", "1");
  if (opts.platform) q.set("platform", opts.platform);

  const secrets = readSecrets(opts.secrets);
  const { stream } = contextStream(dir, outside ? undefined : relDockerfile);
  let body: ReadableStream<Uint8Array> = stream;
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
    const reader = stream.getReader();
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

  const progress = new PlainProgress(out);
  out(`#0 [internal] load build context ${dir}\n`);
  const res = await fetch(`${opts.server}/v1/builds?${q}`, {
    method: "POST",
    headers: { "content-type": contentType, ...authHeaders(opts.token) },
    body,
    duplex: "half",
  } as RequestInit);
  const created = (await res.json().catch(() => ({}))) as { id?: string; error?: { message?: string; line?: number } };
  if (!res.ok || !created.id) {
    const msg = created.error?.message ?? `server answered ${res.status}`;
    out(`ERROR: ${msg}${created.error?.line ? ` (Dockerfile line ${created.error.line})` : ""}\n`);
    return 1;
  }
  out(`#0 build ${created.id} queued\n\n`);
  return await follow(opts.server, opts.token, created.id, progress, dockerfileText.split("\n"));
}

/** Follows a build's events until `done`; returns the exit code. */
export async function follow(server: string, token: string | undefined, id: string, progress: PlainProgress, dockerfileLines?: string[]): Promise<number> {
  let steps: StepView[] = [];
  const refresh = async (): Promise<BuildView> => {
    const r = await fetch(`${server}/v1/builds/${id}`, { headers: authHeaders(token) });
    if (!r.ok) throw new Error(`GET /v1/builds/${id}: ${r.status}`);
    const b = (await r.json()) as BuildView;
    steps = withPositions(b.steps ?? []);
    return { ...b, steps };
  };
  await refresh();
  const terminal = new Set(["succeeded", "failed", "cancelled"]);
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const res = await fetch(`${server}/v1/builds/${id}/events`, { headers: { accept: "text/event-stream", ...authHeaders(token) } });
      if (!res.ok || !res.body) throw new Error(`events: ${res.status}`);
      for await (const ev of readSse(res.body)) {
        let data: any;
        try { data = JSON.parse(ev.data); } catch { data = { text: ev.data }; }
        if (ev.event === "step") {
          const s = (data.step ?? data) as StepView;
          const known = steps.find((x) => x.index === s.index);
          progress.step({ ...known, ...s, position: known?.position });
        } else if (ev.event === "log") {
          const idx = data.step ?? data.index ?? 0;
          progress.log(idx, String(data.text ?? data.line ?? ""), data.elapsedMs);
        } else if (ev.event === "done") {
          const b = await refresh();
          progress.done(b, dockerfileLines);
          return b.status === "succeeded" ? 0 : 1;
        }
      }
    } catch {
      await new Promise((r) => setTimeout(r, 500));
    }
    const b = await refresh();
    if (terminal.has(b.status)) {
      progress.done(b, dockerfileLines);
      return b.status === "succeeded" ? 0 : 1;
    }
  }
  throw new Error(`lost the event stream of build ${id}`);
}
