"""Sequential seeds (`[campaign] seeds_policy = "until_decided"`): which runs a campaign trains,
look by look, the looks themselves and their record. The math is retrain/analysis/sequential.py.

Data flow: the spec → `design` (alpha, planned looks, seeds, baseline, boundaries) → plan.json
and, once, manifest.json "sequential" (recorded before any run: the test is pre-registered) →
the runner trains the runs `scope` names (first min_seeds seeds of every condition; later, the
next seed_batch seeds of the undecided conditions and of the baseline) → `take_look` reads each
run's measure from its run dir, tests every undecided condition against the baseline on the
paired seeds and appends the look → decided conditions get no more seeds: their runs that never
started, and the baseline's once every condition is decided, are marked `skipped`.

All state is manifest["sequential"] plus the run dirs, so a resumed campaign continues exactly:
recorded looks are never recomputed, the unfinished runs of the current look run, a run that is
done is never scheduled again. A look waits until every run it needs is done; a run that still
fails after its retries leaves the look untaken (the campaign ends failed; resume retries it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from retrain.campaign.grid import CampaignSpec

SKIPPED = "skipped"
POLICY = "until_decided"
# What a changed campaign file may not change under recorded looks (the pre-registered design).
DESIGN_KEYS = ("alpha", "baseline", "looks_planned", "seeds")
SPENDING = ("Lan-DeMets O'Brien-Fleming-type alpha spending, alpha/2 per side; boundaries for "
            "the exact null law of the paired t")


def design(spec: CampaignSpec) -> dict[str, Any] | None:
    """The pre-registered design of an until_decided campaign (None for a fixed one): alpha,
    baseline, conditions, planned looks (seeds per condition), the seeds in order and the
    two-sided boundaries on the z scale. A pure function of the campaign file."""
    c = spec.base.campaign
    if c.seeds_policy != POLICY:
        return None
    from retrain.analysis.gain import resolve_baseline
    from retrain.analysis.sequential import plan_looks, t_boundaries

    labels = [cond.label for cond in spec.conditions]
    looks = plan_looks(c.min_seeds, c.max_seeds, c.seed_batch)
    return {
        "policy": POLICY, "alpha": c.sequential_alpha,
        "baseline": resolve_baseline(labels, c.sequential_baseline or None),
        "conditions": labels, "min_seeds": c.min_seeds, "max_seeds": c.max_seeds,
        "seed_batch": c.seed_batch, "looks_planned": list(looks), "seeds": list(c.run_seeds),
        "boundaries": list(t_boundaries(c.sequential_alpha, looks)), "spending": SPENDING,
    }


def design_changes(state: Mapping[str, Any] | None, planned: Mapping[str, Any] | None) -> list[str]:
    """What differs between the recorded design and a new plan's, one line per key; [] when
    nothing was recorded or nothing differs. Refused like a spec change even before the first
    look: the stored campaign.toml must keep describing the design the looks use."""
    if not state:
        return []
    if planned is None:
        return [f"campaign.seeds_policy: {POLICY!r} -> 'fixed'"]
    return [f"sequential {k}: {state.get(k)!r} -> {planned.get(k)!r}" for k in DESIGN_KEYS
            if state.get(k) != planned.get(k)]


def sync(data: dict[str, Any], planned: Mapping[str, Any] | None, *, restart: bool) -> None:
    """Make manifest `data` follow the plan's design. A recorded design is kept as it is (its
    boundaries and looks win); `restart` (a forced spec change: the runs the looks read may
    have changed) or a new design drops the recorded looks, and skipped runs become pending."""
    state = data.get("sequential")
    if planned is None:
        data.pop("sequential", None)
        _unskip(data["runs"])
        return
    if state is not None and not restart and all(state.get(k) == planned.get(k)
                                                  for k in DESIGN_KEYS):
        state["conditions"] = planned["conditions"]
        return
    data["sequential"] = {**planned, "measure": None, "looks": [], "decisions": {}}
    _unskip(data["runs"])


def _unskip(runs: dict[str, dict[str, Any]]) -> None:
    for rec in runs.values():
        if rec.get("status") == SKIPPED:
            rec["status"] = "pending"
            rec.pop("reason", None)


def undecided(state: Mapping[str, Any]) -> list[str]:
    """Conditions other than the baseline without a decision yet, in plan order."""
    return [c for c in state["conditions"]
            if c != state["baseline"] and c not in state["decisions"]]


def scope(state: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The runs the next look needs: the first n_k seeds of the undecided conditions and of the
    baseline. [] when every planned look is taken or every condition is decided."""
    k = len(state["looks"])
    if k >= len(state["looks_planned"]) or not undecided(state):
        return []
    seeds = set(state["seeds"][: state["looks_planned"][k]])
    active = {*undecided(state), state["baseline"]}
    return [name for name, rec in runs.items() if rec["condition"] in active and rec["seed"] in seeds]


