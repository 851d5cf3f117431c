import { applyD1Migrations, env } from "cloudflare:test";

// Setup files run outside per-test storage isolation, so migrations apply once per worker.
await applyD1Migrations(env.DB, (env as unknown as { TEST_MIGRATIONS: Parameters<typeof applyD1Migrations>[1] }).TEST_MIGRATIONS);
