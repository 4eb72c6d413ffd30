"""Planning-token detection on decoded text, mapped to tokens through character spans."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain.algo.planning import gram_pattern, planning_mask, planning_mask_batch

GRAMS = ("wait let me", "let me think", "let me check", "that's not right", "the key is")


def tokens(*pieces: str) -> tuple[str, np.ndarray]:
    """Text and [T, 2] char spans of consecutive pieces."""
    lens = np.array([len(p) for p in pieces], dtype=np.int64)
    ends = np.cumsum(lens)
    return "".join(pieces), np.stack([ends - lens, ends], axis=1)


def test_subword_split_gram_marks_only_overlapping_tokens() -> None:
    # "So let me think." -> tokens "So", " let", " me", " th", "ink", "."; the match is
    # chars 3..15 ("let me think"): " let" (2..6) overlaps, "So" and "." do not
    text, spans = tokens("So", " let", " me", " th", "ink", ".")
    assert planning_mask(text, spans, GRAMS).tolist() == [False, True, True, True, True, False]


def test_word_boundaries_and_case() -> None:
    text, spans = tokens("out", "let", " me", " think")  # "outlet me think": no boundary
    assert not planning_mask(text, spans, GRAMS).any()
    text, spans = tokens("let", " me", " think", "ing")  # "let me thinking": no boundary
    assert not planning_mask(text, spans, GRAMS).any()
    text, spans = tokens("LET", " Me", " THINK", "!")
    assert planning_mask(text, spans, GRAMS).tolist() == [True, True, True, False]
    text, spans = tokens("let", " me\n", "think")  # whitespace run inside a gram
    assert planning_mask(text, spans, GRAMS).all()


def test_apostrophes_and_overlapping_grams() -> None:
    text, spans = tokens("That", "’s", " not", " right")
    assert planning_mask(text, spans, GRAMS).all()
    # "wait let me think": both "wait let me" (0..11) and "let me think" (5..17) count
    text, spans = tokens("wait", " let", " me", " think", " now")
    assert planning_mask(text, spans, GRAMS).tolist() == [True, True, True, True, False]


def test_empty_spans_grams_and_texts() -> None:
    text, spans = tokens("let", " me", " think")
    spans = np.concatenate([spans, [[5, 5]]])  # an empty-span (special) token inside the match
    assert planning_mask(text, spans, GRAMS).tolist() == [True, True, True, False]
    assert not planning_mask(text, spans, ()).any()
    assert planning_mask("", np.zeros((0, 2), np.int64), GRAMS).shape == (0,)
    assert gram_pattern(GRAMS) is gram_pattern(GRAMS)  # compiled once per gram tuple


def test_batch_concatenates_and_does_not_cross_completions() -> None:
    t1, s1 = tokens("we", " wait")  # "wait" | "let me" across two completions: no match
    t2, s2 = tokens("let", " me", " go")
    t3, s3 = tokens("the", " key", " is", " x")
    out = planning_mask_batch([t1, t2, t3], [s1, s2, s3], GRAMS)
    assert out.tolist() == [False, False, False, False, False, True, True, True, False]
    assert planning_mask_batch([], [], GRAMS).shape == (0,)


# ---------------------------------------------------------------- property: vs reference

def reference_mask(text: str, spans: np.ndarray, grams: tuple[str, ...]) -> list[bool]:
    """Per token, try a match at every character position that could reach it."""
    pattern = gram_pattern(grams)
    out = []
    for s, e in spans.tolist():
        hit = False
        for p in range(0, e):
            m = pattern.match(text, p) if pattern else None
            if m and m.end() > s and e > s:
                hit = True
        out.append(hit)
    return out


WORDS = ["let", "me", "think", "check", "wait", "the", "key", "is", "that's", "not", "right",
         "out", "Let", "KEY", "x"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=14), st.lists(st.integers(1, 4), min_size=40,
                                                                max_size=40),
       st.sampled_from([" ", "  ", "\n", "-"]))
def test_matches_per_position_reference(words: list[str], cuts: list[int], sep: str) -> None:
    text = sep.join(words)
    pieces, i, k = [], 0, 0
    while i < len(text):
        step = cuts[k % len(cuts)]
        pieces.append(text[i:i + step])
        i, k = i + step, k + 1
    text, spans = tokens(*pieces)
    fast = planning_mask(text, spans, GRAMS).tolist()
    assert fast == reference_mask(text, spans, GRAMS)
    batch = planning_mask_batch([text, text], [spans, spans], GRAMS).tolist()
    assert batch == fast + fast
