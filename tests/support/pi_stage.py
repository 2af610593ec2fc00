"""The SD image's pi-gen stage, run on a cached Debian arm64 root as pi-gen would run it.

Shared by the image test (which checks the stage and first boot in a chroot) and the boot test
(which boots the staged root under qemu-system-aarch64). pi-gen cannot run here (no GitHub, no
Raspberry Pi archive), so `staged_root` plays its part: the root from
tests/system/lib/debian-rootfs.sh stands in for stage2's output, and image/stage-sesame, assembled
by image/assemble-stage.sh as `make image` does, runs with pi-gen's environment, prerun.sh, each
sub-stage's NN-run.sh and a small shim for pi-gen's helpers. A staged root is also kept as a
tarball under the cache, keyed by everything that went into it, so the boot test can start from
the very root the image test checked without a second stage run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SESAME_PI_CACHE", "/var/cache/sesame-pi"))
APT_ARCHIVES = CACHE / "apt-archives"
# Work directories hold bind mounts of /dev and /sys while a stage runs, so they live outside
# pytest's temporary directories, which later sessions delete without looking for mount points.
WORK_ROOT = CACHE / "image-test"
STAGED_CACHE = CACHE / "staged"
HOST_TOOLS = {
    "rsync": "rsync", "fusefat": "fusefat", "mcopy": "mtools", "mkfs.vfat": "dosfstools",
    "sfdisk": "fdisk", "mke2fs": "e2fsprogs",
}  # fmt: skip

# pi-gen's helpers as its scripts/common defines their contract, written for these tests: log
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


def install_host_tools() -> None:
    """FAT tools and rsync on the build host (pi-gen's container has them; Debian may not)."""
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        run("apt-get", "update", "-qq", timeout=600)
        run("apt-get", "install", "-y", "-qq", *missing, timeout=600,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})  # fmt: skip


def root_tarball() -> Path:
    """The cached Debian arm64 root standing in for pi-gen's stage2 (built on first use)."""
    built = run("bash", REPO / "tests/system/lib/debian-rootfs.sh", "pi", timeout=1800)
    return Path(built.stdout.strip().splitlines()[-1])


CONFIG_CHECK_MODULES = ("__init__", "config", "settings_schema", "textfile")  # assemble-stage.sh


def stage_key(base: Path) -> str:
    """What a staged root depends on: the base root, this shim, and the stage's and playbook's
    tracked files (documentation aside; caches that tools leave in the tree never count)."""
    digest = hashlib.sha256(f"{base.name}\n{PI_GEN_SHIM}".encode())
    # (the stage also copies compose.yaml and the app's settings check onto the card)
    check = [f"app/src/sesame_pi/{name}.py" for name in CONFIG_CHECK_MODULES]
    inputs = ("image/stage-sesame", "image/config", "image/assemble-stage.sh", "ansible",
              "app/compose.yaml", *check)  # fmt: skip
    tracked = run("git", "-C", REPO, "ls-files", "--", *inputs).stdout.split()
    for name in sorted(tracked):
        path = REPO / name
        if path.is_file() and path.suffix != ".md":
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def cached_stage_tarball(key: str) -> Path:
    return STAGED_CACHE / f"stage-sesame-{key}.tar"


def keep_staged(rootfs: Path, key: str) -> Path:
    """Save a freshly staged root for the boot test; older keys are dropped (one is enough).
    A tarball already kept for this key holds the same root: it is not written again."""
    STAGED_CACHE.mkdir(parents=True, exist_ok=True)
    target = cached_stage_tarball(key)
    if target.exists():
        return target
    part = target.with_suffix(".part")
    # A plain (not recursive) bind mount shows the root without the stage's /proc, /sys, /dev and
    # apt cache mounts, which the chroot tests still use: the tarball holds what a card would.
    view = STAGED_CACHE / "view"
    view.mkdir(exist_ok=True)
    run("mount", "--bind", rootfs, view)
    try:
        run("tar", "--numeric-owner", "--xattrs", "-C", view, "-cf", part, ".", timeout=900)
    finally:
        run("umount", view, check=False)
    part.replace(target)
    for old in STAGED_CACHE.glob("stage-sesame-*.tar"):
        if old != target:
            old.unlink()
    return target


PLANTED_TOKEN = "planted-by-the-image-test.fleet-token.never-in-an-image"


def plant_fleet_secret(stage_dir: Path) -> None:
    """A fleet's token where an owner might keep it: group_vars beside site.yml, which Ansible
    reads for any inventory. The image build must not put it on the card (the image test looks)."""
    beside = stage_dir / "00-ansible/files/ansible/group_vars/sesame_pi"
    beside.mkdir(parents=True, exist_ok=True)
    (beside / "fleet-secrets.yml").write_text(
        f'sesame_pi_token: "{PLANTED_TOKEN}"\nsesame_pi_auth_record: "{{}}"\n'
    )


@contextlib.contextmanager
def staged_root(kept: Path, app_tarball: Path | None = None) -> Iterator[StagedRoot]:
    """Run image/stage-sesame on a fresh copy of the base root; remove it all afterwards.

    The stage's output is copied to `kept`. The staged root is also saved under the cache (see
    keep_staged) before anyone changes it.
    """
    assert os.geteuid() == 0, "the stage mounts and chroots: run it as root"
    install_host_tools()
    tarball_path = root_tarball()
    key = stage_key(tarball_path)
    remove_stale_work()
    work = WORK_ROOT / f"run-{os.getpid()}"
    remove_work(work)
    work.mkdir(parents=True)
    base = work / "pi-gen"
    prev_rootfs = work / "stage2" / "rootfs"
    prev_rootfs.mkdir(parents=True)
    APT_ARCHIVES.mkdir(parents=True, exist_ok=True)
    try:
        started = time.monotonic()
        run("tar", "--numeric-owner", "-xpf", tarball_path, "-C", prev_rootfs, timeout=600)
        # Raspberry Pi OS mounts the FAT partition here; a plain Debian root lacks the directory.
        (prev_rootfs / "boot" / "firmware").mkdir(parents=True, exist_ok=True)
        app_tarball = app_tarball or fake_app_tarball(work / "sesame-pi-arm64.tar")
        stage_dir = base / "stage-sesame"
        run("bash", REPO / "image/assemble-stage.sh", stage_dir, app_tarball)
        plant_fleet_secret(stage_dir)
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
        left_running = processes_inside(rootfs)
        keep_staged(rootfs, key)
        yield StagedRoot(rootfs, output, app_tarball, left_running, seconds)
    finally:
        if (work / "stage-output.txt").exists():
            shutil.copy(work / "stage-output.txt", kept / "stage-output.txt")
        remove_work(work)


@dataclass
class FatPartition:
    """A FAT32 file system image, like the SD card's boot partition, filled and read by mtools."""

    image: Path

    @classmethod
    def create(cls, path: Path, files: dict[str, bytes], size_mb: int = 64) -> FatPartition:
        run("truncate", "-s", f"{size_mb}M", path)
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
