"""Red-team of the static tier (issue 12): everyday files written by the real libraries must PASS,
attack variants built differently from tests/ must BLOCK (or at least FLAG where the class is only a
doubt). Each case is scanned through the CLI (`hfguard scan --format json`), so exit codes and the
JSON report are checked too.

    python bench/redteam_static.py [-k SUBSTRING] [--keep DIR]

Prints one row per case: name, expected, verdict, exit code, rules; then the misclassifications.
Nothing here loads a payload: attacks are written with testing/pickle_asm.py or by hand.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import json
import lzma
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testing.chat_templates import EVERYDAY_TEMPLATE, SSTI_VARIANTS  # noqa: E402
from testing.pickle_asm import asm, call, const, frame, o, program, stack_global  # noqa: E402

CASES: list[tuple[str, str, Callable[[Path], Path]]] = []
EXIT = {"PASS": 0, "FLAG": 1, "BLOCK": 1, "ERROR": 2}
RANK = {"PASS": 0, "FLAG": 1, "BLOCK": 2, "ERROR": 3}


def case(expected: str) -> Callable[[Callable[[Path], Path]], Callable[[Path], Path]]:
    def add(fn: Callable[[Path], Path]) -> Callable[[Path], Path]:
        CASES.append((fn.__name__, expected, fn))
        return fn
    return add


MARK = "/tmp/hfguard-redteam-ran"


def _evil() -> list:
    return call("os", "system", f"touch {MARK}")


# ----------------------------------------------------------------- benign: torch -------------------

def _net():
    import torch
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.LazyLinear(2) if False else torch.nn.Linear(4, 2))


@case("PASS")
def b_torch_legacy_state_dict(d: Path) -> Path:
    import torch
    p = d / "pytorch_model.bin"
    torch.save(_net().state_dict(), p, _use_new_zipfile_serialization=False)
    return p


@case("PASS")
def b_torch_legacy_optimizer_checkpoint(d: Path) -> Path:
    import torch
    net = _net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.zeros(2, 3, 3, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, 3)
    p = d / "checkpoint.pt"
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "epoch": 3, "rng": torch.get_rng_state()}, p, _use_new_zipfile_serialization=False)
    return p


def _lightning(hparams: object) -> dict:
    import torch
    net = _net()
    opt = torch.optim.Adam(net.parameters())
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10)
    return {"epoch": 4, "global_step": 400, "pytorch-lightning_version": "2.4.0",
            "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 5}}}},
            "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
                "monitor": "val_loss", "best_model_score": torch.tensor(0.25),
                "best_model_path": "/ckpt/epoch=3.ckpt", "dirpath": "/ckpt", "best_k_models": {}}},
            "optimizer_states": [opt.state_dict()], "lr_schedulers": [sched.state_dict()],
            "hparams_name": "kwargs", "hyper_parameters": hparams}


@case("PASS")
def b_lightning_ckpt_dict_hparams(d: Path) -> Path:
    import torch
    p = d / "last.ckpt"
    torch.save(_lightning({"lr": 1e-3, "layers": [64, 32], "dropout": 0.1, "name": "demo"}), p)
    return p


@case("PASS")
def b_lightning_ckpt_namespace_hparams(d: Path) -> Path:
    import torch
    p = d / "epoch=4.ckpt"
    torch.save(_lightning(argparse.Namespace(lr=1e-3, batch_size=32, data_dir="/data")), p)
    return p


def _jit(d: Path, name: str, module) -> Path:
    import torch
    p = d / name
    torch.jit.save(torch.jit.script(module), p)
    return p


@case("PASS")
def b_jit_conv(d: Path) -> Path:
    import torch
    return _jit(d, "conv.pt", torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU()))


@case("PASS")
def b_jit_lstm(d: Path) -> Path:
    import torch
    return _jit(d, "lstm.pt", torch.nn.LSTM(4, 8, num_layers=2, batch_first=True))


@case("PASS")
def b_jit_transformer_encoder(d: Path) -> Path:
    import torch
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    return _jit(d, "enc.pt", torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False))


@case("PASS")
def b_jit_scripted_function(d: Path) -> Path:
    import torch

    def f(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * y + x.mean()
    p = d / "fn.pt"
    torch.jit.script(f).save(str(p))
    return p


@case("PASS")
def b_jit_traced_module(d: Path) -> Path:
    import torch
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU(), torch.nn.LayerNorm(4))
    p = d / "traced.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 4)), p)
    return p


@case("PASS")
def b_torch_export_pt2(d: Path) -> Path:
    import torch
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    ep = torch.export.export(net, (torch.zeros(2, 4),))
    p = d / "model.pt2"
    torch.export.save(ep, p)
    return p


@case("PASS")
def b_state_dict_fp16_bf16_int8_qint8(d: Path) -> Path:
    import torch
    q = torch.quantize_per_tensor(torch.randn(4, 4), 0.1, 0, torch.qint8)
    qc = torch.quantize_per_channel(torch.randn(4, 4), torch.ones(4) * 0.1, torch.zeros(4, dtype=torch.long),
                                    0, torch.quint8)
    p = d / "mixed.pt"
    torch.save({"h": torch.zeros(3, dtype=torch.float16), "b": torch.zeros(3, dtype=torch.bfloat16),
                "i8": torch.zeros(3, dtype=torch.int8), "q": q, "qc": qc,
                "f8": torch.zeros(3).to(torch.float8_e4m3fn)}, p)
    return p


@case("PASS")
def b_torch_misc_values(d: Path) -> Path:
    import collections
    import datetime

    import numpy as np
    import torch
    p = d / "misc.pt"
    torch.save({"size": torch.Size([2, 3]), "dtype": torch.float32, "device": torch.device("cpu"),
                "np_scalar": np.float32(1.5), "np_arr": np.arange(4), "when": datetime.datetime(2024, 1, 1),
                "tags": {"a", "b"}, "counts": collections.Counter("aab"),
                "sparse": torch.eye(3).to_sparse(), "cplx": torch.zeros(2, dtype=torch.complex64),
                "param": torch.nn.Parameter(torch.ones(2))}, p)
    return p


@case("PASS")
def b_pickle_dumps_tensors_p2(d: Path) -> Path:
    import pickle

    import torch
    p = d / "tensors.pkl"
    tensors = {"w": torch.randn(3, 3), "b": torch.zeros(3, dtype=torch.float16)}
    p.write_bytes(pickle.dumps(tensors, protocol=2))
    return p


@case("PASS")
def b_whole_stock_sequential(d: Path) -> Path:
    import torch
    p = d / "model.pt"
    torch.save(torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LSTM(4, 4), ), p)
    return p


@case("PASS")
def b_whole_stock_module_legacy(d: Path) -> Path:
    import torch
    p = d / "model_legacy.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1)), p,
               _use_new_zipfile_serialization=False)
    return p


@case("PASS")
def b_zstd_benign_bin(d: Path) -> Path:
    import torch
    import zstandard
    buf = io.BytesIO()
    torch.save({"w": torch.ones(4)}, buf)
    p = d / "weights.bin.zst"
    p.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    return p


# ----------------------------------------------------------------- benign: numpy / sklearn ----------

@case("PASS")
def b_npy_npz_object_arrays(d: Path) -> Path:
    import numpy as np
    np.save(d / "plain.npy", np.arange(10, dtype=np.float32))
    np.save(d / "labels.npy", np.array(["cat", "dog", {"k": 1}, None], dtype=object), allow_pickle=True)
    np.savez_compressed(d / "bundle.npz", a=np.zeros(3), names=np.array([["x", 1], ["y", 2]], dtype=object))
    np.savez(d / "plain.npz", a=np.ones(2), b=np.eye(2))
    return d


def _forest():
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier
    X = np.random.default_rng(0).random((30, 4))
    return RandomForestClassifier(n_estimators=3, max_depth=3).fit(X, X[:, 0] > 0.5)


@case("PASS")
def b_joblib_compressions(d: Path) -> Path:
    import joblib
    m = _forest()
    joblib.dump(m, d / "m3.joblib", compress=3)
    joblib.dump(m, d / "mlzma.joblib", compress=("lzma", 3))
    joblib.dump(m, d / "mbz2.joblib", compress=("bz2", 3))
    joblib.dump(m, d / "mzlib.joblib", compress=("zlib", 3))
    joblib.dump(m, d / "mgz.pkl.gz", compress=("gzip", 3))
    joblib.dump(m, d / "mlz4.joblib", compress=("lz4", 3))
    return d


@case("PASS")
def b_sklearn_pipeline_log1p(d: Path) -> Path:
    import joblib
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
    X = np.random.default_rng(1).random((40, 3))
    y = (X[:, 0] > 0.5).astype(int)
    pre = ColumnTransformer([("log", FunctionTransformer(np.log1p), [0, 1]), ("sc", StandardScaler(), [2])])
    pipe = Pipeline([("pre", pre), ("clf", LogisticRegression())]).fit(X, y)
    joblib.dump(pipe, d / "pipe.joblib")
    import pickle
    (d / "pipe.pkl").write_bytes(pickle.dumps(pipe, protocol=5))
    joblib.dump(OneHotEncoder().fit([["a"], ["b"]]), d / "ohe.joblib")
    return d


@case("PASS")
def b_sklearn_hist_gb_and_more(d: Path) -> Path:
    import joblib
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC
    X = np.random.default_rng(2).random((60, 3))
    y = (X[:, 0] > 0.5).astype(int)
    joblib.dump(HistGradientBoostingClassifier(max_iter=3).fit(X, y), d / "hgb.joblib")
    joblib.dump(KNeighborsClassifier(3, algorithm="kd_tree").fit(X, y), d / "knn.joblib")
    joblib.dump(SVC(probability=False).fit(X, y), d / "svc.joblib")
    return d


@case("PASS")
def b_xgboost_lightgbm(d: Path) -> Path:
    import joblib
    import lightgbm
    import numpy as np
    import xgboost
    X = np.random.default_rng(3).random((50, 3))
    y = (X[:, 0] > 0.5).astype(int)
    joblib.dump(xgboost.XGBClassifier(n_estimators=2, max_depth=2).fit(X, y), d / "xgb.joblib")
    joblib.dump(lightgbm.LGBMClassifier(n_estimators=2, verbose=-1).fit(X, y), d / "lgbm.pkl")
    lightgbm.LGBMRegressor(n_estimators=2, verbose=-1).fit(X, y).booster_.save_model(str(d / "lgbm.txt"))
    return d


@case("PASS")
def b_numpy_protocol5(d: Path) -> Path:
    import pickle

    import numpy as np
    p = d / "arrays.pkl"
    p.write_bytes(pickle.dumps({"a": np.arange(6).reshape(2, 3), "r": np.random.default_rng(0),
                                "m": np.ma.masked_array([1, 2], [0, 1])}, protocol=5))
    return p


@case("PASS")
def b_skops_real_models(d: Path) -> Path:
    import numpy as np
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler
    X = np.random.default_rng(4).random((40, 3))
    y = (X[:, 0] > 0.5).astype(int)
    sio.dump(make_pipeline(FunctionTransformer(np.log1p), StandardScaler(),
                           RandomForestClassifier(n_estimators=2)).fit(X, y), d / "pipe.skops")
    return d


@case("FLAG")
def b_skops_hist_gradient_boosting(d: Path) -> Path:
    """skops itself refuses TreePredictor without trusted=[...] (get_untrusted_types lists it)."""
    import numpy as np
    import skops.io as sio
    from sklearn.ensemble import HistGradientBoostingClassifier
    X = np.random.default_rng(4).random((40, 3))
    sio.dump(HistGradientBoostingClassifier(max_iter=2).fit(X, X[:, 0] > 0.5), d / "hgb.skops")
    return d


@case("PASS")
def b_sklearn_search_and_selectors(d: Path) -> Path:
    """GridSearchCV (cv_results_ hold numpy masked arrays, the splitter and scorer are pickled),
    a column selector by numpy abstract type, a target transform by numpy ufuncs."""
    import joblib
    import numpy as np
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor, make_column_selector
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.preprocessing import StandardScaler
    X = np.random.default_rng(5).random((40, 3))
    y = (X[:, 0] > 0.5).astype(int)
    joblib.dump(GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=2, scoring="accuracy").fit(X, y),
                d / "grid.joblib")
    joblib.dump(ColumnTransformer([("n", StandardScaler(), make_column_selector(dtype_include=np.number))]),
                d / "coltrans.joblib")
    joblib.dump(TransformedTargetRegressor(LinearRegression(), func=np.log1p, inverse_func=np.expm1)
                .fit(X, y + 1.0), d / "ttr.joblib")
    return d


# ----------------------------------------------------------------- benign: HF / formats -------------

def _tiny_bert(d: Path, safe: bool, shard: str | None = None) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast
    vocab = d / "vocab_src.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]))
    out = d / "model"
    m = BertModel(BertConfig(vocab_size=7, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=16, max_position_embeddings=16))
    kw = {"safe_serialization": safe}
    if shard:
        kw["max_shard_size"] = shard
    m.save_pretrained(out, **kw)
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(out)
    vocab.unlink()
    return out


@case("PASS")
def b_transformers_safetensors(d: Path) -> Path:
    return _tiny_bert(d, True)


@case("PASS")
def b_transformers_bin(d: Path) -> Path:
    return _tiny_bert(d, False)


@case("PASS")
def b_transformers_sharded(d: Path) -> Path:
    return _tiny_bert(d, True, "2KB")


@case("PASS")
def b_transformers_gpt2_generation_config(d: Path) -> Path:
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel
    m = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_embd=8, n_layer=1, n_head=2, n_positions=16))
    m.generation_config = GenerationConfig(max_new_tokens=8, do_sample=True, top_p=0.9)
    m.save_pretrained(d / "gpt2")
    return d / "gpt2"


LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")
QWEN_TOOLS_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0]['role'] == 'system' %}"
    "{{- messages[0]['content'] }}{%- endif %}{{- \"\\n\\n# Tools\\n\\n<tools>\" }}{%- for tool in tools %}"
    "{{- \"\\n\" }}{{- tool | tojson }}{%- endfor %}{{- \"\\n</tools><|im_end|>\\n\" }}{%- endif %}"
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + "
    "'<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}")


@case("PASS")
def b_gguf_real_templates(d: Path) -> Path:
    import gguf
    import numpy as np
    templates = {"llama3": LLAMA3_TEMPLATE, "mistral": MISTRAL_TEMPLATE, "qwen": QWEN_TOOLS_TEMPLATE}
    for name, tpl in templates.items():
        w = gguf.GGUFWriter(str(d / f"{name}.gguf"), "llama")
        w.add_chat_template(tpl)
        w.add_context_length(2048)
        w.add_tokenizer_model("gpt2")
        w.add_tensor("tok_embd.weight", np.zeros((4, 8), np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return d


@case("PASS")
def b_onnx_external_data(d: Path) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.ones((64, 64), np.float32), "W")
    g = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "g",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 64])], [w])
    m = helper.make_model(g)
    onnx.save_model(m, str(d / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    return d


@case("PASS")
def b_h5py_ordinary(d: Path) -> Path:
    import h5py
    import numpy as np
    p = d / "weights.h5"
    with h5py.File(p, "w") as f:
        f.attrs["description"] = "a demo model"
        f.attrs["layer_names"] = np.array([b"dense", b"dense_1"])
        f.attrs["backend"] = "tensorflow"
        f.attrs["vlen"] = h5py.special_dtype(vlen=str)("x") if False else "x"
        g = f.create_group("model_weights/dense")
        g.attrs["weight_names"] = [b"dense/kernel:0", b"dense/bias:0"]
        g.create_dataset("kernel:0", data=np.zeros((16, 8), np.float32), compression="gzip", chunks=(4, 4))
        g.create_dataset("bias:0", data=np.zeros(8, np.float32), compression="lzf")
        f["model_weights/alias"] = h5py.SoftLink("/model_weights/dense")
        for i in range(30):
            f.create_group(f"opt/g{i}").attrs["i"] = i
    return p


@case("PASS")
def b_diffusers_index_stock(d: Path) -> Path:
    (d / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "feature_extractor": ["transformers", "CLIPImageProcessor"], "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "requires_safety_checker": False}))
    return d


@case("PASS")
def b_mlflow_sklearn_folder(d: Path) -> Path:
    (d / "mlmodel").mkdir()
    (d / "mlmodel" / "MLmodel").write_text(
        "artifact_path: model\nflavors:\n  python_function:\n    env:\n      conda: conda.yaml\n"
        "    loader_module: mlflow.sklearn\n    model_path: model.skops\n    predict_fn: predict\n"
        "    python_version: 3.11.7\n  sklearn:\n    code: null\n    pickled_model: model.skops\n"
        "    serialization_format: skops\n    sklearn_version: 1.5.0\nmlflow_version: 2.16.0\n")
    import skops.io as sio
    from sklearn.linear_model import LinearRegression
    sio.dump(LinearRegression().fit([[0], [1]], [0, 1]), d / "mlmodel" / "model.skops")
    return d


@case("FLAG")
def b_text_named_pytorch_model_bin(d: Path) -> Path:
    p = d / "pytorch_model.bin"
    p.write_text("version https://example.invalid/not-a-pointer\nthis is a readme pasted by mistake\n")
    (d / "model.pt").write_text("Hello, model weights will be uploaded later.\n")
    return d


# ----------------------------------------------------------------- attacks: pickle opcodes ----------

@case("BLOCK")
def a_stack_global_memo_strings(d: Path) -> Path:
    p = d / "memo.pkl"
    p.write_bytes(program(const("os"), o.MEMOIZE(), const("system"), o.MEMOIZE(), o.POP(), o.POP(),
                          const("padding"), o.POP(), o.BINGET(0), o.BINGET(1), o.STACK_GLOBAL(),
                          const((f"touch {MARK}",)), o.REDUCE()))
    return p


@case("BLOCK")
def a_inst_opcode(d: Path) -> Path:
    p = d / "inst.pkl"
    p.write_bytes(asm(o.MARK(), o.STRING(f"touch {MARK}"), o.INST("os", "system"), o.STOP()))
    return p


@case("BLOCK")
def a_obj_opcode(d: Path) -> Path:
    p = d / "obj.pkl"
    p.write_bytes(program(o.MARK(), *stack_global("subprocess", "Popen"), const(("true",)), o.OBJ(), proto=2))
    return p


@case("BLOCK")
def a_newobj_ex_popen(d: Path) -> Path:
    p = d / "newobjex.pkl"
    p.write_bytes(program(*stack_global("subprocess", "Popen"), o.MARK(), o.EMPTY_LIST(), const("true"),
                          o.APPEND(), o.TUPLE(), o.EMPTY_DICT(),
                          const("shell"), o.NEWFALSE(), o.SETITEM(), o.NEWOBJ_EX()))
    return p


@case("BLOCK")
def a_py2_builtin_eval(d: Path) -> Path:
    p = d / "py2.pkl"
    p.write_bytes(asm(o.GLOBAL("__builtin__", "eval"), o.MARK(), o.STRING("1+1"), o.TUPLE(), o.REDUCE(),
                      o.STOP()))
    return p


@case("BLOCK")
def a_dotted_through_torch_serialization(d: Path) -> Path:
    p = d / "dotted.pkl"
    p.write_bytes(program(*stack_global("torch.serialization", "os.system"), const(("id",)), o.REDUCE()))
    return p


@case("BLOCK")
def a_sklearn_reexport_chain(d: Path) -> Path:
    """itemgetter/attrgetter and the sys module reached through allow-listed sklearn module names."""
    p = d / "reexport.pkl"
    p.write_bytes(program(
        *stack_global("sklearn.feature_extraction._dict_vectorizer", "itemgetter"), const(("os",)),
        o.REDUCE(),
        *stack_global("sklearn.decomposition._dict_learning", "sys"), o.TUPLE1(), o.REDUCE(),
        o.MEMOIZE(), o.POP(),
        *stack_global("sklearn.feature_selection._base", "attrgetter"), const(("system",)), o.REDUCE(),
        o.MARK(), o.GET(0) if False else o.BINGET(0), o.TUPLE(), o.REDUCE(),
        const((f"touch {MARK}",)), o.REDUCE()))
    return p


@case("BLOCK")
def a_sklearn_testing_script_runner(d: Path) -> Path:
    """sklearn's test helper runs a Python script in a subprocess (like test.support.script_helper)."""
    p = d / "skl_testing.pkl"
    p.write_bytes(program(*call("sklearn.utils._testing", "assert_run_python_script_without_output",
                                f"import os; os.system('touch {MARK}')")))
    return p


