/** src/oci: pure, streaming OCI building blocks (Web APIs only; runs in workerd and Node 20). */
export * from "./digest";
export * from "./mediatypes";
export * from "./tar";
export * from "./layer";
export * from "./image";
export * from "./platform";
export * from "./names";
