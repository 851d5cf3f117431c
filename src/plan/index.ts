export { classify, planBuild } from "./plan";
export type { BuildPlan, Classification, PlanOptions, PlannedInstruction, PlannedStage } from "./plan";
export { cacheKeyFor, canonicalJson, SHARED_CACHE_SCOPE } from "./cachekey";
export type { CacheKeyInput, CacheSource } from "./cachekey";
export { planDockerfile, platformString, resolveFrom, stepKind } from "./graph";
export type { BuildGraph, GraphOptions, GraphStage, PlannedDockerfile, PlannedStep, StepKind } from "./graph";
