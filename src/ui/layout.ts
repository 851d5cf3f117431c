/** The dashboard's page shell (one inline stylesheet, nothing fetched from elsewhere) and small formatters. */
import { html, raw } from "hono/html";
import type { HtmlEscapedString } from "hono/utils/html";
import type { Principal } from "../auth/principal";
import { principalHasScope } from "../auth/api";

export type Html = HtmlEscapedString;

/** `html` for values that are never promises: a plain HtmlEscapedString. */
export const h = (strings: TemplateStringsArray, ...values: unknown[]): Html => html(strings, ...values) as Html;

/** Bar widths of the step timeline as classes (`w0`…`w100`), so the CSP needs no inline style attributes. */
const widths = Array.from({ length: 101 }, (_, i) => `.w${i}{width:${i}%}`).join("");

const CSS = `
:root{--fg:#1b1f24;--muted:#57606a;--bg:#fff;--line:#d0d7de;--accent:#0a58ca;--ok:#1a7f37;--bad:#b42318;--warn:#8a5a00;--info:#0b62a4;--code:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--accent)}
.skip{position:absolute;left:-999px}.skip:focus{left:8px;top:8px;background:#fff;padding:4px 8px;z-index:2}
header{border-bottom:1px solid var(--line);padding:8px 16px;display:flex;flex-wrap:wrap;gap:8px 16px;align-items:center}
header .brand{font-weight:700;font-size:18px;text-decoration:none;color:var(--fg)}
header nav ul{list-style:none;display:flex;flex-wrap:wrap;gap:4px 14px;margin:0;padding:0}
header nav a[aria-current=page]{font-weight:700;color:var(--fg)}
header .who{margin-left:auto;display:flex;gap:8px;align-items:center;color:var(--muted);font-size:14px}
main{padding:16px;max-width:1200px;margin:0 auto}
h1{font-size:22px;margin:4px 0 12px;word-break:break-all}h2{font-size:18px;margin:24px 0 8px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:13px;color:var(--muted);font-weight:600}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
code{word-break:break-all}
pre{background:var(--code);border:1px solid var(--line);padding:8px;overflow-x:auto;white-space:pre-wrap;word-break:break-word;margin:0}
.log{max-height:480px;overflow-y:auto}
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:13px;font-weight:600;border:1px solid currentColor;white-space:nowrap}
.s-succeeded,.s-done{color:var(--ok)}.s-failed{color:var(--bad)}.s-cancelled,.s-skipped,.s-pending{color:var(--muted)}
.s-running,.s-queued{color:var(--info)}.s-cached{color:var(--warn)}
form.inline{display:inline}
button,.button{font:inherit;padding:4px 12px;border:1px solid var(--line);border-radius:6px;background:#f3f4f6;color:var(--fg);cursor:pointer}
button.danger{border-color:var(--bad);color:var(--bad);background:#fff}
input,select,textarea{font:inherit;padding:4px 6px;border:1px solid #8c959f;border-radius:6px;max-width:100%}
label{display:block;font-weight:600;margin:8px 0 2px}label.inline{display:inline;font-weight:400}
fieldset{border:1px solid var(--line);border-radius:6px;margin:12px 0;padding:4px 12px}legend{font-weight:600}
.filters{display:flex;flex-wrap:wrap;gap:8px 16px;align-items:flex-end;margin-bottom:12px}.filters label{margin:0}
.muted{color:var(--muted)}
.error{border:1px solid var(--bad);border-left-width:4px;padding:8px 12px;margin:12px 0;background:#fff5f5}
.notice{border:1px solid var(--ok);border-left-width:4px;padding:8px 12px;margin:12px 0;background:#f3fbf5}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0}dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;min-width:0}
.timeline{list-style:none;padding:0;margin:0}
.timeline li{display:grid;grid-template-columns:3em minmax(0,1fr) 6.5em 5em;gap:4px 8px;padding:4px 0;border-bottom:1px solid var(--line);align-items:center}
.timeline .instr{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;word-break:break-all}
.timeline .badge{justify-self:start}
.timeline .track{display:block;grid-column:2/5;height:8px;background:#eef1f4;border-radius:4px}
.timeline .bar{display:block;height:8px;border-radius:4px;background:var(--muted);min-width:2px}
.timeline .bar.w0{min-width:0}.timeline .b-done .bar{background:var(--ok)}.timeline .b-failed .bar{background:var(--bad)}.timeline .b-cached .bar{background:#d4a72c}.timeline .b-running .bar{background:var(--info)}
.src{counter-reset:none}.src .ln{display:inline-block;width:3em;color:var(--muted);user-select:none}.src mark{background:#ffe2e0;color:inherit;display:block}
.copy{display:flex;gap:8px;flex-wrap:wrap;align-items:center}.copy input{flex:1 1 20em;font-family:ui-monospace,Menlo,monospace;font-size:13px}
@media (max-width:600px){main{padding:10px}
table.cards thead{position:absolute;left:-9999px}table.cards tr{display:block;border-bottom:1px solid var(--line);padding:6px 0}
table.cards td{display:flex;gap:8px;border:0;padding:2px 0;min-width:0}table.cards td::before{content:attr(data-label);flex:0 0 6.5em;color:var(--muted);font-size:13px}.timeline li{grid-template-columns:2.5em minmax(0,1fr) 5.5em}.timeline .dur{grid-column:2/4}.timeline .track{grid-column:2/4}}
${widths}
`;

