import { Hono } from "hono";
import type { Env } from "../env";

/** Placeholder route module; see DESIGN.md for what it serves. */
export const jobsRoutes = new Hono<{ Bindings: Env }>();
