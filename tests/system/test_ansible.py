"""The Ansible roles, linted and then applied for real to an arm64 Debian 13 root file system.

`make ansible-test`. The root comes from tests/system/lib/debian-rootfs.sh (debootstrap, cached);
ansible-playbook reaches it through the community.general.chroot connection, so every module runs
under qemu-user as it would on a Pi's CPU, and apt installs real arm64 packages (cached in
/var/cache/sesame-pi/apt-archives for the next run). The playbook runs in offline mode, as for an
SD image: it must install and enable everything, start nothing, converge in one run (the second
run changes nothing, and so does a --check --diff run), and never print the token.

Speed: Python under qemu-user takes 10-30 s to import Ansible's module code, so a converged run of
some 30 tasks would take over ten minutes. By default the modules' Python therefore runs as the
controller's own interpreter (x86-64, started inside the chroot through the host's dynamic loader,
with -S so no host site-packages, python3-apt above all, can be seen): the modules still see only
the arm64 root and run its arm64 programs (dpkg, apt-get, useradd, systemctl), and the apt module,
finding no python3-apt, respawns under the root's own /usr/bin/python3 as on a Pi.
SESAME_PI_ANSIBLE_PYTHON=target runs every module on the root's arm64 Python instead (slow).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sesame_pi import config as app_config
from support.credentials import make_pki, make_token, write_token

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
VENV_BIN = REPO / ".venv" / "bin"
APT_CACHE = Path(os.environ.get("SESAME_PI_CACHE", "/var/cache/sesame-pi")) / "apt-archives"
HOST = "pi-kitchen-test"
APP_UID = 10001
REFRESH_TOKEN = "AMf-test-refresh-token-kitchen"  # never printed, as the ID token
API_KEY = "AIzaSy-test-key-kitchen"
ROTATED_AT = (1796119200, 1796205600)  # when the Pi last wrote each rotated log (UTC epochs)
# What the test inventory sets, and so what the files on the root must say.
CARD = "wm8960soundcard"
SETTINGS = {
    "server": "wss://sesame.invalid/agent-service-0/v1/connect",
    "character": "Miles",
    "button_pin": 27,
    "button_pull": "up",
    "led_pin": 22,
    "timezone": "Europe/Berlin",
    "log_level": "DEBUG",
    "echo_cancel": "off",  # given as YAML's unquoted off: false
}
RECAP = re.compile(
    r"^(?P<host>\S+)\s*: ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)"
    r"\s+unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)"
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    # Every module runs under qemu: a cold run (apt installs Docker) takes many minutes.
    pytest.mark.timeout(3600),
]


PI_CMDLINE = (
    "console=serial0,115200 console=tty1 root=PARTUUID=5e5a0b07-02 rootfstype=ext4 "
    "fsck.repair=yes rootwait"
)


def _tool(name: str) -> str:
    path = VENV_BIN / name
    return str(path) if path.exists() else name


def _run(
    cmd: list[str], cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)


# ---------------------------------------------------------------------------------- lint


def test_yamllint_is_clean() -> None:
    result = _run([_tool("yamllint"), "-c", str(REPO / ".yamllint"), "-f", "parsable", "ansible"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_is_clean() -> None:
    """The production profile, offline (no Galaxy here), from the ansible directory."""
    result = _run([_tool("ansible-lint"), "--offline", "--nocolor"], cwd=ANSIBLE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Passed: 0 failure(s), 0 warning(s)" in result.stdout + result.stderr


def test_shell_helpers_pass_shellcheck() -> None:
    scripts = sorted(ANSIBLE.glob("roles/*/files/sesame-pi-*"))
    assert len(scripts) >= 2, scripts
    result = _run([_tool("shellcheck"), *map(str, scripts)])
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------- the root


@dataclass
class Run:
    """One ansible-playbook run: its arguments, output and recap counts."""

    args: list[str]
    output: str
    returncode: int
    seconds: float
    recap: dict[str, int] = field(default_factory=dict)


@dataclass
class Applied:
    root: Path
    token: str
    vault_token: str
    runs: dict[str, Run]
    fleet_logs: Path
    renewed: str  # the token the app wrote after the first run, as its refresh does
    token_after_rerun: str  # the token file after the second and the --check run
    auth_after_rerun: bool  # auth.json back after the app consumed it and the play ran again
    written_early: bool  # anything of ours on the root after the token-only run on a fresh Pi
    link_target_after: tuple[int, int]  # owner and mode of what a planted token link points at


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _unmount_all(root: Path) -> None:
    """Unmount everything below root, deepest first; lazily if something still holds it."""
    mounts = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1] == str(root) or line.split()[1].startswith(f"{root}/")
    ]
    for target in sorted(mounts, key=len, reverse=True):
        if subprocess.run(["umount", target], check=False).returncode != 0:
            subprocess.run(["umount", "-l", target], check=False)


def _share_debs(source: Path, dest: Path) -> None:
    """Hard-link (or copy) the .debs dest lacks, each under a temporary name first.

    The root gets its own archives directory rather than a bind mount of the cache, because
    apt locks that directory and other tests may be using the cache at the same time.
    """
    for deb in source.glob("*.deb"):
        target = dest / deb.name
        if target.exists():
            continue
        part = dest / f".{deb.name}.{os.getpid()}.part"
        try:
            os.link(deb, part)
        except OSError:
            shutil.copy2(deb, part)
        part.replace(target)


def _rootfs_tarball() -> Path:
    result = _run(["bash", "tests/system/lib/debian-rootfs.sh", "pi"])
    if result.returncode != 0:
        pytest.fail(f"debian-rootfs.sh pi failed:\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def _playbook(
    name: str, inventory: Path, log_dir: Path, *extra: str, playbook: str = "site.yml"
) -> Run:
    args = ["-i", str(inventory), playbook, "-e", "sesame_pi_offline=true", *extra]
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    # Time per task at the end of each log (the callback comes with the `ansible` package).
    env["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.profile_tasks"
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    start = time.monotonic()
    result = _run([_tool("ansible-playbook"), *args], cwd=ANSIBLE, env=env)
    run = Run(args, result.stdout + result.stderr, result.returncode, time.monotonic() - start)
    (log_dir / f"{name}.log").write_text(run.output)
    for line in run.output.splitlines():
        match = RECAP.match(line)
        if match and match["host"] == HOST:
            run.recap = {k: int(v) for k, v in match.groupdict().items() if k != "host"}
    recap = next((ln for ln in run.output.splitlines() if RECAP.match(ln)), "(no recap)")
    print(f"ansible {name}: {run.seconds:.0f} s, {recap.strip()}")
    return run


def _inventory(path: Path, root: Path, extra_vars: dict[str, object]) -> Path:
    """A one-host fleet: the chroot, with per-host overrides like a real inventory's."""
    host: dict[str, object] = {
        "ansible_connection": "community.general.chroot",
        "ansible_host": str(root),
        "audio_card": CARD,
        "audio_mixer_controls": [{"name": "Speaker", "value": "85%"}],
        "base_timezone": SETTINGS["timezone"],
        "sesame_pi_server_url": SETTINGS["server"],
        "sesame_pi_character": SETTINGS["character"],
        "sesame_pi_button_pin": SETTINGS["button_pin"],
        "sesame_pi_button_pull": SETTINGS["button_pull"],
        "sesame_pi_led_pin": SETTINGS["led_pin"],
        "sesame_pi_log_level": SETTINGS["log_level"],
        "sesame_pi_echo_cancel": False,
        **extra_vars,
    }
    # JSON is YAML; ansible-playbook reads it with the yaml inventory plugin.
    path.write_text(json.dumps({"sesame_pi": {"children": {"kitchen": {"hosts": {HOST: host}}}}}))
    return path


