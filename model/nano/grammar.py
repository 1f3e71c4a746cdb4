"""A phrase grammar for user requests, per task family, with a held-out part.

Users are judged with wordings training never saw, so requests are not drawn from a few templates:
each is assembled from a sentence frame, a verb, a quantifier, a list form, synonyms, politeness and
an ending, then cased and punctuated as people type. Thousands of surface forms per family.

Part of the grammar is held out of training: some sentence frames, and some values of the slots and
list forms (the second list of each pair below). The evaluation draws with `split="heldout"`: every
request takes a held-out frame, and half of its slots take held-out values, so its figures measure
wordings the model never saw. Answers are always canonical (the model says
"diamond" when asked for a "rhombus"): labels and super-link targets stay one vocabulary.
"""

from __future__ import annotations

import re

import numpy as np

Split = str  # "train" | "heldout"

COLOR_WORDS = {
    "red": ["red"],
    "green": ["green"],
    "blue": ["blue"],
    "yellow": ["yellow"],
    "purple": ["purple", "violet"],
}
KIND_WORDS = {
    "circle": ["circle", "disc"],
    "square": ["square"],
    "triangle": ["triangle"],
    "diamond": ["diamond", "rhombus"],
}
PERSON_WORDS = ["person", "figure", "stick figure", "human"]
SHAPE_WORDS = ["shape", "geometric shape"]
OBJECT_WORDS = ["object", "thing", "item"]
BACKGROUND_WORDS = {
    "white": ["white"],
    "grey": ["grey", "gray"],
    "beige": ["beige"],
    "pale blue": ["pale blue", "light blue"],
}

# Each slot: (training values, held-out values).
SLOTS: dict[str, tuple[list[str], list[str]]] = {
    "polite": (
        [
            "",
            "",
            "please ",
            "could you ",
            "can you ",
            "would you ",
            "kindly ",
            "hey, ",
            "I need you to ",
            "go ahead and ",
        ],
        ["would you mind helping me and ", "I'd like you to "],
    ),
    "ending": (
        ["", "", " in the image", " in this picture", " here", " for me", ", please", " in the photo"],
        [" in this scene", ", thank you"],
    ),
    "det_verb": (
        [
            "detect",
            "find",
            "locate",
            "show",
            "mark",
            "identify",
            "point out",
            "look for",
            "draw boxes around",
            "highlight",
        ],
        ["spot", "pick out"],
    ),
    "seg_verb": (
        ["segment", "outline", "give masks for", "mask", "draw the outline of", "separate out", "delineate"],
        ["trace", "cut out"],
    ),
    "grd_verb": (
        ["find", "locate", "show me", "point out", "ground", "where is", "highlight", "mark"],
        ["spot", "pick out"],
    ),
    "quant": (["every", "each", "all the", "all", "the", "any"], ["all of the"]),
    "pose_verb": (
        [
            "estimate the pose of",
            "detect the keypoints of",
            "find the body keypoints of",
            "give me the skeleton of",
            "locate the joints of",
            "show the pose of",
        ],
        ["track the limbs of", "mark the joints of"],
    ),
    "draw_verb": (["draw", "generate", "create", "make", "paint", "render", "produce"], ["sketch", "depict"]),
}

LIST_FORMS = (["and", "comma", "comma_and", "plus"], ["as_well_as", "or"])


def pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def slot(rng: np.random.Generator, name: str, split: Split) -> str:
    """A slot's value: training values only in training; in the held-out split, a held-out value half
    of the time (the frame supplies the held-out element otherwise)."""
    train, held = SLOTS[name]
    if split == "heldout" and rng.random() < 0.5:
        return pick(rng, held)
    return pick(rng, train)


def join_list(rng: np.random.Generator, items: list[str], split: Split) -> str:
    if len(items) == 1:
        return items[0]
    form = pick(rng, LIST_FORMS[1] if split == "heldout" and rng.random() < 0.5 else LIST_FORMS[0])
    head, last = items[:-1], items[-1]
    if form == "comma":
        return ", ".join(items)
    if form == "comma_and":
        return ", ".join(head) + ", and " + last if len(items) > 2 else f"{head[0]} and {last}"
    if form == "plus":
        return ", ".join(head) + " plus " + last
    if form == "as_well_as":
        return ", ".join(head) + " as well as " + last
    if form == "or":
        return ", ".join(head) + " or " + last
    return ", ".join(head) + " and " + last


