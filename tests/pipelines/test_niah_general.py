"""The generalisation grid: its config, its plan and needles of any height, partly outside."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipelines.niah.grid import NiahConfig, plan, plan_fingerprint
from pipelines.niah.haystack import NeedleSpec, build_haystack
from streamvid.errors import ConfigError, ValidationError

NEEDLES = Path(__file__).resolve().parent.parent / "data" / "needles"


def _config(tmp_path, extra=None, **general):
    return NiahConfig.from_dict({**(extra or {}),
        "name": "gen", "haystack": {"cache_dir": str(tmp_path / "cache")},
        "needles": {"dir": str(NEEDLES), "duration": 2.0, "min_gap": 2.0},
        "general": {"footage": {"bars": ["lavfi:smptehdbars=size=640x360:rate=2"],
                                "shapes": ["lavfi:testsrc2=size=480x360:rate=2"]},
                    "heights": [0.1, 0.5], "positions": ["centre", "top-left", "out-left"],
                    "pictures": ["drawn-cutout", "drawn-opaque", "photo-opaque", "photo-cutout"],
                    "photos": ["coffee", "rocket"], **general},
        "questions": {"types": ["image"]}}, base=tmp_path)


def test_every_height_and_position_is_asked_and_pictures_are_distinct(tmp_path):
    cfg = _config(tmp_path, repeats=2)
    plans = plan(cfg)
    assert [hp.name for hp in plans] == ["bars", "shapes"]
    qs = [dict(q.variant) for hp in plans for q in hp.questions]
    assert len(qs) == 2 * 2 * 3
    assert set(Counter((q["height"], q["position"]) for q in qs).values()) == {2}
    assert set(q["picture"] for q in qs) == {"drawn-cutout", "drawn-opaque", "photo-opaque",
                                             "photo-cutout"}
    for hp in plans:
        assert len({n.image for n in hp.needles}) == len(hp.needles)   # one right moment each
        assert all(Path(n.image).is_file() for n in hp.needles)
        assert hp.length == cfg.grid.lengths[0] >= max(n.start for n in hp.needles) + 2.0
    assert plan_fingerprint(plan(cfg)) == plan_fingerprint(plans)   # the same plan again


def test_general_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="positions"):
        _config(tmp_path, positions=["middle"])
    with pytest.raises(ConfigError, match="heights"):
        _config(tmp_path, heights=[0.0])
    with pytest.raises(ConfigError, match="no grid section"):
        _config(tmp_path, extra={"grid": {"lengths": [60]}})


def test_needle_by_height_partly_outside_the_frame(tmp_path):
    spec = NeedleSpec(kind="image", label="coffee", image=str(NEEDLES / "coffee.png"), start=1.0,
                      duration=1.0, height=0.5, position=(0.0, 0.5), visible=0.6)
    info = build_haystack(["lavfi:smptehdbars=size=320x180:rate=2"], tmp_path / "h.mp4", length=3.0,
                          fps=2.0, size=(320, 180), needles=[spec], progress=False)
    x0, y0, x1, y1 = info.needles[0].box
    assert y1 - y0 == 90                                 # half the frame height
    assert x0 < 0 < x1 and round(x1 / (x1 - x0), 1) == 0.6   # 60 % of its width in view
    with pytest.raises(ValidationError, match="edge"):
        NeedleSpec(kind="image", label="x", image="x.png", position=(0.5, 0.5), visible=0.5)
    # the key of a needle without the new fields is what it was before they existed
    assert "height" not in NeedleSpec(kind="image", label="c", image=str(NEEDLES / "coffee.png")).key()
    assert np.isfinite(info.length)