def _controller_python(root: Path, work: Path) -> str:
    """An interpreter path inside the root that starts this machine's Python (see the docstring).

    The host's / is bound read-only at /.controller; the wrapper calls the host's dynamic loader
    with the host's library directories, so nothing of the host leaks into the root's own
    programs (no LD_LIBRARY_PATH for children).
    """
    python = Path(os.path.realpath(sys._base_executable))  # the interpreter behind .venv
    libs = subprocess.run(["ldd", str(python)], capture_output=True, text=True, check=True).stdout
    dirs = {str(Path(m).parent) for m in re.findall(r"=> (/\S+)", libs)}
    dirs.add(f"/usr/lib/{sysconfig.get_config_var('MULTIARCH') or 'x86_64-linux-gnu'}")
    loader = os.path.realpath(re.findall(r"^\s*(/\S*ld-linux\S*)", libs, re.M)[0])
    mount = root / ".controller"
    mount.mkdir()
    _mount("--bind", "/", str(mount))
    _mount("--make-private", str(mount))
    _mount("-o", "remount,bind,ro", str(mount))
    wrapper = work / "controller-python"
    library_path = ":".join(f"/.controller{d}" for d in sorted(dirs))
    wrapper.write_text(
        "#!/bin/sh\n"
        f'exec /.controller{loader} --library-path {library_path} /.controller{python} -S "$@"\n'
    )
    wrapper.chmod(0o755)
    return f"/.controller{wrapper}"


