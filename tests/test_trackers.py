"""Trackers (`report_to`): each named tracker gets the same scalars as metrics.jsonl and the
run's config, and each is read back with its own reader."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time

import pytest

from mentorgym.errors import ConfigError
from mentorgym.training.trackers import check_report_to, open_trackers, scalars_of

RECORDS = [
    {"kind": "train", "step": 1, "loss": 2.5, "lr": 1e-3, "iteration": 0},
    {"kind": "train", "step": 2, "loss": 2.0, "lr": 2e-3, "iteration": 0},
    {"kind": "eval", "step": 2, "iteration": 0, "success_rate": 0.25, "beta": 1.0},
    {"kind": "train", "step": 3, "loss": 1.5, "lr": 3e-3, "iteration": 1},
    {"kind": "eval", "step": 3, "iteration": 1, "success_rate": 0.5, "done": True},
]
CONFIG = {"algorithm": "dagger", "lr": 3e-3, "report_to": ["tensorboard"]}


def expected() -> dict[str, list[tuple[int, float]]]:
    """What every tracker should hold: each record's scalars at its step, in order."""
    out: dict[str, list[tuple[int, float]]] = {}
    for r in RECORDS:
        for key, value in scalars_of(r).items():
            out.setdefault(key, []).append((r["step"], value))
    return out


def test_scalars_are_the_numbers_of_a_record_named_by_kind():
    assert scalars_of(
        {"kind": "eval", "step": 4, "success_rate": 0.5, "done": True, "x": float("nan"), "s": "a"}
    ) == {"eval/success_rate": 0.5}
    assert expected()["train/loss"] == [(1, 2.5), (2, 2.0), (3, 1.5)]


def test_report_to_is_checked_before_anything_is_imported(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'tensorboard'"):
        check_report_to(["tensorbord"])
    with pytest.raises(ConfigError, match="write a list"):
        check_report_to("wandb")  # type: ignore[arg-type]
    with open_trackers([], tmp_path, CONFIG, "empty") as t:
        t.log(RECORDS[0])  # nothing is open: nothing is written
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_scalars_read_back_with_tensorboards_reader(tmp_path):
    pytest.importorskip("tensorboard", reason="pip install 'mentorgym[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with open_trackers(["tensorboard"], tmp_path, CONFIG, "tb") as t:
        for r in RECORDS:
            t.log(r)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    want = expected()
    assert set(acc.Tags()["scalars"]) == set(want)
    for key, points in want.items():
        got = [(e.step, pytest.approx(e.value)) for e in acc.Scalars(key)]
        assert got == points, key
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"algorithm": "dagger"' in text


def wandb_records(path):
    """The protobuf records of a `.wandb` file: W&B's transaction log keeps LevelDB's log
    format (a 7-byte file header, 32 KiB blocks, records split into FULL/FIRST/MIDDLE/LAST
    chunks behind a 7-byte header), and wandb ships the protobuf schema to decode them."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, chunks, buf = 7, [], b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            chunks.append(buf + chunk)
    records = []
    for c in chunks:
        r = wandb_internal_pb2.Record()
        r.ParseFromString(c)
        records.append(r)
    return records


def test_wandb_offline_history_read_back_from_its_transaction_log(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="pip install 'mentorgym[wandb]'")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    with open_trackers(["wandb"], tmp_path, CONFIG, "wb") as t:
        for r in RECORDS:
            t.log(r)
    (log,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")  # what `wandb sync` uploads
    # `finish()` returns when wandb's core service has the run; the service writes the log's
    # end a moment later, so wait for its closing `exit` record.
    deadline = time.monotonic() + 60
    while True:
        records = wandb_records(log)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        assert time.monotonic() < deadline, f"{log} has no exit record after 60 s"
        time.sleep(0.2)
    rows = [
        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    for key, points in expected().items():
        got = [(row["_step"], row[key]) for row in rows if key in row]
        assert got == [(s, pytest.approx(v)) for s, v in points], key
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["algorithm"] == "dagger"


TRACKIO_READER = """
import json, sys
from trackio.sqlite_storage import SQLiteStorage
logs = SQLiteStorage.get_logs("mentorgym-test", "tk")
config = SQLiteStorage.get_run_config("mentorgym-test", "tk")
print(json.dumps({"logs": logs, "config": config}, default=str))
"""


def test_trackio_logs_read_back_from_its_local_store(tmp_path):
    pytest.importorskip("trackio", reason="pip install 'mentorgym[trackio]'")
    # trackio reads TRACKIO_DIR when imported, so each side runs in its own interpreter.
    env = {
        **os.environ,
        "TRACKIO_DIR": str(tmp_path / "trackio"),
        "TRACKIO_PROJECT": "mentorgym-test",
    }
    writer = (
        "import json, sys\n"
        "from mentorgym.training.trackers import open_trackers\n"
        f"records = json.loads({json.dumps(json.dumps(RECORDS))})\n"
        f"with open_trackers(['trackio'], sys.argv[1], {CONFIG!r}, 'tk') as t:\n"
        "    for r in records: t.log(r)\n"
    )
    w = subprocess.run(
        [sys.executable, "-c", writer, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert w.returncode == 0, w.stderr
    r = subprocess.run(
        [sys.executable, "-c", TRACKIO_READER], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    losses = [(e["step"], e["train/loss"]) for e in got["logs"] if "train/loss" in e]
    assert losses == expected()["train/loss"]
    assert [e["eval/success_rate"] for e in got["logs"] if "eval/success_rate" in e] == [0.25, 0.5]
    assert got["config"]["algorithm"] == "dagger"


def test_the_trainers_metrics_feed_the_trackers_and_configs_check_report_to(tmp_path):
    pytest.importorskip("tensorboard", reason="pip install 'mentorgym[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mentorgym.training.config import load_config
    from mentorgym.training.metrics import Metrics

    trackers = open_trackers(["tensorboard"], tmp_path, CONFIG, "m")
    metrics = Metrics(tmp_path / "metrics.jsonl", trackers=trackers)
    for r in RECORDS:
        metrics.log(r)
    trackers.close()
    written = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert written == RECORDS
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    got = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert got == [(r["step"], pytest.approx(r["loss"])) for r in written if r["kind"] == "train"]
    assert load_config("configs/sokoban_dagger.yaml", [])[1].report_to == []
    with pytest.raises(ConfigError, match="did you mean 'wandb'"):
        load_config("configs/sokoban_dagger.yaml", ["report_to=['wandbb']"])
