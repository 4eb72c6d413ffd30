"""Starting points users copy and edit: the files `retrain init` writes.

Pure: `campaign_files` and `plugin_files` return {file name: text}; the CLI (`cli/init_cmd.py`)
checks for existing files and writes them. Templates are strings in this module so that they
ship with the package like any other code.

Every generated file runs as is: a plugin file carries `RETRAIN_PLUGIN_KIND` (read by `retrain
plugins` without importing it) and a run config that names it by a path relative to the
directory it was written to, which is where retrain resolves plugin paths from.
"""

from __future__ import annotations

import keyword
import re

from retrain.errors import RetrainError

# kind → (function name in the generated file, config key that takes 'file.py:function')
PLUGIN_KINDS: dict[str, tuple[str, str]] = {
    "reward": ("reward", "data.reward"),
    "advantage": ("advantage", "algorithm.advantage_mode"),
    "transform": ("transform", "algorithm.transform_mode"),
    "task": ("make", "data.task"),
}
_CAMPAIGN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=~-]*")


class ScaffoldError(RetrainError):
    """A name or kind `retrain init` cannot use, or files it would overwrite."""


def check_plugin_name(name: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ScaffoldError(f"NAME {name!r}: a plugin name becomes a Python module name, so it "
                            f"must be an identifier (letters, digits, _; not starting with a "
                            f"digit), e.g. my_reward")


def check_campaign_name(name: str) -> None:
    if not _CAMPAIGN_NAME.fullmatch(name):
        raise ScaffoldError(f"NAME {name!r}: a campaign name is a plain directory name: letters, "
                            f"digits, . _ + = ~ -, not starting with '.' or '-'")


def check_kind(kind: str) -> None:
    if kind not in PLUGIN_KINDS:
        raise ScaffoldError(f"--kind {kind!r}: unknown kind; choose one of {', '.join(PLUGIN_KINDS)}")


def campaign_files(name: str) -> dict[str, str]:
    check_campaign_name(name)
    return {f"{name}.toml": CAMPAIGN_TOML.replace("{name}", name)}


def plugin_files(kind: str, name: str) -> dict[str, str]:
    check_kind(kind)
    check_plugin_name(name)
    function, key = PLUGIN_KINDS[kind]
    ref = f"{name}.py:{function}"
    extra = TASK_MODEL_EXTRA if kind == "task" else ""
    config = (PLUGIN_RUN_TOML.replace("{model_extra}", extra).replace("{kind}", kind)
              .replace("{name}", name).replace("{section_line}", _config_lines(key, ref)))
    source = PLUGIN_SOURCES[kind].replace("{file}", f"{name}.py")
    return {f"{name}.py": source, f"{name}.toml": config}


def _config_lines(key: str, ref: str) -> str:
    section, field = key.split(".")
    task = "" if key == "data.task" or section != "data" else 'task = "arithmetic"\n'
    return f'[{section}]\n{task}{field} = "{ref}"\n'


def next_steps(files: list[str], *, campaign: bool) -> list[str]:
    toml = next(f for f in files if f.endswith(".toml"))
    run = f"retrain campaign run {toml}" if campaign else f"retrain run {toml}"
    return [f"retrain config validate {toml}", *( [f"retrain campaign plan {toml}"] if campaign else []), run]


CAMPAIGN_TOML = '''\
# Campaign {name}: 2 conditions x 2 seeds = 4 runs on the built-in tiny model, offline.
#   retrain config validate {name}.toml   check it (every problem at once)
#   retrain campaign plan {name}.toml     list the runs it expands to (trains nothing)
#   retrain campaign run {name}.toml      train them, then compare the conditions
# Every key is documented in docs/configuration.md; grids, zips and excludes in docs/campaigns.md.

[model]
name = "tiny"          # built from a config and cached; a local Hugging Face model dir works too

[data]
task = "arithmetic"    # or countdown, file, or your own 'my_task.py:make' (retrain init plugin --kind task)
digits = 2

[training]
max_steps = 20         # optimizer steps per run
batch_size = 8         # prompts per step
group_size = 8         # completions per prompt
max_tokens = 6         # completion length cap

[optimizer]
lr = 1e-4

[eval]
every = 10             # held-out accuracy every 10 steps, and at start and end
size = 200

[campaign]
name = "{name}"
seeds = [1, 2]         # every condition runs once per seed; use 3 or more to compare conditions
max_workers = 1        # runs at once; raise it on a machine with more cores

# The conditions: every combination of these axes (here 2). Add an axis, e.g.
# "algorithm.transform_mode" = ["none", "gtpo"], to cross it with the others.
[campaign.grid]
"algorithm.advantage_mode" = ["grpo", "maxrl"]
'''

PLUGIN_RUN_TOML = '''\
# A run that uses the {kind} plugin in {name}.py. Run it from this directory: plugin paths
# ('{name}.py:...') are resolved from the directory retrain runs in.
#   retrain config validate {name}.toml
#   retrain run {name}.toml

[model]
name = "tiny"          # built from a config and cached; a local Hugging Face model dir works too
{model_extra}
{section_line}
[training]
max_steps = 20
batch_size = 8
group_size = 8
max_tokens = 6

[eval]
every = 10
size = 100
'''

TASK_MODEL_EXTRA = '''\
# The tiny model is warmed up on this task's answers the first time it is used with it (then
# cached); fewer warm-up steps than the default 2500 make that take seconds instead of minutes.
warmup_steps = 300
'''

REWARD_PY = '''\
"""A reward plugin: data.reward = "{file}:reward" (see docs/tasks.md#plugins-your-own-task-or-reward).

retrain calls reward(prompt, completion, answer) once per sampled completion; a value of at
least 1.0 counts the completion as correct. This one gives full credit to the exact answer and
partial credit to a completion that starts with it, less a penalty per extra character, so the
policy learns to stop after the answer.
"""

RETRAIN_PLUGIN_KIND = "reward"  # lets `retrain plugins` list this file without importing it

PARTIAL_CREDIT = 0.5  # the right answer followed by more text
LENGTH_PENALTY = 0.1  # per character after the answer


def reward(prompt: str, completion: str, answer: str) -> float:
    text = completion.strip()
    if text == answer:
        return 1.0
    if answer and text.startswith(answer):
        extra = len(text) - len(answer)
        return max(0.0, PARTIAL_CREDIT - LENGTH_PENALTY * extra)
    return 0.0
'''

ADVANTAGE_PY = '''\
"""An advantage plugin: algorithm.advantage_mode = "{file}:advantage" (docs/algorithms.md).

retrain calls advantage(rewards_G) once per group of completions of one prompt and uses the
result as each completion's episode advantage (before any token transform). It must return one
finite float per completion. Groups whose rewards are all equal get advantage 0 whatever this
returns (they carry no learning signal).

This one is rank-based: advantages are the centred ranks of the rewards, scaled to unit standard
deviation. It ignores how far apart rewards are, only their order, so one outlier reward cannot
dominate a group.
"""

import numpy as np
from scipy.stats import rankdata

RETRAIN_PLUGIN_KIND = "advantage"  # lets `retrain plugins` list this file without importing it

EPS = 1e-6


def advantage(rewards_G: np.ndarray) -> np.ndarray:
    ranks_G = rankdata(rewards_G)  # ties share their mean rank
    centred_G = ranks_G - ranks_G.mean()
    return centred_G / (centred_G.std() + EPS)
'''

TRANSFORM_PY = '''\
"""A token-transform plugin: algorithm.transform_mode = "{file}:transform" (docs/algorithms.md).

retrain calls transform(adv_T, batch) once per step, after the episode advantages, in place of
the built-in transforms (gtpo, hicra, sepa). adv_T is a float64 copy of the episode advantages
broadcast to every completion token (flat over the batch); batch is a TokenBatch with
logprob_T, entropy_T (or None), planning_T (bool), offsets (completion i owns tokens
offsets[i]:offsets[i+1]), reward_N and group_N. Return one finite float per token.

This one amplifies planning tokens (phrases in algorithm.planning_grams, e.g. "let me check")
and damps the rest of a completion in proportion to how sure the model was of each token, so
credit goes to the uncertain decisions rather than to tokens the model would have written anyway.
"""

import numpy as np

RETRAIN_PLUGIN_KIND = "transform"  # lets `retrain plugins` list this file without importing it

PLANNING_SCALE = 1.5  # multiplies the advantage of planning tokens
MIN_WEIGHT = 0.5  # the weight of a token the model was certain of (surprisal 0)


def transform(adv_T: np.ndarray, batch) -> np.ndarray:  # batch: retrain.algo.pipeline.TokenBatch
    surprisal_T = -batch.logprob_T
    mean = float(surprisal_T.mean()) if surprisal_T.size else 0.0
    # weight 1 at the batch's mean surprisal, MIN_WEIGHT at 0, capped at 2
    weight_T = np.clip(MIN_WEIGHT + (1 - MIN_WEIGHT) * surprisal_T / max(mean, 1e-6), MIN_WEIGHT, 2.0)
    out_T = adv_T * weight_T
    out_T[batch.planning_T] *= PLANNING_SCALE
    return out_T
'''

TASK_PY = '''\
"""A task plugin: data.task = "{file}:make" (see docs/tasks.md#plugins-your-own-task-or-reward).

retrain calls make(data, seed) once per run; the object it returns hands out training and
held-out problems and scores completions. Training problem i must depend only on the seed and i
(a resumed run sees the same problems), and no held-out problem may be a training problem.

This one asks for the digits of a number in reverse: held-out numbers are the multiples of 7,
training numbers all the others, so the two sets are disjoint. The tiny model is warmed up on (prompt, answer) pairs of
the training stream; a task may define demonstration(problem, rng, flaw_rate) -> str to warm it up
on other completions (retrain/tasks/base.py).
"""

import random

from retrain.config.schema import DataConfig
from retrain.tasks import Problem

RETRAIN_PLUGIN_KIND = "task"  # lets `retrain plugins` list this file without importing it

MAX_NUMBER = 10**4


class Reverse:
    name = "reverse"

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def _problem(self, stream: str, i: int) -> Problem:
        # one generator per (seed, stream, i): problem i is the same however it is requested
        rng = random.Random(f"{self.seed}/{stream}/{i}")
        if stream == "eval":
            k = 7 * rng.randrange(2, MAX_NUMBER // 7)
        else:
            k = rng.randrange(10, MAX_NUMBER)
            k += k % 7 == 0  # the next number is not a multiple of 7
        return Problem(prompt=f"{k}<", answer=str(k)[::-1])

    def train_problems(self, cursor: int, n: int) -> list[Problem]:
        return [self._problem("train", i) for i in range(cursor, cursor + n)]

    def eval_problems(self, n: int) -> list[Problem]:
        return [self._problem("eval", i) for i in range(n)]

    def reward(self, problem: Problem, completion: str) -> float:
        return float(completion.strip() == problem.answer)

    def is_correct(self, problem: Problem, completion: str) -> bool:
        return self.reward(problem, completion) == 1.0


def make(data: DataConfig, seed: int) -> Reverse:
    return Reverse(seed)
'''

PLUGIN_SOURCES = {"reward": REWARD_PY, "advantage": ADVANTAGE_PY, "transform": TRANSFORM_PY,
                  "task": TASK_PY}
