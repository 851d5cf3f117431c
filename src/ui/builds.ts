/**
 * Builds: the list (filter by repository and status) and a build's page (timeline, live log, error
 * excerpt, bases, image, cancel). Visibility is /v1/builds's: pull on the build's repository, admin
 * for untagged builds (buildAccessScope); a build the session may not see is answered exactly like a
 * missing one.
 */
import { Hono } from "hono";
import { raw } from "hono/html";
import { buildAccessScope, principalHasScope } from "../auth/api";
import { isRepositoryName } from "../auth/scopes";
import { buildEventStream } from "../builder/event-stream";
import type { BuildView, StepView } from "../builder/model";
import type { LogEvent } from "../protocol/events";
import type { Principal } from "../auth/principal";
import { getBuildRow, listBuilds, type BuildRow } from "../storage/builds";
import { formatDuration, h, page, shortDigest, statusBadge, time, type Html } from "./layout";
import { LIVE_SCRIPT, logLines } from "./live";
import { UiError, pageOptions } from "./errors";
import type { UiContext, UiEnv } from "./session";

export const uiBuilds = new Hono<UiEnv>();

const BUILD_STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const PAGE_SIZE = 50;
/** Log events rendered into the page (the live view replays the whole stream). */
const MAX_LOG_EVENTS = 2000;

const coordinator = (c: UiContext, id: string) => c.env.BUILD_COORDINATOR.get(c.env.BUILD_COORDINATOR.idFromName(id));

/** The build's row when the session may `action` it; 404 (pull) as for a missing build, 403 for cancel without push. */
async function authorizedRow(c: UiContext, id: string, action: "pull" | "push"): Promise<BuildRow> {
  const row = /^[A-Za-z0-9._-]{1,200}$/.test(id) ? await getBuildRow(c.env, id) : null;
  const principal = c.get("principal");
  if (!row || !principalHasScope(principal, buildAccessScope(row.repository, "pull"))) throw new UiError(404, "Build not found", `There is no build ${id} that your token may read.`);
  if (action === "push" && !principalHasScope(principal, buildAccessScope(row.repository, "push"))) {
    throw new UiError(403, "Not allowed", `Your token may read build ${id} but not cancel it: that needs push on ${row.repository ?? "(untagged builds: admin)"}.`);
  }
  return row;
}

function trigger(row: BuildRow): Html {
  if (row.trigger === "webhook") return h`webhook${row.commit ? h` <code title="${row.commit}">${row.commit.slice(0, 7)}</code>` : ""}`;
  if (row.trigger === "cli") return h`CLI`;
  if (row.trigger === "api") return h`API`;
  if (row.trigger === "dashboard") return h`dashboard`;
  return h`<span class="muted">—</span>`;
}

const ended = (status: string) => ["succeeded", "failed", "cancelled"].includes(status);

function duration(created: number, finished: number | undefined, status: string): string {
  if (!ended(status)) return status === "queued" ? "—" : `${formatDuration(Date.now() - created)} so far`;
  return formatDuration((finished ?? created) - created);
}

uiBuilds.get("/", async (c) => {
  const principal = c.get("principal");
  const repository = (c.req.query("repository") ?? "").trim();
  const status = c.req.query("status") ?? "";
  if (repository && !isRepositoryName(repository)) throw new UiError(400, "Invalid filter", `${repository} is not a repository name.`);
  if (status && !BUILD_STATUSES.includes(status)) throw new UiError(400, "Invalid filter", `status must be one of ${BUILD_STATUSES.join(", ")}.`);
  // As GET /v1/builds: a repository filter needs pull on it. Without one, each build is shown when
  // its own visibility rule (GET /v1/builds/:id) lets the session read it.
  if (repository && !principalHasScope(principal, { kind: "repository", repository, action: "pull" })) {
    throw new UiError(403, "Not allowed", `Your token may not read builds of ${repository}.`);
  }
  const admin = principalHasScope(principal, { kind: "admin" });
  const rows = (await listBuilds(c.env, {
    repository: repository || undefined, status: status || undefined,
    repositoryPrefixes: admin || repository ? undefined : pullPrefixes(principal), limit: admin || repository ? PAGE_SIZE : 500,
  }))
    .filter((r) => principalHasScope(principal, buildAccessScope(r.repository, "pull")))
    .slice(0, PAGE_SIZE);
  // finished builds carry their step counts in D1; only running (or older) ones ask their coordinator
  const views = await Promise.all(rows.map((r) => (ended(r.status) && r.steps ? null : coordinator(c, r.id).getBuild().catch(() => null))));
  const body = h`<h1>Builds</h1>
<p><a class="button" href="/ui/builds/new">New build</a></p>
<p class="muted">Start a build here, with <code>kiln build -t &lt;repository&gt;:&lt;tag&gt; .</code> or with <code>POST /v1/builds</code>; it shows here as it runs.</p>
<form class="filters" method="get" action="/ui/builds" role="search" aria-label="Filter builds">
  <div><label for="f-repo">Repository</label><input id="f-repo" name="repository" value="${repository}" placeholder="team/app" size="24"></div>
  <div><label for="f-status">Status</label><select id="f-status" name="status"><option value="">any</option>${BUILD_STATUSES.map(
    (s) => h`<option value="${s}"${s === status ? raw(" selected") : ""}>${s}</option>`,
  )}</select></div>
  <div><button type="submit">Filter</button></div>
</form>
${rows.length === 0 ? h`<p>No builds${repository || status ? " match these filters" : " yet"}.</p>` : h`<div class="scroll"><table class="cards">
<caption class="skip">Builds, newest first</caption>
<thead><tr><th scope="col">Status</th><th scope="col">Build</th><th scope="col">Trigger</th><th scope="col">Started</th><th scope="col">Duration</th><th scope="col">Cache hits</th></tr></thead>
<tbody>${rows.map((r, i) => buildRow(r, views[i]))}</tbody></table></div>`}`;
  return c.html(page(pageOptions(c, "Builds", "builds"), body));
});

