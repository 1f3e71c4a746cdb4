"""Byte-level BPE trained on the instruction corpus, written as a Hugging Face `tokenizer.json`.

Debian 12 has no `tokenizers` wheel, so training and encoding are implemented here; the runtime
loads the same file with @huggingface/tokenizers, and the golden tests check both give the same ids.
The pre-tokenizer regex is GPT-2's with ASCII classes: the corpus is ASCII by construction.
"""

from __future__ import annotations

import json
import re
from collections import Counter

SPECIAL_TOKENS = [
    "<unk>",
    "<s>",
    "</s>",
    "<pad>",
    "<image>",
    "<im_start>",
    "<im_end>",
    "<im_patch>",
    "<reg>",
    "</reg>",
    "<region>",
    "[DET]",
    "[SEG]",
    "[GRD]",
    "[POSE]",
    "[GEN]",
    "[EDIT]",
    "[EMB]",
] + [f"[EMB{i}]" for i in range(2, 17)]

PRETOKENIZE = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")
SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in sorted(SPECIAL_TOKENS, key=len, reverse=True)) + ")")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the ByteLevel pre-tokenizer's alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


BYTE_MAP = bytes_to_unicode()


def _words(text: str) -> list[str]:
    return ["".join(BYTE_MAP[b] for b in piece.encode("utf-8")) for piece in PRETOKENIZE.findall(text)]


class Tokenizer:
    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]]):
        self.vocab = vocab
        self.merges = merges
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.inverse = {i: t for t, i in vocab.items()}
        self.byte_decoder = {c: b for b, c in BYTE_MAP.items()}
        self._cache: dict[str, list[int]] = {}

    @property
    def size(self) -> int:
        return len(self.vocab)

    def token_id(self, token: str) -> int:
        return self.vocab[token]

    def _bpe(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = list(word)
        while len(parts) > 1:
            best = min(((self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))))
            if best[0] == 1 << 30:
                break
            i = best[1]
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]
        ids = [self.vocab[p] for p in parts]
        self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for segment in SPECIAL_SPLIT.split(text):
            if not segment:
                continue
            if segment in self.vocab and segment in SPECIAL_TOKENS:
                ids.append(self.vocab[segment])
                continue
            for word in _words(segment):
                ids.extend(self._bpe(word))
        return ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        out = bytearray()
        for i in ids:
            token = self.inverse[i]
            if token in SPECIAL_TOKENS:
                if not skip_special:
                    out.extend(token.encode())
                continue
            out.extend(self.byte_decoder[c] for c in token)
        return out.decode("utf-8", errors="replace")

    def to_json(self) -> dict:
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {
                    "id": self.vocab[t],
                    "content": t,
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "special": True,
                }
                for t in SPECIAL_TOKENS
            ],
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": False,
                "vocab": dict(sorted(self.vocab.items(), key=lambda kv: kv[1])),
                "merges": [f"{a} {b}" for a, b in self.merges],
            },
        }

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f, ensure_ascii=False)

    @staticmethod
    def load(path: str) -> "Tokenizer":
        with open(path) as f:
            data = json.load(f)
        merges = [tuple(m.split(" ")) for m in data["model"]["merges"]]
        return Tokenizer(data["model"]["vocab"], merges)  # type: ignore[arg-type]


def train_bpe(texts: list[str], vocab_size: int, start: Tokenizer | None = None) -> Tokenizer:
    """Byte-level BPE to vocab_size. With `start`, its vocabulary and merges are kept as they are (the
    ids a trained LLM knows) and merging continues from its segmentation of `texts`, appending tokens:
    how a trained model's vocabulary is extended to words it has so far read as fragments."""
    if start is None:
        vocab: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
        for b in range(256):
            vocab[BYTE_MAP[b]] = len(vocab)
        merges: list[tuple[str, str]] = []
    else:
        vocab, merges = dict(start.vocab), list(start.merges)
    word_counts: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        for segment in SPECIAL_SPLIT.split(text):
            if segment and segment not in SPECIAL_TOKENS:
                for word in _words(segment):
                    word_counts[
                        tuple(word) if start is None else tuple(start.inverse[i] for i in start._bpe(word))
                    ] += 1
    words = dict(word_counts)
    while len(vocab) < vocab_size:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        (a, b), count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if count < 2:
            break
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
        words = _merge_pair(words, a, b)
    return Tokenizer(vocab, merges)


def _merge_pair(words: dict[tuple[str, ...], int], a: str, b: str) -> dict[tuple[str, ...], int]:
    merged: dict[tuple[str, ...], int] = {}
    for word, c in words.items():
        out: list[str] = []
        i = 0
        while i < len(word):
            if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                out.append(a + b)
                i += 2
            else:
                out.append(word[i])
                i += 1
        merged[tuple(out)] = merged.get(tuple(out), 0) + c
    return merged
