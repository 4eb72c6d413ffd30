"""Intervention hooks named by dotted path in the tests ('tests.hooks.plugin_hooks:stop_at_2')."""

from __future__ import annotations

from retrain.hooks.base import HookOutput, Intervention, Payload


class StopAt:
    name = "stop_at"
    points = ("post_step",)
    every = 1
    description = "stops the run after step 2"
    metrics = {"seen": "1 per observed step"}

    def observe(self, payload: Payload) -> HookOutput:
        stop = Intervention(reason="enough at step 2", stop=True) if payload.step == 2 else None
        return HookOutput({"seen": 1.0}, stop)


class HalveLr:
    name = "halve_lr"
    points = ("post_step",)
    every = 1
    description = "sets the learning rate to 5e-5 after step 1"
    metrics = {"lr": "the step's lr as the metrics row has it"}

    def observe(self, payload: Payload) -> HookOutput:
        assert payload.point == "post_step"
        lr = float(payload.metrics["lr"])  # type: ignore[index, arg-type]
        iv = Intervention(reason="halve it", lr=5e-5) if payload.step == 1 else None
        return HookOutput({"lr": lr}, iv)


def stop_at_2() -> StopAt:
    return StopAt()


def halve_lr(cfg: object) -> HalveLr:  # a factory may take the run's config
    return HalveLr()
