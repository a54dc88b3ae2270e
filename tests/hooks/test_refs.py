"""Reference extraction from Python, notebooks and configs, with lines and suppressions."""

from __future__ import annotations

import json
import textwrap

import pytest

from hfguard.hooks.refs import extract, file_references, parse_spec

SHA = "0123456789abcdef0123456789abcdef01234567"


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return p


def _refs(path):
    got = file_references(path)
    return [(r.repo_id, r.revision, r.line, r.via) for r in got.references], got


def test_python_calls_constants_and_revisions(tmp_path):
    p = _write(tmp_path, "train.py", f'''
        import open_clip, timm
        from transformers import AutoModel, AutoTokenizer, pipeline
        from huggingface_hub import hf_hub_download, snapshot_download
        from sentence_transformers import SentenceTransformer, CrossEncoder
        from diffusers import DiffusionPipeline

        MODEL = "acme/encoder"
        REV = "{SHA}"
        model = AutoModel.from_pretrained(MODEL, revision=REV)
        tok = AutoTokenizer.from_pretrained("gpt2")
        clf = pipeline("text-classification", "acme/clf")
        gen = pipeline(task="text-generation", model="acme/gen@v1.0")
        path = hf_hub_download(repo_id="acme/weights", filename="model.bin", revision="{SHA}")
        data = hf_hub_download("acme/data", "x.csv", repo_type="dataset")
        snap = snapshot_download("acme/snap")
        st = SentenceTransformer("all-MiniLM-L6-v2")
        ce = CrossEncoder("acme/cross")
        clip = open_clip.create_model_and_transforms("ViT-B-32", pretrained="hf-hub:acme/clip")
        clip2 = open_clip.create_model("hf-hub:acme/clip2")
        plain = open_clip.create_model("ViT-B-32", pretrained="laion2b_s34b_b79k")
        vit = timm.create_model("hf-hub:timm/vit_base_patch16_224.augreg_in21k", pretrained=True)
        pipe = DiffusionPipeline.from_pretrained(
            "acme/diffusion",
        )
        url = "https://huggingface.co/acme/url-model/resolve/{SHA}/model.safetensors"
        local = AutoModel.from_pretrained("./models/x")
        absolute = AutoModel.from_pretrained("/opt/models/x")
        dynamic = AutoModel.from_pretrained(f"acme/{{MODEL}}")
    ''')
    refs, got = _refs(p)
    assert not got.problems
    assert refs == [
        ("acme/encoder", SHA, 9, "from_pretrained"),
        ("gpt2", None, 10, "from_pretrained"),
        ("acme/clf", None, 11, "pipeline"),
        ("acme/gen", "v1.0", 12, "pipeline"),
        ("acme/weights", SHA, 13, "hf_hub_download"),
        ("acme/snap", None, 15, "snapshot_download"),
        ("sentence-transformers/all-MiniLM-L6-v2", None, 16, "SentenceTransformer"),
        ("acme/cross", None, 17, "CrossEncoder"),
        ("acme/clip", None, 18, "create_model_and_transforms"),
        ("acme/clip2", None, 19, "create_model"),
        ("timm/vit_base_patch16_224.augreg_in21k", None, 21, "create_model"),
        ("acme/diffusion", None, 22, "from_pretrained"),
        ("acme/url-model", SHA, 25, "string"),
    ]
    by_repo = {r.repo_id: r for r in got.references}
    assert by_repo["acme/encoder"].pinned and not by_repo["acme/gen"].pinned
    assert by_repo["acme/weights"].filename == "model.bin"


def test_model_keywords_on_any_call_but_not_publishing_calls(tmp_path):
    p = _write(tmp_path, "serve.py", '''
        from vllm import LLM
        from peft import PeftModel
        llm = LLM(model_id="acme/served", revision="v2")
        ad = load_adapter(base, repo_id="acme/adapter")
        other = load_adapter(base, model_id="bare-name")
        model.push_to_hub(repo_id="me/mine")
        api.upload_folder(repo_id="me/mine", folder_path=".")
        api.create_repo(repo_id="me/new")
        client = OpenAI(model="openai/gpt-4o")
    ''')
    refs, _ = _refs(p)
    assert refs == [("acme/served", "v2", 3, "LLM"), ("acme/adapter", None, 4, "load_adapter")]


