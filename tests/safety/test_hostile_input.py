"""Hostile input, table-driven: each case runs the real CLI and must give exit 1, exactly one
``error: … fix: …`` line and no traceback, and change no file outside the store (a failed
``index`` into a new store leaves no store behind; a failed ``ask`` changes nothing).

Cases: bad videos, bad numbers, broken YAML, bad image queries, undecodable text, every
store file truncated / garbled / deleted / unreadable, crafted manifests (path traversal,
absolute paths, links). The README's "Data safety" table lists them.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from .conftest import assert_one_error, run_cli, snapshot
from .media import DATA, audio_only, png_header_only, video


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Path, Path], list[str]]   # (workspace, store copy) -> argv
    needles: tuple[str, ...] = ()
    code: int = 1                               # 0: the input is answered, not refused
    as_user: bool = False                       # a permission case: run without root's rights
    new_store: bool = False                     # argv indexes into ws/new (must not remain)


def new(ws: Path) -> str:
    return str(ws / "new")


def index_file(name: str, make: Callable[[Path], object]) -> Callable[[Path, Path], list[str]]:
    def setup(ws: Path, store: Path) -> list[str]:
        p = ws / name
        make(p)
        return ["index", str(p), "--store", new(ws)]
    return setup


def index_flags(*flags: str) -> Callable[[Path, Path], list[str]]:
    def setup(ws: Path, store: Path) -> list[str]:
        return ["index", str(DATA / "world_3s.mp4"), "--store", new(ws), *flags]
    return setup


def with_config(text: bytes | None, *extra: str, mode: int | None = None):
    def setup(ws: Path, store: Path) -> list[str]:
        p = ws / "cfg.yaml"
        if text is None:
            p.mkdir()
        else:
            p.write_bytes(text)
        if mode is not None:
            p.chmod(mode)
        return ["index", str(DATA / "world_3s.mp4"), "--store", new(ws), "--config", str(p), *extra]
    return setup


def image_query(make: Callable[[Path], object], mode: int | None = None):
    def setup(ws: Path, store: Path) -> list[str]:
        p = ws / "query.png"
        make(p)
        if mode is not None:
            p.chmod(mode)
        return ["ask", "--store", str(store), "--image", str(p)]
    return setup


def save_png(arr: np.ndarray) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        from PIL import Image

        Image.fromarray(arr).save(p)
    return make


def damaged(rel: str, how: str):
    """The store copy with ``rel`` (a glob under the store) damaged ``how``, then asked."""
    def setup(ws: Path, store: Path) -> list[str]:
        p = next(store.glob(rel))
        data = p.read_bytes()
        if how == "truncated":
            p.write_bytes(data[: len(data) // 2])
        elif how == "garbled":  # same size, bytes in the middle flipped
            a = len(data) // 2
            b = min(len(data), a + 16)
            p.write_bytes(data[:a] + bytes(x ^ 0xFF for x in data[a:b]) + data[b:])
        elif how == "deleted":
            p.unlink()
        elif how == "unreadable":
            p.chmod(0)
        return ["ask", "--store", str(store), "what is shown?"]
    return setup


def crafted(change: Callable[[Path, Path, dict], None], argv: Callable[[Path, Path], list[str]] | None = None):
    """The store copy's manifest rewritten by ``change``; a full copy of the store's segment
    lies outside it, so following a crafted path would find real data."""
    def setup(ws: Path, store: Path) -> list[str]:
        outside = ws / "outside"
        outside.mkdir()
        seg = next(store.glob("seg-*"))
        shutil.copytree(seg, outside / seg.name)
        (outside / "victim.npy").write_bytes((seg / "ids.npy").read_bytes())
        m = json.loads((store / "manifest.json").read_text())
        change(ws, store, m)
        (store / "manifest.json").write_text(json.dumps(m))
        return argv(ws, store) if argv else ["ask", "--store", str(store), "what is shown?"]
    return setup


def seg_name(value: Callable[[Path], str]):
    def change(ws: Path, store: Path, m: dict) -> None:
        m["segments"][0]["name"] = value(ws)
    return change


def link_segment(ws: Path, store: Path, m: dict) -> None:
    seg = next(store.glob("seg-*"))
    shutil.rmtree(seg)
    seg.symlink_to(ws / "outside" / seg.name, target_is_directory=True)


def link_file(ws: Path, store: Path, m: dict) -> None:
    seg = next(store.glob("seg-*"))
    (seg / "tok_off.npy").unlink()
    (seg / "tok_off.npy").symlink_to(ws / "outside" / seg.name / "tok_off.npy")


def reindex_same(ws: Path, store: Path) -> list[str]:
    """A writer on the store (it opens, tidies up, then refuses the source it already has)."""
    return ["index", str(DATA / "world_8s.mp4"), "--store", str(store)]


def stray_link(ws: Path, store: Path, m: dict) -> None:
    # a store-looking link to a directory outside: tidying up must remove the link only
    (store / "seg-99999999").symlink_to(ws / "outside", target_is_directory=True)


STORE_FILES = ["manifest.json", "config.yaml", "seg-*/tok_off.npy", "seg-*/vectors.npy",
               "seg-*/tokens.npy", "seg-*/meta.jsonl", "seg-*/ids.npy", "seg-*/text_vectors.npy"]

CASES = [
    # videos
    Case("empty video", index_file("empty.mp4", lambda p: p.write_bytes(b"")), ("empty",), new_store=True),
    Case("not a video", index_file("notes.mp4", lambda p: p.write_text("not a video\n")), ("notes.mp4",), new_store=True),
    Case("truncated video", index_file("cut.mp4", lambda p: shutil.copy(DATA / "world_truncated_moov_end.mp4", p)), ("cut.mp4",), new_store=True),
    Case("audio-only file (indexed: the speech memory alone)", index_file("sound.mp4", audio_only), code=0, new_store=True),
    Case("directory as video", index_file("adir", lambda p: p.mkdir()), ("adir",), new_store=True),
    Case("missing video", lambda ws, s: ["index", str(ws / "nope.mp4"), "--store", new(ws)], ("nope.mp4",), new_store=True),
    Case("unreadable video", index_file("locked.mp4", lambda p: (shutil.copy(DATA / "world_3s.mp4", p), p.chmod(0))), ("locked.mp4",), as_user=True, new_store=True),
    Case("1x1 video (indexed)", index_file("dot.mkv", lambda p: video(p, 1, 1, frames=2)), code=0, new_store=True),
    # numbers
    Case("--fps nan", index_flags("--fps", "nan"), ("source.fps", "finite"), new_store=True),
    Case("--fps inf", index_flags("--fps", "inf"), ("source.fps", "finite"), new_store=True),
    Case("--fps -2", index_flags("--fps", "-2"), ("source.fps", ">="), new_store=True),
    Case("--duration -1", index_flags("--duration", "-1"), ("source.duration",), new_store=True),
    Case("--set nan", index_flags("--set", "compress.keep_ratio=.nan"), ("compress.keep_ratio", "finite"), new_store=True),
    Case("--set -inf", index_flags("--set", "cache.threshold=-.inf"), ("cache.threshold", "finite"), new_store=True),
    Case("--set 1e999", index_flags("--set", "clips.max_length=1e999"), ("clips.max_length",), new_store=True),
    Case("--fps text", index_flags("--fps", "fast"), ("fast", "--help"), new_store=True),
    Case("unknown option", index_flags("--bogus"), ("--bogus",), new_store=True),
    # YAML and config files
    Case("--set YAML syntax error", index_flags("--set", "source.fps=[1"), ("source.fps", "YAML"), new_store=True),
    Case("--set without =", index_flags("--set", "source.fps"), ("section.key=value",), new_store=True),
    Case("--config YAML syntax error", with_config(b"source: [1,\n"), ("cfg.yaml", "YAML"), new_store=True),
    Case("--config binary file", with_config(bytes(range(256)) * 8), ("cfg.yaml", "UTF-8"), new_store=True),
    Case("--config a list", with_config(b"- 1\n- 2\n"), ("cfg.yaml", "mapping"), new_store=True),
    Case("--config unknown key", with_config(b"retrieval:\n  top_kk: 3\n"), ("top_kk",), new_store=True),
    Case("--config directory", with_config(None), ("cfg.yaml",), new_store=True),
    Case("--config unreadable", with_config(b"source:\n  fps: 1\n", mode=0), ("cfg.yaml", "permission"), as_user=True, new_store=True),
    Case("--store is a file", lambda ws, s: (ws.joinpath("afile").write_text("x"), ["index", str(DATA / "world_3s.mp4"), "--store", str(ws / "afile")])[1], ("afile",)),
    Case("--store holds a user's config.yaml", lambda ws, s: (ws.joinpath("mine").mkdir(), ws.joinpath("mine", "config.yaml").write_text("mine: 1\n"), ["index", str(DATA / "world_3s.mp4"), "--store", str(ws / "mine")])[2], ("config.yaml", "another")),
    Case("--store not writable", lambda ws, s: (ws.joinpath("ro").mkdir(), ws.joinpath("ro").chmod(0o555), ["index", str(DATA / "world_3s.mp4"), "--store", str(ws / "ro" / "s")])[2], ("ro",), as_user=True),
    # image queries
    Case("image 20000x20000 (bomb)", image_query(lambda p: png_header_only(p, 20000, 20000)), ("query.png", "shrink")),
    Case("image 9000x9000", image_query(lambda p: png_header_only(p, 9000, 9000)), ("9000x9000", "shrink")),
    Case("image 1x1", image_query(save_png(np.full((1, 1, 3), 200, np.uint8))), ("too small",)),
    Case("image one flat colour", image_query(save_png(np.full((64, 64, 3), 90, np.uint8))), ("too plain",)),
    Case("image fully transparent", image_query(save_png(np.zeros((64, 64, 4), np.uint8))), ("transparent",)),
    Case("image not an image", image_query(lambda p: p.write_bytes(b"\x89PNG not really")), ("query.png",)),
    Case("image missing", lambda ws, s: ["ask", "--store", str(s), "--image", str(ws / "gone.png")], ("gone.png",)),
    Case("image unreadable", image_query(save_png(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)), mode=0), ("query.png",), as_user=True),
    # text
    Case("question not UTF-8 (answered)", lambda ws, s: ["ask", "--store", str(s), "caf\udce9 \udcff earth?"], code=0),
    Case("no question", lambda ws, s: ["ask", "--store", str(s)], ("QUESTION",)),
    Case("ask without a store", lambda ws, s: ["ask", "--store", str(ws / "none"), "earth"], ("none",)),
    Case("--top-k 0", lambda ws, s: ["ask", "--store", str(s), "--top-k", "0", "earth"], ("--top-k",)),
    Case("ask --set nan", lambda ws, s: ["ask", "--store", str(s), "--set", "retrieval.lexical_weight=.nan", "earth"], ("retrieval.lexical_weight", "finite")),
    # every store file truncated / garbled / deleted / unreadable
    *[Case(f"store {rel.split('/')[-1]} {how}", damaged(rel, how), as_user=how == "unreadable")
      for rel in STORE_FILES for how in ("truncated", "garbled", "deleted", "unreadable")],
    # crafted manifests
    Case("manifest segment ../outside", crafted(seg_name(lambda ws: "../outside/seg-00000001")), ("../outside",)),
    Case("manifest segment absolute path", crafted(seg_name(lambda ws: str(ws / "outside" / "seg-00000001"))), ("outside",)),
    Case("manifest hnsw ../outside", crafted(lambda ws, s, m: m.update(hnsw="../outside/victim.npy")), ("victim.npy",)),
    Case("manifest deleted absolute path", crafted(lambda ws, s, m: m.update(deleted=str(ws / "outside" / "victim.npy"))), ("victim.npy",)),
    Case("manifest assign ../", crafted(lambda ws, s, m: m["segments"][0].update(assign="../../outside/victim.npy")), ("victim.npy",)),
    Case("manifest sizes key ../", crafted(lambda ws, s, m: m["segments"][0]["sizes"].update({"../../outside/victim.npy": 1})), ("bad sizes",)),
    Case("manifest generation a string", crafted(lambda ws, s, m: m.update(generation="1; rm -rf /")), ("generation",)),
    Case("segment is a link outside", crafted(link_segment), ("link",)),
    Case("store file is a link outside", crafted(link_file), ("tok_off.npy", "link")),
    Case("writer: manifest deleted ../outside", crafted(lambda ws, s, m: m.update(deleted="../outside/victim.npy"), reindex_same), ("victim.npy",)),
    Case("writer: stray link to outside", crafted(stray_link, reindex_same), ("already in the store",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, built_store: Path, ws: Path, capsys):
    store = ws / "store"
    shutil.copytree(built_store, store, symlinks=True)
    argv = case.setup(ws, store)
    before = snapshot(ws, skip=store)
    code, out, err = run_cli(capsys, argv, as_user=case.as_user)
    if case.code == 0:
        assert code == 0, err
        assert "Traceback" not in err and "error:" not in err, err
        assert out.strip()
    else:
        assert_one_error(code, err, *case.needles)
    after = snapshot(ws, skip=store)
    if case.new_store and not (case.code == 0):
        assert not (ws / "new").exists(), "a failed index left a store behind"
    if case.code == 0 and case.new_store:
        after = {k: v for k, v in after.items() if not k.startswith("new")}
    assert after == before, "a file outside the store changed"