def _vault_vars(path: Path, password_file: Path, value: str) -> Path:
    """A vars file holding sesame_pi_token encrypted with ansible-vault encrypt_string."""
    result = subprocess.run(
        [_tool("ansible-vault"), "encrypt_string", "--vault-password-file", str(password_file),
         "--stdin-name", "sesame_pi_token"],
        input=value, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert value not in result.stdout
    path.write_text(result.stdout)
    return path


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Applied]:
    """Apply site.yml (offline) twice, then --check --diff, then a vault token; keep the root."""
    if os.geteuid() != 0:
        pytest.skip("needs root (chroot, mounts)")
    work = tmp_path_factory.mktemp("ansible")
    logs = work / "logs"
    logs.mkdir()
    root = work / "root"
    root.mkdir()
    tarball = _rootfs_tarball()
    subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-xf", str(tarball)], check=True)
    APT_CACHE.mkdir(parents=True, exist_ok=True)
    try:
        # apt in the chroot needs a resolver and /proc.
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        _mount("-t", "proc", "proc", str(root / "proc"))
        archives = root / "var/cache/apt/archives"
        _share_debs(APT_CACHE, archives)

        python: dict[str, object] = {}
        if os.environ.get("SESAME_PI_ANSIBLE_PYTHON", "controller") != "target":
            python = {"ansible_python_interpreter": _controller_python(root, work)}

        # Raspberry Pi OS's kernel command line, as pi-gen writes it (a Debian root has none).
        firmware = root / "boot/firmware"
        firmware.mkdir(parents=True, exist_ok=True)
        (firmware / "cmdline.txt").write_text(PI_CMDLINE + "\n")
        token = make_token(exp_in_s=3600, uid="fleet-kitchen")
        token_file = write_token(work / "kitchen.token", token)
        (work / "pki").mkdir()
        ca_file = make_pki(work / "pki").ca_file  # a private server's CA, on the controller
        inventory = _inventory(
            work / "inventory.yml",
            root,
            {"sesame_pi_token_file": str(token_file), "sesame_pi_ca_file": str(ca_file), **python},
        )
        # A token-only run on a Pi never provisioned: refused in words, before anything is written.
        runs = {"token-first": _playbook("token-first", inventory, logs, "--tags", "token")}
        written_early = any((root / d).exists() for d in ("etc/sesame-pi", "var/lib/sesame-pi"))
        # The README's dry run, on a Pi never provisioned: it must run through, writing nothing.
        runs["check-fresh"] = _playbook("check-fresh", inventory, logs, "--check", "--diff")
        written_early |= any((root / d).exists() for d in ("etc/sesame-pi", "var/lib/sesame-pi"))
        runs["first"] = _playbook("first", inventory, logs, "--diff", "-v")
        _share_debs(archives, APT_CACHE)
        # The app renews its hour-long token by itself: a re-run must leave the renewed one.
        renewed = make_token(exp_in_s=3600, uid="fleet-kitchen-renewed-by-the-app")
        live_token = root / "etc/sesame-pi/token"
        write_token(live_token, renewed)
        os.chown(live_token, APP_UID, APP_UID)
        runs |= {
            "second": _playbook("second", inventory, logs, "--diff", "-v"),
            "check": _playbook("check", inventory, logs, "--check", "--diff", "-v"),
        }
        token_after_rerun = live_token.read_text()
        # Rotate the token through the vault instead, with only the token tasks (--tags token).
        vault_token = make_token(exp_in_s=7200, uid="fleet-kitchen-rotated")
        password = work / "vault-pass"
        password.write_text("test-only-vault-password\n")
        vault_inventory = _inventory(work / "inventory-vault.yml", root, python)
        vault_vars = _vault_vars(work / "vault.yml", password, vault_token)
        # ... and add renewal to a Pi deployed with an ID token alone (a refresh token, the key).
        renewal = work / "renewal.yml"
        renewal.write_text(
            f"sesame_pi_refresh_token: {REFRESH_TOKEN}\nsesame_pi_firebase_api_key: {API_KEY}\n"
        )
        runs["vault"] = _playbook(
            "vault", vault_inventory, logs, "--tags", "token", "--diff", "-v",
            "-e", f"@{vault_vars}", "-e", f"@{renewal}", "--vault-password-file", str(password),
        )  # fmt: skip
        # Neither a vault token nor a file: the token is left alone, and the play says so.
        runs["no-token"] = _playbook("no-token", vault_inventory, logs, "--tags", "token")
        # A token put there by hand, as root and readable by all: made the app's and private.
        os.chown(live_token, 0, 0)
        live_token.chmod(0o644)
        runs["by-hand"] = _playbook("by-hand", vault_inventory, logs, "--tags", "token")
        # Both: a mistake the play must refuse before touching anything.
        runs["both"] = _playbook(
            "both", inventory, logs, "--tags", "token",
            "-e", f"@{vault_vars}", "--vault-password-file", str(password),
        )  # fmt: skip
        # The app (uid 10001 owns the directory) replaces a token with a link to a system file:
        # the root run must not hand the file over (it followed the link to chown and chmod).
        refresh = root / "etc/sesame-pi/refresh_token"
        kept = refresh.read_bytes()
        (root / "not-the-apps").write_text("a system file\n")
        (root / "not-the-apps").chmod(0o644)
        refresh.unlink()
        refresh.symlink_to("/not-the-apps")
        runs["linked"] = _playbook("linked", vault_inventory, logs, "--tags", "token")
        target = (root / "not-the-apps").stat()
        link_target_after = (target.st_uid, target.st_mode & 0o7777)
        refresh.unlink()
        refresh.write_bytes(kept)
        refresh.chmod(0o600)
        os.chown(refresh, APP_UID, APP_UID)
        # An auth record: placed once as a pending login; the app consumes (deletes) it, and a
        # re-run does not put it back.
        record = write_token(work / "kitchen-auth.json", '{"stsTokenManager": {}}')
        given = ("--tags", "token", "-e", f"sesame_pi_auth_record_file={record}")
        runs["record"] = _playbook("record", vault_inventory, logs, *given)
        (root / "etc/sesame-pi/auth.pending.json").unlink()  # as the app does after signing in
        runs["record-again"] = _playbook("record-again", vault_inventory, logs, *given)
        auth_after_rerun = (root / "etc/sesame-pi/auth.pending.json").exists()
        # Two rotated event logs on the "Pi", then the fleet's log collection brings them home.
        log_dir = root / "var/log/sesame-pi"
        for name, line in (("events.jsonl", '{"event": "call_live"}'),
                           ("events.jsonl.1", '{"event": "app_started"}')):  # fmt: skip
            (log_dir / name).write_text(line + "\n")
        os.utime(log_dir / "events.jsonl.1", (ROTATED_AT[0], ROTATED_AT[0]))
        fleet_logs = work / "fleet-logs"
        collect = ("-e", f"fleet_logs_dir={fleet_logs}")
        runs["collect"] = _playbook(
            "collect", inventory, logs, *collect, playbook="collect-logs.yml"
        )
        # The Pi rotates its log: .1 becomes .2, the live one .1, and a new one begins.
        (log_dir / "events.jsonl.1").rename(log_dir / "events.jsonl.2")
        (log_dir / "events.jsonl").rename(log_dir / "events.jsonl.1")
        os.utime(log_dir / "events.jsonl.1", (ROTATED_AT[1], ROTATED_AT[1]))
        (log_dir / "events.jsonl").write_text('{"event": "call_ended"}\n')
        runs["collect-again"] = _playbook(
            "collect-again", inventory, logs, *collect, "-v", playbook="collect-logs.yml"
        )
        yield Applied(
            root, token, vault_token, runs, fleet_logs, renewed, token_after_rerun,
            auth_after_rerun, written_early, link_target_after,
        )  # fmt: skip
    finally:
        _unmount_all(root)
        still = [ln for ln in Path("/proc/self/mounts").read_text().splitlines() if str(root) in ln]
        if not still:
            subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)


