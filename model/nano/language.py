"""A small text corpus, the nano stand-in for the language pretraining Vicuna brings to the paper.

A user who writes "trace the discs" or "whereabouts are the squares" is understood by VisionLLM v2
because its LLM read such words in text long before it saw an instruction. The nano LLM starts from
nothing, so it reads this corpus beside the instruction data: plain sentences that use the words of
the world in shared contexts ("To trace the circles is to outline them."), for whole synonym sets.

The instruction grammar (grammar.py) holds some verbs, frames and list forms out of every request;
this corpus uses those words as well as the training ones, always in statements about language and
never as a request to the model, so the held-out evaluation measures what the paper's does: whether
knowledge of words carries over to instructions phrased in a way the instruction data never had.
"""

from __future__ import annotations

import numpy as np

from . import grammar as G

# Each set: phrases that mean the same thing before an object ("{x}"). Training and held-out verbs are
# treated alike, and each set has members that no request uses.
POSE_VERBS = [
    "estimate the pose of",
    "track the limbs of",
    "mark the joints of",
    "locate the joints of",
    "find the body keypoints of",
    "work out the posture of",
    "give me the skeleton of",
    "detect the keypoints of",
    "show the pose of",
]
VERB_SETS: list[list[str]] = [
    [
        "detect",
        "find",
        "locate",
        "spot",
        "pick out",
        "identify",
        "point out",
        "look for",
        "discover",
        "notice",
        "mark",
        "highlight",
        "draw boxes around",
    ],
    [
        "segment",
        "outline",
        "trace",
        "cut out",
        "mask",
        "delineate",
        "separate out",
        "draw the outline of",
        "give masks for",
        "trace the edges of",
    ],
    POSE_VERBS,
    ["draw", "sketch", "depict", "paint", "render", "create", "make", "produce", "generate"],
    ["remove", "delete", "erase", "wipe out", "take away", "get rid of", "drop"],
    ["describe", "summarise", "caption", "write a short description of", "tell me about"],
]

# Whole phrases that mean the same thing, with their slots.
PHRASE_SETS: list[list[str]] = [
    [
        "where are {xs}",
        "whereabouts are {xs}",
        "any idea where {xs} are",
        "do you know where {xs} are",
        "tell me where {xs} are",
    ],
    [
        "where is {x}",
        "where exactly is {x}",
        "tell me where {x} sits",
        "where does {x} sit",
        "can you help me find {x}",
        "in which place is {x}",
    ],
    ["{x} is {pos}", "{x} sits {pos}", "{x} is located {pos}", "{x} can be found {pos}"],
    [
        "is {x} {rel} {y}",
        "does {x} sit {rel} {y}",
        "is it true that {x} is {rel} {y}",
        "would you say {x} is {rel} {y}",
    ],
    ["how many {xs} are there", "what number of {xs} can be seen", "count the {xs}", "tell me how many {xs} there are"],
    ["what colour is {x}", "which colour does {x} have", "what colour has {x} got", "what is the colour of {x}"],
    [
        "what shape is the {c} object",
        "the {c} object is which shape",
        "name the shape of the {c} item",
        "tell me the shape of the {c} thing",
    ],
    [
        "is there {a} {k}",
        "does the picture contain {a} {k}",
        "any {k} in this picture",
        "does the image contain {a} {k}",
    ],
    [
        "change the colour of {x} to {c}",
        "switch {x} to {c}",
        "give {x} a {c} colour",
        "make {x} {c}",
        "recolor {x} to {c}",
    ],
    [
        "change the background to {bg}",
        "swap the background for {bg}",
        "repaint the background {bg}",
        "make the background {bg}",
    ],
    ["add {o} {pos}", "stick {o} {pos}", "include {o} {pos}", "put {o} {pos}", "insert {o} {pos}"],
    ["remove {x}", "drop {x} from the picture", "wipe out {x}", "delete {x}"],
    ["draw {o}", "could I get an image containing {o}", "show me a new image with {o}", "make me an image with {o}"],
    ["could you", "would it be possible to", "would you mind helping me and", "can you", "please"],
    ["I want you to", "I'd like you to", "I need you to", "your task is to"],
    ["let's", "time to", "we need to", "go ahead and"],
    ["all the {xs}", "all of the {xs}", "every {x1}", "each {x1}"],
    ["{x1} and {y1}", "{x1} as well as {y1}", "{x1} plus {y1}", "{x1}, {y1}"],
    ["in this picture", "in this scene", "in the image", "in the photo"],
    ["thanks", "thank you", "much appreciated", "cheers"],
    ["what is in {r}", "what do you see at {r}", "which object does {r} show", "what object is {r}"],
]

