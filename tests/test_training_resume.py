"""A training run interrupted after a checkpoint, rerun in the same output directory, resumes
from that checkpoint and ends with the weights of an uninterrupted run (GRPO, DPO, SFT, value
model; `restrl.training.checkpoints`).

The interruption is an exception raised from the run's own log callback at step k: step k's
update is done in memory, its checkpoint is not written, and checkpoint k - 1 (or earlier) is
the last one on disk, as when the process is killed mid-run.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from restrl.training.checkpoints import last_complete_checkpoint  # noqa: E402
from restrl.training.grpo import GRPOTrainConfig, train_grpo  # noqa: E402
from restrl.training.preference import (  # noqa: E402
    DPOTrainConfig,
    SFTTrainConfig,
    train_dpo,
    train_sft,
)
from restrl.value.config import ValueModelConfig  # noqa: E402
from restrl.value.train import train_value_model  # noqa: E402


class Interrupted(Exception):
    """The simulated crash."""


def crash_at(step: int):
    """An `on_log` that raises once training logs `step` (before that step's checkpoint)."""
    def on_log(logged_step: int, values: dict[str, float]) -> None:
        if logged_step == step:
            raise Interrupted(f"step {step}")
    return on_log


def final_weights(model_dir: Path) -> dict[str, object]:
    """Every tensor of every safetensors file of a saved model, keyed by file and name."""
    from safetensors.torch import load_file

    return {f"{path.name}:{key}": tensor for path in sorted(model_dir.glob("*.safetensors"))
            for key, tensor in load_file(str(path)).items()}


def assert_same_weights(a: Path, b: Path) -> None:
    import torch

    first, second = final_weights(a), final_weights(b)
    assert first.keys() == second.keys() and first
    differing = [k for k in first if not torch.equal(first[k], second[k])]
    assert not differing, differing[:5]


def interrupted_then_resumed(train, output_dir: Path, crash_step: int, caplog):
    """Run `train(output_dir, on_log)` until it crashes at `crash_step`, then rerun it; the
    rerun's result and its resume log lines. The rerun must log no step before `crash_step`
    (it redoes no finished step)."""
    with pytest.raises(Interrupted):
        train(output_dir, crash_at(crash_step))
    caplog.clear()
    logged: list[int] = []
    with caplog.at_level(logging.INFO, logger="restrl.training"):
        result = train(output_dir, lambda step, values: logged.append(step))
    assert min(logged) == crash_step, logged
    return result, [r.getMessage() for r in caplog.records if "resuming" in r.getMessage()]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny() -> str:
    from restrl.toy.tiny_model import tiny_model_path

    return str(tiny_model_path())


def policy_rows(n: int) -> list[dict]:
    from restrl.prompts import format_prompt
    from restrl.toy.tasks import toy_problems

    return [{"problem": p, "problem_id": p.problem_id, "domain": p.domain,
             "prompt": format_prompt(p), "partial_state": p.init_code}
            for p in toy_problems("train", n=n)]


# ----------------------------------------------------------------------------- value model


def value_rows(n: int) -> list[dict]:
    good, bad = "def f(x):\n    return x + 1\n", "def f(x):\n    return x - 1\n"
    return [{"prompt": f"Task {i}: write f(x) that adds one to x.",
             "answer": good if i % 2 == 0 else bad, "reward": 1.0 if i % 2 == 0 else 0.0}
            for i in range(n)]


def value_config(rm_class: str, **overrides) -> ValueModelConfig:
    """6 steps of 4 rows over 12 training rows: epoch 1 is steps 4-6."""
    params = dict(rm_class=rm_class, learning_rate=1e-3, max_steps=6, batch_size_per_device=4,
                  eval_fraction=0, save_steps=2, max_length=64)
    return ValueModelConfig(**{**params, **overrides})


@pytest.mark.parametrize("rm_class", ["transformers_scalar", "standard_scalar"])
def test_interrupted_value_model_resumes_to_the_uninterrupted_weights(rm_class, tiny, tmp_path,
                                                                     caplog):
    config = value_config(rm_class)

    def train(output_dir, on_log):
        return train_value_model(tiny, value_rows(12), config, output_dir, on_log=on_log)

    with caplog.at_level(logging.INFO, logger="restrl.training"):
        straight = train(tmp_path / "straight", None)
    assert "resuming" not in caplog.text  # a fresh output directory: nothing to resume
    resumed, lines = interrupted_then_resumed(train, tmp_path / "resumed", 5, caplog)
    checkpoint = tmp_path / "resumed" / "checkpoints" / "checkpoint-4"
    assert lines == [f"resuming the value model from step 4 ({checkpoint})"]  # inside epoch 1
    assert_same_weights(straight.model_dir, resumed.model_dir)


def test_resumed_value_model_keeps_the_evaluations_and_best_checkpoint_of_one_run(
        tiny, tmp_path, caplog):
    """The "before" evaluation is not redone on the resumed model: the evaluations (and the
    best checkpoint chosen from them) are those of the uninterrupted run."""
    config = value_config("transformers_scalar", eval_fraction=0.25, min_eval_rows=0,
                          max_steps=6, save_steps=2, learning_rate=0.02)

    def train(output_dir, on_log):
        return train_value_model(tiny, value_rows(16), config, output_dir, on_log=on_log)

    straight = train(tmp_path / "straight", None)
    resumed, _ = interrupted_then_resumed(train, tmp_path / "resumed", 5, caplog)
    assert [step for step, _ in resumed.evaluations] == [0, 2, 4, 6, 6]
    for (step, ours), (_, theirs) in zip(resumed.evaluations, straight.evaluations, strict=True):
        assert ours == pytest.approx(theirs, rel=1e-6), step
    assert resumed.metrics == pytest.approx(straight.metrics, rel=1e-6)
    assert Path(resumed.best_checkpoint).name == Path(straight.best_checkpoint).name
    assert_same_weights(straight.model_dir, resumed.model_dir)


def test_a_checkpoint_killed_mid_write_is_skipped_for_the_one_before(tiny, tmp_path,
                                                                    monkeypatch, caplog):
    """Killed while checkpoint 4 was being written (weights and optimizer on disk, no RNG state
    and no trainer_state.json): the rerun warns, resumes from checkpoint 2, and still ends with
    the uninterrupted run's weights."""
    from transformers import Trainer

    config = value_config("transformers_scalar")

    def train(output_dir, on_log):
        return train_value_model(tiny, value_rows(12), config, output_dir, on_log=on_log)

    straight = train(tmp_path / "straight", None)
    save_rng_state = Trainer._save_rng_state

    def killed_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            raise Interrupted("killed while writing checkpoint-4")
        save_rng_state(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_rng_state", killed_at_step_4)
    with pytest.raises(Interrupted):
        train(tmp_path / "resumed", None)
    monkeypatch.setattr(Trainer, "_save_rng_state", save_rng_state)
    partial = tmp_path / "resumed" / "checkpoints" / "checkpoint-4"
    assert (partial / "model.safetensors").is_file() and (partial / "optimizer.pt").is_file()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="restrl.training"):
        resumed = train(tmp_path / "resumed", None)
    assert f"skipping the incomplete checkpoint {partial}" in caplog.text
    assert "resuming the value model from step 2" in caplog.text
    assert_same_weights(straight.model_dir, resumed.model_dir)


def test_last_complete_checkpoint_needs_every_ranks_rng_state(tmp_path):
    import json

    root = tmp_path / "checkpoints"
    for step in (2, 4):
        (root / f"checkpoint-{step}").mkdir(parents=True)
        (root / f"checkpoint-{step}" / "trainer_state.json").write_text(
            json.dumps({"global_step": step}))
        (root / f"checkpoint-{step}" / "rng_state_0.pth").write_bytes(b"")
    (root / "checkpoint-2" / "rng_state_1.pth").write_bytes(b"")
    assert last_complete_checkpoint(tmp_path, processes=2) == root / "checkpoint-2"
    assert last_complete_checkpoint(tmp_path, processes=1) is None  # no rng_state.pth
    assert last_complete_checkpoint(tmp_path / "elsewhere", processes=1) is None


# ----------------------------------------------------------------------------- DPO, SFT


def test_interrupted_sft_resumes_to_the_uninterrupted_weights(tiny, tmp_path, caplog):
    rows = [{"prompt": r["prompt"], "completion": "    return x\n```"} for r in policy_rows(4)]
    config = SFTTrainConfig(max_steps=4, batch_size_per_device=2, save_steps=2,
                            learning_rate=1e-3, max_length=256)

    def train(output_dir, on_log):
        return train_sft(tiny, rows, config, output_dir, on_log=on_log)

    straight = train(tmp_path / "straight", None)
    resumed, lines = interrupted_then_resumed(train, tmp_path / "resumed", 3, caplog)
    assert lines == [f"resuming SFT from step 2 ({tmp_path}/resumed/checkpoints/checkpoint-2)"]
    assert_same_weights(straight.model_dir, resumed.model_dir)


def test_interrupted_dpo_resumes_to_the_uninterrupted_weights(tiny, tmp_path, caplog):
    rows = [{"prompt": r["prompt"], "chosen": "    return x\n```", "rejected": "    pass\n```"}
            for r in policy_rows(4)]
    config = DPOTrainConfig(max_steps=4, batch_size_per_device=2, save_steps=2,
                            learning_rate=1e-3, max_length=256)

    def train(output_dir, on_log):
        return train_dpo(tiny, rows, config, output_dir, on_log=on_log)

    straight = train(tmp_path / "straight", None)
    resumed, lines = interrupted_then_resumed(train, tmp_path / "resumed", 3, caplog)
    assert lines == [f"resuming DPO from step 2 ({tmp_path}/resumed/checkpoints/checkpoint-2)"]
    assert_same_weights(straight.model_dir, resumed.model_dir)


# ----------------------------------------------------------------------------- GRPO


class ContentVerifier:
    """Rewards 0, 1/4, 2/4 or 3/4 from a checksum of the program: a spread within most groups
    (so an update), and the same reward for the same program in every run. Records the
    problem of each verified group."""

    def __init__(self) -> None:
        self.groups: list[str] = []

    def verify(self, problems, programs):
        self.groups.append(problems[0].problem_id)
        return [SimpleNamespace(reward=zlib.crc32(p.encode()) % 4 / 4) for p in programs]


def test_interrupted_grpo_resumes_to_the_uninterrupted_weights_and_prompt_order(
        tiny, tmp_path, caplog):
    """3 prompts, one group per step, 6 steps: epoch 1 is steps 4-6 and the rerun resumes in it
    from checkpoint 4. TRL's sampler alone would replay epoch 0's order there
    (`restrl.training.grpo_trainer`); the rerun must train on steps 5-6's prompts, sample the
    same groups (the restored RNG state) and end with the same weights."""
    rows = policy_rows(3)
    problems = [r["problem"] for r in rows]
    config = GRPOTrainConfig(num_generations=4, batch_size_per_device=4, max_completion_length=8,
                             max_prompt_length=64, max_steps=6, save_steps=4,
                             learning_rate=1e-2, temperature=1.0)
    verifiers = {"straight": ContentVerifier(), "resumed": ContentVerifier()}

    def train(output_dir, on_log):
        return train_grpo(tiny, rows, problems, verifiers[output_dir.name], config, output_dir,
                          on_log=on_log)

    straight = train(tmp_path / "straight", None)
    epochs = verifiers["straight"].groups[:3], verifiers["straight"].groups[3:]
    assert epochs[0] != epochs[1], "the orders of the two epochs must differ for this to bite"
    resumed, lines = interrupted_then_resumed(train, tmp_path / "resumed", 5, caplog)
    assert lines == [f"resuming GRPO from step 4 ({tmp_path}/resumed/checkpoints/checkpoint-4)"]
    assert verifiers["resumed"].groups[5:] == verifiers["straight"].groups[4:]
    assert_same_weights(straight.model_dir, resumed.model_dir)