def _passwd(root: Path, name: str) -> list[str]:
    for line in (root / "etc/passwd").read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    raise AssertionError(f"no user {name} in {root}/etc/passwd")


def _group(root: Path, name: str) -> list[str]:
    for line in (root / "etc/group").read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    raise AssertionError(f"no group {name} in {root}/etc/group")


def test_collect_logs_brings_every_event_log_home_and_keeps_its_history(applied: Applied) -> None:
    """Rotated copies were fetched under the Pi's names: a rotation replaced the history at home
    with the Pi's last four files, and every run fetched every file again."""
    for name in ("collect", "collect-again"):
        run = applied.runs[name]
        assert run.returncode == 0 and run.recap["failed"] == 0, run.output[-3000:]
    fetched = applied.fleet_logs / HOST
    first, second = (f"events-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(t))}.jsonl"
                     for t in ROTATED_AT)  # fmt: skip
    assert sorted(p.name for p in fetched.iterdir()) == [first, second, "events.jsonl"]
    assert (fetched / first).read_text() == '{"event": "app_started"}\n'
    assert (fetched / second).read_text() == '{"event": "call_live"}\n'
    assert (fetched / "events.jsonl").read_text() == '{"event": "call_ended"}\n'
    again = applied.runs["collect-again"].output
    assert "skipping: [" in again and "events.jsonl.2" in again, "the one fetched before is not"


