"""Opset matrix: declared converter cases at every opset from MIN_OPSET to the newest the installed
onnx and onnxruntime support.

By default a representative subset: the converters whose ONNX form depends on the opset (reductions
with axes as inputs from 18, Split sizes, Resize, LayerNormalization from 17, Attention and
RMSNormalization from 23, GroupNormalization, Pad, Clip, Squeeze/Unsqueeze, Gelu from 20, RNNs,
TopK, OneHot...). ``KERASONNX_FULL_OPSET_MATRIX=1`` runs every declared case at every opset (nightly).
"""

import os

import keras
import pytest

from kerasonnx.converters import BUILTIN
from kerasonnx.core.opsets import MIN_OPSET, max_supported_opset
from kerasonnx.core.registry import MissingOp
from kerasonnx.testing import run_case

REPRESENTATIVE = [
    "dense", "batchnorm_image", "layernorm", "layernorm_multi_axes", "rmsnorm", "groupnorm_image", "unitnorm",
    "softmax_layer_axes", "mha_causal", "gqa_mask_rows", "ops_dot_product_attention_mask",
    "conv2d_same_stride2_odd", "depthwise_conv2d", "max_pool2d_same_odd", "zero_padding2d_dynamic",
    "cropping2d_dynamic", "up_sampling2d_bilinear", "resizing_pad_to_aspect", "center_crop_dynamic",
    "ops_split_sections_dynamic", "ops_squeeze_multi", "ops_expand_dims_multi", "ops_clip", "ops_pad_reflect",
    "ops_sum_axes", "ops_mean_keepdims", "ops_max_axes", "ops_nn_gelu_exact", "rnn_lstm_masked",
    "ops_math_top_k", "mha_self", "attention_masks_causal", "rmsnorm_multi_axes", "groupnorm_dynamic",
    "ops_nn_layer_normalization_axes", "ops_nn_rms_normalization", "resizing_bilinear_antialias",
    "up_sampling2d_bicubic", "ops_argmax_keepdims", "ops_cumsum_axis1", "rnn_gru_reset_before",
    "bidirectional_masked", "ops_nn_one_hot", "ops_getitem_step", "ops_math_logsumexp", "ops_var_axes",
    "ops_nn_softmax_all_axes", "ops_pad_constant", "ops_tile", "ops_nn_depth_to_space", "activation_mish",
    "activation_gelu", "activation_hard_swish", "ops_math_rfft",
]
FULL = os.environ.get("KERASONNX_FULL_OPSET_MATRIX") == "1"
_BY_NAME = {case.name: case for case in BUILTIN.cases()}
CASES = list(_BY_NAME.values()) if FULL else [_BY_NAME[name] for name in REPRESENTATIVE]
OPSETS = list(range(MIN_OPSET, max_supported_opset() + 1))


def test_matrix_covers_the_supported_range():
    assert OPSETS[0] == 13 and OPSETS[-1] == max_supported_opset() and len(OPSETS) >= 2
    assert len(CASES) >= len(REPRESENTATIVE)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_at_opset(case, opset):
    if case.backends and keras.backend.backend() not in case.backends:
        pytest.skip(f"converter follows the {'/'.join(case.backends)} backend(s) only")
    if case.min_opset and opset < case.min_opset:
        pytest.skip(f"case needs opset {case.min_opset}")
    try:
        onnx_model, report = run_case(case, opset=opset)
    except MissingOp as exc:
        pytest.skip(str(exc))
    assert onnx_model.opset_import[0].version == opset
    assert report.passed, report.summary()
