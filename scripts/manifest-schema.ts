import { writeFileSync } from "node:fs";
import { manifestJsonSchema } from "../gpu-runner/src/bundle/manifest";

/**
 * Writes the bundle manifest's JSON Schema, generated from the runner's zod schema, to
 * shared/contract/manifest.schema.json: the Python export validates every manifest it writes against
 * it, so the two sides cannot drift (a test fails if the committed file is stale).
 */
const out = "shared/contract/manifest.schema.json";
writeFileSync(out, `${JSON.stringify(manifestJsonSchema(), null, 2)}\n`);
console.log(`wrote ${out}`);