def plural(word: str) -> str:
    last = word.split()[-1]
    stem = word[: len(word) - len(last)]
    if last == "person":
        return stem + "people"
    if last == "human":
        return stem + "humans"
    if last in ("rhombus",):
        return stem + "rhombuses"
    return stem + (last + "es" if last.endswith("s") else last + "s")


def surface(rng: np.random.Generator, category: str) -> str:
    """A canonical category ("red circle", "blue object", "shape", "person", "diamond") as a user may
    write it ("violet disc", "blue thing", "figure", "rhombus")."""
    words = category.split()
    if category == "person":
        return pick(rng, PERSON_WORDS)
    if category == "shape":
        return pick(rng, SHAPE_WORDS)
    if len(words) == 2 and words[1] == "object":
        return f"{pick(rng, COLOR_WORDS[words[0]])} {pick(rng, OBJECT_WORDS)}"
    if len(words) == 2:
        return f"{pick(rng, COLOR_WORDS[words[0]])} {pick(rng, KIND_WORDS[words[1]])}"
    return pick(rng, KIND_WORDS[category])


def surface_expression(rng: np.random.Generator, expression: str) -> str:
    """A canonical referring expression ("the leftmost red square") with synonyms and variants."""
    out = []
    for w in expression.split():
        if w in COLOR_WORDS:
            out.append(pick(rng, COLOR_WORDS[w]))
        elif w in KIND_WORDS:
            out.append(pick(rng, KIND_WORDS[w]))
        elif w == "person":
            out.append(pick(rng, PERSON_WORDS))
        elif w == "object":
            out.append(pick(rng, OBJECT_WORDS))
        elif w == "biggest":
            out.append(pick(rng, ["biggest", "largest"]))
        elif w == "smallest":
            out.append(pick(rng, ["smallest", "tiniest"]))
        elif w == "leftmost":
            out.append(pick(rng, ["leftmost", "left-most"]))
        elif w == "rightmost":
            out.append(pick(rng, ["rightmost", "right-most"]))
        else:
            out.append(w)
    return " ".join(out)


def category_list(rng: np.random.Generator, categories: list[str], split: Split) -> str:
    """'every red circle and every person', 'all the circles, squares plus people', 'the rhombuses'."""
    quant = slot(rng, "quant", split)
    if quant in ("every", "each"):
        items = [surface(rng, c) for c in categories]
        if rng.random() < 0.5:
            return join_list(rng, [f"{quant} {w}" for w in items], split)
        return f"{quant} " + join_list(rng, items, split)
    items = [plural(surface(rng, c)) for c in categories]
    return f"{quant} " + join_list(rng, items, split)


# Chatter around a request in training only: greetings, context and thanks that carry no task, so the
# model learns that the verb and the categories decide the task, not the words around them (held-out
# frames are new words around known ones). None of it is a held-out element.
CHATTER_BEFORE = [
    "Hi! ",
    "Hello, ",
    "Quick question: ",
    "Okay, ",
    "So ",
    "Hey there, ",
    "Look at this image. ",
    "I have an image. ",
    "Here is a picture. ",
    "For my project, ",
    "Quick one: ",
    "Ok so ",
    "Now, ",
    "Next: ",
    "One more thing: ",
    "Good morning! ",
    "Simple request: ",
]
CHATTER_AFTER = [
    " Thanks!",
    " Thanks in advance.",
    " Be precise.",
    " Cheers.",
    " :)",
    " Much appreciated.",
    " Thx",
    " No rush.",
    " Ty!",
]


# Words people drop into a request that change nothing ("can you just find ..."), in training only: a
# request with a word the model has never seen in that place ("can you help me find ...") then still
# reads as the request it is, instead of as the nearest frame with the same first words.
INTERJECTIONS = [
    "just",
    "also",
    "now",
    "quickly",
    "maybe",
    "actually",
    "simply",
    "really",
    "kindly",
    "perhaps",
    "real quick",
    "again",
    "first",
]


