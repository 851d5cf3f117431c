import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";

/** The queue of RUN jobs handed to runners (see issue 5). */
export class Dispatcher extends DurableObject<Env> {}