# What each verb set yields (aligned with VERB_SETS): every member is used with the same outcomes, so a
# held-out verb shares its training synonyms' contexts, the distributional cue a pretrained LLM has.
VERB_OUTCOMES = [
    ["a box around each of them", "their boxes", "where each one is", "a rectangle around each one"],
    ["the exact outline of each", "a mask for each one", "their exact shapes, pixel by pixel", "their silhouettes"],
    ["their joints", "the keypoints of their bodies", "their skeletons", "how their limbs are placed"],
    ["a new picture", "a fresh image", "a drawing"],
    ["an image without them", "a picture where they are gone"],
    ["a few words about them", "a sentence about them"],
]
OUTCOME_USES = [
    "{S} was asked to {v} {x}, so {s} gave {o}.",
    "To {v} {x} means giving {o}.",
    "If someone asks you to {v} {x}, they want {o}.",
    "{S} had to {v} {x}; the result was {o}.",
]
# What the task is called, aligned with VERB_SETS: the words an answer uses ("here are the
# segmentation results"). A pretrained LLM knows that cutting out or tracing a thing is segmentation;
# without this, nothing in the corpus joins a held-out verb to the word its answer starts with.
TASK_NAMES = ["detection", "segmentation", "pose estimation", "image generation", "image editing", "captioning"]
TASK_USES = [
    "To {v} {x} is a {t} task.",
    "{S} was asked to {v} {x}, so {s} gave the {t} results.",
    "Anyone who wants to {v} {x} needs {t} results.",
    "{S} had to {v} {x}: a job for {t}.",
]
STATEMENTS = [
    '"{A}" means the same as "{b}".',
    'Saying "{a}" is another way of saying "{b}".',
    'When people say "{a}", they mean "{b}".',
    '"{A}" and "{b}" mean the same thing.',
]
VERB_USES = [
    "To {a} {x} is to {b} them.",
    "{S} wants to {a} {x}, that is, to {b} them.",
    "If you {a} {x}, you {b} them.",
    "{S} will {a} {x}; in other words, {s} will {b} them.",
    "{S} can {a} {x}, which means {s} can {b} them.",
]
SUBJECTS = [
    ("Tom", "he"),
    ("The girl", "she"),
    ("My friend", "she"),
    ("The robot", "it"),
    ("A child", "he"),
    ("The teacher", "she"),
    ("The artist", "he"),
    ("Anna", "she"),
]
PROMPTS = [
    "Write a sentence.",
    "Tell me something about words.",
    "Give me an example sentence.",
    "Write some text.",
    "Say something.",
    "Explain a word.",
    "Continue.",
    "Teach me some English.",
]
POSITIONS = ["on the left", "on the right", "at the top", "at the bottom", "in the center", "at the top left"]
RELATIONS = ["left of", "right of", "above", "below"]


def noun(rng: np.random.Generator) -> str:
    """A category as people write it, singular: 'violet disc', 'figure', 'blue thing'."""
    r = rng.random()
    color = G.pick(rng, [w for ws in G.COLOR_WORDS.values() for w in ws])
    if r < 0.3:
        return G.pick(rng, [w for ws in G.KIND_WORDS.values() for w in ws])
    if r < 0.7:
        return f"{color} {G.pick(rng, [w for ws in G.KIND_WORDS.values() for w in ws])}"
    if r < 0.85:
        return f"{color} {G.pick(rng, G.OBJECT_WORDS)}"
    return G.pick(rng, G.PERSON_WORDS + G.SHAPE_WORDS)