def interject(rng: np.random.Generator, text: str) -> str:
    """An interjection before the request's verb, if it has one after its first word."""
    words = text.split(" ")
    if len(words) < 3:
        return text
    verbs = {
        v.split()[0] for name in ("det_verb", "seg_verb", "grd_verb", "pose_verb", "draw_verb") for v in SLOTS[name][0]
    }
    before_verb = [
        i
        for i, w in enumerate(words[1:], start=1)
        if w.lower() in verbs | {"tell", "count", "check", "describe", "name"}
    ]
    if not before_verb:
        return text
    at = before_verb[0]
    return " ".join(words[:at] + [pick(rng, INTERJECTIONS)] + words[at:])


def finish(rng: np.random.Generator, text: str, question: bool, split: Split = "heldout") -> str:
    """Capitalise, punctuate and case as people type (with chatter around it in training)."""
    text = text.strip()
    if split == "train" and rng.random() < 0.2:
        text = interject(rng, text)
    if split == "train" and rng.random() < 0.25:
        text = pick(rng, CHATTER_BEFORE) + text[0].lower() + text[1:]
    text = text[0].upper() + text[1:]
    r = rng.random()
    if r < 0.7:
        text += "?" if question else "."
    elif r < 0.78:
        text += "!" if not question else "?"
    if split == "train" and rng.random() < 0.12:
        text += pick(rng, CHATTER_AFTER)
    r = rng.random()
    if r < 0.15:
        text = text.lower()
    elif r < 0.2:
        text = upper_outside_tags(text)
    return text


def upper_outside_tags(text: str) -> str:
    """Shouting, but "<reg>region1<region></reg>" stays a region reference (tags are case-sensitive)."""
    return "".join(
        part if part.startswith("<") else part.upper() for part in re.split(r"(<reg>.*?</reg>|<[^>]*>)", text)
    )


def frame(rng: np.random.Generator, frames: tuple[list[str], list[str]], split: Split) -> str:
    """Held-out requests always take a held-out frame, so each has at least one unseen element."""
    train, held = frames
    return pick(rng, held if split == "heldout" else train)


PERCEPTION_FRAMES = (
    [
        "{polite}{verb} {list}{ending}",
        "{verb} {list}",
        "{list}: {verb} them{ending}",
        "{polite}{verb} {list}",
        "I want you to {verb} {list}{ending}",
        "Your task: {verb} {list}{ending}",
        "{list} -- {verb} them{ending}",
        "Please {verb} {list} for me",
        "Let's {verb} {list}{ending}",
        "We need to {verb} {list}{ending}",
        "My request is simple: {verb} {list}{ending}",
        "In this image, {verb} {list}",
        "Go ahead, {verb} {list}{ending}",
        "Could you please {verb} {list}{ending}",
        "Task for you: {verb} {list}",
    ],
    ["Would it be possible to {verb} {list}{ending}", "Help me {verb} {list}{ending}", "Time to {verb} {list}{ending}"],
)
DETECTION_QUESTIONS = (
    ["Where are {list}{ending}", "Can you tell me where {list} are{ending}", "Which boxes hold {list}{ending}"],
    ["Whereabouts are {list}{ending}", "Any idea where {list} are{ending}"],
)


def detection_request(rng: np.random.Generator, categories: list[str], split: Split, seg: bool) -> str:
    listed = category_list(rng, categories, split)
    if not seg and rng.random() < 0.25:
        q = frame(rng, DETECTION_QUESTIONS, split).format(list=listed, ending=slot(rng, "ending", split))
        return finish(rng, q, question=True, split=split)
    verb = slot(rng, "seg_verb" if seg else "det_verb", split)
    text = frame(rng, PERCEPTION_FRAMES, split).format(
        polite=slot(rng, "polite", split), verb=verb, list=listed, ending=slot(rng, "ending", split)
    )
    return finish(rng, text, question=text.lower().startswith(("could", "can", "would")), split=split)


GROUNDING_FRAMES = (
    [
        "{polite}{verb} {expr}{ending}",
        "Where is {expr}{ending}",
        "Which one is {expr}{ending}",
        "{expr}: where is it{ending}",
        "Give me the box of {expr}{ending}",
        "I'm looking for {expr}{ending}",
        "Show {expr}{ending}",
        "Which object is {expr}{ending}",
        "Please {verb} {expr} for me",
        "I need the location of {expr}{ending}",
        "Do you know where {expr} is{ending}",
        "Box {expr}{ending}",
        "Let's {verb} {expr}{ending}",
    ],
    ["Can you help me find {expr}{ending}", "Where exactly is {expr}{ending}", "Tell me where {expr} sits{ending}"],
)


