export { parseReference, formatReference, ReferenceError, type ImageReference } from "./reference";
export { parsePlatform, formatPlatform, normalizePlatform, selectManifest, type Platform } from "../oci/platform";
export { RegistryClient, UpstreamError, parseChallenge, clearTokenCache, MANIFEST_ACCEPT } from "./client";
export { pullImage, type PulledImage } from "./pull";