@case("BLOCK")
def a_uuid_gadget_via_inst(d: Path) -> Path:
    p = d / "uuid.pkl"
    p.write_bytes(asm(o.MARK(), o.STRING("touch"), o.STRING(MARK), o.INST("uuid", "_get_command_stdout"),
                      o.STOP()))
    return p


@case("BLOCK")
def a_pyrepl_pager_via_global_p0(d: Path) -> Path:
    p = d / "pager.pkl"
    p.write_bytes(asm(o.GLOBAL("_pyrepl.pager", "pipe_pager"), o.MARK(), o.STRING("x"),
                      o.STRING(f"touch {MARK}"), o.TUPLE(), o.REDUCE(), o.STOP()))
    return p


@case("BLOCK")
def a_interpreters_memo_stack_global(d: Path) -> Path:
    p = d / "interp.pkl"
    p.write_bytes(program(const("_interpreters"), o.BINPUT(7), const("run_string"), o.BINPUT(9), o.POP(),
                          o.POP(), o.BINGET(7), o.BINGET(9), o.STACK_GLOBAL(),
                          const((0, f"import os; os.system('touch {MARK}')")), o.REDUCE()))
    return p


@case("BLOCK")
def a_rebuild_from_type_invokes_eval(d: Path) -> Path:
    p = d / "rft.pkl"
    p.write_bytes(program(*stack_global("torch._tensor", "_rebuild_from_type_v2"),
                          o.MARK(), *stack_global("builtins", "eval"),
                          *stack_global("torch", "Tensor"), const(("1+1",)), o.EMPTY_DICT(), o.TUPLE(),
                          o.REDUCE()))
    return p


