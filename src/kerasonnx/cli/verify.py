"""``kerasonnx verify MODEL OUT.onnx [...]``: compare an ONNX file with its Keras model.

The verification options are shared with ``kerasonnx convert --verify``.
"""

from __future__ import annotations

from pathlib import Path


def add_verify_options(parser) -> None:
    """Tolerances, user inputs and batch sizes (``convert --verify`` and ``verify``)."""
    parser.add_argument("--atol", type=float, help="verification absolute tolerance (default by precision: "
                                                   "1e-4 float32, 1e-2 fp16, 5e-2 bf16)")
    parser.add_argument("--rtol", type=float, help="verification relative tolerance (default by precision: "
                                                   "1e-3 float32, 1e-2 fp16, 5e-2 bf16)")
    parser.add_argument("--inputs", metavar="FILE.npz|FILE.npy",
                        help="verify on these inputs (.npz: arrays named after the ONNX inputs, or "
                             "positional arr_0, arr_1, ...; .npy: the single input) instead of generated ones")
    parser.add_argument("--batch-sizes", default="1,3", metavar="B1,B2",
                        help="batch sizes of the generated inputs (default 1,3)")


def add_parser(sub):
    from .convert import add_loading_options

    cmd = sub.add_parser("verify", help="compare an ONNX file with its Keras model in onnxruntime")
    cmd.add_argument("model", help="path of the .keras or .h5 model file")
    cmd.add_argument("onnx", help="path of the .onnx file converted from it")
    cmd.add_argument("--input-shape", action="append", default=[], metavar="[NAME=]DIMS",
                     help="input shape the model was converted with (as for convert); repeatable")
    add_verify_options(cmd)
    add_loading_options(cmd)
    return cmd


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    from ..core.errors import InvalidInputError

    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise InvalidInputError(f"--batch-sizes: expected positive integers like 1,3, got '{text}'")
    return sizes


def check(model, onnx_model, args, conversion_options: dict, *, raise_failure: bool = True):
    """Verify ``onnx_model`` with the command's options; returns the VerifyReport, or (with
    ``raise_failure``) raises VerificationError naming the first diverging layer when outputs differ."""
    import kerasonnx
    from ..verification import load_inputs

    inputs = load_inputs(args.inputs, onnx_input_names(onnx_model)) if args.inputs else None
    report = kerasonnx.verify(model, onnx_model, inputs=inputs, batch_sizes=parse_batch_sizes(args.batch_sizes),
                              atol=args.atol, rtol=args.rtol, conversion_options=conversion_options)
    if raise_failure:
        report.raise_for_failure()
    return report


def onnx_input_names(onnx_model) -> list[str]:
    import onnx_ir as ir

    if isinstance(onnx_model, ir.Model):
        return [v.name for v in onnx_model.graph.inputs if not v.is_initializer()]
    initializers = {t.name for t in onnx_model.graph.initializer}
    return [i.name for i in onnx_model.graph.input if i.name not in initializers]


def _load_onnx(path: str):
    import onnx

    from ..core.errors import InvalidInputError

    if not Path(path).is_file():
        raise InvalidInputError(f"ONNX file not found: {path}")
    try:
        return onnx.load(path)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise InvalidInputError(f"{path} is not a readable ONNX file: {type(exc).__name__}: {exc}") from None


def run(args) -> int:
    from .convert import _custom_objects, _objects_and_converters, _signature

    signature = _signature(args.input_shape)
    parse_batch_sizes(args.batch_sizes)  # bad arguments fail before Keras is imported
    import kerasonnx

    onnx_model = _load_onnx(args.onnx)
    custom, converters = (_objects_and_converters(_custom_objects(args.custom_objects))
                          if args.custom_objects else (None, None))
    model = kerasonnx.load_model(args.model, custom_objects=custom, safe_mode=not args.unsafe)
    report = check(model, onnx_model, args, {"converters": converters, "input_signature": signature})
    shapes = "; ".join(", ".join(str(s) for s in shape_set) for shape_set in report.input_shapes)
    print(f"{args.model} vs {args.onnx}: {report.summary()}; input shapes checked: {shapes}")
    return 0
