"""Multi-phase runs: the run's steps are cut into slots, one per (round, phase); at each slot's
start the run switches task, learning rate and sampling settings, and writes the adapter-only
ledger; probes during a slot roll the adapter back when an earlier phase regresses; at each
slot's end every phase's held-out set is evaluated and the per-phase files are written.

Data flow: `cfg.phases` × `cfg.curriculum.rounds` ─▶ **plan_slots** ─▶ `PhaseDriver` (called by
the step loop before each step, after each step, and on resume) ─▶ `ledger/`, `phases/`,
`consolidated_metrics.json`, `plots/training_metrics.png`. docs/phases.md.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrain.backend.base import Replay
from retrain.config.phases import PhaseConfig
from retrain.config.schema import RetrainConfig
from retrain.io import atomic_write_text
from retrain.sinks.contract import Metrics
from retrain.tasks import build_task
from retrain.tasks.base import Problem, Task

if TYPE_CHECKING:
    from retrain.trainer.setup import RunContext

LEDGER = "ledger"
PHASES = "phases"
CONSOLIDATED = "consolidated_metrics.json"
# metrics.jsonl fields only a multi-phase run writes (the last two on steps that probed)
PHASE_FIELDS = ("phase", "round", "phase_index", "phase_step", "probe_worst_drop", "probe_rolled_back",
                "replay_prompts", "loss_new", "loss_old", "teacher_kl")


@dataclass(frozen=True)
class Slot:
    """One (round, phase) of the run: global steps `start`..`end` inclusive."""

    index: int  # position in the run, 0-based (the ledger's NNN)
    round: int  # 1-based
    phase_index: int  # position in the [[phases]] list
    phase: PhaseConfig
    start: int
    end: int

    @property
    def name(self) -> str:
        return self.phase.name

    @property
    def tag(self) -> str:
        return f"{self.round}_{self.name}"


def plan_slots(cfg: RetrainConfig) -> list[Slot]:
    slots: list[Slot] = []
    step = 1
    for r in range(1, cfg.curriculum.rounds + 1):
        for j, phase in enumerate(cfg.phases):
            slots.append(Slot(index=len(slots), round=r, phase_index=j, phase=phase,
                              start=step, end=step + phase.steps - 1))
            step += phase.steps
    return slots


def phase_config(cfg: RetrainConfig, phase: PhaseConfig) -> RetrainConfig:
    """The run's config with the phase's overrides (already validated at load time)."""
    from retrain.config.load import apply_dotted, build_config
    from retrain.config.render import config_to_dict

    raw: dict[str, Any] = {k: v for k, v in config_to_dict(cfg).items()
                           if k not in ("phases", "curriculum", "probe", "replay")}
    built, _ = build_config(apply_dotted(raw, dict(phase.overrides)), strict_sections=False,
                            plugins="skip")
    return dataclasses.replace(built, phases=cfg.phases, curriculum=cfg.curriculum, probe=cfg.probe,
                               replay=cfg.replay)


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn last line of a killed run
    return out


class PhaseDriver:
    """The phase side of one run; the step loop calls `enter`, `fields`, `after_step`."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        # the run's own config and task: its eval rows (eval_accuracy, the initial and final
        # eval) stay on the run's [data] held-out set, comparable from step 0 to the end
        self.base_cfg = ctx.cfg
        self.base_task = ctx.task
        self.slots = plan_slots(ctx.cfg)
        self.cfgs = {p.name: phase_config(ctx.cfg, p) for p in ctx.cfg.phases}
        seed = ctx.cfg.training.seed
        self.tasks: dict[str, Task] = {n: build_task(c.data, seed) for n, c in self.cfgs.items()}
        self.held_out: dict[str, list[Problem]] = {
            n: self.tasks[n].eval_problems(c.eval.size) for n, c in self.cfgs.items()}
        probe = ctx.cfg.probe
        self.probe_sets: dict[str, list[Problem]] = {
            n: self.tasks[n].eval_problems(min(probe.size, c.eval.size)) for n, c in self.cfgs.items()}
        self.run_dir = ctx.run_dir
        self.slot: Slot | None = None

    # --- where the run is ----------------------------------------------------------------------
    def slot_at(self, step: int) -> Slot:
        for slot in self.slots:
            if slot.start <= step <= slot.end:
                return slot
        return self.slots[-1]

    def fields(self, step: int) -> Metrics:
        s = self.slot_at(step)
        return {"phase": s.name, "round": s.round, "phase_index": s.phase_index,
                "phase_step": step - s.start + 1}

    # --- the loop's calls ----------------------------------------------------------------------
    def resume(self, step: int) -> None:
        """After a checkpoint at `step` was restored: forget what later steps wrote, and put the
        run in the phase of step + 1 (its start files are written by `enter` if it starts there)."""
        self._truncate_ledger(step)
        self._switch(self.slot_at(min(step + 1, self.slots[-1].end)))

    def enter(self, step: int) -> None:
        """Before training `step`: at a slot's first step, switch phase and snapshot the adapter."""
        slot = self.slot_at(step)
        if step != slot.start:
            return
        self._switch(slot)
        state = self.ctx.state
        entry = self._ledger(slot, "start", step - 1, {})
        state.phase_good = str(entry)
        self._snapshot(self.run_dir / PHASES / f"initial_{slot.tag}")
        self.ctx.sinks.note(f"[phase] round {slot.round} {slot.name} ({slot.phase_index + 1}/"
                            f"{len(self.base_cfg.phases)}): steps {slot.start}-{slot.end}")

    def probe_if_due(self, step: int) -> Metrics:
        """Every `probe.every` steps of a phase (not at its last step, which commits): probe the
        earlier phases. Returns the fields it adds to the step's metrics row."""
        slot = self.slot_at(step)
        every = self.base_cfg.probe.every
        if every > 0 and (step - slot.start + 1) % every == 0 and step != slot.end:
            return self._probe(slot, step)
        return {}

    def finish_if_last(self, step: int) -> bool:
        """After the step's row is logged: at a phase's last step, evaluate every phase, write
        the phase's files and commit. True when the step ended a phase."""
        slot = self.slot_at(step)
        if step != slot.end:
            return False
        self._finish_slot(slot, step)
        return True

    # --- actions -------------------------------------------------------------------------------
    def _switch(self, slot: Slot) -> None:
        self.slot = slot
        cfg = self.cfgs[slot.name]
        self.ctx.cfg = cfg
        self.ctx.task = self.tasks[slot.name]
        self.ctx.backend.set_lr(cfg.optimizer.lr * self.ctx.state.phase_lr_scale)
        if self.base_cfg.replay.kl_beta > 0:  # the teacher: the previous phase's commit
            prev = self.slots[slot.index - 1] if slot.index > 0 else None
            self.ctx.backend.set_teacher(
                None if prev is None else self.run_dir / LEDGER / f"{prev.index:03d}_{prev.name}_commit")

    # --- replay --------------------------------------------------------------------------------
    def batch(self, step: int, batch_size: int) -> tuple[list[Problem], Task, Replay | None, Metrics]:
        """The step's prompts: the phase's own, and with replay.fraction > 0 (once an earlier
        phase exists) round(fraction × batch_size) of them replayed from the earlier phases'
        training data, in turn; the task that grades each; the replay mask; the row's fields."""
        state = self.ctx.state
        slot = self.slot_at(step)
        earlier = self._earlier(slot)
        frac = self.base_cfg.replay.fraction
        n_old = min(batch_size - 1, max(1, round(frac * batch_size))) if frac > 0 and earlier else 0
        n_new = batch_size - n_old
        cursor = state.phase_cursors.get(slot.name, 0)
        problems = self.tasks[slot.name].train_problems(cursor, n_new)
        state.phase_cursors[slot.name] = cursor + n_new
        if n_old == 0:
            return problems, self.tasks[slot.name], None, {}
        owners: dict[int, Task] = {}
        for _ in range(n_old):
            name = earlier[state.replay_count % len(earlier)]
            state.replay_count += 1
            seen = max(1, state.phase_cursors.get(name, 0))  # what that phase trained on
            index = state.replay_cursors.get(name, 0)
            state.replay_cursors[name] = index + 1
            problem = self.tasks[name].train_problems(index % seen, 1)[0]
            owners[len(problems)] = self.tasks[name]
            problems.append(problem)
        g = self.base_cfg.training.group_size
        mask = np.repeat(np.arange(batch_size) >= n_new, g)  # [N] group-major
        grader = _Graded(self.tasks[slot.name], problems, owners)
        fields: Metrics = {"replay_prompts": n_old}
        return problems, grader, Replay(mask_N=mask, kl_beta=self.base_cfg.replay.kl_beta), fields

    def _snapshot(self, path: Path) -> Path:
        return self.ctx.backend.save_adapter_to(path)

    def _ledger(self, slot: Slot, kind: str, step: int, metrics: dict[str, object]) -> Path:
        name = f"{slot.index:03d}_{slot.name}_{kind}" + (f"_step{step:09d}" if kind in ("good", "rollback") else "")
        path = self._snapshot(self.run_dir / LEDGER / name)
        meta = {"entry": name, "kind": kind, "global_step": step, "phase": slot.name,
                "phase_index": slot.phase_index, "round": slot.round, "slot": slot.index,
                "metrics": metrics}
        atomic_write_text(path / "ledger_entry.json", json.dumps(meta, indent=2) + "\n")
        index = self.run_dir / LEDGER / "index.jsonl"
        rows = [r for r in _read_jsonl(index) if r.get("entry") != name]
        rows.append({**meta, "path": name})
        atomic_write_text(index, "".join(json.dumps(r) + "\n" for r in rows))
        return path

    def _truncate_ledger(self, step: int) -> None:
        """Entries written after the checkpoint a resume starts from describe steps that will be
        trained again: drop them (the rerun writes them anew)."""
        index = self.run_dir / LEDGER / "index.jsonl"
        rows = _read_jsonl(index)
        keep = [r for r in rows if _int(r.get("global_step")) <= step]
        for r in rows:
            if r not in keep:
                shutil.rmtree(self.run_dir / LEDGER / str(r.get("path")), ignore_errors=True)
        if len(keep) != len(rows):
            atomic_write_text(index, "".join(json.dumps(r) + "\n" for r in keep))

    def _eval(self, name: str, problems: list[Problem]) -> dict[str, float]:
        from retrain.trainer.stages import eval_stage

        return eval_stage(self.ctx.backend, self.cfgs[name], self.tasks[name], problems)

    def _earlier(self, slot: Slot) -> list[str]:
        """Phases trained before this slot (in any round), in list order, without the current one."""
        done = {s.name for s in self.slots[: slot.index]}
        return [p.name for p in self.base_cfg.phases if p.name in done and p.name != slot.name]

    def _probe(self, slot: Slot, step: int) -> Metrics:
        state = self.ctx.state
        probe = self.base_cfg.probe
        accs = {n: self._eval(n, self.probe_sets[n])["eval_accuracy"]
                for n in [*self._earlier(slot), slot.name]}
        drops = {n: state.phase_commit_probe[n] - accs[n] for n in self._earlier(slot)
                 if n in state.phase_commit_probe}
        worst = max(drops.values()) if drops else None
        metrics: dict[str, object] = {"probe": accs, "drops": drops}
        if worst is not None and worst > probe.max_drop:
            self._ledger(slot, "rollback", step, metrics)
            good = Path(state.phase_good)
            self.ctx.backend.load_adapter_from(good)
            state.phase_lr_scale *= probe.lr_decay_on_rollback
            self.ctx.backend.set_lr(self.cfgs[slot.name].optimizer.lr * state.phase_lr_scale)
            self.ctx.sinks.note(
                f"[probe] step {step}: {max(drops, key=lambda n: drops[n])} dropped {worst:.3f} "
                f"(> probe.max_drop {probe.max_drop:g}): rolled back to {good.name}"
                + (f", lr x{probe.lr_decay_on_rollback:g}" if probe.lr_decay_on_rollback != 1 else ""))
            return {"probe_worst_drop": worst, "probe_rolled_back": True}
        entry = self._ledger(slot, "good", step, metrics)
        state.phase_good = str(entry)
        return {"probe_worst_drop": worst, "probe_rolled_back": False}

    def _finish_slot(self, slot: Slot, step: int) -> None:
        state = self.ctx.state
        evals = {p.name: self._eval(p.name, self.held_out[p.name]) for p in self.base_cfg.phases}
        if self.base_cfg.probe.every > 0:  # the reference a later phase's probes compare with
            state.phase_commit_probe[slot.name] = self._eval(slot.name, self.probe_sets[slot.name])["eval_accuracy"]
        rows = [r for r in _read_jsonl(self.run_dir / "metrics.jsonl")
                if slot.start <= _int(r.get("step")) <= step and "loss" in r]
        final = self._snapshot(self.run_dir / PHASES / f"final_{slot.tag}")
        previous = (self.run_dir / PHASES / f"final_{self.slots[slot.index - 1].tag}"
                    if slot.index > 0 else self.run_dir / PHASES / f"initial_{slot.tag}")
        evals_out: dict[str, object] = {n: {"accuracy": m["eval_accuracy"], "accuracy_se": m["eval_accuracy_se"]}
                                        for n, m in evals.items()}
        record: dict[str, object] = {
            "index": slot.index, "round": slot.round, "name": slot.name,
            "phase_index": slot.phase_index, "start_step": slot.start, "end_step": step,
            "success_rate": _mean(rows, "correct_rate"),
            "mean_response_length": _mean(rows, "mean_completion_length"),
            "max_response_length": max((_int(r.get("max_completion_length")) for r in rows), default=0),
            "loss": _mean(rows, "loss"), "grad_norm": _mean(rows, "grad_norm"),
            "weight_change": _relative_change(previous, final, self.ctx.backend.model_path),
            "eval": evals_out,
        }
        atomic_write_text(self.run_dir / PHASES / f"metrics_{slot.tag}.json",
                          json.dumps(record, indent=2) + "\n")
        self._ledger(slot, "commit", step, {"eval": evals_out, "success_rate": record["success_rate"]})
        state.phase_records = [r for r in state.phase_records if r["index"] != slot.index] + [record]
        self._write_consolidated()
        self.ctx.sinks.note(
            f"[phase] round {slot.round} {slot.name} done: success {record['success_rate']:.3f}; "
            "held-out " + " ".join(f"{n}={m['eval_accuracy']:.3f}" for n, m in evals.items()))

    def _write_consolidated(self) -> None:
        doc = {"run": self.ctx.run_name, "rounds": self.base_cfg.curriculum.rounds,
               "groups": [p.name for p in self.base_cfg.phases],
               "phases": sorted(self.ctx.state.phase_records, key=lambda r: r["index"])}
        atomic_write_text(self.run_dir / CONSOLIDATED, json.dumps(doc, indent=2) + "\n")
        try:
            from retrain.analysis.phase_report import plot_training_metrics

            plot_training_metrics(doc, self.run_dir / "plots" / "training_metrics.png")
        except ImportError:  # the report module is optional in stripped installs
            pass