@case("BLOCK")
def a_defaultdict_factory_exec(d: Path) -> Path:
    p = d / "dd.pkl"
    p.write_bytes(program(*stack_global("collections", "defaultdict"), *stack_global("builtins", "exec"),
                          o.TUPLE1(), o.REDUCE()))
    return p


@case("BLOCK")
def a_frame_straddle_in_argument(d: Path) -> Path:
    body = asm(*call("os", "system", f"touch {MARK}"), o.STOP())
    cut = 5
    p = d / "straddle.pkl"
    p.write_bytes(asm(o.PROTO(4), frame(body[:cut]), body[cut:]))
    return p


@case("BLOCK")
def a_frame_lying_short_then_payload(d: Path) -> Path:
    # first frame says it holds 3 bytes but the benign dict spans more; payload after it
    benign = asm(o.EMPTY_DICT(), const("k"), const(1), o.SETITEM(), o.POP())
    body = asm(benign, *call("posix", "system", "id"), o.STOP())
    p = d / "lying.pkl"
    p.write_bytes(asm(o.PROTO(4), o.FRAME(3), body))
    return p


@case("BLOCK")
def a_ext_opcode(d: Path) -> Path:
    p = d / "ext.pkl"
    p.write_bytes(program(o.EXT1(1), const(("id",)), o.REDUCE()))
    return p


