"""`make boot-test`: the provisioned SD card boots under qemu, provisions itself, places a call.

The image test runs the image's stage and first-boot script in a chroot; nothing there is booted.
Here the root it staged (kept under the cache by tests/support/pi_stage.py, with Debian's arm64
kernel and initramfs standing in for the Pi's) gets the real app image (`make container`'s
`docker save`) where the stage puts it, and becomes a card, built without mounting anything: an
MBR from sfdisk, a FAT boot partition from mkfs.vfat and mtools holding what a maker drops there
(`sesame-pi/token` with Windows line ends, a `config.toml`), an ext4 root from `mke2fs -d`, the
fstab by PARTUUID as pi-gen writes it. qemu-system-aarch64 boots it (virt, Cortex-A53, 512 MB,
TCG, no network card): systemd, Docker, the first-boot unit, the image load and compose run as
on a Pi. A test-only unit in the guest runs the stand-in server from the app's own image on the
guest's loopback, presses the app's stdin button, and reports over virtio-serial. Then the card
boots a second time.

Test-only additions to the root (tests/system/boot/): the report and stand-in units, a compose
override that keeps the app's stdin open, snd-aloop named as the image's sound card (so the
shipped asound.conf's dmix and dsnoop really open), the stand-in's certificate and its CA.
TCG times are not Pi times: the figures printed say how this emulated machine did.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.credentials import make_pki, make_token
from support.pi_stage import (
    CACHE,
    FatPartition,
    cached_stage_tarball,
    install_host_tools,
    root_tarball,
    run,
    stage_key,
    staged_root,
)

REPO = Path(__file__).resolve().parents[2]
GUEST_FILES = Path(__file__).parent / "boot"
WORK_ROOT = CACHE / "boot-test"
APP_UID = 10001
DISK_ID = "5e5a0b07"  # the MBR's disk id: PARTUUIDs are 5e5a0b07-01 (FAT) and -02 (root)
SECTOR = 512
FAT_START = 8192  # sectors: 4 MiB, as pi-gen aligns the first partition
FAT_MB = 128
ROOT_SPARE_MB = 1536  # room for the loaded image's layers, the journal and logs
GUEST_MB = 512  # a Pi Zero 2 W
BOOT_TIMEOUT_S = 1800
STANDIN_URL = "wss://127.0.0.1:8443/agent-service-0/v1/connect"
GUEST_CA = "/etc/sesame-pi/trust/boot-test-ca.pem"  # the read-only mount, root's
UNITS = ("sesame-pi-boot-report.service", "sesame-pi-boot-standin.service")
# The same WM8960 HAT under Seeed's driver and under Raspberry Pi OS's own overlay.
OTHER_DRIVERS_ID = {"seeed2micvoicec": "wm8960soundcard", "wm8960soundcard": "seeed2micvoicec"}

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(5400)]


@dataclass
class Card:
    """A built SD card image and what the host needs to boot and inspect it."""

    disk: Path
    kernel: Path
    initrd: Path
    work: Path
    kept: Path
    root_mb: int
    named_card: str  # the card id the image's asound.conf names
    token: str = field(repr=False)

    @property
    def fat(self) -> FatPartition:
        """The boot partition, read in place through mtools' offset syntax."""
        return FatPartition(Path(f"{self.disk}@@{FAT_START * SECTOR}"))

    @property
    def cmdline(self) -> str:
        return (
            f"console=ttyAMA0 root=PARTUUID={DISK_ID}-02 rootfstype=ext4 fsck.repair=yes "
            "rootwait panic=-1"
        )


def app_image_tarball() -> Path:
    """`make container` with SAVE=1: the image layers are cached, so after the container suite
    this only saves the image."""
    env = {**os.environ, "SAVE": "1", "ARCH": "arm64"}
    started = time.monotonic()
    run("bash", REPO / "app/container/build.sh", env=env, timeout=3600)
    tarball = REPO / "build/sesame-pi-arm64.tar"
    with tarfile.open(tarball) as saved:
        manifest = json.load(saved.extractfile("manifest.json"))  # type: ignore[arg-type]
    tags = [tag for entry in manifest for tag in entry["RepoTags"]]
    assert "sesame-pi:latest" in tags, f"the card's compose runs sesame-pi:latest; saved {tags}"
    # saved as root (`sudo SAVE=1 make container`), docker wrote it 0600: `make deploy`, run as
    # the owner, could not read it
    assert tarball.stat().st_mode & 0o044 == 0o044, oct(tarball.stat().st_mode)
    size = tarball.stat().st_size / 2**20
    print(f"\nboot: app image {size:.0f} MB saved in {time.monotonic() - started:.0f} s")
    return tarball


