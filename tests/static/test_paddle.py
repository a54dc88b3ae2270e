"""PaddlePaddle (issue 12): .pdmodel program ops (py_func, file ops) and the .pdparams pickles beside."""

from __future__ import annotations

import os
import pickle

import numpy as np

from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.static.formats.paddle import PaddleCheck, program_ops
from hfguard.static.pickle.check import SerializationCheck
from hfguard.target import local_target
from testing.paddle_files import program

INFERENCE = ["feed", "conv2d", "batch_norm", "relu", "pool2d", "matmul_v2", "elementwise_add", "softmax",
             "fetch"]


class _Payload:
    def __reduce__(self):
        return os.system, ("id",)


def _scan(tmp_path, blocks, params: object = None):
    (tmp_path / "inference.pdmodel").write_bytes(program(blocks))
    # paddle.save: a pickle (protocol 4) of a dict of numpy arrays
    state = params if params is not None else {"conv2d_0.w_0": np.ones((4, 3, 3, 3), np.float32)}
    (tmp_path / "inference.pdparams").write_bytes(pickle.dumps(state, protocol=4))
    report = scan(local_target([str(tmp_path)]), Policy(), [PaddleCheck(), SerializationCheck()])
    return report, report.all_findings()


def test_inference_program_passes(tmp_path):
    report, found = _scan(tmp_path, [INFERENCE])
    assert report.verdict is Verdict.PASS, [f.message for f in found]
    assert set(program_ops((tmp_path / "inference.pdmodel").read_bytes())) == set(INFERENCE)


def test_py_func_in_a_sub_block_blocks(tmp_path):
    report, found = _scan(tmp_path, [INFERENCE, ["while", "py_func"]])
    [f] = found
    assert (f.rule, f.severity, f.location) == ("paddle/dangerous-op", Severity.CRITICAL, "block 1 op 1")
    assert report.verdict is Verdict.BLOCK


def test_file_ops_flag_and_pickled_params_are_judged(tmp_path):
    report, found = _scan(tmp_path, [[*INFERENCE, "save_combine"]], {"w": _Payload()})
    rules = {(f.rule, f.severity) for f in found}
    assert ("paddle/dangerous-op", Severity.MEDIUM) in rules
    assert "pickle/dangerous-global" in {f.rule for f in found} and report.verdict is Verdict.BLOCK


def test_broken_program(tmp_path):
    (tmp_path / "m.pdmodel").write_bytes(program([INFERENCE])[:-7])
    report = scan(local_target([str(tmp_path / "m.pdmodel")]), Policy(), [PaddleCheck()])
    assert {f.rule for f in report.all_findings()} == {"paddle/malformed"}