@case("BLOCK")
def a_build_setstate_on_global(d: Path) -> Path:
    """BUILD aimed at an allowed class: sets class attributes (module state overwrite) before use."""
    p = d / "build.pkl"
    p.write_bytes(program(*stack_global("collections", "OrderedDict"), o.EMPTY_DICT(), const("__setstate__"),
                          *stack_global("builtins", "print"), o.SETITEM(), o.BUILD()))
    return p


@case("FLAG")
def a_custom_class_referenced(d: Path) -> Path:
    p = d / "custom.pkl"
    p.write_bytes(program(*stack_global("mypkg.models", "MyNet"), o.EMPTY_TUPLE(), o.NEWOBJ(),
                          o.EMPTY_DICT(), o.BUILD()))
    return p


# ----------------------------------------------------------------- attacks: containers --------------

def _evil_pickle() -> bytes:
    return program(*_evil())


def _torch_zip_with(payload: bytes, name: str = "archive") -> bytes:
    import torch
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for info in src.infolist():
            data = payload if info.filename.endswith("data.pkl") else src.read(info)
            zf.writestr(info.filename, data)
    return out.getvalue()


@case("BLOCK")
def a_zip_in_7z(d: Path) -> Path:
    import py7zr
    inner = d / "inner"
    inner.mkdir()
    (inner / "pytorch_model.bin").write_bytes(_torch_zip_with(_evil_pickle()))
    p = d / "model.7z"
    with py7zr.SevenZipFile(p, "w") as z:
        z.writeall(inner, "ckpt")
    for f in inner.iterdir():
        f.unlink()
    inner.rmdir()
    return p


@case("BLOCK")
def a_npy_in_7z(d: Path) -> Path:
    import py7zr
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header = header + " " * (63 - (10 + len(header)) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + _evil_pickle()
    p = d / "arrays.7z"
    with py7zr.SevenZipFile(p, "w") as z:
        z.writestr(npy, "emb.npy")
    return p


@case("BLOCK")
def a_zstd_torch_bin(d: Path) -> Path:
    import zstandard
    p = d / "pytorch_model.bin"
    p.write_bytes(zstandard.ZstdCompressor().compress(_torch_zip_with(_evil_pickle())))
    return p


@case("BLOCK")
def a_lz4_raw_pickle(d: Path) -> Path:
    import lz4.frame
    p = d / "model.pkl.lz4"
    p.write_bytes(lz4.frame.compress(_evil_pickle()))
    return p


@case("BLOCK")
def a_gzip_in_tar_in_bz2(d: Path) -> Path:
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w") as tf:
        data = gzip.compress(_evil_pickle())
        info = tarfile.TarInfo("ckpt/model.pkl.gz")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    p = d / "bundle.tar.bz2"
    p.write_bytes(bz2.compress(tbuf.getvalue()))
    return p


@case("BLOCK")
def a_joblib_lzma_evil(d: Path) -> Path:
    p = d / "model.joblib"
    p.write_bytes(lzma.compress(_evil_pickle(), format=lzma.FORMAT_XZ))
    return p


@case("BLOCK")
def a_npz_object_member(d: Path) -> Path:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }"
    header = header + " " * (63 - (10 + len(header)) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + _evil_pickle()
    p = d / "data.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (0,), }".ljust(117) + "\n"
        zf.writestr("ok.npy", b"\x93NUMPY\x01\x00" + (118).to_bytes(2, "little") + ok.encode())
        zf.writestr("labels.npy", npy)
    return p


@case("BLOCK")
def a_torchscript_constants_pkl(d: Path) -> Path:
    import torch
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    p = d / "scripted.pt"
    with zipfile.ZipFile(p, "w") as zf:
        for info in src.infolist():
            data = _evil_pickle() if info.filename.endswith("constants.pkl") else src.read(info)
            zf.writestr(info.filename, data)
    return p


@case("BLOCK")
def a_legacy_protocol0_payload(d: Path) -> Path:
    """Legacy torch layout (magic, protocol, sys_info pickles) written at protocol 0 with the payload
    in the sys_info pickle."""
    import pickle
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=0)
    proto = pickle.dumps(1001, protocol=0)
    evil = asm(o.GLOBAL("posix", "system"), o.MARK(), o.STRING("id"), o.TUPLE(), o.REDUCE(), o.STOP())
    p = d / "old.pt"
    p.write_bytes(magic + proto + evil + pickle.dumps({}, protocol=0) + pickle.dumps([], protocol=0))
    return p


# ----------------------------------------------------------------- attacks: HDF5 / Keras ------------

def _keras_zip(p: Path, config: dict, weights: bytes | None = None) -> Path:
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.8.0", "date_saved": "2025-01-01"}))
        zf.writestr("config.json", json.dumps(config))
        if weights is not None:
            zf.writestr("model.weights.h5", weights)
    return p