class _Graded:
    """The Task a step with replay grades with: each replayed problem by the task of the phase
    it came from, the others by the current phase's."""

    def __init__(self, own: Task, problems: list[Problem], owners: dict[int, Task]) -> None:
        self.own = own
        self.name = own.name
        self._by_id = {id(problems[i]): task for i, task in owners.items()}

    def _task(self, problem: Problem) -> Task:
        return self._by_id.get(id(problem), self.own)

    def train_problems(self, cursor: int, n: int) -> list[Problem]:
        return self.own.train_problems(cursor, n)

    def eval_problems(self, n: int) -> list[Problem]:
        return self.own.eval_problems(n)

    def reward(self, problem: Problem, completion: str) -> float:
        return self._task(problem).reward(problem, completion)

    def is_correct(self, problem: Problem, completion: str) -> bool:
        return self._task(problem).is_correct(problem, completion)

    def score(self, problem: Problem, completion: str) -> tuple[float, bool]:
        from retrain.tasks.base import score

        return score(self._task(problem), problem, completion)


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _mean(rows: list[dict[str, object]], key: str) -> float | None:
    vals = [float(v) for r in rows if isinstance(v := r.get(key), int | float) and not isinstance(v, bool)]
    return float(np.mean(vals)) if vals else None


def _relative_change(a: Path, b: Path, base: str) -> float | None:
    """‖ΔW_b − ΔW_a‖ / ‖W0‖ over the adapted modules (retrain.analysis.weight_change); None when
    the base weights cannot be read (a Hub id outside the local cache, say)."""
    from retrain.analysis.loading import AnalysisError
    from retrain.analysis.weight_change import weight_change

    base_dir = Path(base) if Path(base).is_dir() else None
    try:
        return weight_change(a, b, base=base_dir).relative
    except AnalysisError:
        return None
