#!/usr/bin/env node
// The kiln CLI, run from TypeScript sources through tsx.
import { register } from "tsx/esm/api";

register();
const { cli } = await import("../src/cli/main.ts");
await cli(process.argv.slice(2));