def _layer(cls: str, config: dict, module: str = "keras.layers") -> dict:
    return {"module": module, "class_name": cls, "registered_name": None, "config": config}


def _seq(*layers: dict, name: str = "sequential") -> dict:
    return {"module": "keras", "class_name": "Sequential", "registered_name": None,
            "config": {"name": name, "layers": list(layers)}}


DENSE = _layer("Dense", {"name": "dense", "units": 2})


def _h5_bytes(plant: Callable, libver: str = "latest") -> bytes:
    import h5py
    import numpy as np
    with tempfile.TemporaryDirectory() as t:
        p = Path(t) / "w.h5"
        with h5py.File(p, "w", libver=libver) as f:
            g = f.create_group("_layer_checkpoint_dependencies/dense/vars")
            g.create_dataset("0", data=np.zeros((4, 2), np.float32))
            deep = f.create_group("optimizer/vars/a/b/c/d")
            plant(deep)
        return p.read_bytes()


@case("BLOCK")
def a_keras_external_link_deep(d: Path) -> Path:
    import h5py

    def plant(g):
        g["1"] = h5py.ExternalLink("../../../../etc/shadow", "/x")
    return _keras_zip(d / "m.keras", _seq(DENSE), _h5_bytes(plant))


@case("BLOCK")
def a_keras_virtual_dataset(d: Path) -> Path:
    import h5py

    def plant(g):
        layout = h5py.VirtualLayout(shape=(8,), dtype="u1")
        layout[:] = h5py.VirtualSource("/proc/self/environ", "d", shape=(8,))
        g.create_virtual_dataset("v", layout)
    return _keras_zip(d / "m.keras", _seq(DENSE), _h5_bytes(plant, "earliest"))


@case("BLOCK")
def a_keras_external_storage_compact(d: Path) -> Path:
    def plant(g):
        g.create_dataset("ext", shape=(16,), dtype="u1", external=[("/root/.ssh/id_rsa", 0, 16)])
    return _keras_zip(d / "m.keras", _seq(DENSE), _h5_bytes(plant, "earliest"))


@case("BLOCK")
def a_keras_tfsmlayer_nested_functional(d: Path) -> Path:
    inner = _seq(_layer("TFSMLayer", {"name": "tfsm", "filepath": "/tmp/attacker_savedmodel",
                                      "call_endpoint": "serve"}), name="inner")
    outer = {"module": "keras", "class_name": "Functional", "registered_name": None,
             "config": {"name": "f", "layers": [
                 {**_layer("InputLayer", {"batch_shape": [None, 4], "name": "in"}), "name": "in",
                  "inbound_nodes": []},
                 {**inner, "name": "inner", "inbound_nodes": [[["in", 0, 0, {}]]]}],
                 "input_layers": [["in", 0, 0]], "output_layers": [["inner", 0, 0]]}}
    return _keras_zip(d / "m.keras", outer)


@case("BLOCK")
def a_keras_lambda_module_outside_in_wrapper(d: Path) -> Path:
    fn = {"module": "subprocess", "class_name": "function", "config": "check_output",
          "registered_name": "function"}
    lam = _layer("Lambda", {"name": "lam", "function": fn, "arguments": {"args": ["id"]}})
    wrapped = _layer("TimeDistributed", {"name": "td", "layer": lam})
    return _keras_zip(d / "m.keras", _seq(DENSE, wrapped))


@case("BLOCK")
def a_legacy_h5_model_config_lambda_module(d: Path) -> Path:
    import h5py
    import numpy as np
    fn = {"module": "os", "class_name": "function", "config": "system", "registered_name": "function"}
    cfg = _seq(_layer("Lambda", {"name": "lam", "function": fn}))
    p = d / "model.h5"
    with h5py.File(p, "w") as f:
        f.attrs["model_config"] = json.dumps(cfg)
        f.attrs["keras_version"] = "3.5.0"
        f.create_dataset("model_weights/lam/x", data=np.zeros(2))
    return p


# ----------------------------------------------------------------- attacks: NeMo / Hydra ------------

def _nemo(d: Path, config_text: str, gz: bool = True, name: str = "./model_config.yaml") -> Path:
    import torch
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    p = d / "model.nemo"
    with tarfile.open(p, "w:gz" if gz else "w") as tf:
        for n, data in ((name, config_text.encode()), ("./model_weights.ckpt", buf.getvalue())):
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return p


@case("BLOCK")
def a_nemo_target_deep_in_lists(d: Path) -> Path:
    return _nemo(d, "model:\n  encoder:\n    blocks:\n      - name: a\n      - name: b\n        sub:\n"
                    "          - - inner:\n                callbacks:\n"
                    "                  - _target_: os.system\n"
                    "                    _args_: ['id']\n")


@case("BLOCK")
def a_nemo_partial(d: Path) -> Path:
    return _nemo(d, "optim:\n  sched:\n    _target_: subprocess.run\n    _partial_: true\n"
                    "    args: [touch, /tmp/x]\n", gz=False)


@case("BLOCK")
def a_nemo_escaped_key(d: Path) -> Path:
    return _nemo(d, 'model:\n  decoder:\n    "\\x5ftarget_": "builtins.exec"\n    _args_: ["print(1)"]\n')


@case("BLOCK")
def a_nemo_anchor_merge(d: Path) -> Path:
    return _nemo(d, "base: &b\n  _target_: posix.system\n  _args_: [id]\nmodel:\n  head:\n    <<: *b\n"
                    "    extra: 1\n")


@case("BLOCK")
def a_nemo_flow_style_and_unicode(d: Path) -> Path:
    return _nemo(d, "model: {enc: {_target_: 'os.popen', cmd: id}}\n")


@case("BLOCK")
def a_nemo_name_variant(d: Path) -> Path:
    return _nemo(d, "model:\n  x:\n    _target_: os.system\n", name="model_config.yaml")


@case("BLOCK")
def a_nemo_target_module_attr_path(d: Path) -> Path:
    # hydra's _locate walks attributes: a harmless-looking package path reaching os.system
    return _nemo(d, "model:\n  x:\n    _target_: torch.serialization.os.system\n    _args_: [id]\n")


# ----------------------------------------------------------------- attacks: skops -------------------