def mark_skipped(state: Mapping[str, Any], runs: dict[str, dict[str, Any]]) -> list[str]:
    """Mark `skipped` (with the reason) every pending run no look will need: a decided
    condition's seeds past its decision, the baseline's past the last look once every condition
    is decided. Returns the runs newly marked. Idempotent."""
    order = {s: i for i, s in enumerate(state["seeds"])}
    looks = state["looks"]
    reasons: dict[str, tuple[int, str]] = {}  # condition -> (seeds it keeps, reason)
    for cond, d in state["decisions"].items():
        reasons[cond] = (d["n_seeds"], f"decided at look {d['look']} ({d['n_seeds']} seeds): "
                                       f"{d['decision']}")
    if looks and not undecided(state):
        last = looks[-1]
        reasons[state["baseline"]] = (last["n_seeds"], f"every condition decided by look "
                                                       f"{last['look']} ({last['n_seeds']} seeds)")
    marked = []
    for name, rec in runs.items():
        keep = reasons.get(rec["condition"])
        if rec["status"] == "pending" and keep and order.get(rec["seed"], -1) >= keep[0]:
            rec["status"], rec["reason"] = SKIPPED, keep[1]
            marked.append(name)
    return marked


# --- the look ------------------------------------------------------------------------------------

def choose_measure(evals_present: bool, last_n: int) -> dict[str, Any]:
    """What the looks compare, fixed at the first look: the gain in held-out greedy accuracy
    over each run's own initial eval when every run of the first look has one, else the mean of
    DEFAULT_METRIC over the last `last_n` training steps."""
    from retrain.analysis.loading import DEFAULT_METRIC

    if evals_present:
        return {"name": "eval_gain", "what": "gain in held-out greedy accuracy over the run's "
                                             "own initial eval"}
    return {"name": "last_n", "metric": DEFAULT_METRIC, "last_n": last_n,
            "what": f"mean {DEFAULT_METRIC} over the last {last_n} steps"}


def run_value(run_dir: Path, measure: Mapping[str, Any]) -> float | None:
    """One run's value of `measure`, read from its run dir (None when it logged none)."""
    from retrain.analysis.compare import trained_series
    from retrain.analysis.gain import run_eval
    from retrain.analysis.loading import load_run

    run = load_run(run_dir)
    if measure["name"] == "eval_gain":
        return run_eval(run, "accuracy").gain
    _, values = trained_series(run, str(measure["metric"]))
    tail = values[-int(measure["last_n"]):]
    return sum(tail) / len(tail) if tail else None


def compute_look(state: Mapping[str, Any], values: Mapping[str, Mapping[int, float | None]],
                 *, time: str) -> dict[str, Any]:
    """The next look from each condition's {seed: value}: per undecided condition, the paired
    statistic of condition − baseline over the look's seeds and the decision. Pure."""
    from retrain.analysis.sequential import decide, obf_spending, paired_z

    k = len(state["looks"])
    planned = state["looks_planned"]
    n = planned[k]
    boundary = float(state["boundaries"][k])
    seeds = list(state["seeds"][:n])
    base = values.get(state["baseline"], {})
    rows: dict[str, dict[str, Any]] = {}
    for cond in undecided(state):
        mine = values.get(cond, {})
        diffs = [v - b for s in seeds if (v := mine.get(s)) is not None and (b := base.get(s)) is not None]
        stat = paired_z(diffs)
        rows[cond] = {"n": stat.n, "mean_diff": stat.mean_diff, "sd_diff": stat.sd_diff,
                      "t": _json_number(stat.t), "z": _json_number(stat.z), "boundary": boundary,
                      "decision": decide(stat, boundary, last=k == len(planned) - 1)}
    return {"look": k + 1, "n_seeds": n, "seeds": seeds, "boundary": boundary,
            "alpha_spent": obf_spending(n / planned[-1], float(state["alpha"])), "time": time,
            "conditions": rows}


def take_look(state: dict[str, Any], runs: Mapping[str, Mapping[str, Any]],
              run_dirs: Mapping[str, Path], *, time: str, last_n: int) -> dict[str, Any]:
    """Read the measure of every run in `run_dirs` (the runs of the look, all done), then
    compute and record the next look; the measure is chosen at the first look."""
    if state.get("measure") is None:
        gains = [run_value(d, {"name": "eval_gain"}) for d in run_dirs.values()]
        state["measure"] = choose_measure(all(g is not None for g in gains), last_n)
    values: dict[str, dict[int, float | None]] = {}
    for name, run_dir in run_dirs.items():
        values.setdefault(runs[name]["condition"], {})[runs[name]["seed"]] = run_value(
            run_dir, state["measure"])
    look = compute_look(state, values, time=time)
    record_look(state, look)
    return look