def test_runs_succeed_and_converge(applied: Applied) -> None:
    """The first run changes the root; the second and a --check --diff run find nothing to do."""
    for name, run in applied.runs.items():
        if name in ("both", "collect", "token-first"):
            continue
        assert run.returncode == 0, f"{name} run failed:\n{run.output[-4000:]}"
        assert run.recap, f"{name} run printed no recap for {HOST}"
        assert run.recap["failed"] == 0 and run.recap["unreachable"] == 0, run.recap
    assert applied.runs["first"].recap["changed"] >= 10, applied.runs["first"].recap
    assert applied.runs["second"].recap["changed"] == 0, applied.runs["second"].output[-6000:]
    assert applied.runs["check"].recap["changed"] == 0, applied.runs["check"].output[-6000:]


def test_a_dry_run_on_a_pi_never_provisioned_runs_through(applied: Applied) -> None:
    """`--check --diff` before the first run (the README's way to see what a run would do): the
    units, packages and groups it would install are not there yet, and tasks that look them up
    must not fail for that (enabling a unit, the compose plugin's check, the gpio group's id)."""
    run = applied.runs["check-fresh"]
    assert run.returncode == 0 and run.recap.get("failed") == 0, run.output[-4000:]
    assert run.recap.get("changed", 0) > 0, "it says what a run would change"
    assert not applied.written_early, "a dry run writes nothing"


def test_token_never_reaches_the_output(applied: Applied) -> None:
    """no_log holds even with -v and --diff, for the controller-file token and the vault token."""
    for name, run in applied.runs.items():
        for token in (applied.token, applied.vault_token, REFRESH_TOKEN):
            for part in [token, *token.split(".")[1:]]:
                assert part not in run.output, f"a token part leaked into the {name} run's output"


def test_token_file_belongs_to_the_app_user(applied: Applied) -> None:
    path = applied.root / "etc/sesame-pi/token"
    info = path.stat()
    assert oct(info.st_mode & 0o777) == oct(0o600)
    assert info.st_uid == APP_UID and info.st_gid == APP_UID
    # The last run rotated it to the vault's token (put down, installed, recorded).
    assert path.read_text() == applied.vault_token + "\n"
    assert applied.runs["vault"].recap["changed"] == 3, applied.runs["vault"].recap
    deployed = applied.root / "var/lib/sesame-pi/deployed"
    assert deployed.stat().st_uid == 0 and oct(deployed.stat().st_mode & 0o777) == oct(0o700)
    assert (deployed / "token").read_text() == applied.vault_token + "\n"
    etc = (applied.root / "etc/sesame-pi").stat()
    assert etc.st_uid == APP_UID and oct(etc.st_mode & 0o777) == oct(0o750)
    logs = (applied.root / "var/log/sesame-pi").stat()
    assert logs.st_uid == APP_UID