def staged_tarball(kept: Path) -> Path:
    """The root the image test staged (cached by key); staged here if no run left one."""
    cached = cached_stage_tarball(stage_key(root_tarball()))
    if not cached.exists():
        print("\nboot: no staged root in the cache for this tree; running the image's stage")
        with staged_root(kept):
            pass
    return cached


def sound_card_id(root: Path) -> str:
    """The ALSA card id the image's asound.conf names (the Ansible audio role's audio_card)."""
    found = re.search(r"hw:CARD=([A-Za-z0-9_]+)", (root / "etc/asound.conf").read_text())
    assert found, "the staged root's asound.conf names no card"
    return found[1]


def fitted_card_id(root: Path) -> str:
    """The id the emulated HAT gets: the image names the ReSpeaker by Seeed's driver's id, and
    the maker used Raspberry Pi OS's own dtoverlay=wm8960-soundcard, which names the same HAT
    wm8960soundcard. The image must choose it at boot (sesame-pi-card) and play on it."""
    named = sound_card_id(root)
    return OTHER_DRIVERS_ID.get(named, named)


def install(src: Path | bytes, dest: Path, mode: int, owner: int = 0, group: int = 0) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(src, bytes):
        dest.write_bytes(src)
    else:
        shutil.copyfile(src, dest)
    os.chown(dest, owner, group)
    os.chmod(dest, mode)


def add_test_only_files(root: Path, pki_dir: Path) -> None:
    """What the test adds to the card's root: the report and the stand-in, nothing of the app."""
    units = root / "etc/systemd/system"
    for unit in UNITS:
        install(GUEST_FILES / unit, units / unit, 0o644)
        wants = units / "multi-user.target.wants" / unit
        wants.parent.mkdir(parents=True, exist_ok=True)
        wants.symlink_to(f"/etc/systemd/system/{unit}")
    install(GUEST_FILES / "boot_report.py", root / "usr/local/libexec/sesame-pi-boot-report", 0o755)
    install(GUEST_FILES / "compose.override.yaml", root / "opt/sesame-pi/compose.override.yaml",
            0o644)  # fmt: skip
    card = fitted_card_id(root)
    install(f"options snd-aloop index=0 id={card}\n".encode(),
            root / "etc/modprobe.d/sesame-pi-boot-test.conf", 0o644)  # fmt: skip
    install(b"snd-aloop\n", root / "etc/modules-load.d/sesame-pi-boot-test.conf", 0o644)
    pki = make_pki(pki_dir)
    install(pki.cert_file, root / "etc/sesame-pi-boot-test/server.pem", 0o644)
    install(pki.key_file, root / "etc/sesame-pi-boot-test/server.key", 0o640, group=APP_UID)
    install(pki.ca_file, root / GUEST_CA.lstrip("/"), 0o644)


def fat_files(root: Path, token: str) -> dict[str, bytes]:
    """The boot partition: what the stage put under /boot/firmware, and the maker's drop."""
    firmware = root / "boot/firmware"
    files = {p.name: p.read_bytes() for p in firmware.iterdir() if p.is_file()}
    for path in firmware.iterdir():
        path.unlink()
    config = f'server = "{STANDIN_URL}"\nca_file = "{GUEST_CA}"\nbutton = "stdin"\n'
    config += extra_config()
    files["config.txt"] = b"arm_64bit=1\r\n"
    files["sesame-pi/token"] = token.encode() + b"\r\n"  # saved by Notepad
    files["sesame-pi/config.toml"] = config.replace("\n", "\r\n").encode()
    return files


def extra_config() -> str:
    """More settings for the card's config.toml from SESAME_PI_BOOT_CONFIG (lines separated by
    `;`), to measure another setting on the emulated Pi's dmix, e.g. `output_mode = "callback"`."""
    lines = [line.strip() for line in os.environ.get("SESAME_PI_BOOT_CONFIG", "").split(";")]
    return "".join(f"{line}\n" for line in lines if line)


def write_fstab(root: Path) -> None:
    (root / "etc/fstab").write_text(
        "proc            /proc           proc    defaults          0       0\n"
        f"PARTUUID={DISK_ID}-01  /boot/firmware  vfat    defaults          0       2\n"
        f"PARTUUID={DISK_ID}-02  /               ext4    defaults,noatime  0       1\n"
    )


