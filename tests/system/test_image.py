"""`make image-test`: the SD image's own pi-gen stage and first boot, on a Debian 13 arm64 root.

pi-gen cannot run here (no GitHub, no Raspberry Pi archive), so the test plays its part: a cached
Debian trixie arm64 root (tests/system/lib/debian-rootfs.sh pi) stands in for stage2's output,
and image/stage-sesame, assembled by image/assemble-stage.sh as `make image` does, runs the way
pi-gen's build.sh runs a stage: the same environment, prerun.sh, then each sub-stage's NN-run.sh
from its directory, with a small shim for pi-gen's helpers (log, copy_previous, on_chroot). The
Ansible playbook really runs through the chroot connection under qemu; the app image is a small
fake tarball (building the real one is the container test's job). Then the first-boot script runs
inside that root against a real FAT file system (mkfs.vfat, mounted with fusefat: the kernel here
has no vfat driver) and mtools reads back what is left on it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sesame_pi.auth import TokenProvider
from sesame_pi.config import Config
from sesame_pi.login import settle_pending
from sesame_pi.logs import setup_logging
from support.credentials import make_token
from support.token_endpoint import Issuer, TokenEndpoint

REPO = Path(__file__).resolve().parents[2]
STAGE_SRC = REPO / "image" / "stage-sesame"
CACHE = Path(os.environ.get("SESAME_PI_CACHE", "/var/cache/sesame-pi"))
APT_ARCHIVES = CACHE / "apt-archives"
# Work directories hold bind mounts of /dev and /sys while a stage runs, so they live outside
# pytest's temporary directories, which later sessions delete without looking for mount points.
WORK_ROOT = CACHE / "image-test"
APP_UID = 10001
FIRSTBOOT = "/usr/local/sbin/sesame-pi-firstboot"
UNITS = ("sesame-pi-firstboot.service", "sesame-pi.service", "sesame-pi-image-load.service")
HOST_TOOLS = {"rsync": "rsync", "fusefat": "fusefat", "mcopy": "mtools", "mkfs.vfat": "dosfstools"}

# The first test to use `staged` pays for the whole stage run (minutes under qemu).
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(3300)]

# pi-gen's helpers as its scripts/common defines their contract, written for this test: log
# appends to LOG_FILE, copy_previous copies the previous stage's root (never apt's .deb cache),
# on_chroot mounts proc, dev, dev/pts, sys and tmpfs /run and /tmp in the root when missing (they
# stay until the stage ends) and runs bash -e inside it with its arguments and standard input.
# The driver then does what build.sh's run_stage does for one stage.
PI_GEN_SHIM = r"""
set -euo pipefail
log() { echo "[$(date +%T)] $*" | tee -a "$LOG_FILE"; }
copy_previous() {
  if [[ ! -d "$PREV_ROOTFS_DIR" ]]; then
    echo "Previous stage rootfs not found" >&2
    return 1
  fi
  mkdir -p "$ROOTFS_DIR"
  rsync -aHAXx --exclude var/cache/apt/archives "$PREV_ROOTFS_DIR/" "$ROOTFS_DIR/"
}
ensure_mount() {
  local target="$ROOTFS_DIR/$1"
  shift
  mountpoint -q "$target" || mount "$@" "$target"
}
# shellcheck disable=SC2120 # stage scripts may pass bash options; this driver passes none
on_chroot() {
  ensure_mount proc -t proc proc
  ensure_mount dev --bind /dev
  ensure_mount dev/pts --bind /dev/pts
  ensure_mount sys --bind /sys
  ensure_mount run -t tmpfs tmpfs
  ensure_mount tmp -t tmpfs tmpfs
  chroot "$ROOTFS_DIR" /bin/bash -e "$@"
}
export -f log copy_previous ensure_mount on_chroot

set -a
# shellcheck source=/dev/null
source "$PI_GEN_CONFIG"
set +a

cd "$STAGE_DIR"
if [[ -x prerun.sh ]]; then
  log "Begin $STAGE_DIR/prerun.sh"
  ./prerun.sh
fi
# Test-only speed-up: apt's downloads survive between runs.
mkdir -p "$ROOTFS_DIR/var/cache/apt/archives/partial"
mountpoint -q "$ROOTFS_DIR/var/cache/apt/archives" ||
  mount --bind "$APT_ARCHIVES" "$ROOTFS_DIR/var/cache/apt/archives"
