"""`mentorgym swe ...`: SWE task files, predictions and grading."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mentorgym.cli.args import (
    count_trajectories,
    input_dir,
    input_file,
    non_negative_int,
    output_file,
    positive_int,
)
from mentorgym.errors import ConfigError

HARNESSES = ["swebench", "swebench4", "swesmith", "swegym", "mentorgym"]


def register(sub: argparse._SubParsersAction) -> None:
    swe = sub.add_parser("swe", help="SWE tasks").add_subparsers(dest="swe_command", required=True)
    p = swe.add_parser("synth", help="synthesize tasks from a local Python repository")
    p.add_argument("--repo", required=True, type=input_dir)
    p.add_argument("--n", type=positive_int, default=10)
    p.add_argument("--out", required=True, type=output_file)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument(
        "--sandbox",
        choices=["docker", "local"],
        default="docker",
        help="where tests run; local is no security boundary",
    )
    p.add_argument(
        "--image",
        default=None,
        help="an image holding this repository at /testbed (default: built from the repo)",
    )
    p.set_defaults(func=cmd_swe_synth)
    p = swe.add_parser("export-preds", help="trajectories to swebench predictions JSONL")
    p.add_argument("trajectories", type=input_file)
    p.add_argument("--out", required=True, type=output_file)
    p.add_argument("--model-name", default="mentorgym")
    p.set_defaults(func=cmd_swe_export_preds)
    _register_grade(swe)
    p = swe.add_parser("check", help="validate a SWE task file and list which images are present")
    p.add_argument(
        "file",
        help="JSONL / JSON of SWE-bench, SWE-Gym or SWE-smith instances, a folder saved by "
        "`datasets`, or 'builtin'",
    )
    p.add_argument("--no-images", action="store_true", help="do not ask the Docker engine")
    p.set_defaults(func=cmd_swe_check)


def _register_grade(swe: argparse._SubParsersAction) -> None:
    p = swe.add_parser("grade", help="grade a harness's test log as that harness would")
    p.add_argument(
        "log",
        type=input_file,
        help="a SWE-bench / SWE-Gym / SWE-smith eval log, or a pytest report",
    )
    p.add_argument(
        "--instance", required=True, help="a JSON / JSONL file or `datasets` folder of instances"
    )
    p.add_argument("--id", default=None, help="which instance of a multi-instance file")
    p.add_argument(
        "--harness",
        choices=HARNESSES,
        default=None,
        help="whose rules (default: from the instance)",
    )
    p.add_argument(
        "--report", default=None, type=input_file, help="the harness's report.json, to compare"
    )
    p.add_argument("--json", action="store_true", help="also print the grade as JSON")
    p.set_defaults(func=cmd_swe_grade)


def cmd_swe_synth(args: argparse.Namespace) -> None:
    from mentorgym.envs.swe.synth import synthesize

    tasks = synthesize(
        Path(args.repo),
        args.n,
        Path(args.out),
        seed=args.seed,
        image=args.image,
        sandbox=args.sandbox,
    )
    print(f"wrote {len(tasks)} validated task(s) to {args.out}")


def cmd_swe_export_preds(args: argparse.Namespace) -> None:
    from mentorgym.envs.swe.preds import export_predictions

    count_trajectories("trajectories", args.trajectories)
    k = export_predictions(args.trajectories, args.out, model_name=args.model_name)
    print(f"wrote {k} prediction(s) to {args.out}")


def read_log(path: str) -> str:
    """A test log as text; a file with no text in it (empty, binary) is a mistake to name."""
    raw = Path(path).read_bytes()
    if not raw.strip():
        raise ConfigError(f"log {path} is empty; give the test log the harness wrote")
    if b"\x00" in raw[:8000]:  # git's rule for a binary file
        raise ConfigError(f"log {path} is a binary file, not a test log; give the harness's log")
    return raw.decode("utf-8", errors="replace")


def read_report(path: str) -> dict[str, Any]:
    """The harness's report.json, a JSON object."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"--report {path} is not text; give the harness's report.json") from None
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"--report {path} is not valid JSON ({e.msg} at line {e.lineno}); "
            "give the report.json the harness wrote"
        ) from None
    if not isinstance(report, dict):
        raise ConfigError(
            f"--report {path} holds a JSON {type(report).__name__}, not report.json's object"
        )
    return report


def cmd_swe_grade(args: argparse.Namespace) -> None:
    from mentorgym.envs.swe.grading import grade_log, grade_table, report_json_verdict
    from mentorgym.envs.swe.tasks import read_instance

    instance = read_instance(args.instance, args.id)
    iid = instance["instance_id"]
    theirs = None
    if args.report:
        report = read_report(args.report)
        try:
            theirs = report_json_verdict(report, iid)
        except ValueError as e:
            raise ConfigError(f"--report {args.report}: {e}; give this instance's report") from None
    result = grade_log(instance, read_log(args.log), harness=args.harness)
    print(grade_table(iid, result))
    if theirs is not None:
        agree = "agrees" if theirs == result.resolved else "DISAGREES"
        print(f"the harness's report.json says resolved={theirs}: this grade {agree}")
    if args.json:
        print(json.dumps(result.to_dict()))


def cmd_swe_check(args: argparse.Namespace) -> None:
    from mentorgym.envs.swe.tasks import check_tasks

    lines, missing = check_tasks(args.file, images=not args.no_images)
    print("\n".join(lines))
    if missing:
        raise ConfigError(
            f"{missing} image(s) missing from the local engine; fetch them as shown above"
        )
