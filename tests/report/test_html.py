"""The HTML report: self-contained, escaped, and working in a real headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from hfguard.cli import main
from hfguard.findings import Finding, Report, Severity, Verdict, plot_evidence
from hfguard.policy import Policy
from hfguard.report.html import render_page, render_report

HOSTILE = '<img src=x onerror="document.title=\'pwned\'">'


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install chromium (Debian package) for the browser tests")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return exe


def dump_dom(page: Path) -> str:
    """The DOM after the page's scripts ran, in a real headless Chromium."""
    out = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                          "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def probe(html: str) -> str:
    """The page with a watcher in front of everything: script errors and CSP violations are recorded
    in the DOM; then the first sortable table is sorted by its first column twice."""
    watcher = ("<script>window.__errors=[];window.addEventListener('error',function(e){__errors.push("
               "String(e.message))});document.addEventListener('securitypolicyviolation',function(e){"
               "__errors.push('csp:'+e.violatedDirective)});</script>")
    after = ("<script>var th=document.querySelector('table.sortable th');th.click();th.click();"
             "document.body.setAttribute('data-errors',JSON.stringify(__errors));"
             "document.body.setAttribute('data-title',document.title);"
             "document.body.setAttribute('data-svgs',"
             "document.querySelectorAll('svg polyline,svg rect').length);"
             "</script>")
    return html.replace("<head>", "<head>" + watcher, 1).replace("</body>", after + "</body>", 1)


def _report_with_plots() -> Report:
    roc = plot_evidence("roc", "membership ROC", [
        {"name": "model", "x": [0, 0.01, 0.1, 0.5, 1], "y": [0, 0.4, 0.8, 0.95, 1]},
        {"name": "reference", "x": [0, 0.01, 0.1, 0.5, 1], "y": [0, 0.02, 0.15, 0.55, 1]}],
        x_label="false positive rate", y_label="true positive rate")
    bars = plot_evidence("bar", "robust z per layer",
                         [{"name": "log std", "x": [f"layer.{i}" for i in range(6)],
                           "y": [0.3, -0.5, 9.2, 0.1, 0.7, -1.2]}], threshold=6.0)
    report = Report(target=f"acme/{HOSTILE}", source="local", verdict=Verdict.BLOCK)
    report.findings = [
        Finding(check="behavior.privacy_backdoor", rule="privacy/membership-amplification",
                severity=Severity.HIGH, message=f"AUC 0.90 vs 0.65 {HOSTILE}", evidence={"plot": roc},
                remediation="do not fine-tune this model on private data"),
        Finding(check="weights.anomalies", rule="weights/layer-outlier", severity=Severity.MEDIUM,
                message="layer 2 rescaled", evidence={"plot": bars}),
        Finding(check="x", rule="x/broken-plot", severity=Severity.INFO,
                message="bad plot data is skipped",
                evidence={"plot": {"kind": "line", "series": [{"x": [1, "a"], "y": [float("nan")]}]}}),
    ]
    return report


def test_page_is_self_contained_and_escapes_everything():
    page = render_page("t", [render_report(_report_with_plots(), Policy())])
    assert HOSTILE not in page and "&lt;img src=x" in page
    # nothing that would reach the network at view time
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert page.count("<svg") == 2     # the broken plot is left out, not an exception


def test_plots_render_and_sorting_works_in_chromium(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(probe(render_page("t", [render_report(_report_with_plots(), Policy())])))
    dom = dump_dom(page)
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-errors="[]"' in body, body
    assert 'data-title="t"' in body                 # the hostile onerror never ran
    svgs = int(re.search(r'data-svgs="(\d+)"', body).group(1))
    assert svgs >= 2 + 6                            # two ROC polylines, six bars (and threshold lines)


def test_cli_html_for_a_malicious_folder(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / f"{HOSTILE}.pkl").write_bytes(b"cos\nsystem\n(S'echo x'\ntR.")
    (model / "config.json").write_text("{}")
    out = tmp_path / "r.html"
    result = CliRunner().invoke(main, ["scan", str(model), "--format", "html", "-o", str(out), "-q"])
    assert result.exit_code == 1
    html = out.read_text()
    assert "BLOCK" in html and "pickle/dangerous-global" in html and HOSTILE not in html
    page = tmp_path / "probe.html"
    page.write_text(probe(html))
    body = re.search(r"<body([^>]*)>", dump_dom(page)).group(1)
    assert 'data-errors="[]"' in body and "pwned" not in body