def grounding_request(rng: np.random.Generator, expression: str, split: Split) -> str:
    verb = slot(rng, "grd_verb", split)
    text = frame(rng, GROUNDING_FRAMES, split).format(
        polite=slot(rng, "polite", split) if verb != "where is" else "",
        verb=verb,
        expr=surface_expression(rng, expression),
        ending=slot(rng, "ending", split),
    )
    return finish(
        rng, text, question=text.lower().startswith(("where", "which", "could", "can", "would", "tell")), split=split
    )


POSE_FRAMES = (
    [
        "{polite}{verb} {people}{ending}",
        "{verb} {people}",
        "What are the poses of {people}{ending}",
        "How are {people} standing{ending}",
        "I need the keypoints of {people}{ending}",
        "Pose estimation for {people}{ending}",
        "Let's {verb} {people}{ending}",
        "Please {verb} {people} for me",
        "Where are the joints of {people}{ending}",
        "Show me the skeletons of {people}{ending}",
        "What posture do {people} have{ending}",
    ],
    [
        "Could you work out the posture of {people}{ending}",
        "{polite}{verb} {people}{ending}",
        "Describe the body pose of {people} with keypoints",
    ],
)


def pose_request(rng: np.random.Generator, split: Split) -> str:
    people = pick(
        rng,
        [
            "each person",
            "every person",
            "the people",
            "all people",
            "the person",
            "every figure",
            "the stick figures",
            "everyone",
            "each human",
        ],
    )
    text = frame(rng, POSE_FRAMES, split).format(
        polite=slot(rng, "polite", split),
        verb=slot(rng, "pose_verb", split),
        people=people,
        ending=slot(rng, "ending", split),
    )
    return finish(rng, text, question=text.lower().startswith(("what", "how", "could")), split=split)


QUESTION_FRAMES = {
    "count": (
        [
            "How many {pl} are there{ending}",
            "How many {pl} do you see{ending}",
            "Count the {pl}{ending}",
            "{polite}tell me the number of {pl}{ending}",
            "What is the number of {pl}{ending}",
            "Number of {pl}{ending}",
            "How many {pl} can you find{ending}",
            "Please count the {pl}{ending}",
            "Count how many {pl} there are",
            "I wonder how many {pl} are there",
            "How many {pl} are in the picture",
        ],
        [
            "What number of {pl} can be seen{ending}",
            "Could you count the {pl} for me",
            "Tell me how many {pl} there are",
        ],
    ),
    "color": (
        [
            "What color is the {k}{ending}",
            "What is the colour of the {k}{ending}",
            "{polite}tell me the color of the {k}",
            "Which colour is the {k}{ending}",
            "The {k} is what color",
            "What colour is the {k} painted{ending}",
            "Please name the color of the {k}",
            "Do you know the colour of the {k}{ending}",
        ],
        ["Which colour does the {k} have", "What colour has the {k} got{ending}"],
    ),
    "shape": (
        [
            "What shape is the {c} object{ending}",
            "Which shape is {c}{ending}",
            "What kind of shape is the {c} one{ending}",
            "{polite}tell me the shape of the {c} thing",
            "What is the {c} shape{ending}",
            "Which kind of shape is the {c} one",
            "Do you know what shape the {c} thing is",
        ],
        ["The {c} object is which shape", "Name the shape of the {c} item"],
    ),
    "exist": (
        [
            "Is there {a} {cat}{ending}",
            "Do you see {a} {cat}{ending}",
            "{polite}check whether there is {a} {cat}",
            "Can you find {a} {cat}{ending}",
            "Does the image contain {a} {cat}",
            "Is there any {cat}{ending}",
            "Can you see {a} {cat}{ending}",
            "Do we have {a} {cat}{ending}",
            "Is {a} {cat} present{ending}",
        ],
        ["Does the picture contain {a} {cat}", "Any {cat} in this picture"],
    ),
    "relation": (
        ["Is {a} {rel} {b}{ending}", "Is {a} located {rel} {b}{ending}", "Would you say {a} is {rel} {b}"],
        ["Does {a} sit {rel} {b}", "Is it true that {a} is {rel} {b}"],
    ),
    "caption": (
        [
            "Describe the image{ending}",
            "What is in this image",
            "{polite}describe the scene",
            "Give me a caption",
            "What do you see{ending}",
            "Caption this picture",
        ],
        ["Write a short description of the picture", "Summarise what the image shows"],
    ),
}


