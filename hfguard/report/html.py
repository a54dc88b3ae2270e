"""One self-contained HTML file: the verdict first, then the findings with what to do, then the
figures a person would rather look at than read.

Nothing is fetched at view time (inline CSS, inline SVG, a few lines of inline JS to sort tables).
Every string from a report is escaped (`html.escape`); none is ever inserted as markup. Plots come
from findings whose evidence carries a `plot` (see `hfguard.findings.plot_evidence`):

    {"kind": "bar" | "line" | "roc", "title": str, "x_label": str, "y_label": str,
     "series": [{"name": str, "x": [..], "y": [..]}], "threshold": float | None}
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from hfguard.findings import MAX_PLOT_POINTS, Finding, Report, Verdict
from hfguard.policy import Policy
from hfguard.units import human_bytes

_VERDICT_COLOUR = {Verdict.PASS: "#1a7f37", Verdict.FLAG: "#9a6700", Verdict.BLOCK: "#cf222e",
                   Verdict.ERROR: "#8250df"}
_SEVERITY_COLOUR = {"critical": "#a40e26", "high": "#cf222e", "medium": "#9a6700", "low": "#0969da",
                    "info": "#6e7781"}
_SERIES_COLOURS = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#9a6700", "#6e7781")

# inlined into every page (no network at view time); the JS sorts tables by their headers
_ASSETS = Path(__file__).parent
_CSS = (_ASSETS / "report.css").read_text(encoding="utf-8")
_JS = (_ASSETS / "report.js").read_text(encoding="utf-8")


def e(value: Any) -> str:
    """Escaped text: data from a scanned model or a server never becomes markup."""
    return html.escape(str(value), quote=True)


def write_html(report: Report, out: TextIO, policy: Policy) -> None:
    out.write(render_page(f"hfguard: {report.target}", [render_report(report, policy)]))


def render_page(title: str, sections: Iterable[str]) -> str:
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
            f"<title>{e(title)}</title><style>{_CSS}</style></head><body>"
            + "".join(sections) + f"<script>{_JS}</script></body></html>\n")


def render_report(report: Report, policy: Policy) -> str:
    findings = sorted(report.all_findings(), key=lambda f: -int(policy.effective_severity(f)))
    rev = f" @ <code>{e(report.revision)}</code>" if report.revision else ""
    parts = [f"<h1>hfguard: {e(report.target)}{rev}</h1>",
             f"<p><span class=verdict style=\"background:{_VERDICT_COLOUR[report.verdict]}\">"
             f"{e(report.verdict)}</span> <span class=meta>{len(report.files)} files, "
             f"{len(findings)} findings"
             f"{_seconds(report)}</span></p>"]
    reasons = [f for f in findings if not policy.is_suppressed(f) and
               (f.error or policy.effective_severity(f) >= policy.flag_at)]
    if reasons:
        parts.append("<h2>Why</h2><ul>" + "".join(
            f"<li><b>{e(f.rule)}</b>: {e(f.message)}"
            + (f"<div class=remedy>What to do: {e(f.remediation)}</div>" if f.remediation else "") + "</li>"
            for f in reasons[:20]) + "</ul>")
    plots = [_figure(f.evidence["plot"]) for f in findings if isinstance(f.evidence.get("plot"), dict)]
    plots = [p for p in plots if p]
    if plots:
        parts.append("<h2>Figures</h2>" + "".join(plots))
    if findings:
        parts.append("<h2>Findings</h2>" + _findings_table(findings, policy))
    if report.files:
        parts.append("<h2>Files</h2><table class=sortable><thead><tr><th>file</th><th>format</th>"
                     "<th>size</th><th>verdict</th><th>sha256</th></tr></thead><tbody>" + "".join(
                         f"<tr><td><code>{e(fr.path)}</code></td><td>{e(fr.format)}</td>"
                         f"<td class=num data-v=\"{fr.size or 0}\">{e(human_bytes(fr.size or 0))}</td>"
                         f"<td>{e(fr.verdict)}</td><td><code>{e(fr.sha256 or '')}</code></td></tr>"
                         for fr in report.files) + "</tbody></table>")
    return "<section>" + "".join(parts) + "</section>"


def _seconds(report: Report) -> str:
    s = report.stats.get("seconds")
    return f", {s} s" if isinstance(s, int | float) else ""


def _findings_table(findings: list[Finding], policy: Policy) -> str:
    rows = []
    for f in findings:
        sev = str(policy.effective_severity(f))
        tag = " (suppressed)" if policy.is_suppressed(f) else (" (error)" if f.error else "")
        evidence = {k: v for k, v in f.evidence.items() if k != "plot"}
        rows.append(
            f"<tr><td class=sev data-v=\"{int(policy.effective_severity(f))}\" style=\"color:"
            f"{_SEVERITY_COLOUR.get(sev, '#000')}\">{e(sev)}{e(tag)}</td>"
            f"<td class=rule><code>{e(f.rule)}</code></td>"
            f"<td><code>{e(f.file or '-')}</code></td><td>{e(f.location or '-')}</td>"
            f"<td>{e(f.message)}" + (f"<div class=remedy>{e(f.remediation)}</div>" if f.remediation else "")
            + (f"<details><summary>evidence</summary><code>{e(_short_json(evidence))}</code></details>"
               if evidence else "") + "</td></tr>")
    return ("<table class=sortable><thead><tr><th>severity</th><th>rule</th><th>file</th><th>location</th>"
            "<th>message</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _short_json(value: Any, limit: int = 4000) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + " …"


# -- plots: inline SVG ----------------------------------------------------------------------------
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 480, 260, 52, 12, 10, 40


def _numbers(values: Any) -> list[float] | None:
    if not isinstance(values, list) or not values or len(values) > MAX_PLOT_POINTS:
        return None
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(v) for v in out) else None


def _figure(plot: dict[str, Any]) -> str:
    """One SVG figure, or '' when the plot's data is not usable (never raise on report data)."""
    kind = plot.get("kind")
    series = []
    for s in plot.get("series", [])[:6] if isinstance(plot.get("series"), list) else []:
        if not isinstance(s, dict):
            continue
        y = _numbers(s.get("y"))
        x = _numbers(s.get("x")) if kind != "bar" else list(range(len(y or [])))
        if y and x and len(x) == len(y):
            labels = s.get("x") if kind == "bar" and isinstance(s.get("x"), list) else None
            series.append((str(s.get("name", "")), x, y, labels))
    if not series or kind not in ("bar", "line", "roc"):
        return ""
    xs = [v for _, x, _, _ in series for v in x]
    ys = [v for _, _, y, _ in series for v in y]
    threshold = plot.get("threshold")
    if isinstance(threshold, int | float) and math.isfinite(threshold):
        ys.append(float(threshold))
    else:
        threshold = None
    x0, x1 = (0.0, 1.0) if kind == "roc" else (min(xs), max(xs))
    y0, y1 = (0.0, 1.0) if kind == "roc" else (min(0.0, min(ys)), max(ys))
    if kind == "bar":
        x0, x1 = -0.5, len(series[0][2]) - 0.5
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def sx(v: float) -> float:
        return PAD_L + (v - x0) / (x1 - x0) * (W - PAD_L - PAD_R)

    def sy(v: float) -> float:
        return H - PAD_B - (v - y0) / (y1 - y0) * (H - PAD_T - PAD_B)

    g = [f"<line x1={PAD_L} y1={H - PAD_B} x2={W - PAD_R} y2={H - PAD_B} stroke=#57606a />",
         f"<line x1={PAD_L} y1={PAD_T} x2={PAD_L} y2={H - PAD_B} stroke=#57606a />"]
    for v in (y0, (y0 + y1) / 2, y1):
        g.append(f"<text x={PAD_L - 4} y={sy(v) + 4:.1f} text-anchor=end>{e(_tick(v))}</text>")
    if kind != "bar":
        for v in (x0, (x0 + x1) / 2, x1):
            g.append(f"<text x={sx(v):.1f} y={H - PAD_B + 14} text-anchor=middle>{e(_tick(v))}</text>")
    if kind == "roc":
        g.append(f"<line x1={sx(0):.1f} y1={sy(0):.1f} x2={sx(1):.1f} y2={sy(1):.1f} stroke=#d0d7de "
                 "stroke-dasharray=4 />")
    if threshold is not None:
        g.append(f"<line x1={PAD_L} y1={sy(threshold):.1f} x2={W - PAD_R} y2={sy(threshold):.1f} "
                 f"stroke=#cf222e stroke-dasharray=5,3 /><text x={W - PAD_R} y={sy(threshold) - 3:.1f} "
                 f"text-anchor=end>threshold {e(_tick(threshold))}</text>")
    legend = []
    for i, (name, x, y, labels) in enumerate(series):
        colour = _SERIES_COLOURS[i % len(_SERIES_COLOURS)]
        if kind == "bar":
            width = max(1.0, (W - PAD_L - PAD_R) / max(1, len(y)) * 0.8)
            for j, v in enumerate(y):
                top, base = sy(max(v, 0.0)), sy(min(v, 0.0))
                tip = e(f"{labels[j] if labels and j < len(labels) else j}: {v:.4g}")
                g.append(f"<rect x={sx(j) - width / 2:.1f} y={top:.1f} width={width:.1f} "
                         f"height={max(0.5, base - top):.1f} fill={colour}><title>{tip}</title></rect>")
        else:
            pts = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in zip(x, y, strict=True))
            g.append(f"<polyline points=\"{pts}\" fill=none stroke={colour} stroke-width=1.8 />")
        legend.append(f"<tspan fill={colour}>■</tspan> {e(name)}")
    g.append(f"<text x={(W + PAD_L) / 2:.0f} y={H - 6} text-anchor=middle>"
             f"{e(plot.get('x_label', ''))}</text>")
    g.append(f"<text x=12 y={(H - PAD_B) / 2:.0f} transform=\"rotate(-90 12 {(H - PAD_B) / 2:.0f})\" "
             f"text-anchor=middle>{e(plot.get('y_label', ''))}</text>")
    caption = e(plot.get("title", ""))
    return (f"<figure><figcaption>{caption}</figcaption><svg xmlns=http://www.w3.org/2000/svg width={W} "
            f"height={H} viewBox=\"0 0 {W} {H}\" role=img aria-label=\"{caption}\">" + "".join(g)
            + f"</svg><div class=meta>{' &nbsp; '.join(legend)}</div></figure>")


def _tick(v: float) -> str:
    return f"{v:.3g}"
