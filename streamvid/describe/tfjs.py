"""Runs a TensorFlow.js graph model (``model.json`` + weight files) with PyTorch.

A TF.js graph model is a list of TensorFlow ops and a weights manifest: each ``Const`` node's
values are stored, in manifest order, as raw little-endian arrays (float16 where the
converter quantised them). :class:`TfjsGraph` reads both and evaluates the ops a detector
needs, in TensorFlow's own semantics (NHWC convolutions, explicit padding ops). No
TensorFlow is needed.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ModelError

_DTYPES = {"float32": np.float32, "int32": np.int32, "float16": np.float16, "uint8": np.uint8,
           "int64": np.int64, "bool": np.bool_}


def _attr(node: dict[str, Any], key: str, default: Any = None) -> Any:
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "list" in a:
        return [int(v) for v in a["list"].get("i", [])]
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "f" in a:
        return float(a["f"])
    if "b" in a:
        return bool(a["b"])
    if "i" in a:
        return int(a["i"])
    return a


def load_weights(manifest: list[dict[str, Any]], root: Path) -> dict[str, np.ndarray]:
    """The arrays a weights manifest describes, by name (quantised ones dequantised)."""
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        blob = b"".join((root / p).read_bytes() for p in group["paths"])
        off = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            q = w.get("quantization")
            dtype = _DTYPES[q["dtype"] if q else w["dtype"]]
            n = int(np.prod(shape)) if shape else 1
            size = n * np.dtype(dtype).itemsize
            if off + size > len(blob):
                raise ModelError(f"weights of {root} end before {w['name']!r}; fix: re-install the "
                                 "detector weights (make install)")
            arr = np.frombuffer(blob, dtype, n, off).reshape(shape)
            off += size
            if q and "scale" in q:
                arr = arr.astype(np.float32) * q["scale"] + q.get("min", 0.0)
            out[w["name"]] = arr.astype(_DTYPES[w["dtype"]])
    return out


class TfjsGraph:
    """A TF.js graph model evaluated op by op with torch (inference only)."""

    def __init__(self, model_json: str | Path):
        path = Path(model_json)
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
            nodes = spec["modelTopology"]["node"]
            consts = load_weights(spec["weightsManifest"], path.parent)
        except (OSError, KeyError, ValueError) as err:
            raise ModelError(f"cannot read the TF.js model {path} ({err}); fix: re-install the "
                             "detector weights (make install)") from err
        self.nodes = {n["name"]: n for n in nodes}
        self.consts = {k: torch.from_numpy(np.array(v)) for k, v in consts.items()}
        self.inputs = [n["name"] for n in nodes if n["op"] == "Placeholder"]
        self.signature = spec.get("signature", {})
        self.outputs = [o.split(":")[0] for o in self.signature.get("outputs", {})]
        unknown = {n["op"] for n in nodes} - set(_OPS) - {"Const", "Placeholder"}
        if unknown:
            raise ModelError(f"the TF.js model {path} uses ops this runner lacks: {sorted(unknown)}")
        # weights of NHWC convolutions as torch wants them (OIHW), converted once
        self._filters: dict[str, torch.Tensor] = {}
        self._fuse_convolutions()
        self._order = self._topological(self.outputs)

    def _const(self, name: str) -> torch.Tensor | None:
        return self.consts.get(name) if self.nodes[name]["op"] == "Const" else None

    def _fuse_convolutions(self) -> None:
        """Rewrite ``Transpose(NCHW->NHWC) [Pad] Conv2D Add(bias) Transpose(NHWC->NCHW)``, as
        converters from ONNX emit it around every convolution, into one NCHW convolution with
        its padding and bias: the same numbers without the copies."""
        users: dict[str, list[str]] = {}
        for n in self.nodes.values():
            for i in n.get("input", []):
                users.setdefault(i.split(":")[0], []).append(n["name"])
        for conv in [n for n in list(self.nodes.values()) if n["op"] == "Conv2D"]:
            t_in = self.nodes[conv["input"][0]]
            after = users.get(conv["name"], [])
            if (t_in["op"] != "Transpose" or self._const(t_in["input"][1]) is None
                    or self._const(t_in["input"][1]).tolist() != [0, 2, 3, 1] or len(after) != 1):
                continue
            add = self.nodes[after[0]]
            if add["op"] not in ("Add", "AddV2") or self._const(add["input"][1]) is None:
                continue
            src, pads = t_in["input"][0], [0, 0, 0, 0]
            pad = self.nodes[src.split(":")[0]]
            pc = self._const(pad["input"][1]) if pad["op"] == "Pad" else None
            if pc is not None and pc[:2].abs().sum() == 0:
                src, pads = pad["input"][0], pc[2:].reshape(-1).tolist()   # top, bottom, left, right
            fused = add["name"] + "/nchw"
            self.nodes[fused] = {"name": fused, "op": "_ConvNCHW", "attr": conv.get("attr", {}),
                                 "input": [src, conv["input"][1], add["input"][1]], "pads": pads}
            self.nodes[add["name"]] = {"name": add["name"], "op": "_ToNHWC", "input": [fused]}
            for u in users.get(add["name"], []):
                un = self.nodes[u]
                perm = self._const(un["input"][1]) if un["op"] == "Transpose" else None
                if perm is not None and perm.tolist() == [0, 3, 1, 2]:
                    self.nodes[u] = {"name": u, "op": "Identity", "input": [fused]}

    def _topological(self, outputs: list[str]) -> list[str]:
        order: list[str] = []
        seen: set[str] = set()
        stack = [(o, False) for o in outputs]
        while stack:
            name, done = stack.pop()
            if done:
                order.append(name)
                continue
            if name in seen:
                continue
            seen.add(name)
            stack.append((name, True))
            for i in self.nodes[name].get("input", []):
                src = i.split(":")[0].lstrip("^")
                if src not in seen:
                    stack.append((src, False))
        return order

    @torch.inference_mode()
    def __call__(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        vals: dict[str, Any] = dict(zip(self.inputs, inputs))
        for name in self._order:
            node = self.nodes[name]
            op = node["op"]
            if op == "Placeholder":
                continue
            if op == "Const":
                vals[name] = self.consts[name]
                continue
            args = []
            for i in node.get("input", []):
                if i.startswith("^"):
                    continue
                src, _, k = i.partition(":")
                v = vals[src]
                args.append(v[int(k or 0)] if isinstance(v, tuple) else v)
            vals[name] = _OPS[op](self, node, *args)
        return {o: vals[o] for o in self.outputs}

    def filter(self, name: str, w: torch.Tensor) -> torch.Tensor:
        f = self._filters.get(name)
        if f is None:
            f = self._filters[name] = w.float().permute(3, 2, 0, 1).contiguous()
        return f


def _pad(g: TfjsGraph, node: dict, x: torch.Tensor, pads: torch.Tensor, value: Any = 0.0) -> torch.Tensor:
    p = pads.long().tolist()
    flat = [v for pair in reversed(p) for v in pair]
    return F.pad(x, flat, value=float(value) if not torch.is_tensor(value) else float(value.item()))


def _nhwc(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return fn(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _conv(g: TfjsGraph, node: dict, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    if _attr(node, "data_format", "NHWC") != "NHWC" or _attr(node, "padding") != "VALID":
        raise ModelError(f"Conv2D {node['name']}: only NHWC with VALID padding is supported")
    s = _attr(node, "strides", [1, 1, 1, 1])
    d = _attr(node, "dilations", [1, 1, 1, 1])
    filt = g.filter(node["input"][1], w)
    return _nhwc(lambda t: F.conv2d(t, filt, stride=(s[1], s[2]), dilation=(d[1], d[2])), x)


def _conv_nchw(g: TfjsGraph, node: dict, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    s = _attr(node, "strides", [1, 1, 1, 1])
    d = _attr(node, "dilations", [1, 1, 1, 1])
    top, bottom, left, right = (int(v) for v in node["pads"])
    if top == bottom and left == right:
        padding = (top, left)
    else:
        x, padding = F.pad(x, (left, right, top, bottom)), (0, 0)
    return F.conv2d(x, g.filter(node["input"][1], w), b.reshape(-1).float(), stride=(s[1], s[2]),
                    padding=padding, dilation=(d[1], d[2]))


def _maxpool(g: TfjsGraph, node: dict, x: torch.Tensor) -> torch.Tensor:
    if _attr(node, "padding") != "VALID":
        raise ModelError(f"MaxPool {node['name']}: only VALID padding is supported")
    k, s = _attr(node, "ksize"), _attr(node, "strides")
    return _nhwc(lambda t: F.max_pool2d(t, (k[1], k[2]), (s[1], s[2])), x)


def _resize(g: TfjsGraph, node: dict, x: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    h, w = (int(v) for v in size.tolist())
    if _attr(node, "align_corners", False):
        return _nhwc(lambda t: F.interpolate(t, (h, w), mode="bilinear", align_corners=True), x)
    if not _attr(node, "half_pixel_centers", False):
        raise ModelError(f"ResizeBilinear {node['name']}: legacy (non half-pixel) sampling is not supported")
    return _nhwc(lambda t: F.interpolate(t, (h, w), mode="bilinear", align_corners=False), x)


def _split(g: TfjsGraph, node: dict, x: torch.Tensor, sizes: torch.Tensor, axis: torch.Tensor):
    return tuple(torch.split(x, [int(v) for v in sizes.tolist()], dim=int(axis.item())))


def _sparse_to_dense(g: TfjsGraph, node: dict, idx, shape, values, default) -> torch.Tensor:
    shp = [int(v) for v in shape.reshape(-1).tolist()]
    out = torch.full(shp, default.item() if default.numel() else 0, dtype=values.dtype)
    idx = idx.long().reshape(-1, len(shp)) if idx.numel() else idx.long().reshape(0, len(shp))
    if len(idx):
        out[tuple(idx.T)] = values.to(out.dtype).expand(len(idx))
    return out


_OPS: dict[str, Callable[..., Any]] = {
    "Identity": lambda g, n, x: x,
    "Add": lambda g, n, a, b: a + b,
    "AddV2": lambda g, n, a, b: a + b,
    "Sigmoid": lambda g, n, x: torch.sigmoid(x),
    "LeakyRelu": lambda g, n, x: F.leaky_relu(x, _attr(n, "alpha", 0.2)),
    "Relu": lambda g, n, x: F.relu(x),
    "Transpose": lambda g, n, x, p: x.permute(*[int(v) for v in p.tolist()]),
    "Reshape": lambda g, n, x, s: x.reshape([int(v) for v in s.tolist()]),
    "ConcatV2": lambda g, n, *a: torch.cat(a[:-1], dim=int(a[-1].item())),
    "Pad": _pad,
    "PadV2": _pad,
    "Conv2D": _conv,
    "_ConvNCHW": _conv_nchw,
    "_ToNHWC": lambda g, n, x: x.permute(0, 2, 3, 1),
    "MaxPool": _maxpool,
    "ResizeBilinear": _resize,
    "SplitV": _split,
    "SparseToDense": _sparse_to_dense,
}
