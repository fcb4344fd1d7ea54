"""A tiny NIAH grid end to end with the real lite pipeline: scores, files, resuming, determinism."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

DATA = Path(__file__).resolve().parents[1] / "data"

pytestmark = pytest.mark.slow


def _write_config(tmp: Path, name: str = "tiny", **pipeline) -> Path:
    cfg = {
        "name": name, "seed": 5,
        "haystack": {"videos": [str(DATA / "world_8s.mp4"), str(DATA / "city_4s.mp4")],
                     "fps": 2.0, "size": [320, 180], "cache_dir": str(tmp / "cache")},
        # one 30 s haystack: image needles at 0 s and 27 s, signs moved to 6 s and 21 s
        "needles": {"dir": str(DATA / "needles"), "area": 0.1, "text_area": 0.15,
                    "min_gap": 3.0, "max_shift": 0.3},
        "grid": {"lengths": [30], "depths": [0.0, 1.0]},
        "questions": {"types": ["image", "text"], "top_k": 5},
        "pipeline": pipeline,
    }
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from pipelines.models import Models
    from pipelines.niah.grid import NiahConfig
    from pipelines.niah.run import run_niah

    tmp = tmp_path_factory.mktemp("niah")
    cfg = NiahConfig.load(_write_config(tmp))
    models = Models(cfg.pipeline)
    first = run_niah(cfg, tmp / "run", progress=False, models=models)
    return tmp, cfg, models, first


def _results(run: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (run / "results.jsonl").read_text().splitlines())}


def test_first_run_builds_indexes_asks_and_scores(env):
    tmp, cfg, _, first = env
    assert (first.built, first.indexed, first.asked, first.skipped) == (1, 1, 4, 0)
    recs = _results(first.out)
    assert sorted(r["qtype"] for r in recs.values()) == ["image", "image", "text", "text"]
    for r in recs.values():
        assert r["tokens"] > 0 and r["index_s"] > 0 and r["query_s"] > 0
        assert len(r["truth"]) == 1 and r["truth"][0][1] - r["truth"][0][0] == pytest.approx(3.0)
    s = first.summary
    assert s["complete"] and s["questions"] == 4
    # the image query finds its needle among the first three moments; the signs are found too
    assert s["overall"]["image"]["hit3"] == 1.0
    assert s["overall"]["text"]["hit3"] == 1.0
    assert s["cells"]["image"]["hit1"] and len(s["cells"]["image"]["hit1"]) == 2
    for f in ("summary.json", "summary.md", "heatmap.png", "run.json"):
        assert (first.out / f).is_file(), f
    from PIL import Image

    w, h = Image.open(first.out / "heatmap.png").size
    assert w >= 400 and h >= 300


def test_finished_run_does_no_work(env, monkeypatch):
    import pipelines.ask
    import pipelines.index
    import pipelines.niah.run as run_mod

    tmp, cfg, models, first = env

    def boom(*a, **k):
        raise AssertionError("no work expected")

    monkeypatch.setattr(pipelines.index, "index_video", boom)
    monkeypatch.setattr(pipelines.ask.Asker, "ask", boom)
    monkeypatch.setattr(run_mod, "build_haystack", boom)
    again = run_mod.run_niah(cfg, first.out, progress=False, models=models)
    assert (again.built, again.indexed, again.asked, again.skipped) == (0, 0, 0, 4)
    assert again.summary == first.summary


def test_killed_run_resumes_without_reindexing(env, monkeypatch):
    import pipelines.index
    import pipelines.niah.run as run_mod

    tmp, cfg, models, first = env
    run = tmp / "killed"
    shutil.copytree(first.out, run)
    lines = (run / "results.jsonl").read_text().splitlines()
    # killed while writing the third answer: two whole lines and a torn one, no summary yet
    (run / "results.jsonl").write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:25])
    (run / "summary.json").unlink()

    def no_index(*a, **k):
        raise AssertionError("the cached store must be reused")

    monkeypatch.setattr(pipelines.index, "index_video", no_index)
    resumed = run_mod.run_niah(cfg, run, progress=False, models=models)
    assert (resumed.indexed, resumed.asked, resumed.skipped) == (0, 2, 2)
    got, want = _results(run), _results(first.out)
    assert sorted(got) == sorted(want)
    # answers and scores are the same as in the uninterrupted run (deterministic for a seed)
    for qid in want:
        for key in ("answer", "evidence", "hit1", "hit3", "correct", "tokens", "truth"):
            assert got[qid][key] == want[qid][key], (qid, key)


def test_run_dir_of_another_config_is_refused(env):
    from pipelines.niah.grid import NiahConfig
    from pipelines.niah.run import run_niah
    from streamvid.errors import ConfigError

    tmp, cfg, models, first = env
    other = NiahConfig.load(_write_config(tmp, "other", retrieval={"token_budget": 256}))
    with pytest.raises(ConfigError, match="another config"):
        run_niah(other, first.out, progress=False, models=models)


def test_cli_json_and_compare(env, capsys):
    from pipelines.cli import main

    tmp, cfg, models, first = env
    rc = main(["niah", "--config", cfg.path, "--out", str(first.out), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["asked"] == 0 and out["summary"]["questions"] == 4
    rc = main(["niah", "--out", str(tmp / "cmp"), "--compare", str(first.out), str(tmp / "killed"), "--json"])
    got = json.loads(capsys.readouterr().out)
    assert rc == 0 and Path(got["comparison"]).is_file() and len(got["points"]) == 2
    rc = main(["niah", "--out", str(tmp / "x")])
    assert rc == 1 and "--config" in capsys.readouterr().err
