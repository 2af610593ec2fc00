"""`make image-test`: the SD image's own pi-gen stage and first boot, on a Debian 13 arm64 root.

pi-gen cannot run here (no GitHub, no Raspberry Pi archive), so the test plays its part
(tests/support/pi_stage.py): a cached Debian trixie arm64 root (tests/system/lib/debian-rootfs.sh
pi) stands in for stage2's output, and image/stage-sesame, assembled by image/assemble-stage.sh as
`make image` does, runs the way pi-gen's build.sh runs a stage: the same environment, prerun.sh,
then each sub-stage's NN-run.sh from its directory, with a small shim for pi-gen's helpers (log,
copy_previous, on_chroot). The Ansible playbook really runs through the chroot connection under
qemu; the app image is a small fake tarball (building the real one is the container test's job,
booting it the boot test's). Then the first-boot script runs inside that root against a real FAT
file system (mkfs.vfat, mounted with fusefat: the kernel here has no vfat driver) and mtools reads
back what is left on it.
"""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sesame_pi.auth import TokenProvider
from sesame_pi.config import Config
from sesame_pi.login import settle_pending
from sesame_pi.logs import setup_logging
from support.credentials import make_token
from support.pi_stage import (
    CONFIG_CHECK_MODULES,
    PI_GEN_SHIM,
    PLANTED_TOKEN,
    FatPartition,
    StagedRoot,
    run,
    staged_root,
)
from support.token_endpoint import Issuer, TokenEndpoint

REPO = Path(__file__).resolve().parents[2]
STAGE_SRC = REPO / "image" / "stage-sesame"
APP_UID = 10001
FIRSTBOOT = "/usr/local/sbin/sesame-pi-firstboot"
UNITS = ("sesame-pi-firstboot.service", "sesame-pi.service", "sesame-pi-image-load.service")

# The first test to use `staged` pays for the whole stage run (minutes under qemu).
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(3300)]


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StagedRoot]:
    with staged_root(tmp_path_factory.mktemp("image-stage")) as root:
        yield root


