"""TFLite models without tensorflow: the Model / OperatorCode tables of
tensorflow/compiler/mlir/lite/schema/schema.fbs built with the flatbuffers library the way flatc's
generated builders do (Model: 0 version, 1 operator_codes, 2 subgraphs, 3 description, 4 buffers;
OperatorCode: 0 deprecated_builtin_code, 1 custom_code, 2 version, 3 builtin_code)."""

from __future__ import annotations

import flatbuffers

CUSTOM = 32
BUILTINS = {"ADD": 0, "CONV_2D": 3, "FULLY_CONNECTED": 9, "RELU": 19, "RESHAPE": 22, "SOFTMAX": 25}


def model(builtins: list[str], custom: list[str] = (), buffer_bytes: int = 64) -> bytes:
    b = flatbuffers.Builder(1024)
    customs = [b.CreateString(name) for name in custom]
    codes = []
    for name in builtins:
        b.StartObject(4)
        b.PrependInt8Slot(0, BUILTINS[name], 0)
        b.PrependInt32Slot(2, 1, 1)
        b.PrependInt32Slot(3, BUILTINS[name], 0)
        codes.append(b.EndObject())
    for s in customs:
        b.StartObject(4)
        b.PrependInt8Slot(0, CUSTOM, 0)
        b.PrependUOffsetTRelativeSlot(1, s, 0)
        b.PrependInt32Slot(2, 1, 1)
        b.PrependInt32Slot(3, CUSTOM, 0)
        codes.append(b.EndObject())
    b.StartVector(4, len(codes), 4)
    for c in reversed(codes):
        b.PrependUOffsetTRelative(c)
    code_vec = b.EndVector()
    data = b.CreateByteVector(b"\x01" * buffer_bytes)
    b.StartObject(1)   # Buffer { data: [ubyte] }
    b.PrependUOffsetTRelativeSlot(0, data, 0)
    buf = b.EndObject()
    b.StartVector(4, 1, 4)
    b.PrependUOffsetTRelative(buf)
    buffers = b.EndVector()
    desc = b.CreateString("hfguard test model")
    b.StartObject(8)
    b.PrependUint32Slot(0, 3, 0)
    b.PrependUOffsetTRelativeSlot(1, code_vec, 0)
    b.PrependUOffsetTRelativeSlot(3, desc, 0)
    b.PrependUOffsetTRelativeSlot(4, buffers, 0)
    b.Finish(b.EndObject(), file_identifier=b"TFL3")
    return bytes(b.Output())