def question_request(rng: np.random.Generator, kind: str, split: Split, **slots: str) -> str:
    text = frame(rng, QUESTION_FRAMES[kind], split).format(
        polite=slot(rng, "polite", split), ending=slot(rng, "ending", split), **slots
    )
    return finish(
        rng,
        text,
        question=kind not in ("caption",)
        and not text.lower().startswith(
            ("count", "tell", "name", "number", "please", "kindly", "give", "write", "summarise", "describe", "caption")
        ),
        split=split,
    )


REGION_FRAMES = (
    [
        "What is in {r}{ending}",
        "What object is {r}",
        "{polite}tell me what {r} is",
        "Can you describe {r}",
        "What is {r}",
        "Identify {r}",
        "Name the thing in {r}",
        "What can you see in {r}{ending}",
        "Please name {r}",
        "Which shape is {r}{ending}",
        "What is shown in {r}",
        "Tell me about {r}{ending}",
        "{r}: what is it{ending}",
    ],
    ["What do you see at {r}", "Which object does {r} show"],
)


def region_request(rng: np.random.Generator, region: str, split: Split) -> str:
    text = frame(rng, REGION_FRAMES, split).format(
        polite=slot(rng, "polite", split), ending=slot(rng, "ending", split), r=region
    )
    return finish(rng, text, question=text.lower().startswith(("what", "can", "which")), split=split)


GENERATION_FRAMES = (
    [
        "{polite}{verb} {desc}",
        "{verb} {desc}",
        "I want a picture of {desc}",
        "Make me an image with {desc}",
        "{polite}{verb} an image of {desc}",
        "A picture showing {desc}, please",
    ],
    ["Could I get an image containing {desc}", "Show me a new image with {desc}"],
)


def generation_request(
    rng: np.random.Generator, items: list[tuple[str, str, str | None]], background: str | None, split: Split
) -> str:
    """items: (colour, kind, position or None) ->
    'a violet rhombus at the top left and a red disc on a gray background'."""
    parts = [f"a {pick(rng, COLOR_WORDS[c])} {pick(rng, KIND_WORDS[k])}" + (f" {p}" if p else "") for c, k, p in items]
    desc = join_list(rng, parts, "train" if split == "train" else split)
    if background:
        desc += f" on a {pick(rng, BACKGROUND_WORDS[background])} background"
    text = frame(rng, GENERATION_FRAMES, split).format(
        polite=slot(rng, "polite", split), verb=slot(rng, "draw_verb", split), desc=desc
    )
    return finish(rng, text, question=text.lower().startswith(("could", "can", "would")), split=split)


EDIT_FRAMES = {
    "recolor": (
        [
            "Make {e} {c}",
            "Change the color of {e} to {c}",
            "{polite}paint {e} {c}",
            "Turn {e} {c}",
            "Recolor {e} to {c}",
        ],
        ["Switch {e} to {c}", "Give {e} a {c} colour"],
    ),
    "remove": (
        ["Remove {e}", "Delete {e}", "{polite}take away {e}", "Erase {e}", "Get rid of {e}"],
        ["Drop {e} from the picture", "Wipe out {e}"],
    ),
    "add": (
        ["Add {o} {p}", "{polite}add {o} {p}", "Put {o} {p}", "Insert {o} {p}", "Place {o} {p}"],
        ["Stick {o} {p}", "Include {o} {p}"],
    ),
    "background": (
        [
            "Change the background to {bg}",
            "Make the background {bg}",
            "{polite}use a {bg} background",
            "Set the background to {bg}",
        ],
        ["Swap the background for {bg}", "Repaint the background {bg}"],
    ),
}


def edit_request(rng: np.random.Generator, kind: str, split: Split, **slots: str) -> str:
    text = frame(rng, EDIT_FRAMES[kind], split).format(polite=slot(rng, "polite", split), **slots)
    return finish(rng, text, question=False, split=split)