def test_renewal_added_with_the_token_tag_reaches_the_app(applied: Applied) -> None:
    """A fleet deployed with ID tokens alone gets a refresh token and the API key in a
    `--tags token` run: the key went only into config.toml, which that run does not write, so
    the app could not renew. Both now lie beside the token, where the app reads them."""
    etc = applied.root / "etc/sesame-pi"
    for name, value in (("refresh_token", REFRESH_TOKEN), ("firebase_api_key", API_KEY)):
        info = (etc / name).stat()
        assert (etc / name).read_text() == value + "\n", name
        assert info.st_uid == APP_UID and oct(info.st_mode & 0o777) == oct(0o600), name


def test_a_token_put_down_by_hand_is_made_the_apps(applied: Applied) -> None:
    """As root and readable by all, the app (uid 10001) could not read it, and a token the run
    did not write kept its owner and mode for good."""
    run = applied.runs["by-hand"]
    assert run.returncode == 0 and run.recap["changed"] == 1, run.output[-3000:]
    info = (applied.root / "etc/sesame-pi/token").stat()
    assert info.st_uid == APP_UID and oct(info.st_mode & 0o777) == oct(0o600)


def test_a_token_link_the_app_planted_does_not_hand_a_system_file_over(applied: Applied) -> None:
    """`/etc/sesame-pi` is the app's to write: a link there named like a token (`refresh_token
    -> /usr/bin/sudo`, say) had the root run chown the target to the app and make it 0600."""
    run = applied.runs["linked"]
    assert run.returncode == 0, run.output[-3000:]
    assert applied.link_target_after == (0, 0o644)


def test_a_rerun_leaves_what_the_app_renewed_or_consumed(applied: Applied) -> None:
    assert applied.token_after_rerun == applied.renewed + "\n", "the app's renewed token stays"
    record, again = applied.runs["record"], applied.runs["record-again"]
    assert record.returncode == 0 and record.recap["changed"] == 3, record.output[-3000:]
    assert again.returncode == 0 and again.recap["changed"] == 0, again.output[-3000:]
    assert not applied.auth_after_rerun, "a consumed auth.json is not put back"


def test_token_is_left_alone_without_one_and_refused_twice(applied: Applied) -> None:
    no_token = applied.runs["no-token"]
    assert no_token.returncode == 0 and no_token.recap["changed"] == 0, no_token.output[-3000:]
    assert "No sesame_pi_token or sesame_pi_token_file" in no_token.output
    assert (applied.root / "etc/sesame-pi/token").read_text() == applied.vault_token + "\n"
    both = applied.runs["both"]
    assert both.returncode != 0 and both.recap["failed"] == 1, both.output[-3000:]
    assert "not both" in both.output


def test_a_token_only_run_on_a_pi_never_provisioned_says_what_to_do(applied: Applied) -> None:
    early = applied.runs["token-first"]
    assert early.returncode != 0 and early.recap["failed"] == 1, early.output[-3000:]
    assert "Run the whole play once first" in early.output, early.output[-3000:]
    assert not applied.written_early, "nothing was written before the refusal"


def test_the_kernel_command_line_turns_the_memory_cgroup_on_once(applied: Applied) -> None:
    """Raspberry Pi kernels leave it off: Docker would drop the app's memory cap. One line,
    everything pi-gen wrote kept, the flag once after three runs."""
    text = (applied.root / "boot/firmware/cmdline.txt").read_text()
    assert text == PI_CMDLINE + " cgroup_enable=memory\n", text


def test_app_user_is_in_audio_and_gpio(applied: Applied) -> None:
    user = _passwd(applied.root, "sesame")
    assert user[2:4] == [str(APP_UID), str(APP_UID)]
    assert user[6] == "/usr/sbin/nologin"
    for group in ("audio", "gpio"):
        assert "sesame" in _group(applied.root, group)[3].split(","), group


