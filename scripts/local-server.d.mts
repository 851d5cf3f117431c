// Types for local-server.mjs (imported by test/e2e/server.ts).
export const SERVER_NODE_FLAGS: string[];