for SUB_STAGE_DIR in "$STAGE_DIR"/*/; do
  [[ -f "$SUB_STAGE_DIR/SKIP" ]] && continue
  cd "$SUB_STAGE_DIR"
  for i in {00..99}; do
    for unsupported in "$i-debconf" "$i-packages" "$i-packages-nr" "$i-patches"; do
      if [[ -e "$unsupported" ]]; then
        echo "the test's pi-gen shim does not run $SUB_STAGE_DIR$unsupported" >&2
        exit 1
      fi
    done
    if [[ -x "$i-run.sh" ]]; then
      log "Begin $SUB_STAGE_DIR$i-run.sh"
      "./$i-run.sh"
    elif [[ -f "$i-run.sh" ]]; then
      echo "$SUB_STAGE_DIR$i-run.sh is not executable: pi-gen would skip it" >&2
      exit 1
    fi
    if [[ -f "$i-run-chroot.sh" ]]; then
      log "Begin $SUB_STAGE_DIR$i-run-chroot.sh"
      on_chroot <"$i-run-chroot.sh"
    fi
  done
done
# shellcheck source=/dev/null
source "$STAGE_DIR/EXPORT_IMAGE"
echo "EXPORT_IMAGE: IMG_SUFFIX=[$IMG_SUFFIX]"
"""


def run(
    *args: str | Path, timeout: float = 120, check: bool = True, **kwargs
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first (so they can be unmounted in order)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].encode().decode("unicode_escape")
        if target == str(root) or target.startswith(f"{root}/"):
            found.append(target)
    return sorted(found, key=len, reverse=True)


def unmount_all(root: Path) -> None:
    for target in mounts_under(root):
        if run("umount", target, check=False).returncode != 0:
            run("umount", "--lazy", target, check=False)


def remove_work(work: Path) -> None:
    """Unmount, then delete; never delete through a mount point that would not go."""
    unmount_all(work)
    if mounts_under(work):
        print(f"\nimage: left {work} in place: still mounted {mounts_under(work)}")
        return
    run("rm", "-rf", "--one-file-system", work, timeout=600)


def remove_stale_work() -> None:
    """Clean up after runs that were killed before their own cleanup (their process is gone)."""
    for old in WORK_ROOT.glob("run-*"):
        try:
            os.kill(int(old.name.removeprefix("run-")), 0)
        except (ValueError, ProcessLookupError):
            remove_work(old)


def processes_inside(root: Path) -> list[str]:
    """Command lines of processes whose root is `root`: what a chroot step left running."""
    left = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.readlink(proc / "root") == str(root):
                left.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return left


@pytest.fixture(scope="module")
def host_tools() -> None:
    """FAT tools and rsync on the build host (pi-gen's container has them; Debian may not)."""
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        run("apt-get", "update", "-qq", timeout=600)
        run("apt-get", "install", "-y", "-qq", *missing, timeout=600,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})  # fmt: skip


@dataclass
class StagedRoot:
    """The root file system after image/stage-sesame ran, and what the run left behind."""

    rootfs: Path
    output: str
    app_tarball: Path
    left_running: list[str]
    seconds: float

    def chroot(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the arm64 root (under qemu-user via binfmt_misc)."""
        setting = [f"{k}={v}" for k, v in (env or {}).items()]
        return run("chroot", self.rootfs, "/usr/bin/env", *setting, *args, check=check, timeout=120)


def fake_app_tarball(path: Path) -> Path:
    """A small tar in `docker save`'s shape; the loader service is what would read it at boot."""
    with tarfile.open(path, "w") as tar:
        for name, data in (("manifest.json", b'[{"RepoTags": ["sesame-pi:latest"]}]\n'),
                           ("repositories", b"{}\n")):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def staged(host_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StagedRoot]:
    assert os.geteuid() == 0, "the image test mounts and chroots: run it as root"
    tarball = run("bash", REPO / "tests/system/lib/debian-rootfs.sh", "pi", timeout=1800)
    tarball_path = Path(tarball.stdout.strip().splitlines()[-1])
    remove_stale_work()
    work = WORK_ROOT / f"run-{os.getpid()}"
    remove_work(work)
    work.mkdir(parents=True)
    kept = tmp_path_factory.mktemp("image-stage")
    base = work / "pi-gen"
    prev_rootfs = work / "stage2" / "rootfs"
    prev_rootfs.mkdir(parents=True)
    APT_ARCHIVES.mkdir(parents=True, exist_ok=True)
    try:
        started = time.monotonic()
        run("tar", "--numeric-owner", "-xpf", tarball_path, "-C", prev_rootfs, timeout=600)
        # Raspberry Pi OS mounts the FAT partition here; a plain Debian root lacks the directory.
        (prev_rootfs / "boot" / "firmware").mkdir(parents=True, exist_ok=True)
        app_tarball = fake_app_tarball(work / "sesame-pi-arm64.tar")
        stage_dir = base / "stage-sesame"
        run("bash", REPO / "image/assemble-stage.sh", stage_dir, app_tarball)
        env = {
            **os.environ,
            "PATH": f"{REPO / '.venv/bin'}:{os.environ['PATH']}",
            "PI_GEN_CONFIG": str(REPO / "image/config"),
            "APT_ARCHIVES": str(APT_ARCHIVES),
            "BASE_DIR": str(base),
            "SCRIPT_DIR": str(base / "scripts"),
            "WORK_DIR": str(work),
            "LOG_FILE": str(work / "build.log"),
            "STAGE": "stage-sesame",
            "STAGE_DIR": str(stage_dir),
            "STAGE_WORK_DIR": str(work / "stage-sesame"),
            "ROOTFS_DIR": str(work / "stage-sesame" / "rootfs"),
            "PREV_STAGE": "stage2",
            "PREV_STAGE_DIR": str(base / "stage2"),
            "PREV_ROOTFS_DIR": str(prev_rootfs),
            "USE_QEMU": "0",
            "ANSIBLE_FORCE_COLOR": "0",
            # Per-task times in the stage output: the run is slow under qemu, this says where.
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
        }
        # Streamed to a file: `tail -f` it to watch a slow run.
        log_path = work / "stage-output.txt"
        with log_path.open("w") as log:
            code = subprocess.run(
                ["bash", "-c", PI_GEN_SHIM], env=env, stdout=log, stderr=subprocess.STDOUT,
                timeout=2700, check=False,  # 24 min on a loaded 2-core machine
            ).returncode  # fmt: skip
        output = log_path.read_text()
        assert code == 0, f"the stage failed ({code}):\n{output[-6000:]}"
        rootfs = work / "stage-sesame" / "rootfs"
        seconds = time.monotonic() - started
        print(f"\nimage: stage-sesame ran in {seconds:.0f} s (root from {tarball_path.name})")
        yield StagedRoot(rootfs, output, app_tarball, processes_inside(rootfs), seconds)
    finally:
        if (work / "stage-output.txt").exists():
            shutil.copy(work / "stage-output.txt", kept / "stage-output.txt")
        remove_work(work)


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


def test_the_first_boot_unit_passes_systemd_analyze_verify(staged: StagedRoot) -> None:
    verify = staged.chroot(
        "systemd-analyze", "verify", "--man=no", "/etc/systemd/system/sesame-pi-firstboot.service",
        check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr


@dataclass
class FatPartition:
    """A FAT32 file system image, like the SD card's boot partition, filled and read by mtools."""

    image: Path

    @classmethod
    def create(cls, path: Path, files: dict[str, bytes]) -> FatPartition:
        run("truncate", "-s", "64M", path)
        run("mkfs.vfat", "-F", "32", "-n", "BOOTFS", path)
        fat = cls(path)
        for folder in sorted({name.rsplit("/", 1)[0] for name in files if "/" in name}):
            fat.mtools("mmd", f"::/{folder}")
        for name, data in files.items():
            local = path.parent / "upload"
            local.write_bytes(data)
            fat.mtools("mcopy", "-o", local, f"::/{name}")
            local.unlink()
        return fat

    def mtools(
        self, tool: str, *args: str | Path, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(tool, "-i", self.image, *args, check=check)

    def listing(self, directory: str = "/") -> list[str] | None:
        """File names in `directory` (lower case, as FAT compares them); None if it is gone."""
        result = self.mtools("mdir", "-b", f"::{directory}", check=False)
        if result.returncode != 0:
            return None
        return sorted(Path(line).name.lower() for line in result.stdout.split())

    def mounted_at(self, target: Path) -> _FatMount:
        return _FatMount(self.image, target)


class _FatMount:
    def __init__(self, image: Path, target: Path) -> None:
        self.image, self.target = image, target

    def __enter__(self) -> Path:
        # nonempty: the image's own boot/firmware holds the README the stage installed.
        run("fusefat", "-o", "rw+,nonempty", self.image, self.target)
        assert os.path.ismount(self.target), f"fusefat did not mount {self.image}"
        return self.target

    def __exit__(self, *exc: object) -> None:
        run("fusermount", "-u", self.target, check=False)
        if os.path.ismount(self.target):
            run("umount", "--lazy", self.target, check=False)


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
        refresh_before_s=3700.0,  # so that a fresh hour-long token is due at once
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
    pending = etc / "auth.json"
    info = pending.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o600, APP_UID, APP_UID)
    assert sorted(p.name for p in etc.iterdir()) == ["auth.json"]

    # What the app does at start (run_appliance): consume the pending record, then refresh alone.
    issuer = Issuer(API_KEY, REFRESH)
    log = tmp_path / "events.jsonl"
    with TokenEndpoint(issuer) as endpoint:
        endpoint.answers = [(503, {})]  # Wi-Fi not up yet at the first try
        cfg = app_config(etc, endpoint, log)
        setup_logging(cfg)
        waits: list[float] = []

        async def no_wait(seconds: float) -> None:
            waits.append(seconds)

        done = await settle_pending(cfg, sleep=no_wait)
        assert done is not None and done.email == "maker@example.org" and waits == [2.0]
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
    issuer = Issuer(API_KEY, REFRESH)
    with TokenEndpoint(issuer) as endpoint:
        cfg = app_config(etc, endpoint, tmp_path / "events.jsonl")
        setup_logging(cfg)
        provider = TokenProvider(cfg)
        provider.load()  # no ID token yet: the first connect refreshes
        assert await provider.valid_token() == issuer.issued[-1]
    assert (etc / "token").is_file() and (etc / "refresh_token").read_text().strip() in issuer.live
