/** CORS_ALLOW_ORIGINS: "*" (any origin), or a comma-separated list of origins; empty = none. */
export function allowedOrigin(origin: string, setting: string | undefined): string | null {
  const allowed = (setting ?? "*")
    .split(",")
    .map((o) => o.trim())
    .filter(Boolean);
  if (allowed.includes("*")) return origin || "*";
  return allowed.includes(origin) ? origin : null;
}
