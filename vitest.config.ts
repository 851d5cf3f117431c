import { createServer, type AddressInfo } from "node:net";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

// Integration tests and pure unit tests, run inside workerd with the Worker's bindings.
export default defineConfig(async () => {
  const migrations = await readD1Migrations("./migrations");
  // A host that accepts connections and never answers (a stalled Worker step in deadlines.test.ts).
  const stall = createServer(() => {});
  await new Promise<void>((resolve) => stall.listen(0, "127.0.0.1", resolve));
  stall.unref();
  const stallHost = `127.0.0.1:${(stall.address() as AddressInfo).port}`;
  return {
    plugins: [
      cloudflareTest({
        main: "./src/index.ts",
        wrangler: { configPath: "./wrangler.toml" },
        miniflare: {
          // KILN_OUTBOUND_ALLOW: the closed loopback port tests use as an unreachable registry/git host.
          // Short step deadlines (test/integration/builds/deadlines.test.ts): a Worker step stalled by
          // TEST_STALL_HOST fails after 15 s, a RUN step for a platform no runner serves after 6 s.
          bindings: {
            KILN_ADMIN_TOKEN: "kiln-test-admin",
            KILN_OUTBOUND_ALLOW: `127.0.0.1:9,${stallHost}`,
            TEST_STALL_HOST: stallHost,
            KILN_STEP_TIMEOUT_SECONDS: "15",
            KILN_RUNNER_WAIT_SECONDS: "6",
            TEST_MIGRATIONS: migrations,
          },
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
