"""``telethon-guard --version``: the version from the installed package's metadata."""

from __future__ import annotations

from importlib import metadata

from tests.cli.conftest import run_cli


def test_version_comes_from_the_package_metadata() -> None:
    proc = run_cli("--version", timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"telethon-guard {metadata.version('telethon-guard')}"
