#!/usr/bin/env python3
"""An OS list for Raspberry Pi Imager 2 that names the sesame-pi image and how to customise it.

Imager 2 offers its OS customisation (Wi-Fi, user, SSH key, hostname) only for images it knows
the customisation format of; a "Use custom" image gets none, so a maker flashing the plain
.img.xz could not set Wi-Fi and the Pi never came online. Loaded as a content repository
(`rpi-imager --repo FILE`, or App Options > Content Repository > Use custom file), this list
shows sesame-pi under the OS choices with `init_format: cloudinit-rpi` (Raspberry Pi OS trixie's
cloud-init on the boot partition, which the image keeps), and Imager customises it.

Usage: imager-manifest.py IMAGE.img.xz OUT.json [--url URL]
Without --url the list points at the image file itself (file://); a release points at the
published download. The fields are those Imager's schema requires of an OS entry.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import lzma
from pathlib import Path

# Imager's device tags: the Zero 2 W is in the Pi 3 family; 64-bit Raspberry Pi OS only.
DEVICES = ["pi3-64bit", "pi4-64bit", "pi5-64bit"]
CHUNK = 1 << 20


def _digests(path: Path) -> tuple[int, str, int, str]:
    """(extracted size, its sha256, download size, its sha256), streaming: images are GBs."""
    download, extracted = hashlib.sha256(), hashlib.sha256()
    extracted_size = 0
    with path.open("rb") as raw:
        while block := raw.read(CHUNK):
            download.update(block)
    with lzma.open(path, "rb") as unpacked:
        while block := unpacked.read(CHUNK):
            extracted.update(block)
            extracted_size += len(block)
    return (
        extracted_size,
        extracted.hexdigest(),
        path.stat().st_size,
        download.hexdigest(),
    )


def entry(image: Path, url: str | None) -> dict[str, object]:
    """The image's OS entry, as Imager's os_list schema asks for it."""
    extract_size, extract_sha256, download_size, download_sha256 = _digests(image)
    built = datetime.datetime.fromtimestamp(image.stat().st_mtime, tz=datetime.UTC)
    return {
        "name": "sesame-pi",
        "description": "Push-button voice appliance for the Sesame agent (Raspberry Pi OS Lite "
        "64-bit, Docker, the app). Set Wi-Fi in the customisation; then press and talk.",
        "icon": "",
        "url": url or image.resolve().as_uri(),
        "release_date": built.strftime("%Y-%m-%d"),
        "extract_size": extract_size,
        "extract_sha256": extract_sha256,
        "image_download_size": download_size,
        "image_download_sha256": download_sha256,
        "devices": DEVICES,
        "init_format": "cloudinit-rpi",
        "architecture": "armv8",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path, help="the image, .img.xz")
    parser.add_argument("out", type=Path, help="where to write the OS list (.json)")
    parser.add_argument(
        "--url", help="where Imager downloads the image (default: the file)"
    )
    args = parser.parse_args()
    try:
        listed = {"os_list": [entry(args.image, args.url)]}
    except (OSError, lzma.LZMAError) as exc:
        parser.error(f"cannot read {args.image} as an .img.xz: {exc}")
    args.out.write_text(json.dumps(listed, indent=2) + "\n")
    print(f"imager-manifest: wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