def test_local_paths_and_existing_dirs_are_not_references(tmp_path):
    (tmp_path / "acme" / "local").mkdir(parents=True)
    p = _write(tmp_path, "a.py", '''
        from transformers import AutoModel
        a = AutoModel.from_pretrained("acme/local")
        b = AutoModel.from_pretrained("acme/remote")
        c = AutoModel.from_pretrained("C:\\\\models\\\\x")
        d = AutoModel.from_pretrained("~/models/x")
    ''')
    refs, _ = _refs(p)
    assert refs == [("acme/remote", None, 3, "from_pretrained")]


def test_inline_suppressions(tmp_path):
    p = _write(tmp_path, "a.py", '''
        from transformers import AutoModel
        MODEL = "acme/m2"  # hfguard: ignore[hook/unpinned-reference]
        a = AutoModel.from_pretrained("acme/m1")  # hfguard: ignore
        b = AutoModel.from_pretrained(MODEL)
        c = AutoModel.from_pretrained(
            "acme/m3",  # hfguard: ignore[provenance/lookalike, hook/unpinned-reference]
        )
        d = AutoModel.from_pretrained("acme/m4")
    ''')
    got = {r.repo_id: r for r in file_references(p).references}
    assert got["acme/m1"].suppresses("anything/at-all")
    assert got["acme/m2"].suppresses("hook/unpinned-reference")
    assert not got["acme/m2"].suppresses("pickle/dangerous-global")
    assert got["acme/m3"].ignore == {"provenance/lookalike", "hook/unpinned-reference"}
    assert not got["acme/m4"].ignore


def test_ambiguous_constants_are_not_resolved(tmp_path):
    p = _write(tmp_path, "a.py", '''
        from transformers import AutoModel
        MODEL = "acme/a"
        if True:
            pass
        MODEL = "acme/b"
        m = AutoModel.from_pretrained(MODEL)
    ''')
    assert file_references(p).references == []


def test_names_built_from_constants_are_references(tmp_path):
    # concatenation and f-strings of constants name one model as surely as a literal does
    p = _write(tmp_path, "b.py", '''
        from transformers import AutoModel
        import pandas as pd
        ORG = "acme"
        NAME = ORG + "/joined"
        a = AutoModel.from_pretrained("acme/" + "plus")
        b = AutoModel.from_pretrained(f"{ORG}/fstring", revision=f"v{'1'}")
        c = AutoModel.from_pretrained(f"acme/noplaceholder")
        d = AutoModel.from_pretrained(NAME)
        e = pd.read_parquet(f"hf://{ORG}/fsspec/" + shard)
        f = AutoModel.from_pretrained(f"{args.org}/computed")
    ''')
    got, _ = _refs(p)
    assert sorted(got) == [("acme/fsspec", None, 9, "string"),
                           ("acme/fstring", "v1", 6, "from_pretrained"),
                           ("acme/joined", None, 8, "from_pretrained"),
                           ("acme/noplaceholder", None, 7, "from_pretrained"),
                           ("acme/plus", None, 5, "from_pretrained")]


