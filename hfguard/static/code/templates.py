"""Chat templates are Jinja programs shipped with a model (GGUF metadata, tokenizer_config.json,
chat_template.jinja). Rendered outside a sandbox, a template that reaches Python internals runs code
(llama-cpp-python: CVE-2024-34359). No legitimate chat template needs dunder attributes."""

from __future__ import annotations

import re

from hfguard.findings import Observation, Severity
from hfguard.static.code.template_ast import built_strings

# Jinja gadgets that reach Python objects from a template (SSTI); none belong in a chat template
_SSTI = re.compile(r"__(class|mro|subclasses|globals|builtins|import|init|base|bases|dict|getattribute|"
                   r"code|func|self|reduce|reduce_ex|loader|spec)__|\bos\.(system|popen)\b|\bsubprocess\b|"
                   r"_TemplateReference__context|\|\s*attr\b|\bimport_string\b|\bfrom_pyfile\b")


def template_problems(template: str, location: str) -> list[Observation]:
    """A Jinja chat template that reaches Python internals (server-side template injection): in its
    text, or in the strings its expressions build (escapes, concatenation, join; template_ast)."""
    found = {m.group(0) for m in _SSTI.finditer(template)}
    built = built_strings(template)
    out: list[Observation] = []
    if built is not None:
        found |= {m.group(0) for s in built.strings for m in _SSTI.finditer(s)}
        found |= set(built.gadgets)
        if built.unanalysed is not None:
            out.append(Observation("chat-template/injection", Severity.MEDIUM,
                                   f"chat template not analysed as Jinja ({built.unanalysed}): names it "
                                   "builds from pieces are unchecked", location,
                                   {"unanalysed": built.unanalysed}))
    hits = sorted(found)
    if not hits:
        return out
    return out + [Observation("chat-template/injection", Severity.CRITICAL,
                        f"chat template reaches Python internals ({', '.join(hits[:6])}): code runs when it "
                        "is rendered without a sandbox", location, {"gadgets": hits[:20]})]
