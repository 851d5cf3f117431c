import { defineConfig } from "vitest/config";

// End-to-end tests: real clients (skopeo, umoci, podman, runc) against a real kiln server.
export default defineConfig({
  test: {
    include: ["test/e2e/**/*.test.ts", "src/cli/**/*.test.ts", "src/runner/**/*.test.ts"],
    environment: "node",
    testTimeout: 300_000,
    hookTimeout: 180_000,
    fileParallelism: false,
  },
});
