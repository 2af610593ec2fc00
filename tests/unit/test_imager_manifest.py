"""The Raspberry Pi Imager OS list the image build writes (image/imager-manifest.py), on a small
made-up image: Imager 2 customises (Wi-Fi, user, SSH) only an image such a list describes, and
checks the image against its sizes and digests."""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "image/imager-manifest.py"
# What Imager's os_list schema requires of an OS entry.
REQUIRED = {
    "name", "description", "icon", "url", "extract_size", "extract_sha256",
    "image_download_size", "release_date", "devices",
}  # fmt: skip


def make_image(tmp_path: Path) -> tuple[Path, bytes]:
    raw = os.urandom(300_000) + bytes(2_000_000)  # some data, then the zeros of free space
    image = tmp_path / "image_2026-12-07-sesame-pi.img.xz"
    image.write_bytes(lzma.compress(raw, format=lzma.FORMAT_XZ))
    return image, raw


def write_list(tmp_path: Path, image: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(image), str(tmp_path / "list.json"), *extra],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_list_describes_the_image_as_imager_checks_it(tmp_path: Path) -> None:
    image, raw = make_image(tmp_path)
    run = write_list(tmp_path, image)
    assert run.returncode == 0, run.stderr
    (entry,) = json.loads((tmp_path / "list.json").read_text())["os_list"]
    assert set(entry) >= REQUIRED
    assert entry["init_format"] == "cloudinit-rpi", "what Imager 2 needs to offer customisation"
    assert "pi3-64bit" in entry["devices"], "the Zero 2 W is in Imager's Pi 3 family"
    assert entry["extract_size"] == len(raw)
    assert entry["extract_sha256"] == hashlib.sha256(raw).hexdigest()
    assert entry["image_download_size"] == image.stat().st_size
    assert entry["image_download_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert entry["url"] == image.resolve().as_uri()


def test_a_release_points_at_its_download(tmp_path: Path) -> None:
    image, _ = make_image(tmp_path)
    url = "https://github.com/example/sesame-pi/releases/download/v1/" + image.name
    assert write_list(tmp_path, image, "--url", url).returncode == 0
    (entry,) = json.loads((tmp_path / "list.json").read_text())["os_list"]
    assert entry["url"] == url


def test_a_file_that_is_not_an_xz_image_is_refused_in_words(tmp_path: Path) -> None:
    image = tmp_path / "image.img.xz"
    image.write_bytes(b"not xz at all")
    run = write_list(tmp_path, image)
    assert run.returncode == 2 and "cannot read" in run.stderr
    assert not (tmp_path / "list.json").exists()


def test_the_build_and_the_release_write_and_publish_it() -> None:
    build = (REPO / "image/build.sh").read_text()
    release = (REPO / "image/release-workflow.yml").read_text()
    assert "image/imager-manifest.py" in build and ".rpi-imager.json" in build
    assert "imager-manifest.py" in release and "--url" in release
    upload = release[release.index("gh release upload") :]
    assert "*.rpi-imager.json" in upload.split("--clobber")[0]
