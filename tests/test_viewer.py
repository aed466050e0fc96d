"""The web viewer's index and API: byte-offset indexing that grows with a live file, filters
and search on 10,000 episodes, bad lines named by file and line, live metrics, the token rule."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from viewer_fixtures import big_file, episode, make_run, metrics_records, write

from mentorgym import cli
from mentorgym.errors import ConfigError
from mentorgym.viewer import (
    STATIC_DIR,
    Catalog,
    Query,
    TrajectoryFile,
    check_bind,
    create_app,
    query_episodes,
    read_metrics,
)

N = 10_000


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "trajectories.jsonl"
    rows = big_file(path, N)
    f = TrajectoryFile(path, 0, "trajectories", None, None)
    f.refresh()
    return f, rows


def test_index_keeps_offsets_and_summaries_and_reads_episodes_back_from_disk(big):
    f, rows = big
    assert len(f.episodes) == N and not f.bad
    # The index holds flat summaries (counts, flags, offsets), never turns or messages.
    assert all(not isinstance(v, (list, dict)) for v in vars(f.episodes[0]).values())
    for k in (0, 1, 4999, N - 1):
        assert f.read(k) == rows[k]
        assert f.episodes[k].line == k + 1
    s = f.episodes[2]  # actors teacher, student, student: labels differ on both student turns
    assert (s.mix, s.student_turns, s.other_turns, s.label_diffs) == ("mixed", 2, 1, 2)
    assert f.episodes[1].mix == "teacher" and f.episodes[3].mix == "student"


def test_filters_and_pages_on_10k_episodes(big):
    f, rows = big

    def run(**kw):
        return query_episodes([f], Query(**kw))

    everything = run(limit=50)
    assert everything["total"] == N and len(everything["items"]) == 50
    last = run(offset=N - 10, limit=50)
    assert [e["k"] for e in last["items"]] == list(range(N - 10, N))
    assert run(success=True)["total"] == sum(1 for d in rows if d["success"])
    assert run(success=False, env="mentorgym/Sokoban-v0")["total"] == sum(
        1 for d in rows if not d["success"] and d["env_id"] == "mentorgym/Sokoban-v0"
    )
    assert run(mix="mixed")["total"] == sum(1 for k in range(N) if k % 3 == 2)
    ranged = run(min_return=0.0, max_return=10.0, limit=500)
    assert ranged["total"] == sum(1 for d in rows if 0 <= d["return"] <= 10)
    assert all(0 <= e["return"] <= 10 for e in ranged["items"])
    top = run(sort="-return", limit=3)["items"]
    assert [e["k"] for e in top] == [N - 1, N - 2, N - 3]
    assert run(label_diffs=True)["total"] == sum(1 for k in range(N) if k % 3 != 1)
    assert run(limit=10**6)["limit"] == 500  # one page is bounded whatever is asked
    assert set(everything["facets"]["envs"]) == {"mentorgym/Sokoban-v0", "mentorgym/MathTools-v0"}


def test_search_finds_agent_text_not_json_keys(big):
    f, _ = big
    hits = query_episodes([f], Query(q="NEEDLE", limit=500))
    assert [e["k"] for e in hits["items"]] == list(range(0, N, 100))
    # "actor" and "teacher_action" are keys in every turn: they are not what an agent wrote.
    assert query_episodes([f], Query(q="teacher_action"))["total"] == 0
    both = query_episodes([f], Query(q="needle", success=True, limit=500))
    assert [e["k"] for e in both["items"]] == [k for k in range(0, N, 100) if k % 7 == 0]


def test_a_growing_file_is_indexed_as_it_grows_and_a_torn_line_waits(tmp_path):
    path = write(tmp_path / "t.jsonl", [episode(0, True, ["student"])])
    f = TrajectoryFile(path, 0, "t", None, None)
    f.refresh()
    assert len(f.episodes) == 1
    line = json.dumps(episode(1, False, ["student"]).to_dict())
    with open(path, "a") as out:
        out.write(line[:40])  # the writer is mid-line
    f.refresh()
    assert len(f.episodes) == 1 and not f.bad
    with open(path, "a") as out:
        out.write(line[40:] + "\n")
    f.refresh()
    assert [e.seed for e in f.episodes] == [0, 1] and f.read(1)["seed"] == 1
    write(path.with_name("u.jsonl"), [episode(7, True, ["teacher"])]).replace(path)  # rewritten
    f.refresh()
    assert [e.seed for e in f.episodes] == [7]


def test_bad_lines_are_named_by_file_and_line_and_the_rest_still_shows(tmp_path):
    path = write(tmp_path / "t.jsonl", [episode(0, True, ["student"])])
    with open(path, "ab") as out:
        out.write(b'{"schema": 1, "env_id": "x", "turns": [\xff\xfe]}\n')
        out.write(b"this is not json\n")
        out.write(b"[1, 2]\n")
    write(path, [episode(5, False, ["student"])])
    client = TestClient(create_app(path))
    r = client.get("/api/episodes")
    assert r.status_code == 200
    body = r.json()
    assert [e["seed"] for e in body["items"]] == [0, 5]
    got = [(e["file"], e["line"], e["reason"].split(" (")[0]) for e in body["errors"]]
    assert got == [
        (str(path), 2, "not valid UTF-8"),
        (str(path), 3, "not JSON"),
        (str(path), 4, "not a trajectory: a JSON list, expected an object"),
    ]
    assert client.get("/api/episode/0/1").json()["summary"]["line"] == 5


def test_metrics_are_read_from_an_offset_so_a_live_page_gets_only_new_records(tmp_path):
    run = make_run(tmp_path)
    client = TestClient(create_app(run))
    first = client.get("/api/runs/0/metrics").json()
    assert first["records"] == metrics_records(2) and not first["reset"]
    assert client.get(f"/api/runs/0/metrics?offset={first['offset']}").json()["records"] == []
    new = {"kind": "eval", "iteration": 2, "step": 15, "success_rate": 0.9}
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps(new) + "\n" + '{"kind": "train", "st')  # and half of the next record
    later = client.get(f"/api/runs/0/metrics?offset={first['offset']}").json()
    assert later["records"] == [new]
    (run / "metrics.jsonl").write_text(json.dumps(new) + "\n")  # a resumed run rewrote it
    again = read_metrics(run / "metrics.jsonl", later["offset"])
    assert again["reset"] and again["records"] == [new]


def test_catalog_finds_runs_their_files_and_iterations_as_they_appear(tmp_path):
    make_run(tmp_path, "a")
    run_b = make_run(tmp_path, "b")
    write(tmp_path / "loose.jsonl", [episode(0, True, ["student"])])
    cat = Catalog(tmp_path)
    runs, files = cat.scan()
    assert [r.name for r in runs] == ["a", "b"]
    kinds = {(f.run, f.kind, f.iteration) for f in files}
    assert (None, "loose", None) in kinds and (1, "eval", 1) in kinds
    write(run_b / "iter_02" / "rollouts.jsonl", [episode(99, True, ["student"])])
    _, files = cat.scan()
    assert any(f.run == 1 and f.iteration == 2 and len(f.episodes) == 1 for f in files)
    ids = {f.path: f.fid for f in files}
    assert {f.path: f.fid for f in cat.scan()[1]} == ids  # ids stay stable for links


def test_episode_api_returns_the_episode_and_who_counts_as_teacher(tmp_path):
    run = make_run(tmp_path)
    client = TestClient(create_app(run))
    files = client.get("/api/catalog").json()["files"]
    fid = next(f["fid"] for f in files if f["kind"] == "rollouts" and f["iteration"] == 1)
    body = client.get(f"/api/episode/{fid}/1").json()
    assert body["episode"]["seed"] == 11 and body["summary"]["label_diffs"] == 2
    assert "expert" in body["teacher_names"] and body["run_name"] == "sokoban_dagger"
    assert client.get(f"/api/episode/{fid}/9").status_code == 404
    filtered = client.get("/api/episodes", params={"success": "0", "run": 0, "kind": "rollouts"})
    assert [e["seed"] for e in filtered.json()["items"]] == [11]
    assert client.get("/api/episodes", params={"min_return": "abc"}).status_code == 400


def test_pages_carry_a_script_policy_and_the_page_never_parses_html():
    app = create_app(STATIC_DIR / "index.html")  # any readable file will do as PATH
    r = TestClient(app).get("/")
    assert r.status_code == 200
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    js = (STATIC_DIR / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, f"app.js uses {sink}; render agent text with textContent"


def test_off_loopback_needs_a_token_and_every_request_carries_it(tmp_path):
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    with pytest.raises(ConfigError, match="give a token"):
        check_bind("0.0.0.0", None)
    run = make_run(tmp_path)
    client = TestClient(create_app(run, token="s3cret"))
    assert client.get("/api/catalog").status_code == 401
    assert client.get("/api/catalog", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api/catalog", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/api/catalog", headers={"X-API-Key": "s3cret"}).status_code == 200
    page = client.get("/?token=s3cret")  # the browser's way in; then a cookie carries it
    assert page.status_code == 200 and "httponly" in page.headers["set-cookie"].lower()
    assert client.get("/api/catalog").status_code == 200


def test_cli_view_refuses_a_public_bind_without_token_and_a_missing_path(tmp_path, capsys):
    run = make_run(tmp_path)
    assert cli.main(["view", str(run), "--host", "0.0.0.0"]) == 2
    assert "give a token" in capsys.readouterr().err
    assert cli.main(["view", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_terminal_view_names_bad_lines_and_still_prints_the_rest(tmp_path, capsys):
    path = write(tmp_path / "t.jsonl", [episode(0, True, ["student"])])
    with open(path, "ab") as out:
        out.write(b"\xff not utf-8\n")
    write(path, [episode(4, False, ["teacher", "student"])])
    assert cli.main(["view", str(path), "--list"]) == 0
    out = capsys.readouterr().out
    assert f"{path} line 2: not valid UTF-8" in " ".join(out.split())
    assert cli.main(["view", str(path), "--episode", "1"]) == 0
    assert "seed=4" in capsys.readouterr().out
    assert cli.main(["view", str(tmp_path), "--episode", "0"]) == 2
    assert "is not a trajectories file" in capsys.readouterr().err


def test_episode_summary_names_the_graders_refusals():
    """A SWE episode whose patch was partly refused shows why (the viewer's `refused` column);
    an episode of any other env shows nothing."""
    from mentorgym.viewer.index import _summarize

    turn = {"actor": "student", "action": "submit", "reward": 0.0, "observation": []}
    refused = {
        "turns": [
            {**turn, "info": {"excluded": {"tests/conftest.py": "conftest.py is never graded"}}}
        ],
        "success": False,
    }
    plain = {"turns": [{**turn, "info": {"format_error": True}}], "success": False}
    assert _summarize(refused).refusals == "excluded/conftest"
    assert _summarize(plain).refusals == ""
    assert _summarize(refused).to_json()["refusals"] == "excluded/conftest"
