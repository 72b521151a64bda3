"""Layers defined inside ``keras.applications`` modules (ConvNeXt's LayerScale, StochasticDepth)."""

from __future__ import annotations

from ..core.layout import Layout
from ..core.registry import Case
from ..core.walker import app_class
from . import BUILTIN

LayerScale = app_class("convnext", "LayerScale")
StochasticDepth = app_class("convnext", "StochasticDepth")

if LayerScale is not None:

    @BUILTIN.register(LayerScale, layout=Layout.ANY, cases=[
        Case("convnext_layer_scale", lambda: LayerScale(0.5, 6), ((5, 6),)),
    ])
    def layer_scale(ctx, op, x):
        gamma = ctx.channel_const(ctx.numpy(op.gamma), -1, name="gamma")
        return ctx.op("Mul", [x, gamma])


if StochasticDepth is not None:

    @BUILTIN.register(StochasticDepth, layout=Layout.ANY, cases=[
        Case("convnext_stochastic_depth", lambda: StochasticDepth(0.3), ((5, 6),)),
    ])
    def stochastic_depth(ctx, op, x):
        return x  # identity at inference

