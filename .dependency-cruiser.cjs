// The layering of DESIGN.md "Folders", checked in CI (`npm run lint`). Bindings (env.BUCKET, env.DB)
// are not imports: scripts/check-bindings.mjs checks that R2 and D1 are reached only in src/storage.
const PURE = "^src/(dockerfile|plan|oci|protocol)/";

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "pure-no-runtime",
      comment: "src/dockerfile, src/plan, src/oci and src/protocol run anywhere: no Node or Workers modules.",
      severity: "error",
      from: { path: PURE },
      to: { path: "^(node:|cloudflare:)" },
    },
    {
      name: "pure-no-runtime-core",
      comment: "Node's built-ins imported without the node: prefix count too.",
      severity: "error",
      from: { path: PURE },
      to: { dependencyTypes: ["core"] },
    },
    {
      name: "pure-imports-pure",
      comment: "A pure module imports only other pure modules (never storage, builder, api, …).",
      severity: "error",
      from: { path: PURE },
      to: { path: "^src/", pathNot: PURE },
    },
    {
      name: "runner-imports-protocol-only",
      comment: "The runner (Node) shares only the pure OCI, Dockerfile and protocol code with the Worker.",
      severity: "error",
      from: { path: "^src/runner/" },
      to: { path: "^src/", pathNot: "^src/(runner|oci|dockerfile|protocol)/" },
    },
    {
      name: "api-ui-are-leaves",
      comment: "Only src/index.ts mounts the /v1 routes and the dashboard; nothing else imports them.",
      severity: "error",
      from: { path: "^src/([^/]+)", pathNot: "^src/index\\.ts$" },
      to: { path: "^src/(api|ui)/", pathNot: "^src/$1/" },
    },
    {
      name: "ui-authorizes-through-auth",
      comment: "The dashboard renders what /v1 and /v2 would answer: it decides access with src/auth and reads with src/storage, never through the /v2 handlers (or Node-only code).",
      severity: "error",
      from: { path: "^src/ui/" },
      to: { path: "^src/(registry|runner|cli)/" },
    },
    {
      name: "storage-below-http",
      comment: "Storage knows nothing of the routes or the builder that use it.",
      severity: "error",
      from: { path: "^src/storage/" },
      to: { path: "^src/(api|ui|registry|builder)/" },
    },
    {
      name: "storage-speaks-no-http",
      comment: "Storage throws StorageError (src/storage/errors.ts); src/registry maps it to OCI errors.",
      severity: "error",
      from: { path: "^src/storage/" },
      to: { path: "^src/(errors\\.ts$|http/)" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsConfig: { fileName: "tsconfig.json" },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { extensions: [".ts", ".js", ".mjs", ".json"] },
  },
};