def _skops_with(d: Path, node: dict) -> Path:
    import numpy as np
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    base = d / "base.skops"
    sio.dump({"model": LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1])}, base)
    with zipfile.ZipFile(base) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    base.unlink()
    schema = json.loads(members["schema.json"])
    schema["content"]["extra"] = node
    schema["key_types"]["content"].append(
        {"__class__": "str", "__module__": "builtins", "__loader__": "TypeNode", "__id__": 999999})
    members["schema.json"] = json.dumps(schema).encode()
    p = d / "model.skops"
    with zipfile.ZipFile(p, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    return p


def _json(value: object) -> dict:
    return {"__class__": type(value).__name__, "__module__": "builtins", "__loader__": "JsonNode",
            "content": json.dumps(value), "is_json": True}


@case("BLOCK")
def a_skops_constructor_from_reduce_sklearn_testing(d: Path) -> Path:
    node = {"__class__": "assert_run_python_script_without_output", "__module__": "sklearn.utils._testing",
            "__loader__": "ConstructorFromReduceNode",
            "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                        "content": [_json(f"import os; os.system('touch {MARK}')")]}}
    return _skops_with(d, node)


@case("BLOCK")
def a_skops_partial_of_os_system(d: Path) -> Path:
    fn = {"__class__": "system", "__module__": "os", "__loader__": "FunctionNode", "content": {}}
    node = {"__class__": "partial", "__module__": "functools", "__loader__": "PartialNode",
            "content": {"func": fn,
                        "args": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                                 "content": [_json("id")]},
                        "kwds": {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode",
                                 "content": {}, "key_types": {"__class__": "list", "__module__": "builtins",
                                                              "__loader__": "ListNode", "content": []}},
                        "namespace": _json(None)}}
    return _skops_with(d, node)


@case("BLOCK")
def a_skops_defaultdict_factory_exec(d: Path) -> Path:
    node = {"__class__": "defaultdict", "__module__": "collections", "__loader__": "DefaultDictNode",
            "content": {"main": {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode",
                                 "content": {}, "key_types": {"__class__": "list", "__module__": "builtins",
                                                              "__loader__": "ListNode", "content": []}},
                        "default_factory": {"__class__": "breakpoint", "__module__": "builtins",
                                            "__loader__": "TypeNode"}}}
    return _skops_with(d, node)


@case("BLOCK")
def a_skops_operator_func_attrgetter(d: Path) -> Path:
    node = {"__class__": "attrgetter", "__module__": "operator", "__loader__": "OperatorFuncNode",
            "attrs": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                      "content": [_json("__globals__")]}}
    return _skops_with(d, node)


@case("BLOCK")
def a_skops_loss_node_sklearn_reexport(d: Path) -> Path:
    """LossNode calls the class it names with the file's arguments: subprocess.check_output as
    re-exported by sklearn.utils._testing."""
    node = {"__class__": "check_output", "__module__": "sklearn.utils._testing", "__loader__": "LossNode",
            "__reduce__": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                           "args": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                                    "content": [_json("id")]}},
            "content": _json(None)}
    return _skops_with(d, node)


@case("FLAG")
def a_skops_constructor_os_remove_reexport(d: Path) -> Path:
    """os.remove as sklearn.datasets._base.remove: a name the check cannot know without importing;
    skops refuses it by default, so it is at least untrusted."""
    node = {"__class__": "remove", "__module__": "sklearn.datasets._base",
            "__loader__": "ConstructorFromReduceNode",
            "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                        "content": [_json("/home/user/.bashrc")]}}
    return _skops_with(d, node)


# ----------------------------------------------------------------- attacks: other formats ----------

@case("FLAG")
def a_diffusers_component_code_in_its_folder(d: Path) -> Path:
    """diffusers loads a custom component from `<component>/<library>.py` (its own folder, with
    trust_remote_code), not from the repository root."""
    (d / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "unet": ["my_unet", "MyUNet"], "scheduler": ["diffusers", "PNDMScheduler"]}))
    (d / "unet").mkdir()
    (d / "unet" / "my_unet.py").write_text("import torch\n\n\nclass MyUNet(torch.nn.Module):\n    pass\n")
    (d / "unet" / "config.json").write_text("{}")
    return d


@case("BLOCK")
def a_mlflow_loader_module(d: Path) -> Path:
    (d / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: evil_loader\n"
                               "    code: code\n    data: data\n")
    (d / "code").mkdir()
    (d / "code" / "evil_loader.py").write_text("import os\nos.system('id')\n")
    return d


@case("BLOCK")
def a_tf_savedmodel_library_readfile(d: Path) -> Path:
    from testing import tensorflow_files
    out = d / "sm"
    out.mkdir()
    tensorflow_files.saved_model(out, ["MatMul"], {"__inference_f": ["Identity", "ReadFile"]})
    return out


@case("BLOCK")
def a_tf_print_appends_to_bashrc(d: Path) -> Path:
    """tf.print(cmd, output_stream="file://~/.bashrc") in a library function: PrintV2 appends there."""
    from testing import tensorflow_files as tff
    g = tff.print_to(tff.graph(["MatMul"]), "file:///home/user/.bashrc", function="__inference_serve_9")
    return tff.saved_model_of(d / "sm", g).parent


@case("PASS")
def b_tf_print_to_stderr(d: Path) -> Path:
    from testing import tensorflow_files as tff
    return tff.saved_model_of(d / "sm", tff.print_to(tff.graph(["MatMul"]), "stderr")).parent


@case("BLOCK")
def a_tflite_flex_writefile(d: Path) -> Path:
    from testing import tflite_files
    p = d / "model.tflite"
    p.write_bytes(tflite_files.model(["ADD"], ["FlexWriteFile"]))
    return p


# ----------------------------------------------------------------- round 2 -------------------------

@case("PASS")
def b_trainer_side_files(d: Path) -> Path:
    """What transformers' Trainer writes beside a checkpoint: optimizer.pt, scheduler.pt (LambdaLR),
    rng_state.pth, trainer_state.json (training_args.bin needs accelerate: tests/static cover it); and
    other common schedulers' states."""
    import random

    import numpy as np
    import torch
    from transformers import get_linear_schedule_with_warmup
    net = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.zeros(2, 4)).sum().backward()
    opt.step()
    torch.save(opt.state_dict(), d / "optimizer.pt")
    torch.save(get_linear_schedule_with_warmup(opt, 2, 10).state_dict(), d / "scheduler.pt")
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    torch.save(rng, d / "rng_state.pth")
    (d / "trainer_state.json").write_text(json.dumps({"global_step": 10, "log_history": []}))
    scheds = {
        "onecycle": torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10),
        "cyclic": torch.optim.lr_scheduler.CyclicLR(torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
                                                    0.01, 0.1),
        "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau(opt),
        "warm_restarts": torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, 5),
    }
    for name, sched in scheds.items():
        torch.save(sched.state_dict(), d / f"sched_{name}.pt")
    seq = torch.optim.lr_scheduler.SequentialLR(opt, [torch.optim.lr_scheduler.LinearLR(opt),
                                                      torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)], [2])
    torch.save(seq.state_dict(), d / "sched_sequential.pt")
    return d


@case("PASS")
def b_tokenizer_config_chat_templates(d: Path) -> Path:
    (d / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "model_max_length": 4096,
        "chat_template": [{"name": "default", "template": MISTRAL_TEMPLATE},
                          {"name": "tool_use", "template": QWEN_TOOLS_TEMPLATE}]}))
    (d / "chat_template.jinja").write_text(LLAMA3_TEMPLATE)
    return d


@case("PASS")
def b_sentence_transformers_folder(d: Path) -> Path:
    from sentence_transformers import SentenceTransformer, models
    base = _tiny_bert(d / "bert_src" if (d / "bert_src").mkdir() is None else d, True)
    st = SentenceTransformer(modules=[models.Transformer(str(base)), models.Pooling(8)])
    st.save(str(d / "st"))
    return d / "st"


