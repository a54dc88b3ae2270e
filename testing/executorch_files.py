"""ExecuTorch programs without executorch: the Program / ExecutionPlan / Operator / BackendDelegate tables
of executorch/schema/program.fbs (identifier ET12) built with the flatbuffers library as flatc's builders
do (Program: 0 version, 1 execution_plan; ExecutionPlan: 0 name, 6 operators, 7 delegates;
Operator: 0 name, 1 overload; BackendDelegate: 0 id)."""

from __future__ import annotations

import flatbuffers


def _table_vector(b: flatbuffers.Builder, tables: list[int]) -> int:
    b.StartVector(4, len(tables), 4)
    for t in reversed(tables):
        b.PrependUOffsetTRelative(t)
    return b.EndVector()


def program(plans: dict[str, tuple[list[str], list[str]]]) -> bytes:
    """{method name: ([operator 'ns::name'], [delegate backend ids])}"""
    b = flatbuffers.Builder(1024)
    plan_tables = []
    for method, (ops, backends) in plans.items():
        op_tables = []
        for op in ops:
            name, overload = b.CreateString(op), b.CreateString("out")
            b.StartObject(2)
            b.PrependUOffsetTRelativeSlot(0, name, 0)
            b.PrependUOffsetTRelativeSlot(1, overload, 0)
            op_tables.append(b.EndObject())
        del_tables = []
        for backend in backends:
            ident = b.CreateString(backend)
            b.StartObject(3)
            b.PrependUOffsetTRelativeSlot(0, ident, 0)
            del_tables.append(b.EndObject())
        op_vec, del_vec = _table_vector(b, op_tables), _table_vector(b, del_tables)
        name = b.CreateString(method)
        b.StartObject(9)
        b.PrependUOffsetTRelativeSlot(0, name, 0)
        b.PrependUOffsetTRelativeSlot(6, op_vec, 0)
        b.PrependUOffsetTRelativeSlot(7, del_vec, 0)
        plan_tables.append(b.EndObject())
    plans_vec = _table_vector(b, plan_tables)
    b.StartObject(9)
    b.PrependUint32Slot(0, 0, 1)
    b.PrependUOffsetTRelativeSlot(1, plans_vec, 0)
    b.Finish(b.EndObject(), file_identifier=b"ET12")
    return bytes(b.Output())
