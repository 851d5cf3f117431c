import type { Context } from "hono";
import type { Env } from "../env";

export type RegistryAction = "pull" | "push" | "delete";

/**
 * The one gate for every /v2 call. Throws OciError UNAUTHORIZED (401 with the Bearer challenge in
 * WWW-Authenticate) when there are no valid credentials, DENIED (403) when the credentials lack the
 * action on `repo`. `repo` undefined means the call is not about one repository (/v2/ ping, _catalog).
 *
 * Owner: auth (issue 2 item 4). Placeholder until implemented: allows everything.
 */
export async function authorizeRegistry(
  c: Context<{ Bindings: Env }>,
  repo: string | undefined,
  action: RegistryAction,
): Promise<void> {
  void c; void repo; void action;
}

/** For _catalog: whether the caller may see `repo` at all (pull). Placeholder: yes. */
export async function canPull(c: Context<{ Bindings: Env }>, repo: string): Promise<boolean> {
  void c; void repo;
  return true;
}
