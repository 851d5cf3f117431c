// Types for log-filter.mjs (imported by test/e2e/log-filter.test.ts).
export interface LogFilter {
  line(raw: string): void;
  readonly disconnects: number;
}
export function createLogFilter(write: (line: string) => void, opts?: { showDisconnects?: boolean }): LogFilter;
export function pipeFiltered(stream: NodeJS.ReadableStream, out: NodeJS.WritableStream, opts?: { showDisconnects?: boolean }): LogFilter;
