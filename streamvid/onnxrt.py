"""Torch networks run with ONNX Runtime: exported once from the same weights, cached on disk.

ONNX Runtime runs the small CPU networks of indexing (the lite encoder, the NanoDet detector)
several times faster than torch's eager mode, with the same numbers. The export needs the
``onnx`` package; the file is named by what it is made of (weights, input shape, torch
version) so that a change of any of them exports again.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from .errors import MissingDependencyError, ModelError

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where exported networks are kept: ``$STREAMVID_CACHE/onnx`` or ``~/.cache/streamvid/onnx``."""
    root = os.environ.get("STREAMVID_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamvid"
    return Path(root) / "onnx"


def torch_tag() -> str:
    """``torch<version>``: part of an exported file's name (another exporter, another file)."""
    import torch

    return f"torch{torch.__version__.split('+')[0]}"


def cached_session(module: Any, example: Any, name: str, *, what: str, setting: str,
                   input_name: str = "image", output_names: list[str] | None = None,
                   threads: int = 0, required: bool = False):
    """An ONNX Runtime session of ``module`` (a ``torch.nn.Module`` called on the tensor
    ``example``), exported once to ``cache_dir() / name``; None when it cannot be had and
    ``required`` is False (the caller runs torch then). ``what`` names the network and
    ``setting`` the config key that asks for ONNX Runtime, in errors; ``threads`` 0 = one."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        if required:
            raise MissingDependencyError(setting, "onnxruntime") from err
        return None
    path = cache_dir() / name
    if not path.is_file():
        try:
            export(module, example, path, input_name=input_name, output_names=output_names)
        except ImportError as err:
            if required:
                raise MissingDependencyError(setting, "onnx") from err
            log.info("the onnx package is not installed: %s runs on torch", what)
            return None
        except (OSError, RuntimeError) as err:
            if required:
                raise ModelError(f"cannot export {what} to {path}: {err}; fix: set {setting.split(':')[0]}: "
                                 "torch, or STREAMVID_CACHE to a writable directory") from err
            log.warning("cannot export %s to ONNX (%s): it runs on torch", what, err)
            return None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        if required:
            raise ModelError(f"cannot load the exported {what} {path}: {err}; fix: delete "
                             "it (it is exported again)") from err
        log.warning("cannot load the exported %s %s (%s): it runs on torch", what, path, err)
        return None


def export(module: Any, example: Any, path: Path, *, input_name: str = "image",
           output_names: list[str] | None = None) -> None:
    """Write ``module`` traced on ``example`` as ONNX to ``path`` (atomically)."""
    import onnx  # noqa: F401 - the exporter needs it; imported first for a clear error
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    log.info("exporting %s (once)", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example, str(tmp), dynamo=False, input_names=[input_name],
                              output_names=output_names, opset_version=17)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
