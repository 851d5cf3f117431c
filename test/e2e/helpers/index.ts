// Shared e2e helpers (owner: e2e/bench). Import from "./helpers" in test/e2e, "../test/e2e/helpers" in bench.
export * from "./proc";
export * from "./data";
export * from "./distribution";
export * from "./containers";
export * from "./auth";
export * from "./peer";
export * from "./target";
export * from "./builds";
export * from "./upstream";
export * from "./tlsguard";
export * from "./snapshot";
