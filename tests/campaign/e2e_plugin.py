"""Reward plugins for tests/campaign/test_run_e2e.py, loaded as 'path/to/e2e_plugin.py:fn'.

A fixed path (not tmp_path): the plugin reference is part of the run config, so a stable one
keeps configs identical across test sessions.
"""


def boom(prompt: str, completion: str, answer: str) -> float:
    raise RuntimeError("boom")
