"""Chat templates for the static tier's tests and red-team bench: an everyday one (transformers'
tags, namespaces, loops) and server-side template injections whose dunder names are built from
pieces, each appended to the everyday one (what a tampered tokenizer_config.json carries)."""

from __future__ import annotations

from pathlib import Path

EVERYDAY_TEMPLATE = (Path(__file__).resolve().parent / "chat_template_everyday.jinja").read_text()
SSTI_VARIANTS = {
    "concat": "{{ cycler['__in' ~ 'it__']['__glo' ~ 'bals__'].os.popen('id').read() }}",
    "hex_escape": "{{ joiner['\\x5f\\x5finit\\x5f\\x5f'] }}",
    "set_pieces": "{% set a = '__in' %}{% set b = a ~ 'it__' %}{{ (messages|first)[b] }}",
    "joined": "{{ messages[['_', '_', 'cla', 'ss', '_', '_']|join] }}",
    "repeat": "{{ messages[('_' * 2) ~ 'class' ~ ('_' * 2)] }}",
    "percent_format": "{{ messages['%c%cclass%c%c'|format(95, 95, 95, 95)] }}",
    "render_time_key": "{{ messages[message['role'] ~ 'x'] }}",
    "global_item": "{{ lipsum[bos_token][eos_token] }}",
    "global_attribute": "{{ cycler.next }}",
}