def is_shell_script(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        first = handle.readline()
    return first.startswith(b"#!") and first.rstrip().endswith((b"sh", b"bash -e"))


def test_every_image_script_passes_shellcheck() -> None:
    shellcheck = REPO / ".venv/bin/shellcheck"
    scripts = [p for p in sorted((REPO / "image").rglob("*")) if is_shell_script(p)]
    assert STAGE_SRC / "prerun.sh" in scripts and STAGE_SRC / "00-ansible/00-run.sh" in scripts
    run(shellcheck, "-x", *scripts)
    run(shellcheck, "-s", "bash", STAGE_SRC / "EXPORT_IMAGE", REPO / "image/config")
    run(shellcheck, "-s", "bash", "-", input=PI_GEN_SHIM)


def test_the_stage_provisions_the_root_and_starts_nothing(staged: StagedRoot) -> None:
    root = staged.rootfs
    assert "EXPORT_IMAGE: IMG_SUFFIX=[]" in staged.output
    assert "00-ansible: done" in staged.output
    shipped = root / "var/lib/sesame-pi/images/sesame-pi.tar"
    digest = hashlib.sha256(staged.app_tarball.read_bytes()).hexdigest()
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == digest
    script = root / FIRSTBOOT.lstrip("/")
    assert stat.S_IMODE(script.stat().st_mode) == 0o755 and script.stat().st_uid == 0
    assert (root / "etc/systemd/system/sesame-pi-firstboot.service").is_file()
    assert (root / "boot/firmware/sesame-pi-README.txt").is_file()
    enabled = staged.chroot("systemctl", "is-enabled", *UNITS, check=False)
    assert enabled.stdout.split() == ["enabled"] * len(UNITS), enabled.stdout + enabled.stderr
    assert not (root / "root/.ansible").exists()
    assert staged.left_running == [], "offline provisioning must start nothing"
    # A fleet's token in group_vars beside site.yml (planted by the harness) stays off the card.
    etc = root / "etc/sesame-pi"
    assert not (etc / "token").exists() and not (etc / "auth.pending.json").exists()
    # made for the ReSpeaker HAT, whose button pulls the pin to ground
    assert 'button_pull = "up"' in (etc / "config.toml").read_text()
    # the app's settings check for a config.toml on the card, runnable by the image's Python
    check = root / "usr/local/lib/sesame-pi"
    assert sorted(p.stem for p in (check / "sesame_pi").glob("*.py")) == sorted(
        CONFIG_CHECK_MODULES
    )
    loads = staged.chroot(
        "python3", "-c",
        "from pathlib import Path; from sesame_pi.config import load;"
        " print(load(Path('/etc/sesame-pi/config.toml'), environ={}).button_pull)",
        check=False, env={"PYTHONPATH": "/usr/local/lib/sesame-pi"},
    )  # fmt: skip
    assert loads.stdout.strip() == "up", loads.stdout + loads.stderr
    hits = run("grep", "-rl", PLANTED_TOKEN, root / "etc", root / "var/lib", check=False)
    assert hits.stdout == "", hits.stdout


def test_the_first_boot_unit_passes_systemd_analyze_verify(staged: StagedRoot) -> None:
    verify = staged.chroot(
        "systemd-analyze", "verify", "--man=no", "/etc/systemd/system/sesame-pi-firstboot.service",
        check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr


def firstboot(
    staged: StagedRoot, fat: FatPartition, **env: str
) -> subprocess.CompletedProcess[str]:
    with fat.mounted_at(staged.rootfs / "boot/firmware"):
        return staged.chroot(FIRSTBOOT, env={"BOOT_DIR": "/boot/firmware", **env}, check=False)


def test_first_boot_moves_the_token_and_config_off_the_fat_partition(
    staged: StagedRoot, tmp_path: Path
) -> None:
    token = make_token(exp_in_s=3600)
    config = b'character = "Miles"\nbutton_pull = "up"\n'
    fat = FatPartition.create(tmp_path / "boot.img", {
        "sesame-pi/token": token.encode() + b"\n", "sesame-pi/config.toml": config,
        "config.txt": b"arm_64bit=1\n",
    })  # fmt: skip

    result = firstboot(staged, fat)

    assert result.returncode == 0, result.stdout + result.stderr
    etc = staged.rootfs / "etc/sesame-pi"
    moved = etc / "token"
    assert moved.read_text() == token + "\n"
    info = moved.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o600, APP_UID, APP_UID)
    # The image's own user database: uid 10001 is the sesame user the Ansible role created.
    owner = staged.chroot("stat", "-c", "%U:%G %a", "/etc/sesame-pi/token").stdout.strip()
    assert owner == "sesame:sesame 600"
    conf = (etc / "config.toml").stat()
    assert (etc / "config.toml").read_bytes() == config
    assert (stat.S_IMODE(conf.st_mode), conf.st_uid, conf.st_gid) == (0o640, 0, APP_UID)
    assert not list(etc.glob("*.??????")), "no temporary file is left behind"
    assert fat.listing("/sesame-pi") is None, "the copies and their folder left the FAT partition"
    assert fat.listing("/") == ["config.txt"], "nothing else on the partition was touched"
    log = result.stdout + result.stderr
    assert "moved token" in log and "moved config.toml" in log
    assert token not in log and token.split(".")[1] not in log


def test_a_notepad_token_replaces_the_old_one_and_other_files_stay(
    staged: StagedRoot, tmp_path: Path
) -> None:
    etc_dir = "/var/tmp/sesame-pi-etc"  # a fresh directory: the script creates it
    old, new = make_token(exp_in_s=60), make_token(exp_in_s=3600)
    fat = FatPartition.create(tmp_path / "boot.img", {
        "sesame-pi/token.txt": b"\xef\xbb\xbf" + new.encode() + b"\r\n",  # Notepad: BOM, CRLF
        "sesame-pi/notes.txt": b"keep me\n",
        "sesame-pi/._token.txt": b"\0\5\26\7AppleDouble", "sesame-pi/.DS_Store": b"\0\0\0\1Bud1",
    })  # fmt: skip
    first = firstboot(staged, fat, ETC_DIR=etc_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    etc = staged.rootfs / etc_dir.lstrip("/")
    assert (stat.S_IMODE(etc.stat().st_mode), etc.stat().st_uid) == (0o750, APP_UID)
    assert (etc / "token").read_text() == new + "\n"
    assert fat.listing("/sesame-pi") == ["notes.txt"]
    assert "notes.txt" in first.stdout.lower()  # fusefat shows 8.3 names in upper case

    # An empty token file must not wipe a working token.
    (etc / "token").write_text(old + "\n")
    empty = FatPartition.create(tmp_path / "empty.img", {"sesame-pi/token": b"\r\n"})
    second = firstboot(staged, empty, ETC_DIR=etc_dir)
    assert second.returncode == 0, second.stdout + second.stderr
    assert (etc / "token").read_text() == old + "\n"
    assert "empty" in second.stdout


def test_first_boot_without_a_drop_folder_changes_nothing(
    staged: StagedRoot, tmp_path: Path
) -> None:
    fat = FatPartition.create(tmp_path / "boot.img", {"config.txt": b"arm_64bit=1\n"})
    etc_dir = "/var/tmp/sesame-pi-untouched"
    result = firstboot(staged, fat, ETC_DIR=etc_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing to do" in result.stdout
    assert not (staged.rootfs / etc_dir.lstrip("/")).exists()
    assert fat.listing("/") == ["config.txt"]


API_KEY = "AIzaSyImageTestKey-0123456789abcdefghijk"
REFRESH = "AMf-vBzImageTestRefreshToken-0123456789abcdefghijklmnop"
ISSUED_S = 2400  # the issuer's ID tokens: 40 minutes, within refresh_before_s below


def auth_record() -> bytes:
    """The auth record as the README's snippet copies it, saved by Notepad (BOM, CRLF)."""
    record = {
        "uid": "u1",
        "email": "maker@example.org",
        "stsTokenManager": {"refreshToken": REFRESH, "accessToken": make_token(exp_in_s=-60)},
        "apiKey": API_KEY,
        "appName": "[DEFAULT]",
    }
    return b"\xef\xbb\xbf" + json.dumps(record, indent=2).replace("\n", "\r\n").encode()


def app_config(etc: Path, endpoint: TokenEndpoint, log: Path) -> Config:
    """The app's configuration as the container sees it, its paths moved under the root; the
    image's config.toml says nothing about refresh, and neither does this."""
    return Config(
        token_file=etc / "token",
        token_endpoint=endpoint.url,
        refresh_before_s=3000.0,  # the most it may be: a token of ISSUED_S is due at once
        log_file=log,
    )


async def test_a_boot_partition_with_only_auth_json_gives_an_app_that_refreshes_itself(
    staged: StagedRoot, tmp_path: Path
) -> None:
    etc_dir = "/var/tmp/sesame-pi-auth"  # a fresh /etc/sesame-pi, whatever other tests left
    fat = FatPartition.create(tmp_path / "boot.img", {"sesame-pi/auth.json": auth_record()})
    result = firstboot(staged, fat, ETC_DIR=etc_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pending login" in result.stdout
    assert REFRESH not in result.stdout + result.stderr
    assert fat.listing("/sesame-pi") is None
    etc = staged.rootfs / etc_dir.lstrip("/")
    pending = etc / "auth.pending.json"
    info = pending.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o600, APP_UID, APP_UID)
    assert sorted(p.name for p in etc.iterdir()) == ["auth.pending.json"]

    # What the app does at start (run_appliance): consume the pending record, then refresh alone.
    issuer = Issuer(API_KEY, REFRESH, lifetime_s=ISSUED_S)
    log = tmp_path / "events.jsonl"
    with TokenEndpoint(issuer) as endpoint:
        endpoint.answers = [(503, {})]  # Wi-Fi not up yet at the first try
        cfg = app_config(etc, endpoint, log)
        setup_logging(cfg)
        waits: list[float] = []

        async def no_wait(seconds: float) -> None:
            waits.append(seconds)

        done = await settle_pending(cfg, sleep=no_wait)
        assert done is not None and done.email == "maker@example.org" and sum(waits) == 2.0
        assert not pending.exists()
        for name in ("token", "refresh_token", "firebase_api_key"):
            assert stat.S_IMODE((etc / name).stat().st_mode) == 0o600, name
        provider = TokenProvider(cfg)
        provider.load()
        assert await provider.valid_token() == issuer.issued[-1]
    assert len(issuer.issued) == 2, "one login, then one refresh by the app itself"
    assert (etc / "refresh_token").read_text().strip() in issuer.live
    text = log.read_text()
    assert "login_pending_done" in text and "token_refreshed" in text
    for secret in (REFRESH, *issuer.live, *issuer.issued):
        assert secret not in text
    files = sorted(p.name for p in etc.iterdir())
    print(
        f"\nimage: auth.json on the boot partition -> login after {len(waits)} retry, then "
        f"{len(issuer.issued) - 1} refresh by the app itself; {etc_dir} holds {files}"
    )


async def test_a_refresh_token_and_key_on_the_boot_partition_need_no_config(
    staged: StagedRoot, tmp_path: Path
) -> None:
    etc_dir = "/var/tmp/sesame-pi-refresh"
    fat = FatPartition.create(tmp_path / "boot.img", {
        "sesame-pi/refresh_token.txt": REFRESH.encode() + b"\r\n",
        "sesame-pi/firebase_api_key.txt": b"\xef\xbb\xbf" + API_KEY.encode() + b"\r\n",
    })  # fmt: skip
    result = firstboot(staged, fat, ETC_DIR=etc_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    etc = staged.rootfs / etc_dir.lstrip("/")
    assert (etc / "firebase_api_key").read_text() == API_KEY + "\n"
    issuer = Issuer(API_KEY, REFRESH, lifetime_s=ISSUED_S)
    with TokenEndpoint(issuer) as endpoint:
        cfg = app_config(etc, endpoint, tmp_path / "events.jsonl")
        setup_logging(cfg)
        provider = TokenProvider(cfg)
        provider.load()  # no ID token yet: the first connect refreshes
        assert await provider.valid_token() == issuer.issued[-1]
    assert (etc / "token").is_file() and (etc / "refresh_token").read_text().strip() in issuer.live
