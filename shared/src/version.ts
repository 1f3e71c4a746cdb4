/** Bumped on any incompatible change to the schemas in this package. */
export const PROTOCOL_VERSION = "1";
export const PROTOCOL_HEADER = "x-visionllm-protocol";
