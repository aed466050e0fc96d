"""What a run prints: one line per phase in a log file, tqdm on a terminal, Transformers'
bars off while training, and the closing summary."""

from __future__ import annotations

import io
import json

from mentorgym.training.progress import Progress, quiet_transformers, run_summary


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_log_a_phase_is_one_line_with_the_figures():
    log = io.StringIO()
    p = Progress(total=60, desc="iter 0", stream=log)
    for k in range(60):
        p.update(loss=1.0 / (k + 1))
    assert log.getvalue() == ""  # nothing per step
    p.close()
    p.close()  # safe twice, nothing more
    lines = log.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("iter 0: step 60/60  loss 0.0167  ") and "s/step" in lines[0]


def test_in_a_log_a_long_phase_also_writes_every_interval():
    log = io.StringIO()
    p = Progress(total=5, initial=2, desc="train", stream=log, every_s=0.0)
    p.update(loss=2.0)
    p.update(loss=1.0)
    p.close()
    assert [line.split("  ")[0] for line in log.getvalue().splitlines()] == [
        "train: step 3/5",
        "train: step 4/5",
        "train: step 4/5",
    ]


def test_on_a_terminal_it_is_tqdms_bar_and_disabled_prints_nothing():
    tty = Terminal()
    p = Progress(total=3, desc="iter 1", stream=tty)
    assert p.bar is not None
    p.update(loss=0.5)
    p.close()
    assert "iter 1" in tty.getvalue()
    quiet = io.StringIO()
    off = Progress(total=3, stream=quiet, enabled=False)
    off.update(loss=1.0)
    off.close()
    assert quiet.getvalue() == ""


def test_transformers_bars_are_off_inside_and_restored_after():
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    with quiet_transformers():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()


def test_run_summary_names_success_first_and_last_the_checkpoint_and_the_viewer(tmp_path):
    records = [
        {"kind": "train", "step": 1, "loss": 2.0},
        {"kind": "eval", "iteration": 0, "step": 60, "success_rate": 0.05},
        {"kind": "eval", "iteration": 5, "step": 360, "success_rate": 0.62},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"ki')
    (tmp_path / "final").mkdir()
    assert run_summary(tmp_path) == [
        "held-out success (student alone): 0.050 after iteration 0 -> 0.620 after iteration 5",
        f"checkpoint: {tmp_path / 'final'}",
        f"look at it: mentorgym view {tmp_path}",
    ]
