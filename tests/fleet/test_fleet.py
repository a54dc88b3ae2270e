"""`hfguard fleet` on a real local Ray (2 CPUs) against the fake Hub: every verdict equals the
single-repo `check` verdict; a run killed mid-way and rerun completes with no duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("ray")

from hfguard.cli import main  # noqa: E402
from hfguard.hub.check import check_repo  # noqa: E402
from hfguard.policy import Policy  # noqa: E402
from testing.fakehub.builders import os_system_pickle, safetensors_bytes, torch_zip_bytes  # noqa: E402
from tests.hub.conftest import REPO_ROOT, hub  # noqa: E402,F401 - the fake-Hub fixture

pytestmark = pytest.mark.slow


def populate(hub, mark: Path) -> list[str]:  # noqa: F811
    """50 repos: clean, malicious, gated, failing, look-alike."""
    specs = []
    for i in range(36):
        sha = hub.add_repo(f"acme/clean-{i}", {"model.safetensors": safetensors_bytes(64),
                                              "config.json": b'{"model_type": "bert"}'})
        specs.append(f"acme/clean-{i}@{sha}" if i % 2 else f"acme/clean-{i}")   # pinned and branch refs
    for i in range(6):
        evil = torch_zip_bytes(os_system_pickle(f"touch {mark}"))
        hub.add_repo(f"evil/model-{i}", {"pytorch_model.bin": evil})
        specs.append(f"evil/model-{i}")
    for i in range(3):
        hub.add_repo(f"gated/model-{i}", {"model.safetensors": safetensors_bytes(64)}, gated="manual")
        specs.append(f"gated/model-{i}")
    for i in range(3):
        hub.add_repo(f"flaky/model-{i}", {"model.safetensors": safetensors_bytes(64)})
        hub.fail(f"/api/models/flaky/model-{i}", status=500, times=-1)
        specs.append(f"flaky/model-{i}")
    hub.add_repo("sentence-transfomers/all-MiniLM-L6-v2", {"model.safetensors": safetensors_bytes(64)})
    specs.append("sentence-transfomers/all-MiniLM-L6-v2")
    specs.append("nobody/missing-model")
    return specs


def results(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_fleet_verdicts_equal_single_checks_and_a_rerun_skips_everything(hub, tmp_path):  # noqa: F811
    specs = populate(hub, tmp_path / "mark")
    assert len(specs) == 50
    (tmp_path / "repos.txt").write_text("# fleet\n" + "\n".join(specs) + "\n")
    out = tmp_path / "out"
    runner = CliRunner()
    args = ["fleet", str(tmp_path / "repos.txt"), "-o", str(out), "-q", "--format", "json"]
    result = runner.invoke(main, [*args, "--num-cpus", "2"], catch_exceptions=False)
    summary = json.loads(result.stdout)
    assert result.exit_code == 2                          # gated / failing repos: the fleet has ERRORs
    assert summary["vetted"] == 50 and summary["skipped"] == 0 and summary["ray_cpus"] == 2
    docs = {d["fleet"]["spec"]: d for d in results(out)}
    assert set(docs) == set(specs)
    for spec in specs:
        single = check_repo(spec, Policy(), use_cache=False)
        assert docs[spec]["verdict"] == str(single.verdict), spec
    assert summary["verdicts"]["BLOCK"] >= 7 and summary["verdicts"]["ERROR"] >= 7
    assert not (tmp_path / "mark").exists()
    again = runner.invoke(main, args)
    rerun = json.loads(again.stdout)
    errors = summary["verdicts"]["ERROR"]
    assert rerun["skipped"] == 50 - errors               # only ERRORs are tried again
    assert len(results(out)) == 50


def test_a_killed_fleet_resumes_without_losing_or_duplicating(hub, tmp_path):  # noqa: F811
    errors = ("gated/", "flaky/", "nobody/")
    specs = [s for s in populate(hub, tmp_path / "mark") if not s.startswith(errors)]
    (tmp_path / "repos.txt").write_text("\n".join(specs) + "\n")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items()}
    args = ["fleet", str(tmp_path / "repos.txt"), "-o", str(out), "--num-cpus", "2", "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "hfguard", *args], cwd=REPO_ROOT, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            path = out / "results.jsonl"
            if path.exists() and len(path.read_text().splitlines()) >= 5:
                break
            assert proc.poll() is None, "the fleet ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("no results within 120 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)             # the driver and its Ray processes
        proc.wait()
    lines = (out / "results.jsonl").read_text().splitlines()
    done_before = len({json.loads(x)["fleet"]["spec"] for x in lines if x.strip().endswith("}")})
    assert 5 <= done_before < len(specs)
    result = CliRunner().invoke(main, [*args, "--format", "json"], catch_exceptions=False)
    summary = json.loads(result.stdout)
    assert summary["skipped"] >= done_before and summary["vetted"] == len(specs)
    lines = results(out)
    assert len(lines) == len(specs) == len({d["fleet"]["spec"] for d in lines})


def test_fleet_html_is_a_sortable_table(tmp_path):
    from hfguard.fleet.results import ResultStore

    store = ResultStore.open(tmp_path)
    for i, verdict in enumerate(["PASS", "BLOCK", "ERROR"]):
        store.append({"target": f"o/m{i}", "verdict": verdict, "revision": "a" * 40, "findings": [],
                      "files": [], "fleet": {"spec": f"o/m{i}<script>", "stamp": "s", "seconds": 0.1}})
    from hfguard.report.fleet_html import render_fleet

    page = render_fleet(tmp_path)
    body = page.split("</section>")[0]
    assert "class=sortable" in page and "o/m1&lt;script&gt;" in body and "<script>" not in body


def test_a_rate_limited_repo_slows_the_fleet_instead_of_failing_it(hub, tmp_path, monkeypatch):  # noqa: F811
    """429 + Retry-After on every try of the first attempt: the repo ends rate-limited, goes back in
    the queue, and is vetted when the Hub lets it through."""
    monkeypatch.setenv("HFGUARD_HUB_RETRIES", "2")
    specs = []
    for i in range(3):
        hub.add_repo(f"acme/m{i}", {"model.safetensors": safetensors_bytes(64)})
        specs.append(f"acme/m{i}")
    hub.fail("/api/models/acme/m1", status=429, times=2, headers={"Retry-After": "0"})
    (tmp_path / "repos.txt").write_text("\n".join(specs) + "\n")
    result = CliRunner().invoke(main, ["fleet", str(tmp_path / "repos.txt"), "-o", str(tmp_path / "out"),
                                       "--num-cpus", "2", "-q", "--format", "json"], catch_exceptions=False)
    summary = json.loads(result.stdout)
    assert result.exit_code == 0, result.stdout
    assert summary["verdicts"] == {"PASS": 3}
    assert len(hub.requests("GET /api/models/acme/m1")) >= 3     # two 429s, then the requeued try