/**
 * The literal beginnings of the repository patterns a token may pull (`team/` of `team/*`), so the
 * query skips other namespaces' builds; undefined when a pattern starts with `*` (any repository).
 * Only a narrowing: every row is still checked with the build's own rule.
 */
function pullPrefixes(principal: Principal): string[] | undefined {
  if (principal.kind !== "token") return undefined;
  const prefixes = principal.scopes.flatMap((s) => (s.kind === "repository" && s.actions.includes("pull") ? [s.pattern.split("*")[0]] : []));
  return prefixes.includes("") ? undefined : [...new Set(prefixes)];
}

function buildRow(r: BuildRow, view: BuildView | null): Html {
  const counts = r.steps && ended(r.status)
    ? r.steps
    : { total: view?.steps.length ?? 0, cached: (view?.steps ?? []).filter((s) => s.status === "cached").length };
  const what = r.tags.length ? r.tags.join(", ") : r.repository ?? "untagged build";
  return h`<tr><td data-label="Status">${statusBadge(r.status)}</td>
<td data-label="Build"><span><a href="/ui/builds/${r.id}">${what}</a><br><code class="muted">${r.id}</code></span></td>
<td data-label="Trigger">${trigger(r)}</td><td data-label="Started">${time(r.createdAt)}</td><td data-label="Duration">${duration(r.createdAt, view?.finishedAt ?? r.updatedAt, r.status)}</td>
<td data-label="Cache hits">${counts.total ? `${counts.cached} of ${counts.total}` : "—"}</td></tr>`;
}

uiBuilds.get("/:id", async (c) => {
  const id = c.req.param("id");
  const row = await authorizedRow(c, id, "pull");
  const stub = coordinator(c, id);
  const [view, transcript] = await Promise.all([stub.getBuild(), stub.getTranscript(MAX_LOG_EVENTS)]);
  const status = view?.status ?? row.status;
  const principal = c.get("principal");
  const canCancel = !ended(status) && principalHasScope(principal, buildAccessScope(row.repository, "push"));
  const live = !!view && !ended(status);
  const host = new URL(c.req.url).host;
  const steps = view?.steps ?? [];
  const error = view?.error ?? (row.error ? { message: row.error } : undefined);
  const failedStep = error?.step !== undefined ? steps.find((s) => s.index === error.step) : steps.find((s) => s.status === "failed");
  const errorLine = error?.line ?? failedStep?.line;
  const body = h`<div id="build" data-events="/ui/builds/${id}/events"${live ? raw(' data-live="1"') : ""}>
<h1>Build <code>${id}</code></h1>
<dl class="facts">
  <dt>Status</dt><dd>${statusBadge(status, "build-status")} <span id="live-state" class="muted" role="status"></span></dd>
  <dt>Repository</dt><dd>${row.repository ? h`<a href="/ui/repositories/${row.repository}">${row.repository}</a>` : "untagged"}</dd>
  <dt>Tags</dt><dd>${row.tags.length ? row.tags.join(", ") : "—"}</dd>
  <dt>Trigger</dt><dd>${trigger(row)}</dd>
  <dt>Started</dt><dd>${time(row.createdAt)}</dd>
  <dt>Duration</dt><dd>${duration(row.createdAt, view?.finishedAt ?? row.updatedAt, status)}</dd>
  <dt>Cache hits</dt><dd>${steps.length ? `${steps.filter((s) => s.status === "cached").length} of ${steps.length} steps` : "—"}</dd>
  ${view?.parent ? h`<dt>Part of</dt><dd><a href="/ui/builds/${view.parent}">${view.parent}</a></dd>` : ""}
</dl>
${canCancel ? h`<form method="post" action="/ui/builds/${id}/cancel"><input type="hidden" name="_csrf" value="${c.get("session").csrf}"><p><button type="submit" class="danger">Cancel build</button></p></form>` : ""}
${error ? h`<section aria-labelledby="err-h"><h2 id="err-h">Error</h2><div class="error" role="alert"><p>${error.message}</p>
${failedStep ? h`<p>Step ${failedStep.index}: <code>${failedStep.instruction}</code></p>` : ""}</div>
${transcript && errorLine ? excerpt(transcript.dockerfile, transcript.dockerfilePath, errorLine) : ""}</section>` : ""}
${view?.image ? imageSection(view.image, host) : ""}
${view?.children?.length ? h`<h2>Platforms</h2><ul>${view.children.map((ch) => h`<li><a href="/ui/builds/${ch.id}">${ch.platform}</a> ${statusBadge(ch.status)}</li>`)}</ul>` : ""}
<h2>Steps</h2>
${steps.length ? timeline(steps) : h`<p class="muted">No steps${view ? "" : " (the build never started: its source could not be fetched)"}.</p>`}
${view?.bases?.length ? h`<h2>Resolved bases</h2><div class="scroll"><table><thead><tr><th scope="col">Stage</th><th scope="col">Reference</th><th scope="col">From</th><th scope="col">Digest</th></tr></thead><tbody>${view.bases.map(
    (b) => h`<tr><td>${b.stage}</td><td><code>${b.ref}</code></td><td>${b.source}/${b.repository}</td><td><code>${b.digest}</code>${b.resolvedDigest ? h`<br><span class="muted">index <code>${b.resolvedDigest}</code></span>` : ""}</td></tr>`,
  )}</tbody></table></div>` : ""}
<h2 id="log-h">Log</h2>
${transcript?.truncated ? h`<p class="muted">Only the last ${MAX_LOG_EVENTS} log events are shown.</p>` : ""}
<pre id="log" class="log" role="log" aria-labelledby="log-h" tabindex="0">${transcript?.log.length ? transcript.log.map((e: LogEvent) => logLines(e.step, e.text)).join("") : ended(status) ? "(no output)" : "(no output yet)"}</pre>
</div>`;
  return c.html(page({ ...pageOptions(c, `Build ${id}`, "builds"), script: LIVE_SCRIPT }, body));
});

