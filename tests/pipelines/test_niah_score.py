"""NIAH scoring, planning and figures on known cases (no models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.niah.grid import NiahConfig, parse_length, plan, plan_fingerprint
from pipelines.niah.plots import comparison, format_length, heatmap
from pipelines.niah.score import (choice_correct, choice_of, hit_at, overlaps, parse_time, recall_at,
                                  summarise, text_correct, time_correct)
from streamvid.errors import ConfigError

DATA = Path(__file__).resolve().parents[1] / "data"


def test_overlap_and_hits():
    needle = (30.0, 33.0)
    ev = [(0.0, 5.0), (33.0, 38.0), (28.0, 31.0), (31.0, 32.0)]
    assert not overlaps((33.0, 38.0), needle)          # touching ends do not count
    assert overlaps((28.0, 31.0), needle)
    assert not hit_at(ev, needle, 1) and not hit_at(ev, needle, 2)
    assert hit_at(ev, needle, 3)
    assert recall_at(ev, [needle, (1.0, 2.0), (100.0, 103.0)], 3) == pytest.approx(2 / 3)
    assert recall_at([], [needle], 3) == 0.0


def test_time_text_and_choice_answers():
    assert parse_time("At 00:01:05 (00:01:03–00:01:08): a cat") == 65
    assert parse_time("around 2:07 in") == 127
    assert parse_time("no time here") is None
    assert time_correct("At 00:00:35 (…)", (30.0, 33.0), 5.0)
    assert not time_correct("At 00:00:39", (30.0, 33.0), 5.0)
    assert not time_correct("I cannot tell", (30.0, 33.0), 5.0)
    assert text_correct('"The wifi password is Tulip-42." (on screen at 00:00:39)', "tulip-42")
    assert text_correct("tulip 42", "tulip-42")
    assert not text_correct('"The wifi password is" (on screen)', "tulip-42")
    assert choice_of("C) 00:00:19") == "C" and choice_of("(b) cat") == "B" and choice_of("D") == "D"
    assert choice_of("Because of the cat") is None
    assert choice_correct("a) tulip-42", "A") and not choice_correct("B) x", "A")


def _records():
    recs = []
    for L, hits in ((60.0, [1, 1, 0]), (300.0, [1, 0, 0])):
        for d, h in zip((0.0, 0.5, 1.0), hits):
            recs.append({"id": f"{L}-{d}-image", "qtype": "image", "haystack": f"L{L:g}", "length": L,
                         "depth": d, "category": "animals", "hit1": float(h), "hit3": 1.0,
                         "correct": float(h), "tokens": 400, "query_s": 0.5, "index_s": L / 10})
            recs.append({"id": f"{L}-{d}-when", "qtype": "when", "haystack": f"L{L:g}", "length": L,
                         "depth": d, "category": "food" if d else "animals", "hit1": 0.0,
                         "hit3": float(d == 0.5), "correct": 0.0, "tokens": 200, "query_s": 0.2,
                         "index_s": L / 10})
    recs.append({"id": "hop", "qtype": "multihop", "haystack": "L60", "length": 60.0, "depth": None,
                 "category": "multihop", "recall3": 2 / 3, "correct": 0.0, "tokens": 300,
                 "query_s": 0.3, "index_s": 6.0})
    return recs


def test_summary_cells_and_aggregates():
    s = summarise(_records(), lengths=[60.0, 300.0], depths=[0.0, 0.5, 1.0], name="t")
    assert s["questions"] == 13
    assert s["cells"]["image"]["hit1"] == [[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]]
    assert s["overall"]["image"]["hit1"] == pytest.approx(0.5)
    assert s["overall"]["multihop"]["recall3"] == pytest.approx(0.6667, abs=1e-4)
    assert "multihop" not in s["cells"]            # no depth: not a cell of the grid
    assert s["per_length"]["60"]["index_s"] == 6.0 and s["per_length"]["300"]["index_s"] == 30.0
    assert s["per_length"]["300"]["image_hit1"] == pytest.approx(1 / 3, abs=1e-4)
    assert s["when_hit3_by_category"] == {"animals": {"n": 2, "hit3": 0.0}, "food": {"n": 4, "hit3": 0.5}}
    assert s["accuracy"] == pytest.approx(3 / 13, abs=1e-4)
    assert s["tokens"] == pytest.approx((6 * 400 + 6 * 200 + 300) / 13, abs=0.1)


def test_heatmap_and_comparison_files(tmp_path):
    from PIL import Image

    s = summarise(_records(), lengths=[60.0, 300.0], depths=[0.0, 0.5, 1.0], name="t")
    p = heatmap(s, tmp_path / "heatmap.png", qtype="image", metric="hit1")
    im = np.asarray(Image.open(p).convert("RGB"))
    assert im.shape[0] >= 300 and im.shape[1] >= 450
    # the cells are coloured by value: hit@1 = 1 (green) top-left, 0 (red) bottom-right
    greenish = im[:, :, 1].astype(int) - im[:, :, 0]
    reddish = im[:, :, 0].astype(int) - im[:, :, 1]
    assert (greenish > 80).sum() > 2000 and (reddish > 80).sum() > 2000
    with pytest.raises(Exception, match="no 'hit1' cells for 'multihop'"):
        heatmap(s, tmp_path / "x.png", qtype="multihop")
    c = comparison([{"name": "a", "tokens": 300, "accuracy": 0.5, "by_type": {"image": 0.9}},
                    {"name": "b", "tokens": 900, "accuracy": 0.7, "by_type": {"image": 1.0}}],
                   tmp_path / "cmp.png")
    assert Image.open(c).size[0] > 400
    assert [format_length(x) for x in (45, 60, 300, 5400, 10800)] == ["45s", "1m", "5m", "1h30m", "3h"]


def _cfg(tmp_path, **over):
    d = {"name": "t", "seed": 1,
         "haystack": {"videos": [str(DATA / "world_8s.mp4")], "size": [320, 180]},
         "needles": {"dir": str(DATA / "needles"), "min_gap": 4.0, "max_shift": 0.3, "multihop": 0},
         "grid": {"lengths": ["40s", 20], "depths": [0.0, 1.0]},
         "questions": {"types": ["image", "when", "text", "choice"]}}
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return NiahConfig.from_dict(d, base=tmp_path)


def test_plan_is_deterministic_and_shares_haystacks(tmp_path):
    cfg = _cfg(tmp_path)
    a, b = plan(cfg), plan(cfg)
    assert plan_fingerprint(a) == plan_fingerprint(b)
    assert plan_fingerprint(plan(_cfg(tmp_path, seed=2))) != plan_fingerprint(a)
    by_len = {}
    for hp in a:
        by_len.setdefault(hp.length, []).append(hp)
    assert sorted(by_len) == [20.0, 40.0]
    for L, hps in by_len.items():
        needles = [n for hp in hps for n in hp.needles]
        # one image and one sign per depth; distinct image labels within a length
        assert sorted(n.kind for n in needles) == ["image", "image", "text", "text"]
        imgs = [n.label for n in needles if n.kind == "image"]
        assert len(set(imgs)) == 2
        for hp in hps:
            starts = sorted(n.start for n in hp.needles)
            assert all(b - a >= 3.0 + 4.0 - 1e-9 for a, b in zip(starts, starts[1:]))
            assert all(0 <= s <= L - 3.0 for s in starts)
        # depth 1 is the end: the image needle starts at length - duration
        end = [n for n in needles if n.kind == "image" and n.depth == 1.0][0]
        assert end.start == pytest.approx(L - 3.0)
    qs = [q for hp in a for q in hp.questions]
    assert {q.qtype for q in qs} == {"image", "when", "text", "choice"}
    for q in qs:
        if q.qtype == "choice":
            assert len(q.options) == 4 and len(set(q.options)) == 4 and q.expected in "ABCD"
            assert f"{q.expected}) " in q.text
        if q.qtype == "text":
            assert q.text.startswith("What is the ") and q.expected
    # 40 s holds both kinds in one video; 20 s cannot (needles would be too close)
    assert len(by_len[40.0]) == 1 and len(by_len[20.0]) == 2


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        _cfg(tmp_path, grid={"lengths": [20], "depth": [0.5]})
    with pytest.raises(ConfigError, match="videos"):
        _cfg(tmp_path, haystack={"videos": ["missing.mp4"]})
    with pytest.raises(ConfigError, match="types"):
        _cfg(tmp_path, questions={"types": ["image", "smell"]})
    with pytest.raises(ConfigError, match="not implemented"):
        _cfg(tmp_path, baseline={"kind": "uniform_frames"})
    with pytest.raises(ConfigError, match="pipeline"):
        _cfg(tmp_path, pipeline={"encoder": {"nme": "lite"}})
    with pytest.raises(ConfigError, match="pipeline_overrides"):
        _cfg(tmp_path, pipeline_overrides={"token_budget": 256})
    cfg = _cfg(tmp_path, pipeline={"cache": {"enabled": False}},
               pipeline_overrides={"retrieval.token_budget": 256})
    assert cfg.pipeline.retrieval.token_budget == 256 and cfg.pipeline.cache.enabled is False
    assert parse_length("1h30m", "x") == 5400 and parse_length("90s", "x") == 90
    with pytest.raises(ConfigError, match="length"):
        parse_length("3 hours", "grid.lengths")


def test_run_folder_accepts_more_lengths_but_not_another_config(tmp_path):
    from pipelines.niah.run import _check_run_dir

    full = _cfg(tmp_path)
    short = full.with_lengths(20)
    assert short.grid.lengths == (20.0,)
    (tmp_path / "run").mkdir()
    _check_run_dir(tmp_path / "run", short, plan(short))
    # the questions of 20 s are the same whether or not 40 s is in the grid
    assert [q.id for hp in plan(short) for q in hp.questions] == \
        [q.id for hp in plan(full) for q in hp.questions if q.length == 20.0]
    _check_run_dir(tmp_path / "run", full, plan(full))     # extending with 40 s is fine
    other = _cfg(tmp_path, seed=9)
    with pytest.raises(ConfigError, match="another config"):
        _check_run_dir(tmp_path / "run", other, plan(other))
    with pytest.raises(ConfigError, match="no grid length"):
        full.with_lengths(5)
