"""Broken third-party packages, installed for real as distributions on sys.path, are reported by name."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from faceauth.commands.cli import run_main
from faceauth.config.registry import load_registry
from faceauth.errors import PluginError


def install_fake_distribution(site: Path, dist: str, module: str, source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real (if minimal) installed distribution: a module plus a .dist-info with an entry point."""
    (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[faceauth]\nmain = {module}\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("FACEAUTH_PLUGINS", f"faceauth,{dist}")


def test_plugin_that_fails_to_import_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    install_fake_distribution(tmp_path, "broken-import", "broken_import_mod",
                              "import a_module_that_does_not_exist\n", monkeypatch)
    with pytest.raises(PluginError, match=r"plugin broken-import 1\.2\.3 \(broken-import:main\) "
                                          r"\(entry point 'main = broken_import_mod'\) failed to import: "
                                          r"ModuleNotFoundError.*FACEAUTH_DISABLE_PLUGINS=broken-import"):
        load_registry()
    assert run_main(["--list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken-import" in err and "Traceback" not in err
    monkeypatch.setenv("FACEAUTH_DISABLE_PLUGINS", "broken-import")
    assert "resnet18" in load_registry().names("backbone")


def test_plugin_that_raises_while_registering_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_distribution(tmp_path, "raises-on-register", "raises_mod", """
        import faceauth

        @faceauth.hookimpl
        def faceauth_backbones():
            raise RuntimeError("no GPU found")
        """, monkeypatch)
    with pytest.raises(PluginError, match=r"raises-on-register 1\.2\.3 .* raised in faceauth_backbones: "
                                          r"RuntimeError: no GPU found"):
        load_registry()


def test_two_packages_claiming_one_name_are_both_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_distribution(tmp_path, "clashing-pkg", "clash_mod", """
        import faceauth
        from faceauth.components import Backbone

        @faceauth.hookimpl
        def faceauth_backbones():
            return [Backbone(name="resnet18", build=lambda: None)]
        """, monkeypatch)
    with pytest.raises(PluginError) as info:
        load_registry()
    message = str(info.value)
    assert "backbone 'resnet18' is registered twice" in message
    assert "faceauth " in message and "clashing-pkg 1.2.3" in message


def test_misspelled_hook_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_distribution(tmp_path, "typo-pkg", "typo_mod", """
        import faceauth

        @faceauth.hookimpl
        def faceauth_backbone():
            return []
        """, monkeypatch)
    with pytest.raises(PluginError, match=r"typo-pkg .*faceauth_backbone"):
        load_registry()
