"""A fleet's results as one HTML page: verdict counts, then a sortable table of every repo."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from hfguard.fleet.results import ResultStore
from hfguard.report.html import e, render_page

_ORDER = {"PASS": 0, "FLAG": 1, "BLOCK": 2, "ERROR": 3}


_SEVERITIES = ("critical", "high", "medium", "low", "info")


def _findings(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc.get("findings", []) + [f for fr in doc.get("files", []) for f in fr.get("findings", [])]


def _top_rule(doc: dict[str, Any]) -> str:
    rank = {s: i for i, s in enumerate(_SEVERITIES)}
    ranked = sorted(_findings(doc), key=lambda f: rank.get(f.get("severity", ""), len(rank)))
    return ranked[0]["rule"] if ranked else ""


def render_fleet(folder: Path) -> str:
    docs = list(ResultStore.open(folder).done.values())
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    counts = Counter(d.get("verdict") for d in docs)
    head = (f"<h1>hfguard fleet: {len(docs)} repos</h1><p>" + " ".join(
        f"<b>{e(v)}</b> {counts[v]}" for v in sorted(counts, key=lambda v: _ORDER.get(str(v), 9)))
        + (f" <span class=meta>in {e(summary.get('seconds'))} s</span>" if summary else "") + "</p>")
    rows = "".join(
        f"<tr><td><code>{e(d['fleet']['spec'])}</code></td>"
        f"<td><code>{e((d.get('revision') or '')[:12])}</code></td>"
        f"<td data-v=\"{_ORDER.get(d.get('verdict', ''), 9)}\">{e(d.get('verdict'))}</td>"
        f"<td><code>{e(_top_rule(d))}</code></td><td class=num>{len(_findings(d))}</td>"
        f"<td class=num>{e(d['fleet'].get('seconds', ''))}</td></tr>"
        for d in sorted(docs, key=lambda d: -_ORDER.get(d.get("verdict", ""), 9)))
    table = ("<table class=sortable><thead><tr><th>repo</th><th>sha</th><th>verdict</th>"
             "<th>worst rule</th><th>findings</th><th>seconds</th></tr></thead><tbody>" + rows
             + "</tbody></table>")
    return render_page("hfguard fleet", [f"<section>{head}{table}</section>"])
