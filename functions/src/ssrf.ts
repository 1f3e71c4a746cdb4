/**
 * Refuses URLs aimed at this network: loopback, private, link-local (cloud metadata at
 * 169.254.169.254), CGNAT, unspecified and IPv6 equivalents, and internal host names. Checked on
 * the URL and again on every redirect. Names that resolve to private addresses are also refused
 * by Cloudflare's own egress in production.
 */

function ipv4(host: string): number[] | undefined {
  const parts = host.split(".");
  if (parts.length !== 4) return undefined;
  const nums = parts.map((p) => (/^\d{1,3}$/.test(p) ? Number(p) : Number.NaN));
  return nums.every((n) => n >= 0 && n <= 255) ? nums : undefined;
}

function privateIPv4([a = 0, b = 0]: number[]): string | undefined {
  if (a === 127) return "loopback";
  if (a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168)) return "private";
  if (a === 169 && b === 254) return "link-local (cloud metadata)";
  if (a === 100 && b >= 64 && b <= 127) return "shared (CGNAT)";
  if (a === 0) return "unspecified";
  if (a >= 224) return "multicast/reserved";
  return undefined;
}

function privateIPv6(host: string): string | undefined {
  const h = host.toLowerCase();
  if (h === "::1" || h === "0:0:0:0:0:0:0:1") return "loopback";
  if (h === "::" || h === "0:0:0:0:0:0:0:0") return "unspecified";
  if (/^f[cd][0-9a-f]{2}:/.test(h)) return "private (unique local)";
  if (/^fe[89ab][0-9a-f]:/.test(h)) return "link-local";
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h)?.[1];
  const v4 = mapped ? ipv4(mapped) : undefined;
  if (v4) return privateIPv4(v4);
  if (h.startsWith("::ffff:")) return "IPv4-mapped";
  return undefined;
}

const internalNames = [
  /^localhost$/i,
  /\.localhost$/i,
  /\.local$/i,
  /\.internal$/i,
  /^metadata$/i,
  /^metadata\.google\.internal$/i,
];

/** Returns why the URL is refused, or undefined when it may be fetched. */
export function refusedTarget(
  url: URL,
  options: { allowLoopback: boolean; allowHttp?: boolean },
): string | undefined {
  if (url.protocol !== "https:" && !(options.allowHttp && url.protocol === "http:")) {
    return `scheme ${url.protocol} is not allowed (https only)`;
  }
  if (url.username || url.password) return "URLs with credentials are not allowed";
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const v4 = ipv4(host);
  const kind = v4 ? privateIPv4(v4) : host.includes(":") ? privateIPv6(host) : undefined;
  const loopback = kind === "loopback" || /^localhost$/i.test(host);
  if (loopback && options.allowLoopback) return undefined;
  if (kind) return `the address ${host} is ${kind}`;
  if (internalNames.some((re) => re.test(host))) return `the host ${host} is internal`;
  if (/^\d+$/.test(host) || /^0x[0-9a-f]+$/i.test(host))
    return `the host ${host} is a numeric address in disguise`;
  return undefined;
}
