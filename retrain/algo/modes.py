"""Algorithm names, spelled once: the config schema takes its choices from here and the
algorithm modules check their arguments against the same tuples.

A transform mode names the token transforms it applies; `transform_parts` decodes it from an
explicit table instead of substring tests, so a new mode cannot switch on a stage by accident.
"""

from __future__ import annotations

ADVANTAGE_MODES = ("grpo", "maxrl", "rloo")
SCALES = ("none", "group", "batch")  # grpo's std division, as TRL's `scale_rewards`
UNCERTAINTY_KINDS = ("surprisal", "predictive_variance", "shannon_entropy")
TRANSFORMS = ("gtpo", "hicra", "sepa")

_TRANSFORM_PARTS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "gtpo": frozenset({"gtpo"}),
    "hicra": frozenset({"hicra"}),
    "gtpo_hicra": frozenset({"gtpo", "hicra"}),
    "gtpo_sepa": frozenset({"gtpo", "sepa"}),
    "gtpo_sepa_hicra": frozenset({"gtpo", "sepa", "hicra"}),
}
TRANSFORM_MODES = tuple(_TRANSFORM_PARTS)


def transform_parts(mode: str) -> frozenset[str]:
    """The transforms (a subset of TRANSFORMS) that `mode` applies; ValueError for an unknown mode."""
    try:
        return _TRANSFORM_PARTS[mode]
    except KeyError:
        raise ValueError(f"transform_mode must be one of {TRANSFORM_MODES}, got {mode!r}") from None
