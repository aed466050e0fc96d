"""bench/efficacy.py's statistics, tables and plots on synthetic results (no training)."""

from __future__ import annotations

import importlib.util
import math
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("efficacy", ROOT / "bench" / "efficacy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_t_interval_against_the_textbook_formula(bench):
    xs = [0.2, 0.4, 0.3, 0.5, 0.35]
    m, lo, hi = bench.t_interval(xs)
    half = 2.776 * statistics.stdev(xs) / math.sqrt(5)  # t(0.975, df=4) = 2.776
    assert (m, lo, hi) == pytest.approx((0.35, 0.35 - half, 0.35 + half))
    assert math.isnan(bench.t_interval([0.3])[1])
    many = [i / 40 for i in range(40)]  # df 39: past the table, the normal quantile
    assert bench.t_interval(many)[2] - statistics.mean(many) == pytest.approx(
        1.96 * statistics.stdev(many) / math.sqrt(40)
    )


def _arm(success: float, labels: int) -> dict:
    return dict(
        success_rate=success, labels=labels, unique_labels=labels - 10, episodes=96,
        episodes_eval=100, dead_end_rate=0.1, undos_per_episode=0.5, unlabeled_turns=0,
        curve=[(100, 0.1), (300, 0.2), (labels, success)],
    )  # fmt: skip


def test_dagger_bc_table_pairs_the_seeds_and_plots(bench, tmp_path):
    rows = [
        {"seed": s, "pool_rooms": 96, "steps": 120, "dagger": _arm(d, 500),
         "bc_labels": _arm(b, 500), "bc_unique": _arm(u, 490)}
        for s, (d, b, u) in enumerate([(0.5, 0.3, 0.2), (0.4, 0.35, 0.3), (0.6, 0.4, 0.45)])
    ]  # fmt: skip
    table = bench.dagger_bc_table("sokoban_undo", bench.REGIMES["sokoban_undo"], rows)
    diffs = [0.2, 0.05, 0.2]
    m, lo, hi = bench.t_interval(diffs)
    assert (
        f"| DAgger - bc_labels | {m:.3f} [{lo:.3f}, {hi:.3f}] | +0.200, +0.050, +0.200 |" in table
    )
    assert "| dagger | 0.500 [" in table and "seeds [0, 1, 2]" in table
    bench.dagger_bc_plot("sokoban_undo", rows, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_distill_table_and_plot(bench, tmp_path):
    import argparse

    regime = bench.REGIMES["sokoban_distill"]
    rows = [
        {"seed": s, "warm": 0.3, **{a: _arm(0.3 + 0.05 * i + 0.01 * s, 0) for i, a in
                                   enumerate(regime["arms"])}}
        for s in range(3)
    ]  # fmt: skip
    args = argparse.Namespace(steps=100, seeds=[0, 1, 2], eval_episodes=100)
    table = bench.distill_table(
        "sokoban_distill", regime, rows, {"labels": 300, "success_rate": 0.3}, 0.01, args
    )
    opd = [0.35 + 0.01 * s for s in range(3)]
    ci = bench.fmt_ci
    row = f"| opd | {ci(opd)} | {ci([x - 0.3 for x in opd])} | {ci([0.05] * 3)} |"
    assert row in table and "| grpo | 0.310 [" in table and "0.050 [0.050, 0.050]" in row
    bench.distill_plot("sokoban_distill", rows, tmp_path / "d.png")
    assert (tmp_path / "d.png").stat().st_size > 1000


def test_overrides_reach_only_the_arms_that_have_them(bench):
    from mentorgym.training import dagger, sft

    cfg = bench.build(
        sft, dict(bench.SOKOBAN_COMMON, episodes=8, steps=3), {"lr": "1e-4", "iterations": "2"}
    )
    assert cfg.lr == 1e-4 and not hasattr(cfg, "iterations")
    d = bench.build(dagger, dict(bench.SOKOBAN_COMMON, **bench.DAGGER), {"iterations": "2"})
    assert d.iterations == 2 and d.dedupe and d.lr_schedule == "run"
    with pytest.raises(SystemExit, match="no arm's config has that key"):
        bench.check_sets({"nonsense": "1"}, [dagger, sft])


def test_bc_pool_cap_and_steps_come_from_the_dagger_run(bench, monkeypatch, tmp_path):
    """`--set episodes=32` is DAgger's rooms per iteration; BC's pool stays iterations x 32."""
    built: dict[str, object] = {}

    def fake_train(module, cfg, run):
        built[run.name] = cfg
        return run / "final"

    def fake_records(run, kind):
        if run.name.startswith("dagger"):
            if kind == "train":
                return [{"step": 120}]
            return [{"labels_total": 900, "success_rate": 0.1, "unlabeled_turns": 0}]
        return [{"labels": 400, "unlabeled_turns": 0}]

    monkeypatch.setattr(bench, "train_once", fake_train)
    monkeypatch.setattr(bench, "records", fake_records)
    monkeypatch.setattr(bench, "unique_labels", lambda run, cfg, files, cap=0: 500)
    monkeypatch.setattr(bench, "final_eval", lambda *a: {"success_rate": 0.2})
    sets = {"iterations": "3", "episodes": "32", "lr": "1e-3"}
    row = bench.dagger_bc_seed(bench.REGIMES["sokoban_undo"], 0, tmp_path, sets, 10, 5)
    dagger, bc, bcu = built["dagger_seed0"], built["bc_labels_seed0"], built["bc_unique_seed0"]
    assert (dagger.iterations, dagger.episodes, dagger.eval_episodes) == (3, 32, 5)
    assert (bc.episodes, bc.max_labels, bc.steps, bc.lr) == (96, 900, 120, 1e-3)
    assert (bcu.episodes, bcu.max_labels, bcu.env_kwargs) == (96, 500, {"undo": True})
    assert row["pool_rooms"] == 96 and row["dagger"]["unique_labels"] == 500