@case("PASS")
def b_npy_layouts(d: Path) -> Path:
    import numpy as np
    np.save(d / "fortran.npy", np.asfortranarray(np.ones((3, 4), ">f8")))
    np.save(d / "struct.npy", np.zeros(3, dtype=[("a", "<i4"), ("b", [("c", "<f2"), ("d", "S3")])]))
    np.save(d / "dates.npy", np.array(["2024-01-01"], dtype="M8[D]"))
    np.save(d / "unicode.npy", np.array(["héllo", "wörld"]))
    return d


@case("BLOCK")
def a_torch_zip_deflated_data_pkl(d: Path) -> Path:
    import torch
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    p = d / "pytorch_model.bin"
    with zipfile.ZipFile(p, "w") as zf:
        for info in src.infolist():
            if info.filename.endswith("data.pkl"):
                zf.writestr(info.filename, _evil_pickle(), compress_type=zipfile.ZIP_DEFLATED)
            else:
                zf.writestr(info.filename, src.read(info))
    return p


def _npy(descr: str, payload: bytes, shape: str = "(1,)") -> bytes:
    header = f"{{'descr': {descr}, 'fortran_order': False, 'shape': {shape}, }}"
    header = header + " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + payload


@case("BLOCK")
def a_npy_object_in_structured_field(d: Path) -> Path:
    p = d / "records.npy"
    p.write_bytes(_npy("[('id', '<i4'), ('meta', '|O')]", _evil_pickle()))
    return p


@case("BLOCK")
def a_npy_object_spelled_object(d: Path) -> Path:
    p = d / "names.npy"
    p.write_bytes(_npy("'object'", _evil_pickle()))
    return p


@case("BLOCK")
def a_npy_object_nested_struct_subarray(d: Path) -> Path:
    p = d / "nested.npy"
    p.write_bytes(_npy("[('a', [('b', '|O', (2,))])]", _evil_pickle()))
    return p


@case("BLOCK")
def a_npz_member_without_extension(d: Path) -> Path:
    p = d / "arrays.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("labels", _npy("'|O'", _evil_pickle()))
    return p


def _nemo_cfg(d: Path, text: str) -> Path:
    return _nemo(d, text, gz=False)


@case("BLOCK")
def a_nemo_target_by_interpolation(d: Path) -> Path:
    return _nemo_cfg(d, "names:\n  runner: os.system\nmodel:\n  x:\n    _target_: ${names.runner}\n"
                        "    _args_: [id]\n")


@case("BLOCK")
def a_nemo_target_by_string_interpolation(d: Path) -> Path:
    return _nemo_cfg(d, "p: s.sys\nmodel:\n  x:\n    _target_: \"o${p}tem\"\n")


@case("BLOCK")
def a_nemo_load_library(d: Path) -> Path:
    return _nemo_cfg(d, "model:\n  ext:\n    _target_: torch.ops.load_library\n    path: ./libext.so\n")


@case("BLOCK")
def a_nemo_numpy_ctypeslib(d: Path) -> Path:
    return _nemo_cfg(d, "model:\n  ext:\n    _target_: numpy.ctypeslib.load_library\n"
                        "    libname: libext\n    loader_path: .\n")


@case("FLAG")
def a_nemo_from_pretrained_trust_remote_code(d: Path) -> Path:
    return _nemo_cfg(d, "model:\n  encoder:\n    _target_: transformers.AutoModel.from_pretrained\n"
                        "    pretrained_model_name_or_path: attacker/encoder\n    trust_remote_code: true\n")


@case("BLOCK")
def a_pickle_torch_ops_load_library(d: Path) -> Path:
    p = d / "ext.pkl"
    p.write_bytes(program(*call("torch.ops", "load_library", "./libext.so")))
    return p


@case("BLOCK")
def a_pickle_numpy_ctypeslib_via_numpy_glob(d: Path) -> Path:
    p = d / "np.pkl"
    p.write_bytes(program(*call("numpy.ctypeslib", "load_library", "libext", ".")))
    return p


@case("BLOCK")
def a_hydra_in_plain_model_config_yaml(d: Path) -> Path:
    (d / "model_config.yaml").write_text("model:\n  head:\n    _target_: subprocess.getoutput\n"
                                         "    cmd: id\n")
    return d / "model_config.yaml"




@case("PASS")
def b_everyday_chat_template_everywhere(d: Path) -> Path:
    """An ordinary template with transformers' tags ({% generation %}, {% break %}), namespace, items,
    tojson, raise_exception: in tokenizer_config.json, chat_template.jinja and GGUF metadata."""
    import gguf
    import numpy as np
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": EVERYDAY_TEMPLATE}))
    (d / "chat_template.jinja").write_text(EVERYDAY_TEMPLATE)
    w = gguf.GGUFWriter(str(d / "m.gguf"), "llama")
    w.add_chat_template(EVERYDAY_TEMPLATE)
    w.add_tensor("t", np.zeros(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return d


def _ssti_case(kind: str) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": EVERYDAY_TEMPLATE
                                                              + SSTI_VARIANTS[kind]}))
        return d
    build.__name__ = f"a_chat_template_ssti_{kind}"
    return build


for _kind in SSTI_VARIANTS:
    case("BLOCK")(_ssti_case(_kind))


