import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ManifestSchema, manifestJsonSchema } from "../src/bundle/manifest";

/**
 * The manifest contract has one home, the runner's zod schema; the Python export validates against
 * its JSON Schema in shared/contract. The committed file must be what the schema emits today.
 */
describe("manifest contract", () => {
  it("shared/contract/manifest.schema.json is generated from the zod schema (npm run schema:manifest)", () => {
    const committed = JSON.parse(readFileSync("shared/contract/manifest.schema.json", "utf8"));
    expect(committed).toEqual(manifestJsonSchema());
  });

  it("the committed bundle's manifest passes the schema the export validated it against", () => {
    const manifest = JSON.parse(readFileSync("model/bundle/manifest.json", "utf8"));
    expect(ManifestSchema.safeParse(manifest).success).toBe(true);
  });
});
