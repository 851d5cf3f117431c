/**
 * Admin pages (admin scope, as /v1/runners, /v1/webhooks and /v1/tokens): runners, webhooks (list,
 * delete) and tokens (create, shown once; revoke).
 */
import { Hono } from "hono";
import { principalHasScope } from "../auth/api";
import { ScopeError, formatScope, parseScopes } from "../auth/scopes";
import { createToken, listTokens, revokeToken } from "../storage/tokens";
import { deleteWebhook, listWebhooks } from "../storage/webhooks";
import { h, page, time } from "./layout";
import { LIVE_SCRIPT } from "./live";
import { UiError, pageOptions } from "./errors";
import type { UiContext, UiEnv } from "./session";

export const uiAdmin = new Hono<UiEnv>();

uiAdmin.use("*", async (c, next) => {
  if (!principalHasScope(c.get("principal"), { kind: "admin" })) throw new UiError(403, "Not allowed", "These pages need an admin token.");
  await next();
});

const dispatcher = (c: UiContext) => c.env.DISPATCHER.get(c.env.DISPATCHER.idFromName("default"));
const csrfField = (c: UiContext) => h`<input type="hidden" name="_csrf" value="${c.get("session").csrf}">`;

uiAdmin.get("/runners", async (c) => {
  const runners = await dispatcher(c).listRunners();
  const body = h`<h1>Runners</h1>${runners.length === 0 ? h`<p>No runner has asked for work yet.</p>` : h`<div class="scroll"><table>
<thead><tr><th scope="col">Runner</th><th scope="col">State</th><th scope="col">Platforms</th><th scope="col">Current job</th><th scope="col">Last seen</th></tr></thead>
<tbody>${runners.map((r) => h`<tr><td><code>${r.runnerId}</code>${Object.keys(r.labels).length ? h`<br><span class="muted">${Object.entries(r.labels).map(([k, v]) => `${k}=${v}`).join(", ")}</span>` : ""}</td>
<td><span class="badge ${r.online ? "s-succeeded" : "s-cancelled"}">${r.online ? "online" : "offline"}</span></td><td>${r.platforms.join(", ")}</td>
<td>${r.currentJob ? h`<a href="/ui/builds/${r.currentJob.buildId}">${r.currentJob.buildId}</a> step ${r.currentJob.step}` : "idle"}</td><td>${time(r.lastSeen)}</td></tr>`)}</tbody></table></div>`}`;
  return c.html(page(pageOptions(c, "Runners", "runners"), body));
});

uiAdmin.get("/webhooks", async (c) => {
  const hooks = await listWebhooks(c.env);
  const origin = new URL(c.req.url).origin;
  const body = h`<h1>Webhooks</h1><p class="muted">Register webhooks with <code>POST /v1/webhooks</code>; the receiver URL goes into the git host.</p>
${hooks.length === 0 ? h`<p>No webhooks.</p>` : h`<div class="scroll"><table>
<thead><tr><th scope="col">Source</th><th scope="col">Image</th><th scope="col">Branches and tags</th><th scope="col">Receiver</th><th scope="col">Created</th><th scope="col"><span class="skip">Actions</span></th></tr></thead>
<tbody>${hooks.map((w) => h`<tr><td>${w.provider}: <code>${w.repository}</code></td><td><a href="/ui/repositories/${w.image}">${w.image}</a></td>
<td>${w.branches.join(", ") || "all"} → ${w.tags.join(", ")}</td><td><code>${origin}/v1/hooks/${w.provider}/${w.id}</code></td><td>${time(w.createdAt)}</td>
<td><form method="post" action="/ui/admin/webhooks/${w.id}/delete">${csrfField(c)}<button type="submit" class="danger" aria-label="Delete the webhook of ${w.repository}">Delete</button></form></td></tr>`)}</tbody></table></div>`}`;
  return c.html(page(pageOptions(c, "Webhooks", "webhooks"), body));
});

uiAdmin.post("/webhooks/:id/delete", async (c) => {
  if (!(await deleteWebhook(c.env, c.req.param("id")))) throw new UiError(404, "Webhook not found", "There is no such webhook.");
  return c.redirect("/ui/admin/webhooks", 303);
});

async function tokensPage(c: UiContext, notice?: { created?: { name: string; token: string }; error?: string; name?: string; scopes?: string }) {
  const tokens = await listTokens(c.env);
  const body = h`<h1>Tokens</h1>
${notice?.created ? h`<div class="notice" role="status"><p>Token <strong>${notice.created.name}</strong> was created. Copy it now: it is shown only once.</p>
<label for="new-token">New token</label><div class="copy"><input id="new-token" readonly value="${notice.created.token}"><button type="button" data-copy="new-token" hidden>Copy</button></div></div>` : ""}
${notice?.error ? h`<p class="error" role="alert">${notice.error}</p>` : ""}
<h2>Create a token</h2>
<form method="post" action="/ui/admin/tokens">${csrfField(c)}
<label for="t-name">Name</label><input id="t-name" name="name" required maxlength="200" value="${notice?.name ?? ""}">
<label for="t-scopes">Scopes, one per line</label><textarea id="t-scopes" name="scopes" rows="3" cols="40" required aria-describedby="t-scopes-help">${notice?.scopes ?? ""}</textarea>
<p id="t-scopes-help" class="muted">For example <code>repository:team/*:pull,push</code>, <code>runner</code>, <code>runner:team/**</code> or <code>admin</code>.</p>
<p><button type="submit">Create token</button></p></form>
<h2>Tokens</h2>${tokens.length === 0 ? h`<p>No tokens.</p>` : h`<div class="scroll"><table>
<thead><tr><th scope="col">Name</th><th scope="col">Scopes</th><th scope="col">Created</th><th scope="col">State</th></tr></thead>
<tbody>${tokens.map((t) => h`<tr><td>${t.name}<br><code class="muted">${t.id}</code></td><td>${t.scopes.map((s) => h`<code>${formatScope(s)}</code><br>`)}</td><td>${time(t.createdAt)}</td>
<td>${t.revokedAt !== null ? h`revoked ${time(t.revokedAt)}` : h`<form method="post" action="/ui/admin/tokens/${t.id}/revoke">${csrfField(c)}<button type="submit" class="danger" aria-label="Revoke ${t.name}">Revoke</button></form>`}</td></tr>`)}</tbody></table></div>`}`;
  c.header("cache-control", "no-store");
  return c.html(page({ ...pageOptions(c, "Tokens", "tokens"), script: LIVE_SCRIPT }, body), notice?.error ? 400 : notice?.created ? 201 : 200);
}

uiAdmin.get("/tokens", (c) => tokensPage(c));

uiAdmin.post("/tokens", async (c) => {
  const form = c.get("form");
  const name = String(form.get("name") ?? "").trim();
  const scopesText = String(form.get("scopes") ?? "");
  if (!name || name.length > 200) return tokensPage(c, { error: "The name must be 1 to 200 characters.", name, scopes: scopesText });
  let scopes;
  try {
    scopes = parseScopes(scopesText.split(/\s+/).map((s) => s.trim()).filter(Boolean));
  } catch (e) {
    if (e instanceof ScopeError) return tokensPage(c, { error: e.message, name, scopes: scopesText });
    throw e;
  }
  const { token } = await createToken(c.env, name, scopes);
  return tokensPage(c, { created: { name, token } });
});

uiAdmin.post("/tokens/:id/revoke", async (c) => {
  if (!(await revokeToken(c.env, c.req.param("id")))) throw new UiError(404, "Token not found", "There is no such token.");
  return c.redirect("/ui/admin/tokens", 303);
});
