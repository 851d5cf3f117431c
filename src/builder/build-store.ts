/**
 * The persisted state of one build in its BuildCoordinator's SQLite: the spec and results (`meta`),
 * one row per step, and the event log (`events`, read by event-log.ts).
 */
import type { BaseImage, BuildSpec, BuildStatus, BuildView, ChildView, StepStatus, StepView } from "./model";

export type StepRow = {
  idx: number;
  stage: number;
  stage_name: string;
  kind: string;
  instruction: string;
  line: number;
  deps: string;
  status: StepStatus;
  cache_key: string | null;
  layer: string | null;
  started_at: number | null;
  duration_ms: number | null;
  state: string | null;
  job_id: string | null;
  run_key: string | null;
  created_by: string | null;
};

export const TERMINAL = new Set<BuildStatus>(["succeeded", "failed", "cancelled"]);
export const FINISHED = new Set<StepStatus>(["done", "cached"]);

export class BuildStore {
  constructor(readonly sql: SqlStorage) {
    sql.exec(`
      CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS steps (
        idx INTEGER PRIMARY KEY, stage INTEGER NOT NULL, stage_name TEXT NOT NULL, kind TEXT NOT NULL,
        instruction TEXT NOT NULL, line INTEGER NOT NULL, deps TEXT NOT NULL, status TEXT NOT NULL,
        cache_key TEXT, layer TEXT, started_at INTEGER, duration_ms INTEGER, state TEXT, job_id TEXT,
        run_key TEXT, created_by TEXT
      );
      CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, data TEXT NOT NULL);
    `);
  }

  getMeta<T>(k: string): T | undefined {
    const r = this.sql.exec<{ v: string }>("SELECT v FROM meta WHERE k = ?", k).toArray()[0];
    return r ? (JSON.parse(r.v) as T) : undefined;
  }

  setMeta(k: string, v: unknown): void {
    this.sql.exec("INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v", k, JSON.stringify(v));
  }

  started(): boolean {
    return this.getMeta("spec") !== undefined;
  }

  /** The spec, or undefined before start. */
  maybeSpec(): BuildSpec | undefined {
    return this.getMeta<BuildSpec>("spec");
  }

  spec(): BuildSpec {
    const s = this.maybeSpec();
    if (!s) throw new Error("build not started");
    return s;
  }

  status(): BuildStatus {
    return this.getMeta<BuildStatus>("status") ?? "queued";
  }

  ended(): boolean {
    return TERMINAL.has(this.status());
  }

  rows(): StepRow[] {
    return this.sql.exec<StepRow>("SELECT * FROM steps ORDER BY idx").toArray();
  }

  row(idx: number): StepRow | undefined {
    return this.sql.exec<StepRow>("SELECT * FROM steps WHERE idx = ?", idx).toArray()[0];
  }

  insertStep(r: Pick<StepRow, "idx" | "stage" | "stage_name" | "kind" | "instruction" | "line" | "deps" | "status"> & { started_at?: number }): void {
    this.sql.exec(
      "INSERT INTO steps (idx, stage, stage_name, kind, instruction, line, deps, status, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
      r.idx, r.stage, r.stage_name, r.kind, r.instruction, r.line, r.deps, r.status, r.started_at ?? null,
    );
  }

  /** Updates a step's columns; returns the row after the update. */
  updateStep(idx: number, fields: Partial<Omit<StepRow, "idx">>): StepRow | undefined {
    const keys = Object.keys(fields);
    if (keys.length) {
      this.sql.exec(`UPDATE steps SET ${keys.map((k) => `${k} = ?`).join(", ")} WHERE idx = ?`, ...keys.map((k) => (fields as Record<string, unknown>)[k] as string | number | null), idx);
    }
    return this.row(idx);
  }

  /** The build's secret values leave kiln's state once no step runs any more (issue 17). */
  dropSecrets(): void {
    const stored = this.spec();
    if (!stored.secrets) return;
    const { secrets: _dropped, ...rest } = stored;
    void _dropped;
    this.setMeta("spec", rest);
  }

  stepView(r: StepRow): StepView {
    const v: StepView = {
      index: r.idx,
      stage: r.stage_name,
      instruction: r.instruction,
      status: r.status,
      cacheKey: r.cache_key,
      durationMs: r.duration_ms,
      line: r.line,
    };
    if (r.layer) v.layer = r.layer;
    return v;
  }

  view(): BuildView {
    const spec = this.spec();
    const v: BuildView = { id: spec.id, status: this.status(), steps: this.rows().map((r) => this.stepView(r)), createdAt: spec.createdAt };
    const image = this.getMeta<BuildView["image"]>("image");
    if (image) v.image = image;
    const bases = this.getMeta<BaseImage[]>("bases");
    if (bases?.length) v.bases = bases;
    const error = this.getMeta<BuildView["error"]>("error");
    if (error) v.error = error;
    const fin = this.getMeta<number>("finishedAt");
    if (fin) v.finishedAt = fin;
    if (spec.children) v.children = this.getMeta<ChildView[]>("children") ?? spec.children.map((c) => ({ ...c, status: "queued" as BuildStatus }));
    if (spec.parent) v.parent = spec.parent;
    return v;
  }

  /** Appends an event; returns its sequence number (the SSE `id`). */
  appendEvent(type: string, json: string): number {
    return this.sql.exec<{ seq: number }>("INSERT INTO events (type, data) VALUES (?, ?) RETURNING seq", type, json).one().seq;
  }

  /** The last `n` log events (oldest first) and how many there are in all. */
  lastLogEvents(n: number): { data: string[]; total: number } {
    const total = this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM events WHERE type = 'log'").one().n;
    const rows = this.sql.exec<{ data: string }>("SELECT data FROM events WHERE type = 'log' ORDER BY seq DESC LIMIT ?", n).toArray();
    return { data: rows.reverse().map((r) => r.data), total };
  }

  eventsAfter(seq: number): { seq: number; type: string; data: string }[] {
    return this.sql.exec<{ seq: number; type: string; data: string }>("SELECT seq, type, data FROM events WHERE seq > ? ORDER BY seq", seq).toArray();
  }
}