def test_udev_rule_gives_gpio_devices_to_the_group(applied: Applied) -> None:
    rule = (applied.root / "etc/udev/rules.d/60-sesame-pi-gpio.rules").read_text()
    assert 'KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"' in rule
    assert 'KERNEL=="gpiomem*", GROUP="gpio", MODE="0660"' in rule


def test_asound_conf_names_the_card_and_shares_it(applied: Applied) -> None:
    text = (applied.root / "etc/asound.conf").read_text()
    body = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    assert re.search(r"pcm\.!default\s*\{\s*type asym", body)
    assert re.search(r"type dmix\s+ipc_key \d+", body) and re.search(r"type dsnoop\s+ipc_key", body)
    assert body.count(f'pcm "hw:CARD={CARD},DEV=0"') == 2
    dsnoop = body[body.index("type dsnoop") :]
    assert re.search(r"bindings\s*\{\s*0 0\s*\}", dsnoop), "capture is one microphone, mono"
    assert f'card "{CARD}"' in body
    assert not re.search(r"hw:\d|card \d", body), "a card chosen by index"
    mixer = (applied.root / "etc/sesame-pi-mixer.conf").read_text().splitlines()
    # The WM8960's own levels (routing, amplifiers, microphone), then the inventory's, which win.
    assert "Left Output Mixer PCM=on" in mixer and "Capture=70% cap" in mixer
    assert mixer.index("Speaker=85%") > mixer.index("Speaker=90%")


