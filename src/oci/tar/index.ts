/** src/oci/tar: one streaming tar stack (read, write, paths) for the Worker and the runner. */
export * from "./paths";
export * from "./read";
export * from "./write";
