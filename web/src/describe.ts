import type { EventOf } from "@visionllm/protocol";

/** The super-link outputs as text: what a screen reader says and what the results list shows. */

export type ResultEvent = EventOf<"detections"> | EventOf<"keypoints"> | EventOf<"image">;

const percent = (score: number) => `${Math.round(score * 100)} %`;
const TASK_NAMES = { detection: "Detection", segmentation: "Segmentation", grounding: "Grounding" } as const;

export function describeResult(event: ResultEvent): string {
  switch (event.type) {
    case "detections": {
      const n = event.items.length;
      const what = `${TASK_NAMES[event.task]} · ${event.label}`;
      if (n === 0) return `${what}: none found`;
      const boxes = event.items
        .map((d) => `${percent(d.score)} at (${d.box.map((v) => Math.round(v)).join(", ")})`)
        .join("; ");
      return `${what}: ${n} found: ${boxes}`;
    }
    case "keypoints": {
      const n = event.items.length;
      if (n === 0) return "Pose: no person found";
      const people = event.items
        .map((p) => `${percent(p.score)}, ${p.keypoints.length} keypoints`)
        .join("; ");
      return `Pose: ${n} ${n === 1 ? "person" : "people"}: ${people}`;
    }
    case "image":
      return `${event.task === "editing" ? "Edited" : "Generated"} image, ${event.width} × ${event.height} (seed ${event.seed})`;
  }
}

/** One line for a whole answer's results: "3 detections, 1 pose". */
export function summarize(events: readonly ResultEvent[]): string {
  const boxes = events.reduce((n, e) => n + (e.type === "detections" ? e.items.length : 0), 0);
  const poses = events.reduce((n, e) => n + (e.type === "keypoints" ? e.items.length : 0), 0);
  const images = events.filter((e) => e.type === "image").length;
  const parts = [
    boxes ? `${boxes} ${boxes === 1 ? "object" : "objects"} found` : "",
    poses ? `${poses} ${poses === 1 ? "pose" : "poses"}` : "",
    images ? `${images} ${images === 1 ? "image" : "images"}` : "",
  ].filter(Boolean);
  return parts.join(", ");
}
