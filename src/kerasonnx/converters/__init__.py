"""Built-in converters. Each module registers its converters (with their test cases) in BUILTIN."""

from ..core.registry import Registry

BUILTIN = Registry(name="builtin")

from . import (  # noqa: E402,F401  (imported for their registrations)
    layers_activation,
    layers_applications,
    layers_attention,
    layers_conv,
    layers_core,
    layers_merging,
    layers_normalization,
    layers_pooling,
    layers_preprocessing,
    layers_recurrent,
    layers_reshaping,
    ops_control,
    ops_core,
    ops_image,
    ops_linalg,
    ops_math,
    ops_nn,
    ops_numpy,
)
