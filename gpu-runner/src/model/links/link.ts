import type { UnnumberedEvent } from "@visionllm/protocol";
import type { RoutingEntry } from "../../bundle/manifest";
import type { PreparedImage } from "../prompt";
import type { VisionLLM } from "../visionllm";

/**
 * The super link's far side: what each routing token's query states become. A link is one module
 * (its task, the graph it runs, how its outputs become events) in a registry keyed by the manifest's
 * task, so a new decoder is one file and one manifest entry; the generation loop only samples and, on
 * a routing token, hands the group to the session below.
 */

/** One routing token and its queries' final hidden states. */
export interface Group {
  index: number;
  routing: string;
  entry: RoutingEntry;
  /** The text the answer gave this group (the words before the routing token). */
  label: string;
  states: Float32Array; // [N, D]
}

export interface LinkContext {
  model: VisionLLM;
  /** The conversation's last image: the one perception decoders look at and editing starts from. */
  image: PreparedImage | undefined;
  seed: number;
  signal: AbortSignal | undefined;
}

export interface DecoderLink {
  /** The manifest task of the routing tokens this link serves. */
  readonly task: string;
  /** Whether its group waits for later groups that may attach to it (a person before its keypoints). */
  readonly waits?: boolean;
  /** For groups that complete another's: the tasks they attach to, and when the set is whole. */
  readonly attaches?: { to: readonly string[]; whole: (count: number, model: VisionLLM) => boolean };
  /** Runs the decoder for `head` (with the groups attached to it, for an attaching link). */
  run(head: Group, attached: readonly Group[], ctx: LinkContext): AsyncGenerator<UnnumberedEvent>;
}

/** What a link yields when it has nothing to decode (a perception request without an image). */
export async function* nothing(): AsyncGenerator<UnnumberedEvent> {}

export class LinkRegistry {
  readonly #links: ReadonlyMap<string, DecoderLink>;

  constructor(links: Iterable<DecoderLink>) {
    this.#links = new Map([...links].map((link) => [link.task, link]));
  }

  /** A registry with `link` added, or replacing the one for its task. */
  with(link: DecoderLink): LinkRegistry {
    return new LinkRegistry([...this.#links.values(), link]);
  }

  get(task: string): DecoderLink | undefined {
    return this.#links.get(task);
  }

  /** Manifest tasks no link serves (a bundle the runner cannot serve). */
  missing(tasks: Iterable<string>): string[] {
    return [...new Set(tasks)].filter((task) => !this.#links.has(task));
  }

  session(ctx: LinkContext, onDecoder?: (task: string, seconds: number) => void): LinkSession {
    return new LinkSession(this, ctx, onDecoder);
  }
}

/** One answer's routing groups: runs each link in order, holding a waiting group until it is complete. */
export class LinkSession {
  #pending: { head: Group; attached: Group[] } | undefined;

  constructor(
    private readonly registry: LinkRegistry,
    private readonly ctx: LinkContext,
    private readonly onDecoder?: (task: string, seconds: number) => void,
  ) {}

  /** A routing token was sampled and its queries' states are ready. */
  async *route(group: Group): AsyncGenerator<UnnumberedEvent> {
    const link = this.registry.get(group.entry.task);
    if (!link) return;
    const pending = this.#pending;
    if (pending && link.attaches?.to.includes(pending.head.entry.task)) {
      pending.attached.push(group);
      if (link.attaches.whole(pending.attached.length, this.ctx.model)) yield* this.flush();
      return;
    }
    yield* this.flush();
    if (link.attaches) return; // attaching groups with nothing to attach to: nothing to decode
    if (link.waits) this.#pending = { head: group, attached: [] };
    else yield* this.#run(link, group, []);
  }

  /** Runs the waiting group, if any: at the next routing token and at the end of the answer. */
  async *flush(): AsyncGenerator<UnnumberedEvent> {
    const pending = this.#pending;
    this.#pending = undefined;
    if (!pending) return;
    const first = pending.attached[0];
    const attaching = first ? this.registry.get(first.entry.task) : undefined;
    if (attaching?.attaches?.whole(pending.attached.length, this.ctx.model)) {
      yield* this.#run(attaching, pending.head, pending.attached);
      return;
    }
    const own = this.registry.get(pending.head.entry.task);
    if (own) yield* this.#run(own, pending.head, []);
  }

  async *#run(link: DecoderLink, head: Group, attached: readonly Group[]): AsyncGenerator<UnnumberedEvent> {
    const started = performance.now();
    let ran = false;
    for await (const event of link.run(head, attached, this.ctx)) {
      ran = true;
      yield event;
    }
    const task = link.attaches ? link.task : head.entry.task;
    if (ran) this.onDecoder?.(task, (performance.now() - started) / 1000);
  }
}
