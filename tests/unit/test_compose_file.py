"""The compose file every Pi runs, read as Compose reads it: what it lets the container do. The
boot test checks the same on the running container (HostConfig); the pull policy lives only here,
in Compose, so it is checked here."""

from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "app/compose.yaml"


def service() -> dict[str, object]:
    spec = yaml.safe_load(COMPOSE.read_text())
    (app,) = spec["services"].values()
    assert isinstance(app, dict)
    return app


def test_the_image_is_never_pulled_from_a_registry() -> None:
    """The image comes from the tarball the loader brings. With the image missing (a failed
    load, a renamed `sesame_pi_image`), Compose would otherwise pull whatever a registry holds
    under that name and run it with the sound card and the GPIO chip."""
    assert service()["pull_policy"] == "never"


def test_the_container_gets_only_what_the_app_needs() -> None:
    app = service()
    assert app.get("privileged") in (None, False)
    assert app["cap_drop"] == ["ALL"] and "cap_add" not in app
    assert app["read_only"] is True
    assert "no-new-privileges:true" in app["security_opt"]  # type: ignore[operator]
    assert app["devices"] == ["/dev/snd:/dev/snd", "/dev/gpiochip0:/dev/gpiochip0"]
    assert "user" not in app, "the image's own unprivileged user (10001), not one set here"


def test_the_settings_are_read_only_to_the_app_in_its_writable_directory() -> None:
    """The app writes its token files in /etc/sesame-pi, so the directory is writable; its
    config.toml, mounted read-only after it, cannot be written or renamed over from inside."""
    volumes = service()["volumes"]
    assert isinstance(volumes, list)
    directory = volumes.index("${SESAME_PI_ETC:-/etc/sesame-pi}:/etc/sesame-pi")
    (settings,) = [v for v in volumes if isinstance(v, dict)]
    assert settings == {
        "type": "bind",
        "source": "${SESAME_PI_ETC:-/etc/sesame-pi}/config.toml",
        "target": "/etc/sesame-pi/config.toml",
        "read_only": True,
        "bind": {"create_host_path": False},
    }
    assert volumes.index(settings) > directory


def test_the_trusted_certificates_are_read_only_to_the_app() -> None:
    """The extra CAs (`ca_file`, the role's trust/ca.pem) sit in a directory of root's mounted
    read-only on top of the app's writable one: in the writable directory the app could rename a
    file of its own over ca.pem, and a compromised app would trust a server of its choosing
    from the next start on."""
    volumes = service()["volumes"]
    assert isinstance(volumes, list)
    directory = volumes.index("${SESAME_PI_ETC:-/etc/sesame-pi}:/etc/sesame-pi")
    trust = volumes.index("${SESAME_PI_ETC:-/etc/sesame-pi}/trust:/etc/sesame-pi/trust:ro")
    assert trust > directory