def test_notebook_cells_with_magics(tmp_path):
    nb = {"cells": [
        {"cell_type": "markdown", "source": ["from_pretrained('acme/not-code')"]},
        {"cell_type": "code", "source": ["%pip install transformers\n", "MODEL = 'acme/nb'\n"]},
        {"cell_type": "code", "source": ["from transformers import AutoModel\n",
                                         "m = AutoModel.from_pretrained(MODEL)\n"]},
        {"cell_type": "code", "source": "x = = 1\nAutoModel.from_pretrained('acme/broken-cell')\n"},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    p = tmp_path / "nb.ipynb"
    p.write_text(json.dumps(nb))
    got = file_references(p)
    assert [(r.repo_id, r.cell, r.line) for r in got.references] == [
        ("acme/nb", 3, 2), ("acme/broken-cell", 4, 2)]
    assert got.references[0].location == "cell 3, line 2"
    # the broken cell is still reported (fail closed), but its references were recovered
    assert len(got.problems) == 1 and "cell 4" in got.problems[0][2]


def test_yaml_json_toml_configs(tmp_path):
    y = _write(tmp_path, "cfg/train.yaml", f'''
        model:
          model_name_or_path: acme/base
          revision: {SHA}
        tokenizer_name: acme/tok  # hfguard: ignore[hook/unpinned-reference]
        output_dir: out/run
        base_model:
          - acme/one
          - ./local/two
        model_id: gpt-4o
    ''')
    refs, got = _refs(y)
    assert refs == [("acme/base", SHA, 2, "key model_name_or_path"),
                    ("acme/tok", None, 4, "key tokenizer_name"),
                    ("acme/one", None, 7, "key base_model")]
    assert got.references[1].suppresses("hook/unpinned-reference")

    j = tmp_path / "adapter_config.json"
    j.write_text(json.dumps({"base_model_name_or_path": "acme/json-base", "r": 8,
                             "nested": {"model_id": "acme/json-nested@main"}}, indent=2))
    refs, _ = _refs(j)
    assert refs == [("acme/json-base", None, 2, "key base_model_name_or_path"),
                    ("acme/json-nested", "main", 5, "key model_id")]

    t = _write(tmp_path, "pyproject.toml", '''
        [tool.myapp]
        name = "x"
        model = "acme/toml-model"
    ''')
    refs, _ = _refs(t)
    assert refs == [("acme/toml-model", None, 3, "key model")]


def test_unparsable_files_are_problems_not_silence(tmp_path):
    py = _write(tmp_path, "bad.py", 'def f(:\n    AutoModel.from_pretrained("acme/still-found")\n')
    yml = _write(tmp_path, "bad.yaml", "model: [unclosed\n")
    got = extract([py, yml, tmp_path / "README.md"])
    assert [r.repo_id for r in got.references] == ["acme/still-found"]
    assert {p[0] for p in got.problems} == {str(py), str(yml)}


@pytest.mark.parametrize("value,expected", [
    ("acme/m", ("acme/m", None)),
    ("acme/m@" + SHA, ("acme/m", SHA)),
    ("hf-hub:acme/m", ("acme/m", None)),
    ("https://huggingface.co/acme/m/blob/main/x.bin", ("acme/m", "main")),
    ("https://huggingface.co/datasets/acme/d", None),
    ("gpt2", None),
    ("a/b/c", None),
    ("acme/../etc", None),
    ("out/run", ("out/run", None)),  # looks like a repo: configs only take CONFIG_KEYS values
    ("https://hf.co/acme/m/resolve/v1/x.bin", ("acme/m", "v1")),   # the Hub's short domain
    ("hf://acme/m/model.safetensors", ("acme/m", None)),          # fsspec paths name a file
    ("hf://acme/m@refs%2Fpr%2F1/sub/model.bin", ("acme/m", "refs/pr/1")),
    ("hf://datasets/acme/d/train.csv", None),
])
def test_parse_spec(value, expected):
    assert parse_spec(value) == expected


def test_hostile_configs_are_bounded(tmp_path, monkeypatch):
    import hfguard.hooks.refs as refs_mod

    laughs = ["a0: &a0 [model_id: acme/lol]"] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 12)]
    y = _write(tmp_path, "laughs.yaml", "\n".join(laughs) + "\n")
    got = file_references(y)
    assert [r.repo_id for r in got.references] == ["acme/lol"]  # each node once, not 10**11 times
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    got = file_references(deep)
    assert got.problems and not got.references
    monkeypatch.setattr(refs_mod, "MAX_TEXT", 10)
    big = _write(tmp_path, "big.py", 'from_pretrained("acme/big-file")\n')
    got = file_references(big)
    assert "not read" in got.unread[0][1] and not got.references


def test_a_source_too_large_to_read_is_missing_evidence_not_a_pass(tmp_path, monkeypatch):
    # padding a file past the bound hid its references behind a low finding (PASS)
    import hfguard.hooks.refs as refs_mod

    monkeypatch.setattr(refs_mod, "MAX_TEXT", 64)
    (tmp_path / "train.py").write_text('from_pretrained("acme/padded")\n' + "#" * 100 + "\n")
    (tmp_path / "small.yaml").write_text("model_id: acme/small\n")
    code, doc = _hook_refs(tmp_path, monkeypatch, "train.py", "small.yaml")
    assert code == 2 and doc["verdict"] == "ERROR"
    unread = [f for f in doc["findings"] if f["rule"] == "hook/unreadable-source"]
    assert [(f["file"], f["error"]) for f in unread] == [("train.py", True)]
    assert {f["evidence"].get("model") for f in doc["findings"] if f["rule"] == "hook/not-locked"} == {
        "acme/small"}


def _hook_refs(tmp_path, monkeypatch, *names: str) -> tuple[int, dict]:
    from click.testing import CliRunner

    from hfguard.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = CliRunner().invoke(main, ["hook", "refs", *names, "-q", "--format", "json"])
    return res.exit_code, json.loads(res.stdout)   # a report, whatever the files held


