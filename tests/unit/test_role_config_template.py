"""The sesame_pi role's config.toml, rendered by Ansible's own templating on the role's defaults:
the paths in it are the app's, inside the container, whatever host directory holds them."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import ansible.template as templating
import yaml

from sesame_pi import config as app_config

ROLE = Path(__file__).resolve().parents[2] / "ansible/roles/sesame_pi"


def render(tmp_path: Path, **overrides: Any) -> Path:
    from ansible.parsing.dataloader import DataLoader

    trust = getattr(templating, "trust_as_template", lambda text: text)  # (ansible-core 2.19+)
    variables = {
        **yaml.safe_load((ROLE / "defaults/main.yml").read_text()),
        **yaml.safe_load((ROLE / "vars/main.yml").read_text()),
        "ansible_managed": "managed by Ansible",
        "playbook_dir": str(ROLE.parents[1]),
        "base_timezone": "UTC",
        **overrides,
    }
    # As Ansible loads a role's vars files: their values are templates too (derived values such
    # as sesame_pi_refresh_given are evaluated, not taken as non-empty strings).
    variables = {k: trust(v) if isinstance(v, str) else v for k, v in variables.items()}
    templar = templating.Templar(loader=DataLoader(), variables=variables)
    path = tmp_path / "config.toml"
    path.write_text(templar.template(trust((ROLE / "templates/config.toml.j2").read_text())))
    return path


def test_the_paths_are_the_containers_whatever_the_host_directory(tmp_path: Path) -> None:
    """A fleet that keeps its secrets in /srv/sesame-pi: compose mounts that directory at
    /etc/sesame-pi, so config.toml must name /etc/sesame-pi. (It named the host's directory, a
    path the container does not have: every Pi waited for a token it held, and the rollout's
    check passed, the app being up and well in `needs_token`.)"""
    path = render(
        tmp_path,
        sesame_pi_etc_dir="/srv/sesame-pi",
        sesame_pi_refresh_token="AMf-a-refresh-token-0123456789",
        sesame_pi_firebase_api_key="AIzaSyTestKey-0123456789abcdef",
        sesame_pi_ca_file="files/fleet-ca.pem",
    )
    settings = tomllib.loads(path.read_text())
    assert settings["token_file"] == "/etc/sesame-pi/token"
    assert settings["refresh_token_file"] == "/etc/sesame-pi/refresh_token"
    assert settings["ca_file"] == "/etc/sesame-pi/trust/ca.pem"  # the read-only mount
    assert "/srv/sesame-pi" not in path.read_text()
    known = {item.name for item in app_config.schema()}
    assert set(settings) <= known, "every key is one the app knows"
    assert settings["timezone"] == "UTC"


def test_no_refresh_token_file_without_a_refresh_token(tmp_path: Path) -> None:
    settings = tomllib.loads(render(tmp_path).read_text())
    assert settings["token_file"] == "/etc/sesame-pi/token"
    assert "refresh_token_file" not in settings and "firebase_api_key" not in settings
