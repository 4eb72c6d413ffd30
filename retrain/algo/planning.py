"""Planning-token detection: which tokens belong to a strategic phrase ("let me check", ...).

Data flow: decoded completion text + per-token character spans (from the sampler's tokenizer)
──▶ planning_T ──▶ hicra (amplified) and sepa (left unpooled).

Matching is on the decoded *text*, not on token ids, so a gram split across sub-word tokens
("let", " me", " th", "ink") is still found; each match's character span is then mapped back to
the tokens whose spans overlap it, and only those are marked. Rules:
- case-insensitive; a gram must start and end on a word boundary (not preceded or followed by a
  letter, digit or underscore), so "outlet me think" and "let me thinking" do not match;
- a space inside a gram matches any run of whitespace ("let me\\nthink"), an apostrophe matches
  ' or ’ (tokenizers decode either);
- overlapping matches all count ("wait let me think" marks both "wait let me" and
  "let me think");
- a token with an empty span (a special token) is never marked.

The grams come from HICRA's notion of strategic grams (arXiv 2509.03646); the deviation is that
they are a fixed configurable list rather than mined from a corpus.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import numpy as np

_SEPARATOR = "\x00"  # joins texts in a batch: neither whitespace nor a word character


def _gram_body(gram: str) -> str:
    words = gram.strip().split()
    parts = ["".join("['’]" if ch in "'’" else re.escape(ch) for ch in w) for w in words]
    return r"\s+".join(parts)


@functools.lru_cache(maxsize=64)
def gram_pattern(grams: tuple[str, ...], *, lowered: bool = False) -> re.Pattern[str] | None:
    """The compiled matcher of one gram set (cached per tuple): matches a gram at a position.

    Case-insensitive; with `lowered` the pattern is for text already passed through
    `str.lower()` (lowercase grams, no IGNORECASE flag), which `re` scans about twice as fast.
    None when there are no (non-blank) grams. Longer grams are tried first so that the longest
    gram starting at a position wins.
    """
    cased = [g.lower() if lowered else g for g in grams if g.strip()]
    bodies = sorted({_gram_body(g) for g in cased}, key=lambda b: (-len(b), b))
    if not bodies:
        return None
    flags = 0 if lowered else re.IGNORECASE
    return re.compile(r"(?<!\w)(?:" + "|".join(bodies) + r")(?!\w)", flags)


def match_spans(text: str, grams: Sequence[str]) -> np.ndarray:
    """Character spans [M, 2] (start, end) of every gram occurrence, overlapping ones included."""
    lowered = text.lower()
    if len(lowered) == len(text):
        pattern = gram_pattern(tuple(grams), lowered=True)
        text = lowered
    else:  # a few characters lower-case to two ("İ"): offsets would shift, match with flags
        pattern = gram_pattern(tuple(grams))
    spans: list[tuple[int, int]] = []
    if pattern is not None:
        pos = 0
        # A loop over matches (a handful per completion), not positions: after each match the
        # search resumes one character later, which also finds matches that overlap it.
        while (m := pattern.search(text, pos)) is not None:
            spans.append((m.start(), m.end()))
            pos = m.start() + 1
    return np.array(spans, dtype=np.int64).reshape(-1, 2)


def spans_to_tokens(match_spans_M: np.ndarray, token_spans: np.ndarray) -> np.ndarray:
    """bool [T]: token t overlaps some match span (half-open intervals, empty spans never do)."""
    num_tokens = token_spans.shape[0]
    if match_spans_M.shape[0] == 0 or num_tokens == 0:
        return np.zeros(num_tokens, dtype=bool)
    order = np.argsort(match_spans_M[:, 0], kind="stable")
    m_start = match_spans_M[order, 0]
    # Running max of the ends of matches sorted by start: the furthest any match that starts
    # before a point reaches. Token [s, e) overlaps a match iff some match with start < e has
    # end > s, i.e. iff the running max end over matches starting before e exceeds s.
    m_reach = np.maximum.accumulate(match_spans_M[order, 1])
    tok_s = token_spans[:, 0]
    tok_e = token_spans[:, 1]
    j = np.searchsorted(m_start, tok_e, side="left")  # matches with start < e
    reach = m_reach[np.maximum(j - 1, 0)]
    return (j > 0) & (reach > tok_s) & (tok_e > tok_s)


def planning_mask(text: str, token_spans: np.ndarray, grams: Sequence[str]) -> np.ndarray:
    """bool_T for one completion; `token_spans` int [T, 2] (start, end) char offsets in `text`."""
    token_spans = np.asarray(token_spans, dtype=np.int64).reshape(-1, 2)
    return spans_to_tokens(match_spans(text, grams), token_spans)


def planning_mask_batch(texts: Sequence[str], token_spans: Sequence[np.ndarray],
                        grams: Sequence[str]) -> np.ndarray:
    """Concatenated bool_T over all completions (in order), same layout as TokenBatch.planning_T.

    The texts are joined with a separator that can neither be part of a gram nor satisfy a word
    boundary's "word character", so one regex pass covers the batch and no match crosses two
    completions; each completion's token spans are shifted by its text's start.
    """
    if len(texts) != len(token_spans):
        raise ValueError(f"{len(texts)} texts but {len(token_spans)} token-span arrays")
    if len(texts) == 0:
        return np.zeros(0, dtype=bool)
    spans = [np.asarray(s, dtype=np.int64).reshape(-1, 2) for s in token_spans]
    text_len_N = np.array([len(t) for t in texts], dtype=np.int64)
    text_start_N = np.concatenate(([0], np.cumsum(text_len_N + len(_SEPARATOR))[:-1]))
    tok_count_N = np.array([s.shape[0] for s in spans], dtype=np.int64)
    # Clip to each completion's own text first, so that a bad span cannot reach the next text.
    text_len_T = np.repeat(text_len_N, tok_count_N)[:, None]
    all_spans = np.clip(np.concatenate(spans, axis=0), 0, text_len_T)
    all_spans += np.repeat(text_start_N, tok_count_N)[:, None]
    joined = _SEPARATOR.join(texts)
    return spans_to_tokens(match_spans(joined, grams), all_spans)