def assemble_disk(disk: Path, fat: Path, ext4: Path, root_mb: int) -> None:
    """An MBR with the two partitions, as pi-gen's export stage lays a card out."""
    root_start = FAT_START + FAT_MB * 2048
    total = root_start + root_mb * 2048
    run("truncate", "-s", str(total * SECTOR), disk)
    layout = (
        f"label: dos\nlabel-id: 0x{DISK_ID}\nunit: sectors\n"
        f"start={FAT_START}, size={FAT_MB * 2048}, type=c\n"
        f"start={root_start}, size={root_mb * 2048}, type=83\n"
    )
    run("sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", disk, input=layout)
    for part, start in ((fat, FAT_START), (ext4, root_start)):
        run("dd", f"if={part}", f"of={disk}", "bs=4M", f"seek={start * SECTOR}",
            "oflag=seek_bytes", "conv=notrunc,sparse", "status=none", timeout=600)  # fmt: skip


def newest(boot_dir: Path, prefix: str) -> Path:
    found = sorted(boot_dir.glob(f"{prefix}-*"))
    assert found, f"the root has no /boot/{prefix}-*: is linux-image-arm64 in debian-rootfs.sh pi?"
    return found[-1]


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Card]:
    assert os.geteuid() == 0, "the boot test builds a root file system with owners: run as root"
    install_host_tools()
    if shutil.which("qemu-system-aarch64") is None:
        run("apt-get", "install", "-y", "-qq", "qemu-system-arm", timeout=900,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})  # fmt: skip
    kept = tmp_path_factory.mktemp("boot")
    staged = staged_tarball(kept)
    app_tarball = app_image_tarball()
    work = WORK_ROOT / f"run-{os.getpid()}"
    for old in WORK_ROOT.glob("run-*"):
        shutil.rmtree(old, ignore_errors=True)
    root = work / "root"
    root.mkdir(parents=True)
    started = time.monotonic()
    try:
        run("tar", "--numeric-owner", "--xattrs", "-xpf", staged, "-C", root, timeout=900)
        install(app_tarball, root / "var/lib/sesame-pi/images/sesame-pi.tar", 0o644)
        named_card = sound_card_id(root)
        add_test_only_files(root, kept)
        write_fstab(root)
        token = make_token(exp_in_s=3 * 3600)
        fat = FatPartition.create(work / "fat.img", fat_files(root, token), size_mb=FAT_MB)
        kernel, initrd = newest(root / "boot", "vmlinuz"), newest(root / "boot", "initrd.img")
        shutil.copy(kernel, work / "vmlinuz")
        shutil.copy(initrd, work / "initrd.img")
        used_mb = int(run("du", "-sm", "--one-file-system", root, timeout=600).stdout.split()[0])
        root_mb = used_mb + ROOT_SPARE_MB
        ext4 = work / "root.img"
        run("mke2fs", "-q", "-t", "ext4", "-L", "rootfs", "-d", root, ext4, f"{root_mb}M",
            timeout=900)  # fmt: skip
        shutil.rmtree(root)
        disk = work / "sesame-pi-card.img"
        assemble_disk(disk, fat.image, ext4, root_mb)
        ext4.unlink()
        print(
            f"boot: card built in {time.monotonic() - started:.0f} s: root {used_mb} MB used "
            f"of {root_mb} MB, FAT {FAT_MB} MB, kernel {kernel.name}"
        )
        print(f"boot: the guest's reports and consoles are kept in {kept}")
        yield Card(disk, work / "vmlinuz", work / "initrd.img", work, kept, root_mb, named_card,
                   token)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Boot:
    """One power-on: what the guest reported, and how long the host waited for it."""

    number: int
    report: dict
    lines: list[dict]
    wall_s: float
    console: str