def test_alsa_resolves_default_to_the_named_card(applied: Applied) -> None:
    """alsa-lib (arm64, in the root) parses the file and follows default down to the card.

    There is no sound card here, so opening must fail, and it must fail at the named card, not at
    a syntax error or an unknown PCM.
    """
    for tool, device in (("aplay", "default"), ("arecord", "default")):
        result = subprocess.run(
            ["chroot", str(applied.root), tool, "-q", "-D", device, "-d", "1", "-f", "S16_LE",
             "-r", "16000", "/dev/null"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode != 0
        assert CARD in result.stderr, result.stderr
        assert "Unknown PCM" not in result.stderr and "parse" not in result.stderr.lower()


def test_a_hat_under_its_other_drivers_id_is_chosen_at_boot(applied: Applied) -> None:
    """The mixer unit's card choice, run as the unit runs it on the root's own sh and sed (arm64):
    the inventory names wm8960soundcard, the Pi has the same HAT as seeed2micvoicec (Seeed's
    driver). /etc/asound.conf is renamed, and alsa-lib follows default down to that card."""
    root = applied.root
    unit = (root / "etc/systemd/system/sesame-pi-mixer.service").read_text()
    choice = re.search(r"\$\$\((/usr/local/sbin/sesame-pi-card [^)]*)\)", unit)
    assert choice and "Before=docker.service" in unit, unit
    argv = choice[1].split()
    assert argv[1:3] == ["/etc/asound.conf", CARD] and "seeed2micvoicec" in argv
    shipped = (root / "etc/asound.conf").read_bytes()
    (root / "tmp/proc-asound/seeed2micvoicec").mkdir(parents=True)
    try:
        chosen = subprocess.run(
            ["chroot", str(root), "env", "SESAME_PI_ASOUND_PROC=/tmp/proc-asound", *argv],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        assert chosen.stdout == "seeed2micvoicec\n", chosen.stderr
        assert "names seeed2micvoicec now" in chosen.stderr
        result = subprocess.run(
            ["chroot", str(root), "aplay", "-q", "-D", "default", "-d", "1", "/dev/null"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode != 0 and "seeed2micvoicec" in result.stderr, result.stderr
        assert CARD not in result.stderr
    finally:
        (root / "etc/asound.conf").write_bytes(shipped)
        shutil.rmtree(root / "tmp/proc-asound")


def test_app_config_has_the_inventory_values(applied: Applied, tmp_path: Path) -> None:
    """The app's own loader accepts config.toml and reads back what the inventory said."""
    path = applied.root / "etc/sesame-pi/config.toml"
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)
    assert path.stat().st_gid == APP_UID
    text = path.read_text()
    assert 'token_file = "/etc/sesame-pi/token"' in text
    assert 'ca_file = "/etc/sesame-pi/trust/ca.pem"' in text
    # The app checks that its CA file holds a certificate: read it where compose mounts it from.
    mounted = tmp_path / "config.toml"
    mounted.write_text(text.replace('"/etc/sesame-pi/', f'"{applied.root}/etc/sesame-pi/'))
    loaded = app_config.load(config_file=mounted, environ={})
    for key, value in SETTINGS.items():
        assert getattr(loaded, key) == value, key


def test_the_trusted_certificates_are_roots_beside_the_apps_files(applied: Applied) -> None:
    """The extra CA goes to trust/, a directory of root's that compose mounts read-only, never
    into the app's own writable directory (where the app could replace it)."""
    trust = applied.root / "etc/sesame-pi/trust"
    ca = trust / "ca.pem"
    assert (trust.stat().st_uid, oct(trust.stat().st_mode & 0o777)) == (0, oct(0o755))
    assert (ca.stat().st_uid, ca.stat().st_gid, oct(ca.stat().st_mode & 0o777)) == (
        0, 0, oct(0o644)
    )  # fmt: skip
    assert b"BEGIN CERTIFICATE" in ca.read_bytes()
    assert not (applied.root / "etc/sesame-pi/ca.pem").exists()  # nothing the app could swap


def test_compose_project_and_env(applied: Applied) -> None:
    project = applied.root / "opt/sesame-pi"
    assert (project / "compose.yaml").read_bytes() == (REPO / "app/compose.yaml").read_bytes()
    env = dict(
        line.split("=", 1)
        for line in (project / ".env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["SESAME_PI_ETC"] == "/etc/sesame-pi"
    assert env["SESAME_PI_LOGS"] == "/var/log/sesame-pi"
    assert env["SESAME_PI_IMAGE"] == "sesame-pi:latest"
    assert env["AUDIO_GID"] == _group(applied.root, "audio")[2]
    assert env["GPIO_GID"] == _group(applied.root, "gpio")[2]
    # the speaker opens dmix's own two channels: no route plugin between the app and dmix
    assert env["SESAME_PI_OUTPUT_CHANNELS"] == "2"


def test_services_are_enabled_at_boot(applied: Applied) -> None:
    wants = applied.root / "etc/systemd/system/multi-user.target.wants"
    for unit in ("docker.service", "sesame-pi.service", "sesame-pi-image-load.service",
                 "sesame-pi-mixer.service", "avahi-daemon.service"):  # fmt: skip
        link = wants / unit
        assert link.is_symlink(), f"{unit} is not enabled"
        target = os.readlink(link)
        assert target.endswith(f"/{unit}") and (applied.root / target.lstrip("/")).is_file()
    unit = (applied.root / "etc/systemd/system/sesame-pi.service").read_text()
    assert "ExecStart=/usr/bin/docker compose up" in unit
    assert "WorkingDirectory=/opt/sesame-pi" in unit
    assert (applied.root / "usr/libexec/docker/cli-plugins/docker-compose").is_file()


def test_the_engine_has_no_default_bridge(applied: Applied) -> None:
    """The app uses the host's network; docker0 would only add NAT rules and a 172.17/16 route."""
    daemon = applied.root / "etc/docker/daemon.json"
    assert json.loads(daemon.read_text()) == {"bridge": "none"}
    assert stat.S_IMODE(daemon.stat().st_mode) == 0o644


def test_units_pass_systemd_analyze(applied: Applied) -> None:
    """systemd in the root itself checks the units' syntax and that every ExecStart exists."""
    units = ["sesame-pi.service", "sesame-pi-image-load.service", "sesame-pi-mixer.service"]
    result = subprocess.run(
        ["chroot", str(applied.root), "systemd-analyze", "verify", "--man=no",
         *(f"/etc/systemd/system/{unit}" for unit in units)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    problems = [
        line
        for line in result.stderr.splitlines()
        if any(unit in line for unit in units) and "ConditionPathExists" not in line
    ]
    assert not problems, result.stderr


def test_offline_mode_started_nothing(applied: Applied) -> None:
    """No process (dockerd, containerd, udevd) runs inside the root after the runs."""
    inside = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.readlink(proc / "root") == str(applied.root):
                inside.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    assert not inside, inside