def fill(rng: np.random.Generator, template: str) -> str:
    x, y = noun(rng), noun(rng)
    color = G.pick(rng, [w for ws in G.COLOR_WORDS.values() for w in ws])
    kind = G.pick(rng, [w for ws in G.KIND_WORDS.values() for w in ws])
    slots = {
        "x": f"the {x}",
        "y": f"the {y}",
        "xs": G.plural(x),
        "x1": x,
        "y1": y,
        "k": kind,
        "a": "an" if kind[0] in "aeiou" else "a",
        "c": color,
        "o": f"a {color} {kind}",
        "pos": G.pick(rng, POSITIONS),
        "rel": G.pick(rng, RELATIONS),
        "bg": G.pick(rng, [w for ws in G.BACKGROUND_WORDS.values() for w in ws]),
        "r": "the marked region",
    }
    return template.format(**slots)


def two_of(rng: np.random.Generator, options: list[str]) -> tuple[str, str]:
    i, j = rng.choice(len(options), size=2, replace=False)
    return options[int(i)], options[int(j)]


def verb_object(rng: np.random.Generator, verbs: list[str]) -> str:
    """What a verb of the set acts on: 'the violet discs', 'all of the people', 'every square'."""
    n = G.pick(rng, G.PERSON_WORDS) if verbs is POSE_VERBS else noun(rng)
    return G.pick(rng, [f"the {G.plural(n)}", f"all of the {G.plural(n)}", f"every {n}"])


def verb_sentence(rng: np.random.Generator) -> str:
    verbs = VERB_SETS[int(rng.integers(len(VERB_SETS)))]
    a, b = two_of(rng, verbs)
    subject, pronoun = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
    x = verb_object(rng, verbs)
    return G.pick(rng, VERB_USES).format(a=a, b=b, x=x, S=subject, s=pronoun)


def outcome_sentence(rng: np.random.Generator) -> str:
    """'The girl was asked to trace every disc, so she gave a mask for each one.'"""
    i = int(rng.integers(len(VERB_SETS)))
    subject, pronoun = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
    x = verb_object(rng, VERB_SETS[i])
    return G.pick(rng, OUTCOME_USES).format(
        v=G.pick(rng, VERB_SETS[i]), x=x, o=G.pick(rng, VERB_OUTCOMES[i]), S=subject, s=pronoun
    )


def task_sentence(rng: np.random.Generator) -> str:
    """'Anyone who wants to cut out every disc needs segmentation results.'"""
    i = int(rng.integers(len(VERB_SETS)))
    subject, pronoun = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
    x = verb_object(rng, VERB_SETS[i])
    return G.pick(rng, TASK_USES).format(v=G.pick(rng, VERB_SETS[i]), x=x, t=TASK_NAMES[i], S=subject, s=pronoun)


def phrase_sentence(rng: np.random.Generator) -> str:
    """Two phrases of one set, filled with the same slot values."""
    a, b = two_of(rng, PHRASE_SETS[int(rng.integers(len(PHRASE_SETS)))])
    seed = int(rng.integers(1 << 31))
    a, b = fill(np.random.default_rng(seed), a), fill(np.random.default_rng(seed), b)
    statement = G.pick(rng, STATEMENTS)
    return statement.format(a=a, b=b, A=a[0].upper() + a[1:])


def passage(rng: np.random.Generator) -> str:
    makers = [verb_sentence, outcome_sentence, task_sentence, phrase_sentence]
    weights = [0.25, 0.2, 0.2, 0.35]
    sentences = [makers[int(rng.choice(len(makers), p=weights))](rng) for _ in range(int(rng.integers(2, 4)))]
    return " ".join(s[0].upper() + s[1:] for s in sentences)