def record_look(state: dict[str, Any], look: dict[str, Any]) -> None:
    """Append `look` and the decisions it made."""
    from retrain.analysis.sequential import CONTINUE

    state["looks"].append(look)
    for cond, row in look["conditions"].items():
        if row["decision"] != CONTINUE:
            state["decisions"][cond] = {"decision": row["decision"], "look": look["look"],
                                        "n_seeds": look["n_seeds"], "mean_diff": row["mean_diff"],
                                        "z": row["z"]}


def _json_number(x: float | None) -> float | str | None:
    """JSON has no infinity: identical non-zero differences (z = ±inf) are written "inf"."""
    if x is None or math.isfinite(x):
        return x
    return "inf" if x > 0 else "-inf"


def _num(x: Any) -> float | None:
    if isinstance(x, str):
        return math.inf if x == "inf" else -math.inf if x == "-inf" else None
    return float(x) if isinstance(x, int | float) else None


# --- reporting -----------------------------------------------------------------------------------

def look_lines(look: Mapping[str, Any], total: int) -> list[str]:
    """Console lines of one look (Rich markup-free)."""
    out = [f"look {look['look']}/{total} at {look['n_seeds']} seeds (|z| >= {look['boundary']:.2f}):"]
    for cond, row in look["conditions"].items():
        out.append(f"  {cond}: Δ {_fmt(row['mean_diff'], '+.3f')}, z {_fmt(_num(row['z']), '+.2f')}"
                   f" over {row['n']} paired seeds → {row['decision']}")
    return out


def _fmt(x: float | None, spec: str) -> str:
    if x is None:
        return "—"
    if math.isinf(x):
        return "+∞" if x > 0 else "-∞"
    return format(round(x, 9) + 0.0, spec)  # no "-0.000" for a difference of -1e-17


def summary_lines(data: Mapping[str, Any]) -> list[str]:
    """The "Sequential seeds" section of summary.md (nothing for a fixed-seeds campaign)."""
    from retrain.analysis.formats import markdown_table

    state = data.get("sequential")
    if not state:
        return []
    looks = state.get("looks") or []
    planned = state["looks_planned"]
    bounds = ", ".join(f"{b:.2f}" for b in state["boundaries"])
    measure = (state.get("measure") or {}).get("what", "(chosen at the first look)")
    runs = data.get("runs", {}).values()
    skipped = sum(r.get("status") == SKIPPED for r in runs)
    lines = ["## Sequential seeds", "",
             f"Seeds policy `until_decided`: each condition against `{state['baseline']}`, paired "
             f"by seed, on the {measure}. Looks at {', '.join(map(str, planned))} seeds; two-sided "
             f"α = {state['alpha']} over all looks of a condition, spent by the Lan-DeMets "
             f"O'Brien-Fleming-type function; decided when |z| >= {bounds} (recorded when the "
             f"campaign started; z has the paired t's p-value). {skipped} runs skipped.", ""]
    cells = [[str(look["look"]), str(look["n_seeds"]), f"{look['boundary']:.2f}", cond,
              str(row["n"]), _fmt(row["mean_diff"], "+.3f"), _fmt(_num(row["z"]), "+.2f"),
              row["decision"]]
             for look in looks for cond, row in look["conditions"].items()]
    if cells:
        lines += [markdown_table(["look", "seeds", "boundary", "condition", "pairs", "mean Δ", "z",
                                  "decision"], cells).rstrip(), ""]
    for cond in state["conditions"]:
        if cond == state["baseline"]:
            continue
        d = state["decisions"].get(cond)
        if d:
            lines.append(f"- **{cond}**: {d['decision']} at look {d['look']} ({d['n_seeds']} "
                         f"seeds), mean Δ {_fmt(d['mean_diff'], '+.3f')}")
        else:
            after = f"after look {len(looks)}" if looks else "before the first look"
            lines.append(f"- **{cond}**: not decided yet ({after}); `retrain campaign resume` "
                         "continues")
    return [*lines, ""]


def plan_summary(seq: Mapping[str, Any], n_conditions: int, n_runs: int) -> str:
    """The closing line of `retrain campaign plan` for an until_decided campaign."""
    looks = seq["looks_planned"]
    first = n_conditions * looks[0]
    return (f"{n_conditions} conditions × up to {looks[-1]} seeds = up to {n_runs} runs, sequential "
            f"(seeds_policy = until_decided): {first} runs first ({looks[0]} seeds each), then "
            f"{seq['seed_batch']} more seed{'s' if seq['seed_batch'] > 1 else ''} per look for the "
            f"conditions not yet decided and for "
            f"the baseline {seq['baseline']}; looks at {', '.join(map(str, looks))} seeds, "
            f"decided when |z| >= {', '.join(f'{b:.2f}' for b in seq['boundaries'])} "
            f"(α = {seq['alpha']})")
