import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

// Integration tests and pure unit tests, run inside workerd with the Worker's bindings.
export default defineConfig(async () => {
  const migrations = await readD1Migrations("./migrations");
  return {
    plugins: [
      cloudflareTest({
        main: "./src/index.ts",
        wrangler: { configPath: "./wrangler.toml" },
        miniflare: {
          // KILN_OUTBOUND_ALLOW: the closed loopback port tests use as an unreachable registry/git host
          bindings: { KILN_ADMIN_TOKEN: "kiln-test-admin", KILN_OUTBOUND_ALLOW: "127.0.0.1:9", TEST_MIGRATIONS: migrations },
        },
      }),
    ],
    test: {
      include: ["src/**/*.test.ts", "test/integration/**/*.test.ts"],
      // Node-only code (CLI, runner) is tested by vitest.e2e.config.ts.
      exclude: ["src/cli/**", "src/runner/**", "**/node_modules/**"],
      setupFiles: ["./test/integration/apply-migrations.ts"],
      testTimeout: 60_000,
    },
  };
});
