import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";

/** One per build: drives the steps of a build (see issue 4). */
export class BuildCoordinator extends DurableObject<Env> {}
