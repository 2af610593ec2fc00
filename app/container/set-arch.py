#!/usr/bin/env python3
"""Record the right platform in an image built under emulation.

Debian's Docker 20.10 classic builder (and `docker import`) label every image with the build
host's architecture, even when every binary in it is arm64. A Pi then warns about a platform
mismatch and compose may try to pull. This rewrites the image config's architecture/variant in a
`docker save` stream and loads it back: same layers, same tags, correct label.

Usage: set-arch.py DOCKER IMAGE ARCH [VARIANT]   (ARCH: arm64 or arm; VARIANT: v8 or v7)
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def patch(saved: Path, patched: Path, arch: str, variant: str) -> bool:
    """Copy the `docker save` tarball, rewriting the config; False when it was right already."""
    with tarfile.open(saved) as src:
        manifest = json.load(src.extractfile("manifest.json"))  # type: ignore[arg-type]
        old_name = manifest[0]["Config"]
        config = json.load(src.extractfile(old_name))  # type: ignore[arg-type]
        if config.get("architecture") == arch and config.get("variant", variant) == variant:
            return False
        config["architecture"] = arch
        config["variant"] = variant
        config["os"] = "linux"
        body = json.dumps(config, separators=(",", ":")).encode()
        new_name = hashlib.sha256(body).hexdigest() + ".json"
        manifest[0]["Config"] = new_name
        with tarfile.open(patched, "w") as out:
            for member in src.getmembers():
                if member.name in (old_name, "manifest.json"):
                    continue
                out.addfile(member, src.extractfile(member) if member.isfile() else None)
            for name, data in ((new_name, body), ("manifest.json", json.dumps(manifest).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
    return True


def main() -> int:
    docker, image, arch = sys.argv[1:4]
    variant = sys.argv[4] if len(sys.argv) > 4 else ("v8" if arch == "arm64" else "v7")
    with tempfile.TemporaryDirectory(prefix="sesame-arch-") as work:
        saved, patched = Path(work) / "saved.tar", Path(work) / "patched.tar"
        subprocess.run([docker, "save", "-o", str(saved), image], check=True)
        if patch(saved, patched, arch, variant):
            load = [docker, "load", "-q", "-i", str(patched)]
            subprocess.run(load, check=True, stdout=sys.stderr)
            print(f"set-arch: {image} is now labelled linux/{arch}/{variant}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
