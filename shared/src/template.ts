import { Template } from "@huggingface/jinja";

export interface TemplateMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** Renders a conversation with the model's Jinja chat template (from the model card / manifest). */
export function renderChat(
  template: string,
  systemPrompt: string,
  messages: readonly TemplateMessage[],
): string {
  const system = messages.filter((m) => m.role === "system").map((m) => m.content);
  const rest = messages.filter((m) => m.role !== "system");
  return new Template(template).render({
    system_prompt: system.length ? system.join("\n") : systemPrompt,
    messages: rest,
    add_generation_prompt: true,
  });
}
