/**
 * Refuses URLs aimed at this network: loopback, private, link-local (cloud metadata at
 * 169.254.169.254), CGNAT, unspecified, multicast and reserved addresses, IPv6 forms that embed an
 * IPv4 address (mapped, IPv4-compatible, NAT64, 6to4, Teredo), and internal host names. Checked on
 * the URL and again on every redirect. Names that resolve to private addresses are also refused
 * by Cloudflare's own egress in production.
 *
 * Addresses are classified by ipaddr.js's special-purpose ranges (IANA registries), not by hand:
 * an address passes only when ipaddr.js calls it plain unicast, and an IPv6 one only inside the
 * global unicast block 2000::/3.
 */
import ipaddr from "ipaddr.js";

const globalUnicast = ipaddr.parseCIDR("2000::/3");

const embedsIPv4 = new Set(["ipv4Mapped", "rfc6145", "rfc6052", "6to4", "teredo"]);

function classify(host: string): string | undefined {
  if (!ipaddr.isValid(host)) return undefined;
  const address = ipaddr.parse(host);
  const range = address.range();
  if (address.kind() === "ipv6") {
    if (embedsIPv4.has(range)) return `an IPv6 form that embeds an IPv4 address (${range})`;
    if (range !== "unicast" || !(address as ipaddr.IPv6).match(globalUnicast)) {
      return range === "unicast" ? "outside global unicast (e.g. IPv4-compatible ::a.b.c.d)" : range;
    }
    return undefined;
  }
  return range === "unicast" ? undefined : range;
}

const internalNames = [
  /^localhost$/i,
  /\.localhost$/i,
  /\.local$/i,
  /\.internal$/i,
  /^metadata$/i,
  /^metadata\.google\.internal$/i,
];

function isLoopback(host: string): boolean {
  if (/^localhost$/i.test(host)) return true;
  return ipaddr.isValid(host) && ipaddr.parse(host).range() === "loopback";
}

/** Returns why the URL is refused, or undefined when it may be fetched. */
export function refusedTarget(
  url: URL,
  options: { allowLoopback: boolean; allowHttp?: boolean },
): string | undefined {
  if (url.protocol !== "https:" && !(options.allowHttp && url.protocol === "http:")) {
    return `scheme ${url.protocol} is not allowed (https only)`;
  }
  if (url.username || url.password) return "URLs with credentials are not allowed";
  // WHATWG URL parsing has already turned decimal, hex and octal IPv4 forms into dotted quads.
  const host = url.hostname.replace(/^\[|\]$/g, "");
  if (options.allowLoopback && isLoopback(host)) return undefined;
  const kind = classify(host);
  if (kind) return `the address ${host} is ${kind}`;
  if (internalNames.some((re) => re.test(host))) return `the host ${host} is internal`;
  if (/^\d+$/.test(host) || /^0x[0-9a-f]+$/i.test(host))
    return `the host ${host} is a numeric address in disguise`;
  return undefined;
}
