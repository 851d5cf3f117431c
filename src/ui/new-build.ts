/**
 * The "New build" form (/ui/builds/new): tags, an optional Dockerfile, options and a context archive
 * (tar or tar.gz), posted as a plain multipart form (no JavaScript needed). It authorizes exactly as
 * POST /v1/builds (authorizeBuild, refuseAtQuota) with the session's token, and the archive streams
 * from the request into the context store as /v1/builds's does: it is never held in memory. A refusal
 * (a Dockerfile error with its line, a missing scope, a full quota) shows the form again with the reason.
 */
import { Hono } from "hono";
import { raw } from "hono/html";
import { ApiError } from "../errors";
import { authorizeBuild, parseBuildArgs, refuseAtQuota } from "../builder/authorize";
import { startBuild } from "../builder/start";
import { MAX_DOCKERFILE_BYTES } from "../context/ingest";
import { MultipartError } from "../context/multipart";
import { maxRequestBytes } from "../http/body-limit";
import { formatBytes, h, page, type Html } from "./layout";
import { UiError, pageOptions } from "./errors";
import { readTextPart } from "./upload";
import type { UiContext, UiEnv } from "./session";

export const uiNewBuild = new Hono<UiEnv>();

/** The form's fields, as typed (shown again after a refusal; a file input cannot be refilled). */
interface NewBuildValues {
  tags: string;
  dockerfile: string;
  dockerfilePath: string;
  target: string;
  platform: string;
  buildArgs: string;
  noCache: boolean;
}

type Field = "tags" | "dockerfile" | "dockerfilePath" | "target" | "platform" | "buildArgs" | "context";

const EMPTY: NewBuildValues = { tags: "", dockerfile: "", dockerfilePath: "", target: "", platform: "", buildArgs: "", noCache: false };
const MAX_FIELD_BYTES = 64 * 1024;

/** The form parts before the archive, by name (the archive comes last: a form's parts are sent in order). */
const TEXT_FIELDS: Record<string, { key: Exclude<keyof NewBuildValues, "noCache">; max: number; what: string }> = {
  tag: { key: "tags", max: MAX_FIELD_BYTES, what: "Tags" },
  dockerfile: { key: "dockerfile", max: MAX_DOCKERFILE_BYTES, what: "The Dockerfile" },
  "dockerfile-path": { key: "dockerfilePath", max: MAX_FIELD_BYTES, what: "The Dockerfile path" },
  target: { key: "target", max: MAX_FIELD_BYTES, what: "The target" },
  platform: { key: "platform", max: MAX_FIELD_BYTES, what: "The platform" },
  "build-arg": { key: "buildArgs", max: MAX_FIELD_BYTES, what: "Build arguments" },
};

uiNewBuild.get("/", (c) => newBuildPage(c, EMPTY));

uiNewBuild.post("/", async (c) => {
  const upload = c.get("upload");
  const values: NewBuildValues = { ...EMPTY };
  try {
    // the fields up to the archive; the archive's part is handed on unread
    let archive: ReadableStream<Uint8Array> | null = null;
    for (;;) {
      const next = await upload.parts.next();
      if (next.done) break;
      const part = next.value;
      if (part.name === "context") {
        archive = part.body;
        break;
      }
      if (part.name === "no-cache") {
        values.noCache = (await readTextPart(part, 16, "no-cache")) !== "";
        continue;
      }
      const field = TEXT_FIELDS[part.name];
      if (!field) throw new UiError(400, "Unexpected field", `The form has no field ${JSON.stringify(part.name)}.`);
      values[field.key] = await readTextPart(part, field.max, field.what);
    }
    const origin = new URL(c.req.url).origin;
    const tags = values.tags.split(/[\s,]+/).filter(Boolean);
    let caller;
    try {
      caller = authorizeBuild(c.get("principal"), tags, origin);
      await refuseAtQuota(c.env, tags, origin);
    } catch (e) {
      throw e instanceof ApiError ? new FieldError(e, "tags") : e;
    }
    const started = await startBuild(c.env, c.executionCtx, {
      context: archive,
      contentType: "application/x-tar",
      dockerfilePath: values.dockerfilePath.trim() || undefined,
      dockerfileText: values.dockerfile.trim() ? values.dockerfile : undefined,
      tags,
      buildArgs: parseBuildArgs(values.buildArgs.split(/\r?\n/).map((l) => l.trim()).filter(Boolean)),
      target: values.target.trim() || undefined,
      noCache: values.noCache,
      platform: values.platform.trim() || undefined,
      origin,
      principal: caller.principal,
      trigger: { kind: "dashboard" },
    });
    await upload.finish();
    return c.redirect(`/ui/builds/${started.id}`, 303);
  } catch (e) {
    const refusal = refusalOf(e);
    if (!refusal) throw e;
    // the rest of the upload is read (to a bound) so that the browser shows the answer
    await upload.finish();
    return newBuildPage(c, values, refusal);
  }
});

/** A refusal with the field it concerns. */
class FieldError extends Error {
  constructor(readonly refusal: ApiError, readonly field: Field) {
    super(refusal.message);
  }
}

interface Refusal {
  status: 400 | 403 | 404 | 409 | 413;
  message: string;
  field?: Field;
  line?: number;
}