def _maps_a_file_module():
    import torch

    class MapsAFile(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.from_file("/etc/hostname", False, 1, dtype=torch.uint8).float().sum() + x
    return MapsAFile()


@case("BLOCK")
def a_torchscript_from_file_as_aten_op(d: Path) -> Path:
    """torch.from_file written as ops.aten.from_file in the archive's code: torch.jit.load compiles it."""
    import torch
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(_maps_a_file_module()), buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    p = d / "scripted.pt"
    with zipfile.ZipFile(p, "w") as zf:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(".py"):
                data = data.replace(b"torch.from_file(", b"ops.aten.from_file(")
            zf.writestr(info.filename, data)
    return p


@case("BLOCK")
def a_sympy_constructor_evaluates_string(d: Path) -> Path:
    """sympy.Add sympifies its string argument, and sympify is eval."""
    p = d / "expr.pkl"
    p.write_bytes(program(*call("sympy.core.add", "Add", f"__import__('os').system('touch {MARK}')", "1")))
    return p


@case("BLOCK")
def a_hydra_instantiate_in_pickle(d: Path) -> Path:
    p = d / "cfg.pkl"
    p.write_bytes(program(*stack_global("hydra.utils", "instantiate"), o.EMPTY_DICT(), const("_target_"),
                          const("os.system"), o.SETITEM(), o.TUPLE1(), o.REDUCE()))
    return p


@case("PASS")
def b_mlflow_sklearn_real_folders(d: Path) -> Path:
    """mlflow.sklearn.save_model in each serialization format (pickle, cloudpickle, skops)."""
    import mlflow.sklearn
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    X = np.random.default_rng(6).random((20, 3))
    m = LogisticRegression().fit(X, (X[:, 0] > 0.5).astype(int))
    for fmt in ("pickle", "cloudpickle", "skops"):
        extra = {"skops_trusted_types": []} if fmt == "skops" else {}
        mlflow.sklearn.save_model(m, str(d / fmt), serialization_format=fmt, **extra)
    return d


@case("FLAG")
def e_encrypted_7z_of_a_pickle(d: Path) -> Path:
    """An encrypted 7z (headers too) cannot be read without the password: never a PASS."""
    import py7zr
    p = d / "model.7z"
    with py7zr.SevenZipFile(p, "w", password="secret", header_encryption=True) as z:
        z.writestr(_evil_pickle(), "model.pkl")
    return p


@case("FLAG")
def e_encrypted_7z_members_only(d: Path) -> Path:
    import py7zr
    p = d / "weights.7z"
    with py7zr.SevenZipFile(p, "w", password="secret") as z:
        z.writestr(_torch_zip_with(_evil_pickle()), "pytorch_model.bin")
    return p


@case("FLAG")
def e_truncated_torch_zip(d: Path) -> Path:
    data = _torch_zip_with(_evil_pickle())
    p = d / "pytorch_model.bin"
    p.write_bytes(data[: len(data) // 2])
    return p


@case("FLAG")
def e_truncated_gzip_pickle(d: Path) -> Path:
    data = gzip.compress(_evil_pickle() * 50)
    p = d / "model.pkl.gz"
    p.write_bytes(data[: len(data) - 20])
    return p


@case("FLAG")
def e_zip_with_aes_like_encrypted_member(d: Path) -> Path:
    """A torch zip whose data.pkl is stored with the encryption flag and garbage bytes."""
    data = bytearray(_torch_zip_with(_evil_pickle()))
    i = data.find(b"data.pkl")
    head = data.rfind(b"PK\x03\x04", 0, i)
    data[head + 6] |= 1  # general-purpose flag: encrypted
    p = d / "model.pt"
    p.write_bytes(bytes(data))
    return p


def _h5_with(path: Path, plant: Callable, **kw: object) -> Path:
    import h5py
    import numpy as np
    with h5py.File(path, "w", **kw) as f:
        f.attrs["keras_version"] = "2.15.0"
        g = f.create_group("model_weights/dense/dense")
        g.create_dataset("kernel:0", data=np.zeros((4, 2), np.float32))
        plant(g)
    return path


def _ext_link(g) -> None:
    import h5py
    g["bias:0"] = h5py.ExternalLink("/etc/passwd", "/")


@case("BLOCK")
def a_h5_userblock_external_link(d: Path) -> Path:
    """libhdf5 finds the superblock after a user block (512, 1024 ... bytes in)."""
    return _h5_with(d / "model.h5", _ext_link, userblock_size=1024)


@case("BLOCK")
def a_h5_latest_format_external_link(d: Path) -> Path:
    return _h5_with(d / "model.h5", _ext_link, libver="latest")


@case("BLOCK")
def a_h5_link_in_attribute_creation_order_group(d: Path) -> Path:
    import h5py

    def plant(g) -> None:
        sub = g.create_group("tracked", track_order=True)
        for i in range(12):
            sub.create_dataset(f"w{i}", data=[i])
        sub["zz"] = h5py.ExternalLink("/root/.ssh/id_rsa", "/")
    return _h5_with(d / "model.h5", plant, libver="latest")


@case("PASS")
def b_h5_userblock_plain(d: Path) -> Path:
    return _h5_with(d / "model.h5", lambda g: None, userblock_size=512)


@case("PASS")
def b_torch_save_protocol5_and_mmap_layout(d: Path) -> Path:
    import torch
    sd = torch.nn.TransformerEncoderLayer(16, 2, 32).state_dict()
    torch.save(sd, d / "p5.pt", pickle_protocol=5)
    torch.save(sd, d / "p2.pt", pickle_protocol=2)
    torch.save({k: v.to(torch.bfloat16) for k, v in sd.items()}, d / "bf16.bin")
    return d


def _fiddle_io(d: Path, module: str, name: str) -> Path:
    """A NeMo 2 checkpoint's context/io.json (fiddle JSON) configuring `module.name`."""
    def pyref(m: str, n: str) -> dict:
        return {"type": "pyref", "module": m, "name": n}
    doc = {"root": {"type": "ref", "key": "config_1"},
           "objects": {"config_1": {
               "type": pyref("fiddle._src.config", "Config"),
               "items": [["Attr(name='args')", {"type": pyref("builtins", "tuple"), "items": [
                   ["Index(index=0)", {"type": "leaf", "value": "id"}]], "metadata": None}],
                   ["Attr(name='params_dtype')", pyref("torch", "bfloat16")]],
               "metadata": {"type": pyref("fiddle._src.config", "BuildableTraverserMetadata"),
                            "items": [["Attr(name='fn_or_cls')", pyref(module, name)]], "metadata": None}}},
           "refcounts": {"config_1": 1}, "version": "0.0.1"}
    (d / "context").mkdir()
    (d / "context" / "io.json").write_text(json.dumps(doc))
    (d / "context" / "model.yaml").write_text("_target_: nemo.collections.llm.gpt.model.llama.LlamaModel\n")
    return d


@case("PASS")
def b_nemo2_context_io_json(d: Path) -> Path:
    return _fiddle_io(d, "nemo.collections.llm.gpt.model.llama", "LlamaModel")


@case("BLOCK")
def a_nemo2_context_io_json_subprocess(d: Path) -> Path:
    return _fiddle_io(d, "subprocess", "check_output")


# ----------------------------------------------------------------- runner ---------------------------

def scan(path: Path) -> tuple[str, int, list[str], str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-m", "hfguard", "scan", "-q", "--format", "json", str(path)],
                          capture_output=True, text=True, env=env, timeout=300)
    try:
        rep = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return "NOJSON", proc.returncode, [], proc.stderr[-300:]
    rules = sorted({f"{f['rule']}:{f['severity'][:4]}" for fr in rep.get("files", []) for f in fr["findings"]}
                   | {f"{f['rule']}:{f['severity'][:4]}" for f in rep.get("findings", [])})
    return rep["verdict"], proc.returncode, rules, proc.stderr[-300:]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default="")
    ap.add_argument("--keep", type=Path)
    args = ap.parse_args()
    Path(MARK).unlink(missing_ok=True)
    bad = []
    root = args.keep or Path(tempfile.mkdtemp(prefix="hfg-redteam-"))
    print(f"{'case':48} {'expected':8} {'verdict':7} rc  rules")
    for name, expected, build in CASES:
        if args.k not in name:
            continue
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        try:
            path = build(d)
        except Exception as exc:  # noqa: BLE001 - a case the libraries here cannot build is shown, not hidden
            print(f"{name:48} {expected:8} {'SKIP':7} -   build failed: {type(exc).__name__}: {exc}")
            continue
        verdict, rc, rules, err = scan(path)
        ok_rc = EXIT.get(verdict) == rc
        if expected == "PASS":
            ok = verdict == "PASS"
        elif expected == "FLAG":
            ok = verdict in ("FLAG", "BLOCK")
        else:
            ok = verdict == "BLOCK"
        tag = "" if ok and ok_rc else "  <-- MISS" + ("" if ok_rc else f" (exit {rc} for {verdict})")
        print(f"{name:48} {expected:8} {verdict:7} {rc:<3} {' '.join(rules)}{tag}")
        if not (ok and ok_rc):
            bad.append((name, expected, verdict, rules, err.strip()[-200:]))
    print(f"\n{len(bad)} misclassified")
    for b in bad:
        print("  ", b)
    if Path(MARK).exists():
        print("!! a payload ran during the scan")
        return 3
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
