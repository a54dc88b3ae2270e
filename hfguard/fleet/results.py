"""What a fleet found, written as it is found so that a killed run loses nothing.

`results.jsonl`: one line per repo, the same JSON as `hfguard check --format json` plus a `fleet`
record (the spec as given, the stamp it was vetted under, seconds). Lines are appended and fsynced
one at a time; a torn last line (a kill mid-write) is ignored on reading. `summary.json` is
rewritten at the end: counts per verdict and per rule, timings.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = "results.jsonl"
SUMMARY = "summary.json"


@dataclass
class ResultStore:
    folder: Path
    done: dict[str, dict[str, Any]] = field(default_factory=dict)   # spec -> report dict

    @classmethod
    def open(cls, folder: Path) -> ResultStore:
        folder.mkdir(parents=True, exist_ok=True)
        store = cls(folder)
        path = folder / RESULTS
        if path.exists():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    doc = json.loads(line)
                    store.done[doc["fleet"]["spec"]] = doc
                except (ValueError, KeyError, TypeError):
                    continue   # a line torn by a kill
        return store

    def current(self, spec: str, stamp: str) -> dict[str, Any] | None:
        """The recorded result of `spec`, when it was vetted under the same stamp and not ERROR
        (an error is evidence that was not gathered: it is tried again)."""
        doc = self.done.get(spec)
        if doc and doc["fleet"].get("stamp") == stamp and doc.get("verdict") != "ERROR":
            return doc
        return None

    def append(self, doc: dict[str, Any]) -> None:
        with open(self.folder / RESULTS, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.done[doc["fleet"]["spec"]] = doc

    def compact(self) -> None:
        """Rewrite results.jsonl with one line per spec (the latest), atomically."""
        tmp = self.folder / (RESULTS + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for doc in self.done.values():
                fh.write(json.dumps(doc, default=str) + "\n")
        tmp.replace(self.folder / RESULTS)

    def write_summary(self, specs: list[str], seconds: float, extra: dict[str, Any]) -> dict[str, Any]:
        docs = [self.done[s] for s in specs if s in self.done]
        verdicts = Counter(d["verdict"] for d in docs)
        rules: Counter[str] = Counter()
        for d in docs:
            rules.update({f["rule"] for f in d.get("findings", [])}
                         | {f["rule"] for fr in d.get("files", []) for f in fr.get("findings", [])})
        times = sorted(d["fleet"].get("seconds", 0.0) for d in docs)
        summary = {
            "repos": len(specs), "vetted": len(docs), "verdicts": dict(sorted(verdicts.items())),
            "rules": dict(rules.most_common()), "seconds": round(seconds, 2),
            "repo_seconds": {"median": times[len(times) // 2] if times else 0.0,
                             "max": times[-1] if times else 0.0},
            **extra,
        }
        (self.folder / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return summary