def power_on(card: Card, number: int) -> Boot:
    """Boot the card until the guest reports and powers off (or the time runs out)."""
    report_path = card.work / f"report-{number}.jsonl"
    console_path = card.work / f"console-{number}.log"
    report_path.write_text("")
    args = [
        "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a53", "-smp", "2",
        "-m", str(GUEST_MB), "-display", "none", "-no-reboot", "-nic", "none",
        "-kernel", str(card.kernel), "-initrd", str(card.initrd), "-append", card.cmdline,
        "-drive", f"file={card.disk},format=raw,if=none,id=card",
        "-device", "virtio-blk-device,drive=card",
        "-device", "virtio-rng-device",
        "-device", "virtio-serial-device",
        "-chardev", f"file,id=report,path={report_path}",
        "-device", "virtserialport,chardev=report,name=sesame.report",
        "-serial", f"file:{console_path}", "-monitor", "none",
    ]  # fmt: skip
    started = time.monotonic()
    qemu = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[dict] = []
    final: dict | None = None
    try:
        while time.monotonic() - started < BOOT_TIMEOUT_S:
            exited = qemu.poll() is not None  # read once more after the guest powers off
            text = report_path.read_text(errors="replace")
            for raw in text.splitlines()[len(lines) :]:
                found = json.loads(raw)
                lines.append(found)
                if found["kind"] != "report":
                    elapsed = time.monotonic() - started
                    said = json.dumps({k: v for k, v in found.items() if k != "uptime"})
                    print(f"boot {number}: {found['kind']} at {found['uptime']:.0f} s uptime "
                          f"({elapsed:.0f} s wall) {said[:600]}", flush=True)  # fmt: skip
                if found["kind"] in ("report", "crashed"):
                    final = found
            if final is not None or exited:
                break
            time.sleep(1)
        if final is not None:
            qemu.wait(timeout=300)  # the guest powers itself off
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
    console = console_path.read_text(errors="replace")
    wall = time.monotonic() - started
    for path in (report_path, console_path):
        shutil.copy(path, card.kept / path.name)  # the card's work directory goes at the end
    if final is None or final["kind"] != "report":
        raise AssertionError(
            f"boot {number} gave no report in {wall:.0f} s (qemu exit {qemu.returncode}; "
            f"{(qemu.stderr.read() if qemu.stderr else '')[-500:]}); guest said {lines}; "
            f"console ends:\n{console[-5000:]}"
        )
    return Boot(number, final, lines, wall, console)


@dataclass
class Checks:
    """One printed line per assertion, all of them shown before the test fails."""

    failed: list[str] = field(default_factory=list)

    def __call__(self, label: str, ok: bool, detail: object = "") -> None:
        print(f"  {'ok  ' if ok else 'FAIL'} {label}{f': {detail}' if detail != '' else ''}")
        if not ok:
            self.failed.append(f"{label}: {detail}")

    def verdict(self) -> None:
        assert not self.failed, "\n".join(self.failed)


def monotonic_us(unit: dict, name: str) -> int:
    return int(unit.get(name) or 0)


@pytest.fixture(scope="module")
def boots(card: Card) -> list[Boot]:
    first = power_on(card, 1)
    left_on_fat = card.fat.listing("/sesame-pi")
    second = power_on(card, 2)
    first.report["fat_after"] = left_on_fat
    return [first, second]


def checked_boot(boot: Boot, card: Card) -> tuple[dict, Checks]:
    """The checks every boot must pass; the caller adds its own and asks for the verdict."""
    r = boot.report
    check = Checks()
    print(f"\nboot {boot.number} ({boot.wall_s:.0f} s wall, TCG):")
    check("the guest counted this boot", r["boot"] == boot.number, r["boot"])
    check("the app came up idle with its link up", "idle_at_s" in r, r.get("error", ""))
    check("no process was killed for memory", r.get("oom_kills") == 0, r.get("oom_kills"))
    check("no failed units", r["failed_units"] == [], r["failed_units"])
    check("the app's container is healthy", r["healthy"] == "healthy", r["healthy"])
    check("no errors in the app's event log", r["errors"] == [], r["errors"][:3])
    restarted = r["app"]["restarts"] != 0
    check("the app's container never restarted", not restarted,
          (r["app"]["restarts"], r["app"]["exits"], r["fatal_signals"],
           r["app"]["log_tail"][-8:]) if restarted
          else r["app"]["state"]["StartedAt"])  # fmt: skip
    procs = r["app"]["processes"]
    check("the container's processes all run as uid/gid 10001",
          bool(procs) and all(set(p["uids"]) == {APP_UID} and set(p["gids"]) == {APP_UID}
                              for p in procs),
          [(p["name"], p["uids"]) for p in procs])  # fmt: skip
    zero = "0000000000000000"
    check("... with every capability set empty",
          bool(procs) and all(set(p["caps"].values()) == {zero} for p in procs),
          [(p["name"], p["caps"]) for p in procs if set(p["caps"].values()) != {zero}])  # fmt: skip
    check("... not privileged, all capabilities dropped",
          r["app"]["privileged"] is False and r["app"]["cap_drop"] == ["ALL"],
          (r["app"]["privileged"], r["app"]["cap_drop"]))  # fmt: skip
    mounts = r["app"]["mounts_rw"]
    check("... its settings and trusted CAs read-only, its token directory writable",
          mounts.get("/etc/sesame-pi/config.toml") is False
          and mounts.get("/etc/sesame-pi/trust") is False
          and mounts.get("/etc/sesame-pi") is True, mounts)  # fmt: skip
    token = r["token"]
    check("the token is at /etc/sesame-pi/token, 0600, sesame:sesame",
          (token.get("mode"), token.get("owner"), token.get("uid")) == ("0o600", "sesame:sesame",
                                                                       APP_UID),
          token)  # fmt: skip
    landed = token.get("sha256") == hashlib.sha256(card.token.encode()).hexdigest()
    check("... byte for byte what was dropped, without the Windows line end",
          landed and token.get("has_cr") is False, (landed, token.get("has_cr")))  # fmt: skip
    hits = {k: v for k, v in token.items() if k.startswith("in_")}
    check(f"the token appears nowhere ({token.get('journal_lines')} journal entries, the app's "
          "logs, the units)", set(hits.values()) == {0}, hits)  # fmt: skip
    return r, check