/** What to tell the user for a refused build, or null for an error that is not a refusal. */
function refusalOf(e: unknown): Refusal | null {
  if (e instanceof FieldError) return { status: statusOf(e.refusal.status), message: e.message, field: e.field };
  if (e instanceof UiError) return { status: e.status === 500 ? 400 : e.status, message: e.message };
  if (e instanceof MultipartError) return { status: 400, message: `The form could not be read: ${e.message}.` };
  if (!(e instanceof ApiError)) return null;
  const line = typeof e.extra.line === "number" ? e.extra.line : undefined;
  const m = e.message;
  const field: Field | undefined = line !== undefined || /^Dockerfile .*larger/.test(m) ? "dockerfile"
    : /build-arg/.test(m) ? "buildArgs"
    : /platform/.test(m) ? "platform"
    : /dockerfile path/i.test(m) ? "dockerfilePath"
    : /\btarget\b/i.test(m) ? "target"
    : /\b(context|tar|gzip|archive)\b/i.test(m) ? "context"
    : undefined;
  return { status: statusOf(e.status), message: m, field, line };
}

const statusOf = (s: number): Refusal["status"] => (s === 403 || s === 404 || s === 409 || s === 413 ? s : 400);

function newBuildPage(c: UiContext, v: NewBuildValues, refusal?: Refusal) {
  const limit = maxRequestBytes(c.env);
  /** aria attributes of a field: invalid and described by the error when the refusal concerns it. */
  const aria = (field: Field, hint?: string): Html => {
    const ids = [refusal?.field === field ? "form-error" : "", hint ?? ""].filter(Boolean).join(" ");
    return raw(`${refusal?.field === field ? ' aria-invalid="true"' : ""}${ids ? ` aria-describedby="${ids}"` : ""}`) as Html;
  };
  const body = h`<h1>New build</h1>
${refusal ? h`<div id="form-error" class="error" role="alert"><p><strong>The build was not started.</strong> ${refusal.line !== undefined ? h`Line ${refusal.line} of the Dockerfile: ` : ""}${refusal.message}</p>${
  refusal.field === "context" || refusal.field === "dockerfile" ? h`<p>Choose the context archive again before you resubmit.</p>` : ""}</div>` : ""}
<form method="post" action="/ui/builds/new" enctype="multipart/form-data">
<input type="hidden" name="_csrf" value="${c.get("session").csrf}">
<label for="nb-tag">Image tags</label>
<input id="nb-tag" name="tag" value="${v.tags}" size="50" placeholder="team/app:1" autocomplete="off" spellcheck="false"${aria("tags", "nb-tag-hint")}>
<p id="nb-tag-hint" class="muted">One or more <code>repository:tag</code>, separated by spaces; your token needs push on each repository (admin tokens may leave it empty).</p>
<label for="nb-dockerfile">Dockerfile <span class="muted">(optional)</span></label>
<textarea id="nb-dockerfile" name="dockerfile" rows="8" cols="70" spellcheck="false"${aria("dockerfile", "nb-dockerfile-hint")}>${v.dockerfile}</textarea>
<p id="nb-dockerfile-hint" class="muted">Used instead of the archive's Dockerfile; leave empty to use the one in the archive.</p>
<fieldset><legend>Options</legend>
<label for="nb-path">Dockerfile path in the archive</label>
<input id="nb-path" name="dockerfile-path" value="${v.dockerfilePath}" placeholder="Dockerfile" size="30"${aria("dockerfilePath")}>
<label for="nb-target">Target stage</label>
<input id="nb-target" name="target" value="${v.target}" size="30"${aria("target")}>
<label for="nb-platform">Platform</label>
<input id="nb-platform" name="platform" value="${v.platform}" placeholder="linux/amd64" size="30"${aria("platform", "nb-platform-hint")}>
<p id="nb-platform-hint" class="muted"><code>os/arch</code>, or several separated by commas for a multi-platform image.</p>
<label for="nb-args">Build arguments</label>
<textarea id="nb-args" name="build-arg" rows="3" cols="50" spellcheck="false" placeholder="VERSION=1.2"${aria("buildArgs", "nb-args-hint")}>${v.buildArgs}</textarea>
<p id="nb-args-hint" class="muted">One <code>NAME=value</code> a line.</p>
<p><input id="nb-nocache" name="no-cache" type="checkbox" value="1"${v.noCache ? raw(" checked") : ""}> <label for="nb-nocache" class="inline">Do not use the cache</label></p>
</fieldset>
<label for="nb-context">Context archive</label>
<input id="nb-context" name="context" type="file" accept=".tar,.tar.gz,.tgz,application/x-tar,application/gzip"${aria("context", "nb-context-hint")}>
<p id="nb-context-hint" class="muted">A tar or tar.gz of the build context${limit ? `, at most ${formatBytes(limit)} (KILN_MAX_REQUEST_BYTES)` : ""}; without one, the build has an empty context. Large contexts upload faster with <code>kiln build</code>, which sends only the files kiln lacks.</p>
<p><button type="submit">Start build</button></p>
</form>`;
  return c.html(page(pageOptions(c, "New build", "builds"), body), refusal?.status ?? 200);
}
