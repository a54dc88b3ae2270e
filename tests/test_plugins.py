"""Check plugins: a distribution registers a Check class under the `hfguard.checks` entry point
group. The list of entry points is cached between runs (hfguard.checks.plugin_refs); installing or
removing a distribution must show at the next run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
from hfguard.checks import Check


class ExtraCheck(Check):
    id = "plugin.extra"
    tier = "static"
    description = "a third-party check"
'''


def _list_checks(site: Path, cache: Path) -> str:
    env = {**os.environ, "HFGUARD_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)])}
    proc = subprocess.run([sys.executable, "-m", "hfguard", "checks"], capture_output=True, text=True,
                          env=env, cwd=str(site), timeout=60, check=True)
    return proc.stdout


def _install(site: Path, dist: str, entry_points: str) -> None:
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_a_plugin_installed_after_a_cached_run_is_loaded_and_one_removed_is_gone(tmp_path):
    site, cache = tmp_path / "site", tmp_path / "cache"
    site.mkdir()
    (site / "extra_plugin.py").write_text(PLUGIN)
    first = _list_checks(site, cache)
    assert "static.serialization" in first and "plugin.extra" not in first
    assert list((cache / "plugins").glob("*.json"))   # the listing was cached

    _install(site, "extra_plugin", "[hfguard.checks]\nextra = extra_plugin:ExtraCheck\n")
    assert "plugin.extra" in _list_checks(site, cache)
    assert "plugin.extra" in _list_checks(site, cache)   # from the cache, still there

    for f in (site / "extra_plugin-1.0.dist-info").iterdir():
        f.unlink()
    (site / "extra_plugin-1.0.dist-info").rmdir()   # (a run takes far longer than a timestamp tick)
    assert "plugin.extra" not in _list_checks(site, cache)


def test_a_plugin_that_fails_to_load_is_an_error(tmp_path):
    site, cache = tmp_path / "site", tmp_path / "cache"
    site.mkdir()
    _install(site, "broken_plugin", "[hfguard.checks]\nbroken = no_such_module_here:Check\n")
    env = {**os.environ, "HFGUARD_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)])}
    proc = subprocess.run([sys.executable, "-m", "hfguard", "checks"], capture_output=True, text=True,
                          env=env, cwd=str(site), timeout=60)
    assert proc.returncode == 2 and "no_such_module_here" in proc.stderr


def test_files_coming_and_going_beside_the_distributions_keep_the_cache(tmp_path):
    site, cache = tmp_path / "site", tmp_path / "cache"
    site.mkdir()
    _install(site, "extra_plugin", "[hfguard.checks]\nextra = extra_plugin:ExtraCheck\n")
    (site / "extra_plugin.py").write_text(PLUGIN)
    env = {**os.environ, "HFGUARD_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)])}
    code = ("import sys\nfrom hfguard.checks import plugin_refs\n"
            "print(plugin_refs(), 'importlib.metadata' in sys.modules)")

    def refs() -> str:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                              cwd=str(site), timeout=60, check=True).stdout.strip()

    assert refs() == "['extra_plugin:ExtraCheck'] True"   # listed, then cached
    (site / "notes.txt").write_text("an editor's swap file")   # the folder's mtime changes
    assert refs() == "['extra_plugin:ExtraCheck'] False"   # its distributions did not: cached