def test_first_boot_provisions_the_card_and_a_call_is_placed(boots: list[Boot], card: Card) -> None:
    r, check = checked_boot(boots[0], card)
    units = r["units"]
    firstboot = units["sesame-pi-firstboot.service"]
    load = units["sesame-pi-image-load.service"]
    app = units["sesame-pi.service"]
    check("first boot ran (its condition held) and succeeded",
          firstboot.get("ConditionResult") == "yes" and firstboot.get("Result") == "success",
          firstboot)  # fmt: skip
    check("first boot finished before the image load started",
          0 < monotonic_us(firstboot, "ExecMainExitTimestampMonotonic")
          <= monotonic_us(load, "ExecMainStartTimestampMonotonic"),
          (firstboot.get("ExecMainExitTimestampMonotonic"),
           load.get("ExecMainStartTimestampMonotonic")))  # fmt: skip
    check("the image load finished before the app started",
          0 < monotonic_us(load, "ExecMainExitTimestampMonotonic")
          <= monotonic_us(app, "ExecMainStartTimestampMonotonic"),
          (load.get("ExecMainExitTimestampMonotonic"),
           app.get("ExecMainStartTimestampMonotonic")))  # fmt: skip
    loaded = [line for line in r["image_load_log"] if "sesame-pi-load-image" in line]
    check("the image was loaded from the card", any("loaded /var" in ln for ln in loaded), loaded)
    log = "\n".join(r["firstboot_log"])
    check("first boot says it moved the token and config.toml",
          "moved token" in log and "moved config.toml" in log, r["firstboot_log"][-6:])  # fmt: skip
    check("the drop folder is gone from the FAT partition (mtools, from the host)",
          r["fat_after"] is None, r["fat_after"])  # fmt: skip
    fitted = OTHER_DRIVERS_ID.get(card.named_card, card.named_card)
    check(f"the image named card {card.named_card}; the one fitted, {fitted}, was chosen at boot",
          any(f"it names {fitted} now" in line for line in r.get("card_log", [])),
          r.get("card_log"))  # fmt: skip
    check("the button press placed a call on the stand-in", "call_live_at_s" in r,
          r.get("error", ""))  # fmt: skip
    check("holding the button ended it", r.get("call_ended") is True,
          {"in the call": r.get("in_call"), "after the hold": r.get("after_hold")})  # fmt: skip
    audio = r.get("call_audio") or {}
    # dmix and dsnoop stamp with the monotonic clock (a card's), where the benches' pulse plugin
    # stamps with the wall clock: the canceller's reference must be where the microphone is
    check("the echo canceller's reference lined up with the card's microphone stamps",
          audio.get("echo_frames", 0) > 0
          and audio.get("echo_ref_stale", 0) <= audio.get("echo_frames", 0) // 10,
          {k: v for k, v in audio.items() if k.startswith("echo_")})  # fmt: skip
    mode = r.get("output_mode") or {}
    if "output_mode" not in extra_config():  # "auto", the default, tried the card's dmix
        check("output_mode auto took the writer: dmix's fill level is what the card holds",
              mode.get("opened") == "writer" and (mode.get("chosen") or {}).get("mode") == "writer",
              mode)  # fmt: skip
    check.verdict()


