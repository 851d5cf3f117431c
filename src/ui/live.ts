/**
 * The dashboard's only script (progressive enhancement: every page reads fine without it).
 * - Copy buttons (`button[data-copy=<input id>]`) appear and copy the input's value.
 * - On the page of a build still going (`#build[data-live]`), an EventSource on the build's event
 *   stream (/ui/builds/:id/events, the same Server-Sent Events as GET /v1/builds/:id/events) replays
 *   the log and keeps it, the step timeline and the status current; when the build is done the page
 *   reloads to show its outcome (error excerpt, image).
 * Log lines are formatted as logLines() formats them on the server.
 */

/** `#<step> <line>` for every line of a log event's text (server and script alike). */
export function logLines(step: number, text: string): string {
  return text.replace(/\r?\n$/, "").split(/\r?\n/).map((l) => `#${step} ${l}`).join("\n") + "\n";
}

export const LIVE_SCRIPT = `(() => {
  "use strict";
  for (const b of document.querySelectorAll("button[data-copy]")) {
    b.hidden = false;
    b.addEventListener("click", async () => {
      const input = document.getElementById(b.dataset.copy);
      try { await navigator.clipboard.writeText(input.value); } catch { input.select(); document.execCommand("copy"); }
      b.textContent = "Copied";
      setTimeout(() => { b.textContent = "Copy"; }, 2000);
    });
  }
  const build = document.getElementById("build");
  if (!build || !build.dataset.live) return;
  const log = document.getElementById("log");
  const status = document.getElementById("build-status");
  const live = document.getElementById("live-state");
  const durations = new Map();
  const logLines = ${logLines.toString()};
  const fmt = (ms) => ms == null ? "—" : ms < 1000 ? Math.round(ms) + " ms" : ms < 60000 ? (ms / 1000).toFixed(1) + " s" : Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
  const setStatus = (s) => { status.textContent = s; status.className = "badge s-" + s; };
  const bars = () => {
    const max = Math.max(1, ...durations.values());
    for (const [i, d] of durations) {
      const bar = document.querySelector("#step-" + i + " .bar");
      if (bar) bar.className = "bar w" + Math.max(1, Math.round((d / max) * 100));
    }
  };
  let replaying = true;
  const es = new EventSource(build.dataset.events);
  es.addEventListener("open", () => { if (live) live.textContent = "Live: following the build."; });
  es.addEventListener("log", (e) => {
    const ev = JSON.parse(e.data);
    if (replaying) { log.textContent = ""; replaying = false; }
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(document.createTextNode(logLines(ev.step, ev.text)));
    if (atEnd) log.scrollTop = log.scrollHeight;
  });
  es.addEventListener("step", (e) => {
    const s = JSON.parse(e.data);
    const li = document.getElementById("step-" + s.index);
    if (!li) return;
    li.className = "b-" + s.status;
    const badge = li.querySelector(".badge");
    badge.textContent = s.status;
    badge.className = "badge s-" + s.status;
    li.querySelector(".dur").textContent = fmt(s.durationMs);
    if (s.durationMs != null) { durations.set(s.index, s.durationMs); bars(); }
    if (s.status === "running" && status.textContent === "queued") setStatus("running");
  });
  es.addEventListener("done", (e) => {
    es.close();
    setStatus(JSON.parse(e.data).status);
    if (live) live.textContent = "The build ended; loading its outcome.";
    setTimeout(() => location.reload(), 300);
  });
  es.addEventListener("error", () => { if (live && es.readyState === EventSource.CLOSED) live.textContent = "Live updates stopped; reload the page."; });
})();`;
