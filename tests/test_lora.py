"""LoRA through peft on the tiny model: the `lora:` block, adapter checkpoints, the merged
`final/`, resume, and the merged weights equal the live model's function."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft", reason="LoRA needs peft (pip install 'mentorgym[lora]')")

from mentorgym.errors import ConfigError  # noqa: E402
from mentorgym.training import lora  # noqa: E402
from mentorgym.training.entry import train_from_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BLOCK = {"rank": 4, "alpha": 8, "target_modules": "all-linear"}


def _tiny():
    from transformers import AutoModelForCausalLM

    from mentorgym.agents.tiny import default_tiny_path

    return AutoModelForCausalLM.from_pretrained(default_tiny_path(), dtype=torch.float32)


def test_settings_refuse_bad_blocks_and_empty_means_full_fine_tuning():
    assert lora.settings({}) is None
    assert lora.settings(BLOCK).rank == 4
    for bad, word in [
        ({"rank": 0}, "rank"),
        ({"r": 4}, "unknown key"),
        ({"dropout": 1.5}, "dropout"),
    ]:
        with pytest.raises(ConfigError, match=word):
            lora.settings(bad)
    from mentorgym.training.config import load_config

    with pytest.raises(ConfigError, match="rank"):
        load_config(ROOT / "configs/sokoban_dagger.yaml", ["lora={rank: -1}"])
    _, cfg = load_config(ROOT / "configs/sokoban_dagger.yaml", ["lora={rank: 4, alpha: 8}"])
    assert cfg.lora == {"rank": 4, "alpha": 8}


def test_only_the_adapter_trains_and_the_merged_weights_compute_the_same_function():
    model = lora.apply(_tiny(), BLOCK)
    assert lora.is_lora(model)
    trainable, total = lora.trainable_parameters(model)
    assert 0 < trainable < total / 5
    assert all(".lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():  # a non-zero adapter (B starts at zero)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    ids = torch.tensor([[5, 17, 30, 41, 9, 100]])
    live = model(input_ids=ids).logits
    merged = _tiny()
    merged.load_state_dict(lora.merged_state_dict(model))
    assert torch.allclose(merged(input_ids=ids).logits, live, atol=1e-4)
    assert not torch.allclose(_tiny()(input_ids=ids).logits, live, atol=1e-3)


@pytest.mark.slow
def test_dagger_with_lora_saves_adapters_merges_final_and_resumes(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from mentorgym.agents.hf import HFPolicy
    from mentorgym.agents.tiny import default_tiny_path

    sets = ["progress=false", "steps_per_iteration=2", "batch_size=8", "episodes=4"]
    sets += ["eval_episodes=2", "max_new_tokens=8", "save_every=1", "iterations=2"]
    sets += [f"student={default_tiny_path()}", "lora={rank: 4, alpha: 8}", "lr=1e-2"]
    run = train_from_config(
        str(ROOT / "configs/sokoban_dagger.yaml"), sets, str(tmp_path / "r"), None, False
    )
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    assert ckpts
    for ck in ckpts:  # the adapter, in peft's format, not the whole model
        names = {p.name for p in (ck / "model").iterdir()}
        assert {"adapter_model.safetensors", "adapter_config.json"} <= names
        assert "model.safetensors" not in names
        keys = load_file(ck / "model" / "adapter_model.safetensors")
        assert all(k.startswith("base_model.model.") and ".lora_" in k for k in keys)
    final = run / "final"
    assert (final / "model.safetensors").exists() and (final / "mentorgym_policy.json").exists()
    base = HFPolicy(str(default_tiny_path()), device="cpu").model.state_dict()
    tuned = HFPolicy(str(final), device="cpu").model.state_dict()
    assert set(tuned) == set(base)  # a plain checkpoint: no lora or base_layer names
    assert any(not torch.equal(base[k], tuned[k]) for k in tuned)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]

    # A run killed between iterations resumes from its adapter checkpoint, to the same weights.
    from mentorgym.training import dagger

    real_collect, crashed = dagger.collect, []

    def collect_then_die(s, cfg, run_dir, i):
        if i == 1 and not crashed:
            crashed.append(i)
            raise RuntimeError("killed between iterations")
        return real_collect(s, cfg, run_dir, i)

    monkeypatch.setattr(dagger, "collect", collect_then_die)
    with pytest.raises(RuntimeError, match="killed"):
        train_from_config(
            str(ROOT / "configs/sokoban_dagger.yaml"), sets, str(tmp_path / "again"), None, False
        )
    again = train_from_config(None, [], None, str(tmp_path / "again"), False)
    rec = [json.loads(x) for x in (again / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rec if r["kind"] == "train"] == [1, 2, 3, 4]
    resumed = HFPolicy(str(again / "final"), device="cpu").model.state_dict()
    assert all(torch.allclose(resumed[k], tuned[k], atol=1e-5) for k in tuned)


def test_a_lora_checkpoint_refuses_a_full_model_and_back(tmp_path):
    from mentorgym.training.checkpoint import load_weights, save_model
    from mentorgym.training.distributed import Dist

    model = lora.apply(_tiny(), BLOCK)
    save_model(model, None, tmp_path / "adapter", Dist())
    with pytest.raises(ConfigError, match="LoRA adapter"):
        load_weights(tmp_path / "adapter", _tiny())
    save_model(_tiny(), None, tmp_path / "full", Dist())
    with pytest.raises(ConfigError, match="full weights"):
        load_weights(tmp_path / "full", model)


@pytest.mark.slow
@pytest.mark.vllm
def test_opd_with_lora_and_the_vllm_sampler_keeps_the_sampler_gap_of_full_fine_tuning(tmp_path):
    """The engine gets the merged weights before every sampling: its logprobs of the sampled
    tokens equal the trainer's recomputation within the bound full fine-tuning meets (1e-3)."""
    from mentorgym.agents.tiny import default_tiny_path
    from mentorgym.agents.vllm_engine import vllm_available

    if not vllm_available():
        pytest.skip("vLLM is not installed (MENTORGYM_VLLM=cpu bash scripts/setup.sh)")
    tiny = default_tiny_path()
    sets = ["sampler=vllm", "steps=2", "tasks_per_step=2", "group_size=2", "eval_episodes=0"]
    sets += ["teacher=tiny", f"student={tiny}", "progress=false", "lora={rank: 4, alpha: 8}"]
    sets += ["lr=5e-2"]  # large, so the second step samples from visibly moved weights
    run = train_from_config(
        str(ROOT / "configs/sokoban_opd.yaml"), sets, str(tmp_path / "r"), None, False
    )
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    syncs = [r for r in records if r.get("kind") == "sampler_sync"]
    train = [r for r in records if r.get("kind") == "train"]
    assert len(syncs) >= 2 and [r["step"] for r in train] == [1, 2]
    assert all(r["sampler_logprob_gap_max"] < 1e-3 for r in train)
    assert (run / "final" / "model.safetensors").exists()