def test_the_second_boot_skips_first_boot_and_the_image_load(boots: list[Boot], card: Card) -> None:
    r, check = checked_boot(boots[1], card)
    firstboot = r["units"]["sesame-pi-firstboot.service"]
    check("first boot was skipped (no drop folder)", firstboot.get("ConditionResult") == "no",
          firstboot)  # fmt: skip
    loaded = [line for line in r["image_load_log"] if "sesame-pi-load-image" in line]
    check("the image was not loaded again", any("already loaded" in ln for ln in loaded), loaded)
    check.verdict()


def opened_card_line(first: dict[str, Any]) -> str:
    """The card's periods and buffer as the shipped asound.conf opened them in the call, and
    the latencies PortAudio reported for the app's streams, in ms."""
    parts = []
    for direction, pcm in (first.get("opened_card") or {}).items():
        rate = pcm["rate"] or 1
        parts.append(f"{direction} periods {pcm['period_frames'] * 1000 / rate:.1f} ms, buffer "
                     f"{pcm['buffer_frames'] * 1000 / rate:.1f} ms at {rate} Hz")  # fmt: skip
    reported = first.get("portaudio_latency_ms") or {}
    parts.append(f"PortAudio reported input {reported.get('input')} ms, output "
                 f"{reported.get('output')} ms")  # fmt: skip
    return "; ".join(parts)


def test_figures(boots: list[Boot], card: Card) -> None:
    """What a person would ask of the card, as this emulated machine measured it."""
    first, second = (b.report for b in boots)
    disk_mb = card.disk.stat().st_size / 2**20
    on_disk_mb = card.disk.stat().st_blocks * 512 / 2**20
    print("\nboot figures (qemu TCG on this host, 2 vCPUs: not Pi times; memory is the guest's):")
    print(f"  power-on to idle, warm link:   first boot {first.get('idle_at_s')} s, "
          f"second boot {second.get('idle_at_s')} s")  # fmt: skip
    print(f"  power-on to call live:         {first.get('call_live_at_s')} s (first boot)")
    for name in ("idle", "call"):
        found = first["memory"].get(name)
        if found:
            print(
                f"  memory at {name:<5} ({GUEST_MB} MB guest): used {found['used_mb']} MB, "
                f"available {found['available_mb']} MB; app container "
                f"{found['app_container_mb']} MB (RSS {found['app_rss_mb']} MB), stand-in "
                f"{found['standin_container_mb']} MB"
            )
    audio = first.get("call_audio")
    if audio:
        print(f"  the call's audio on this CPU:   {audio['frames_captured']} microphone frames "
              f"through the echo canceller ({first.get('echo_engine')}), {audio['frames_shed']} "
              f"shed to keep up, {audio['input_overflows']} capture overflows, "
              f"{audio['output_underflows']} playback underflows, {audio.get('underruns', 0)} "
              "playout underruns")  # fmt: skip
        writer = {k: v for k, v in audio.items() if k.startswith(("device_", "playout_"))}
        if writer:
            print(f"  the speaker's writer at the end: {writer}")
        print(f"  hold typed to call_ended:      {first.get('hold_to_ended_s')} s "
              "(the hold itself is 2.5 s)")  # fmt: skip
        print(f"  the card as opened in the call: {opened_card_line(first)}")
        print(f"  the speaker's output mode:      {first.get('output_mode')}")
    print(f"  card image: {disk_mb:.0f} MB ({on_disk_mb:.0f} MB allocated), root {card.root_mb} MB")
    call = first["memory"].get("call")
    assert call is not None, "no memory figure during the call"
    appliance_mb = call["used_mb"] - (call["standin_container_mb"] or 0)
    share = call["available_mb"] / call["total_mb"]
    print(f"  the appliance alone in a call (used less the test's stand-in): {appliance_mb:.0f} MB "
          f"of {call['total_mb']} MB the kernel leaves; {share:.0%} still available")  # fmt: skip
    # Fits: a quarter of the memory is still available (page cache, a browser on the setup page,
    # an update's image load) while a call runs and the test's own stand-in runs beside it.
    assert share >= 0.25, f"only {call['available_mb']} of {call['total_mb']} MB available"
