import { imageLink } from "./image";
import { LinkRegistry } from "./link";
import { perceptionLink } from "./perception";
import { poseLink } from "./pose";

export { runImageDecoder } from "./image";
export { type DecoderLink, type Group, type LinkContext, LinkRegistry, LinkSession } from "./link";

/** The links of the paper's six routing tasks. */
export const defaultLinks = new LinkRegistry([
  perceptionLink("detection"),
  perceptionLink("segmentation"),
  perceptionLink("grounding"),
  poseLink,
  imageLink("generation"),
  imageLink("editing"),
]);