export interface PageOptions {
  title: string;
  nonce: string;
  principal?: Principal;
  csrf?: string;
  /** The nav entry to mark as the current page. */
  current?: "builds" | "repositories" | "runners" | "webhooks" | "tokens";
  /** An inline script (the build page's live updates), sent with the page's CSP nonce. */
  script?: string;
}

function who(p: Principal): string {
  if (p.kind === "admin") return "admin token";
  if (p.kind === "token") return p.name;
  return p.subject;
}

export function page(opts: PageOptions, body: Html): Html {
  const p = opts.principal;
  const admin = p ? principalHasScope(p, { kind: "admin" }) : false;
  const link = (href: string, key: PageOptions["current"], text: string) =>
    h`<li><a href="${href}"${opts.current === key ? raw(' aria-current="page"') : ""}>${text}</a></li>`;
  return h`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${opts.title} · kiln</title><style nonce="${opts.nonce}">${raw(CSS)}</style></head>
<body><a class="skip" href="#main">Skip to content</a>
<header><a class="brand" href="/ui/builds">kiln</a>
${p ? h`<nav aria-label="Main"><ul>${link("/ui/builds", "builds", "Builds")}${link("/ui/repositories", "repositories", "Repositories")}${admin ? [link("/ui/admin/runners", "runners", "Runners"), link("/ui/admin/webhooks", "webhooks", "Webhooks"), link("/ui/admin/tokens", "tokens", "Tokens")] : ""}</ul></nav>
<div class="who"><span>Signed in as <strong>${who(p)}</strong></span>
<form class="inline" method="post" action="/ui/sign-out"><input type="hidden" name="_csrf" value="${opts.csrf ?? ""}"><button type="submit">Sign out</button></form></div>` : ""}
</header>
<main id="main">${body}</main>
${opts.script ? h`<script nonce="${opts.nonce}">${raw(opts.script)}</script>` : ""}
</body></html>`;
}

/** The page's Content-Security-Policy: nothing from elsewhere, scripts and styles only with the nonce. */
export function contentSecurityPolicy(nonce: string): string {
  return [
    "default-src 'none'", `script-src 'nonce-${nonce}'`, `style-src 'nonce-${nonce}'`, "img-src 'self'", "connect-src 'self'",
    "form-action 'self'", "frame-ancestors 'none'", "base-uri 'none'",
  ].join("; ");
}

export function statusBadge(status: string, id?: string): Html {
  return h`<span class="badge s-${status}"${id ? raw(` id="${id}"`) : ""}>${status}</span>`;
}

export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "—";
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function formatDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms < 0) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s - m * 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A time as `<time>`: machine-readable datetime, UTC text. */
export function time(ms: number | null | undefined): Html {
  if (!ms) return h`—`;
  const iso = new Date(ms).toISOString();
  return h`<time datetime="${iso}">${iso.slice(0, 19).replace("T", " ")} UTC</time>`;
}

export function shortDigest(d: string): string {
  const [alg, hex] = d.split(":");
  return hex ? `${alg}:${hex.slice(0, 12)}` : d;
}

/** A message page (not found, forbidden, bad request) with the status to answer. */
export function messagePage(opts: PageOptions, heading: string, message: string): Html {
  return page(opts, h`<h1>${heading}</h1><p class="error" role="alert">${message}</p><p><a href="/ui/builds">Back to builds</a></p>`);
}
