"""``keras.ops`` core operations that appear as nodes in functional graphs."""

from __future__ import annotations

import keras

from ..core.layout import Layout
from ..core.registry import Case
from ..core.walker import ops_classes
from . import BUILTIN


@BUILTIN.register(*ops_classes("core", "Cast"), layout=Layout.ANY, cases=[
    Case("ops_cast_to_int", lambda: (lambda x: keras.ops.cast(x * 3.0, "int32")), ((3, 4),)),
    Case("ops_cast_bool_to_float", lambda: (lambda x: keras.ops.cast(keras.ops.greater(x, 0.0), "float32")),
         ((3, 4),)),
    Case("ops_cast_int_to_float", lambda: (lambda x: keras.ops.cast(x, "float32") * 0.5), ((5,),),
         dtypes=("int64",)),
])
def cast(ctx, op, x):
    return ctx.cast(x, ctx.out_dtype())