function timeline(steps: StepView[]): Html {
  const max = Math.max(1, ...steps.map((s) => s.durationMs ?? 0));
  // Stage names only when there is more than one stage.
  const staged = new Set(steps.map((s) => s.stage)).size > 1;
  return h`<ol class="timeline" aria-label="Step timeline">${steps.map((s) => {
    const w = s.durationMs === null ? 0 : Math.max(1, Math.round((s.durationMs / max) * 100));
    return h`<li id="step-${s.index}" class="b-${s.status}"><span class="muted">#${s.index}</span>
<span class="instr">${staged && s.stage ? h`<span class="muted">[${s.stage}]</span> ` : ""}${s.instruction}</span>
${statusBadge(s.status)}<span class="dur">${formatDuration(s.durationMs)}</span>
<span class="track" aria-hidden="true"><span class="bar w${w}"></span></span></li>`;
  })}</ol>`;
}

/** The Dockerfile lines around `line` (1-based), the failing one marked. */
function excerpt(dockerfile: string, path: string, line: number): Html {
  const lines = dockerfile.split(/\r?\n/);
  if (lines.length > 1 && lines[lines.length - 1] === "") lines.pop();
  const from = Math.max(1, line - 3);
  const to = Math.min(lines.length, line + 2);
  const out: Html[] = [];
  for (let n = from; n <= to; n++) {
    const text = h`<span class="ln">${n}</span>${lines[n - 1]}`;
    out.push(n === line ? h`<mark id="error-line" aria-label="line ${n}, the failing line">${text}</mark>` : h`${text}\n`);
  }
  return h`<p><code>${path}</code>, line ${line}:</p><pre class="src" aria-label="${path} around line ${line}">${out}</pre>`;
}

function imageSection(image: NonNullable<BuildView["image"]>, host: string): Html {
  const pull = `docker pull ${host}/${image.repository}@${image.digest}`;
  return h`<h2>Image</h2><dl class="facts"><dt>Digest</dt><dd><a href="/ui/image/${image.repository}@${image.digest}"><code>${image.digest}</code></a></dd>
<dt>Tags</dt><dd>${image.tags.map((t) => `${image.repository}:${t}`).join(", ") || "—"}</dd></dl>
<label for="pull-cmd">Pull command</label><div class="copy"><input id="pull-cmd" readonly value="${pull}"><button type="button" data-copy="pull-cmd" hidden>Copy</button></div>
<p class="muted">Image <a href="/ui/image/${image.repository}@${image.digest}">${shortDigest(image.digest)}</a>: platforms, layers and referrers.</p>`;
}

uiBuilds.get("/:id/events", async (c) => {
  const id = c.req.param("id");
  await authorizedRow(c, id, "pull");
  const res = await buildEventStream(c.env, c.executionCtx, id, c.req.header("last-event-id"));
  if (!res) throw new UiError(404, "Build not found", `Build ${id} has no event stream.`);
  return res;
});

uiBuilds.post("/:id/cancel", async (c) => {
  const id = c.req.param("id");
  await authorizedRow(c, id, "push");
  await coordinator(c, id).cancel();
  return c.redirect(`/ui/builds/${id}`, 303);
});
