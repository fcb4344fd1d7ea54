"""Config: YAML loading, unknown keys, ranges, round trip, and the README reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamvid.config import Config, reference_markdown
from streamvid.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_equal_lite_yaml():
    assert Config.load(ROOT / "configs" / "lite.yaml") == Config()


def test_round_trip(tmp_path):
    cfg = Config.load(None, {"source.fps": 2, "retrieval.top_k": 9, "cache.enabled": False})
    cfg.save(tmp_path / "c.yaml")
    assert Config.load(tmp_path / "c.yaml") == cfg
    assert cfg.fingerprint() != Config().fingerprint()
    assert cfg.fingerprint("encoder") == Config().fingerprint("encoder")


@pytest.mark.parametrize("data, fragment", [
    ({"sourc": {}}, "unknown section"),
    ({"source": {"fsp": 1}}, "source.fsp"),
    ({"source": {"fps": 0}}, "source.fps: expected >= 0.001, got 0.0"),
    ({"retrieval": {"top_k": "many"}}, "retrieval.top_k: expected an integer"),
    ({"cache": {"mode": "pixel"}}, "cache.mode: expected one of"),
    ({"cache": {"enabled": "yes"}}, "cache.enabled: expected true or false"),
    ({"source": 3}, "section 'source' must be a mapping"),
])
def test_rejects_bad_values(data, fragment):
    with pytest.raises(ConfigError) as err:
        Config.from_dict(data)
    assert fragment in str(err.value)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Config.load(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        Config.load(listy)


def test_readme_reference_matches_code():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- config-reference:start -->") + len("<!-- config-reference:start -->")
    end = readme.index("<!-- config-reference:end -->")
    assert readme[start:end].strip() == reference_markdown().strip(), \
        "README's configuration reference is stale: run `python -m streamvid.config --readme`"


def test_every_shipped_config_loads():
    from pipelines.niah.grid import NiahConfig

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        if path.name.startswith("niah-"):
            # the NIAH configs point at the development media beside the checkout; without
            # it (a user's machine) the only complaint allowed is that the footage is missing
            try:
                NiahConfig.load(path)
            except ConfigError as err:
                footage = ("haystack.videos", "general.footage")
                assert any(k in str(err) for k in footage) and "does not exist" in str(err), err
        else:
            Config.load(path)
