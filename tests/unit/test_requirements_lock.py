"""The appliance image's pins (app/requirements.lock) against the ranges in pyproject.toml."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from support.requirements_lock import LOCK, locked_versions

# The image: Debian 13's Python on a 64-bit Pi (the armv7 build takes the same pins it can use).
IMAGE_ENVIRONMENT = {"platform_machine": "aarch64", "python_version": "3.13"}


def image_requirements() -> list[Requirement]:
    project = tomllib.loads((LOCK.parent / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(text) for text in project["dependencies"]]
    wanted += [Requirement(text) for text in project["optional-dependencies"]["pi"]]
    return [r for r in wanted if r.marker is None or r.marker.evaluate(IMAGE_ENVIRONMENT)]


def test_every_library_the_image_installs_is_pinned_inside_its_range() -> None:
    """A range moved in pyproject.toml without its pin would make the image's pip fail (or a
    pin outside the range would): the lock and the ranges move together."""
    locked = locked_versions()
    assert locked, "an empty lock pins nothing"
    for requirement in image_requirements():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is installed in the image but not pinned"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{requirement.name}=={locked[name]} is outside pyproject.toml's {requirement}"
        )
