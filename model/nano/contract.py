"""The contracts between the Python model code and the TypeScript runtime, one home each.

The bundle's manifest carries every one of them to the runtime, which keeps no copy of its own: the
chat template (Jinja, rendered here with jinja2 for training and by @huggingface/jinja at serving),
the system prompt, the routing table (which query table, super-link projection and decoder task each
routing token has), and the decoders' post-processing thresholds. The manifest's shape is the
runtime's zod schema, emitted as JSON Schema (`npm run schema:manifest`); the export validates every
manifest against it before writing a bundle.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache

import jinja2
import jsonschema

SYSTEM_PROMPT = "You are VisionLLM v2-nano, a vision assistant."

# vicuna_v1, as the paper's LLM was tuned.
CHAT_TEMPLATE = (
    "{{ system_prompt }}"
    "{% for message in messages %}"
    "{% if message.role == 'user' %} USER: {{ message.content }} ASSISTANT:"
    "{% elif message.role == 'assistant' %} {{ message.content }}</s>{% endif %}"
    "{% endfor %}"
)

# Routing token -> query table, super-link projection, and the decoder task (a link in the runtime's
# gpu-runner/src/model/links registry; the Python reference runtime dispatches on the same task).
ROUTING = {
    "[DET]": {"table": "perception_queries", "link": "superlink_perception", "task": "detection"},
    "[SEG]": {"table": "perception_queries", "link": "superlink_perception", "task": "segmentation"},
    "[GRD]": {"table": "perception_queries", "link": "superlink_perception", "task": "grounding"},
    "[POSE]": {"table": "pose_queries", "link": "superlink_pose", "task": "pose"},
    "[GEN]": {"table": "generation_queries", "link": "superlink_generation", "task": "generation"},
    "[EDIT]": {"table": "editing_queries", "link": "superlink_editing", "task": "editing"},
}

# How an answer names a routing group (its label: "red circle" in "..., here are the results for red
# circle[DET]"): the text before the routing token, after the last separator and the last lead phrase.
ANSWER_FORMAT = {"label_separator": ",", "label_leads": ["results for", "with keypoints"]}

POSTPROCESS = {"score_threshold": 0.3, "mask_threshold": 0.0, "edit_delta_threshold": 0.15}

MANIFEST_SCHEMA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "contract", "manifest.schema.json")


def routing_label(text_before: str) -> str:
    """A routing group's label from the answer's text before its routing token (ANSWER_FORMAT)."""
    tail = text_before.rsplit(ANSWER_FORMAT["label_separator"], 1)[-1]
    for lead in ANSWER_FORMAT["label_leads"]:
        if lead in tail:
            tail = tail.split(lead, 1)[1]
    return tail.strip()


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    return jinja2.Environment(autoescape=False, keep_trailing_newline=True).from_string(CHAT_TEMPLATE)


def render_chat(messages: list[dict[str, str]]) -> str:
    """The conversation as the LLM reads it, through the manifest's template."""
    return _template().render(system_prompt=SYSTEM_PROMPT, messages=messages)


@lru_cache(maxsize=1)
def conversation_start() -> str:
    """The rendered conversation before its first turn (the system prompt)."""
    return render_chat([])


def turn_pieces(user: str, assistant: str) -> tuple[str, str]:
    """What one turn adds to the rendered conversation: the user's part (ending where the answer
    starts) and the answer's (with its end-of-turn token), cut from the template's own output."""
    base = conversation_start()
    asked = render_chat([{"role": "user", "content": user}])
    answered = render_chat([{"role": "user", "content": user}, {"role": "assistant", "content": assistant}])
    return asked[len(base) :], answered[len(asked) :]


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    with open(MANIFEST_SCHEMA) as f:
        return jsonschema.Draft202012Validator(json.load(f))


def validate_manifest(manifest: dict) -> None:
    """Raises ValueError naming every place the manifest breaks the runtime's schema."""
    errors = sorted(_validator().iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        where = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:10])
        raise ValueError(f"the manifest does not match shared/contract/manifest.schema.json: {where}")
