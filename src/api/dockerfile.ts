import { Hono } from "hono";
import type { Env } from "../env";
import { checkLiteralValues, DockerfileError, formatDockerfileError, lintDockerfile, parse, parseInstruction, parsePlatform } from "../dockerfile/index";
import { planDockerfile } from "../plan/index";
import { readLimited } from "../http/body";

/** Largest Dockerfile the check endpoint reads. */
export const MAX_DOCKERFILE_BYTES = 1024 * 1024;

interface CheckRequest {
  dockerfile: string;
  buildArgs: Record<string, string>;
  target?: string;
  platform?: string;
}

class BadRequest extends Error {
  constructor(
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

/** Reads at most MAX_DOCKERFILE_BYTES of the body; larger bodies are rejected with 413. */
async function readBody(req: Request): Promise<string> {
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > MAX_DOCKERFILE_BYTES) {
    throw new BadRequest(`Dockerfile larger than ${MAX_DOCKERFILE_BYTES} bytes`, 413);
  }
  const all = await readLimited(req.body, MAX_DOCKERFILE_BYTES, () => new BadRequest(`Dockerfile larger than ${MAX_DOCKERFILE_BYTES} bytes`, 413));
  return new TextDecoder().decode(all);
}

function stringRecord(v: unknown, what: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (typeof v !== "object" || Array.isArray(v)) throw new BadRequest(`${what} must be an object of strings`);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
    if (typeof val !== "string") throw new BadRequest(`${what}.${k} must be a string`);
    out[k] = val;
  }
  return out;
}

async function readCheckRequest(req: Request, url: URL): Promise<CheckRequest> {
  const out = await readCheckRequestUnchecked(req, url);
  if (out.platform !== undefined) {
    try {
      parsePlatform(out.platform);
    } catch (e) {
      throw new BadRequest((e as Error).message);
    }
  }
  return out;
}