def test_a_notebook_cell_whose_source_is_not_text_is_a_problem_not_a_crash(tmp_path, monkeypatch):
    # nbformat wants strings; a list of numbers crashed the hook (TypeError: no report at all)
    (tmp_path / "odd.ipynb").write_text(json.dumps({"cells": [
        {"cell_type": "code", "source": [1, 2]},
        {"cell_type": "code", "source": 'AutoModel.from_pretrained("acme/after")'}]}))
    code, doc = _hook_refs(tmp_path, monkeypatch, "odd.ipynb")
    found = {(f["rule"], f.get("evidence", {}).get("model")) for f in doc["findings"]}
    assert ("hook/unparsable-source", None) in found and ("hook/not-locked", "acme/after") in found
    assert code == 2


def test_a_reader_that_crashes_is_missing_evidence_and_the_others_are_still_read(tmp_path, monkeypatch):
    # any bug a hostile file finds in a reader (stood in for here by a reader that raises): the
    # report is still written, ERROR for that file, and the other files' references are vetted
    import hfguard.hooks.refs as refs

    def broken(text, display, base, suffix):
        if display.endswith(".toml"):
            raise TypeError("unexpected input")
        return real(text, display, base, suffix)

    real = refs._parse
    monkeypatch.setattr(refs, "_parse", broken)
    (tmp_path / "a.toml").write_text('model = "acme/toml"\n')
    (tmp_path / "b.py").write_text('AutoModel.from_pretrained("acme/python")\n')
    code, doc = _hook_refs(tmp_path, monkeypatch, "a.toml", "b.py")
    assert code == 2 and doc["verdict"] == "ERROR"
    crashed = [f for f in doc["findings"] if f["rule"] == "check/crashed"]
    assert [(f["file"], f["error"]) for f in crashed] == [("a.toml", True)]
    assert "TypeError: unexpected input" in crashed[0]["message"]
    assert {f["evidence"].get("model") for f in doc["findings"] if f["rule"] == "hook/not-locked"} == {
        "acme/python"}


def test_hub_urls_and_prefixed_names_in_configs_count_under_any_key(tmp_path):
    # a download URL or hf-hub: name loads a model whatever key holds it; a bare org/name only
    # under a model key, and the Hub's own pages are no repos
    y = _write(tmp_path, "train.yaml", '''
        checkpoint_url: https://huggingface.co/acme/ckpt/resolve/v2/model.ckpt
        encoders:
          - hf-hub:acme/clip
          - hf://acme/shards/model-00001.safetensors
        docs: https://huggingface.co/docs/transformers
        output: acme/not-a-model
        model_id: acme/plain
    ''')
    refs, _ = _refs(y)
    assert refs == [("acme/ckpt", "v2", 1, "key checkpoint_url"), ("acme/clip", None, 3, "key encoders"),
                    ("acme/shards", None, 4, "key encoders"), ("acme/plain", None, 7, "key model_id")]
    j = tmp_path / "pipeline.json"
    j.write_text(json.dumps({"vae": {"url": "https://hf.co/acme/vae/blob/main/vae.safetensors"},
                             "paper": "https://huggingface.co/papers/2301.00001"}, indent=2))
    assert _refs(j)[0] == [("acme/vae", "main", 3, "key url")]
    t = _write(tmp_path, "app.toml", '''
        [weights]
        files = ["hf://acme/toml-weights/w.bin"]
    ''')
    assert _refs(t)[0] == [("acme/toml-weights", None, 2, "key files")]


@pytest.mark.parametrize("name,text", [
    ("t.py", 'M = "acme/bom"\nfrom transformers import AutoModel\nAutoModel.from_pretrained(M)\n'),
    ("c.json", '{"model_id": "acme/bom"}'),
    ("c.toml", 'model = "acme/bom"\n'),
    ("n.ipynb", json.dumps({"cells": [{"cell_type": "code", "source": 'from_pretrained("acme/bom")'}]})),
])
def test_a_utf8_bom_does_not_hide_references(tmp_path, name, text):
    # Python runs a source file that starts with a UTF-8 BOM; the readers refused it (a low
    # "could not parse" finding, the reference missed: PASS)
    p = tmp_path / name
    p.write_bytes(b"\xef\xbb\xbf" + text.encode())
    got = file_references(p)
    assert [r.repo_id for r in got.references] == ["acme/bom"] and got.problems == []