async function readCheckRequestUnchecked(req: Request, url: URL): Promise<CheckRequest> {
  const text = await readBody(req);
  const type = (req.headers.get("content-type") ?? "").toLowerCase();
  const buildArgs: Record<string, string> = {};
  for (const kv of url.searchParams.getAll("build-arg")) {
    const eq = kv.indexOf("=");
    if (eq > 0) buildArgs[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const query: CheckRequest = { dockerfile: text, buildArgs };
  const target = url.searchParams.get("target");
  if (target) query.target = target;
  const platform = url.searchParams.get("platform");
  if (platform) query.platform = platform;
  if (!type.startsWith("application/json")) return query;

  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new BadRequest("body is not valid JSON (send the Dockerfile as text/plain, or JSON {\"dockerfile\": \"...\"})");
  }
  if (typeof body !== "object" || body === null || typeof (body as { dockerfile?: unknown }).dockerfile !== "string") {
    throw new BadRequest('JSON body must be {"dockerfile": "<text>", "buildArgs"?: {...}, "target"?: "..."}');
  }
  const b = body as { dockerfile: string; buildArgs?: unknown; target?: unknown; platform?: unknown };
  const out: CheckRequest = { dockerfile: b.dockerfile, buildArgs: { ...buildArgs, ...stringRecord(b.buildArgs, "buildArgs") } };
  if (typeof b.target === "string" && b.target !== "") out.target = b.target;
  else if (query.target) out.target = query.target;
  if (typeof b.platform === "string" && b.platform !== "") out.platform = b.platform;
  else if (query.platform) out.platform = query.platform;
  return out;
}

function errorJson(e: DockerfileError): { message: string; line: number; column?: number } {
  return e.toJSON();
}

/** All instruction-level errors of a Dockerfile that failed, so one check shows every mistake. */
function collectErrors(text: string, first: DockerfileError): DockerfileError[] {
  const errors: DockerfileError[] = [first];
  try {
    const { ast } = parse(text);
    for (const node of ast.children) {
      try {
        parseInstruction(node);
      } catch (e) {
        if (e instanceof DockerfileError && !errors.some((x) => x.line === e.line && x.message === e.message)) errors.push(e);
      }
    }
  } catch {
    // the text does not even parse: the first error is all there is
  }
  return errors.sort((a, b) => a.line - b.line);
}

/** Plans with the planner builds use (without reading base images: no ONBUILD triggers here). */
async function check(req: CheckRequest): Promise<{ status: 200 | 400; body: unknown }> {
  try {
    const { parsed, plan, graph } = await planDockerfile(req.dockerfile, {
      buildArgs: req.buildArgs,
      ...(req.target ? { target: req.target } : {}),
      platform: req.platform ?? "linux/amd64",
    });
    // Values BuildKit would only reject while building (signals, ports), for the stages that get built.
    const late: DockerfileError[] = [];
    for (const st of plan.stages) {
      for (const pi of st.instructions) {
        try {
          checkLiteralValues(pi.instruction);
        } catch (e) {
          if (e instanceof DockerfileError) late.push(e);
          else throw e;
        }
      }
    }
    if (late.length > 0) {
      late.sort((a, b) => a.line - b.line);
      return { status: 400, body: { ok: false, error: errorJson(late[0]), errors: late.map(errorJson), excerpt: formatDockerfileError(late[0], req.dockerfile) } };
    }
    const planned = new Map(plan.stages.map((s) => [s.index, s]));
    const checks = [
      ...parsed.warnings.map((w) => ({
        rule: "NoEmptyContinuation",
        message: w.message,
        line: w.line,
        url: "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/",
      })),
      ...lintDockerfile(parse(req.dockerfile).ast, parsed),
    ].sort((a, b) => a.line - b.line);
    return {
      status: 200,
      body: {
        ok: true,
        directives: parsed.directives,
        target: plan.target,
        platform: plan.platform,
        stages: parsed.stages.map((st) => {
          const p = planned.get(st.index);
          return {
            index: st.index,
            name: st.name ?? null,
            base: st.baseName,
            resolvedBase: p?.baseName ?? null,
            platform: st.platform ?? null,
            line: st.location.startLine,
            planned: p !== undefined,
            dependencies: p?.dependencies ?? [],
            instructions: st.instructions.map((inst, i) => ({
              kind: inst.kind,
              line: inst.location.startLine,
              endLine: inst.location.endLine,
              original: inst.original,
              classification: p?.instructions[i].classification ?? classifyKind(inst.kind),
            })),
          };
        }),
        buildOrder: plan.stages.map((s) => s.index),
        steps: graph.steps.map((st) => ({ index: st.index, stage: st.stageName, kind: st.kind, instruction: st.instruction, line: st.line, deps: st.deps })),
        warnings: checks,
      },
    };
  } catch (e) {
    if (!(e instanceof DockerfileError)) throw e;
    const errors = collectErrors(req.dockerfile, e);
    return { status: 400, body: { ok: false, error: errorJson(e), errors: errors.map(errorJson), excerpt: formatDockerfileError(e, req.dockerfile) } };
  }
}

function classifyKind(kind: string): string {
  if (kind === "RUN" || kind === "COPY" || kind === "ADD") return "layer";
  return kind === "WORKDIR" ? "workdir" : "metadata";
}

/** POST /v1/dockerfile/check: lint a Dockerfile (no auth: nothing is stored). */
export const dockerfileRoutes = new Hono<{ Bindings: Env }>();

dockerfileRoutes.post("/check", async function checkDockerfile(c) {
  let req: CheckRequest;
  try {
    req = await readCheckRequest(c.req.raw, new URL(c.req.url));
  } catch (e) {
    if (e instanceof BadRequest) return c.json({ ok: false, error: { message: e.message } }, e.status as 400 | 413);
    throw e;
  }
  const { status, body } = await check(req);
  return c.json(body, status);
});
