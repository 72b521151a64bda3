"""``kerasonnx convert MODEL -o OUT.onnx [...]``: load, convert, optionally verify, save."""

from __future__ import annotations

import time
from pathlib import Path


def add_parser(sub):
    conv = sub.add_parser("convert", help="convert a .keras/.h5 model file to ONNX")
    conv.add_argument("model", help="path of a .keras or .h5 model file")
    conv.add_argument("-o", "--output", help="output .onnx path (default: MODEL with .onnx suffix)")
    conv.add_argument("--opset", type=int, help="target ONNX opset (default: newest supported)")
    conv.add_argument("--input-shape", action="append", default=[], metavar="[NAME=]DIMS",
                      help="input shape, e.g. 'image=?,224,224,3' ('?' or a name = dynamic); repeatable")
    conv.add_argument("--input-names", help="comma-separated ONNX input names")
    conv.add_argument("--output-names", help="comma-separated ONNX output names")
    conv.add_argument("--static-batch", action="store_true", help="fix the batch dimension to 1")
    conv.add_argument("--verify", action="store_true", help="compare with Keras in onnxruntime before saving")
    conv.add_argument("--atol", type=float, default=1e-4, help="verification absolute tolerance")
    conv.add_argument("--rtol", type=float, default=1e-3, help="verification relative tolerance")
    conv.add_argument("--external-data", choices=["auto", "yes", "no"], default="auto",
                      help="store weights in a side file (auto: only above 2 GB)")
    conv.add_argument("--no-optimize", action="store_true", help="skip graph clean-up passes")
    conv.add_argument("--custom-objects", metavar="FILE.py|MODULE",
                      help="Python file or module defining the model's custom layers and, in any "
                           "kerasonnx.Registry it holds, converters for them (its code runs)")
    conv.add_argument("--unsafe", action="store_true",
                      help="allow loading Lambda layers (runs code from the file; trusted files only)")
    return conv


def _signature(specs: list[str]):
    from ..core.errors import InvalidInputError
    from ..core.signature import parse_shape_spec

    if not specs:
        return None
    named = [s.split("=", 1) for s in specs if "=" in s]
    if named and len(named) != len(specs):
        raise InvalidInputError("--input-shape: give NAME=DIMS for every input, or DIMS for all of them")
    if named:
        return {name.strip(): parse_shape_spec(dims) for name, dims in named}
    return [parse_shape_spec(s) for s in specs]


def _custom_objects(source: str) -> dict:
    """The namespace of a user's Python file or importable module (its code runs)."""
    import importlib
    import importlib.util

    from ..core.errors import InvalidInputError

    try:
        if source.endswith(".py") or Path(source).is_file():
            if not Path(source).is_file():
                raise InvalidInputError(f"--custom-objects: {source} does not exist")
            spec = importlib.util.spec_from_file_location("kerasonnx_custom_objects", source)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(source)
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError(f"--custom-objects: {source} failed to import: {type(exc).__name__}: {exc}") from exc
    return vars(module)


def _objects_and_converters(namespace: dict):
    """Custom classes/functions defined by the user's module, and its converter registries merged."""
    from ..core.registry import Registry

    objects = {name: obj for name, obj in namespace.items() if callable(obj) and not name.startswith("_")}
    registries = [obj for obj in namespace.values() if isinstance(obj, Registry)]
    merged = None
    for registry in registries:
        merged = registry if merged is None else registry.chain(merged)
    return objects, merged


def _split(text: str | None):
    return None if text is None else [part.strip() for part in text.split(",")]


def run(args) -> int:
    started = time.perf_counter()
    signature = _signature(args.input_shape)  # validate cheap arguments before importing Keras
    output = Path(args.output) if args.output else Path(args.model).with_suffix(".onnx")

    import kerasonnx
    from ..core.errors import ModelLoadError, OutputWriteError

    if not Path(args.model).exists():
        raise ModelLoadError(f"model file not found: {args.model}")
    if not output.parent.is_dir():
        raise OutputWriteError(f"cannot write {output}: directory {output.parent} does not exist")

    custom, converters = (_objects_and_converters(_custom_objects(args.custom_objects))
                          if args.custom_objects else (None, None))
    model = kerasonnx.load_model(args.model, custom_objects=custom, safe_mode=not args.unsafe)
    onnx_model = kerasonnx.convert(model, opset=args.opset, input_signature=signature, converters=converters,
                                   input_names=_split(args.input_names),
                                   output_names=_split(args.output_names),
                                   dynamic_batch=not args.static_batch, optimize=not args.no_optimize)
    converted = time.perf_counter()
    verdict = ""
    if args.verify:
        report = kerasonnx.verify(model, onnx_model, atol=args.atol, rtol=args.rtol)
        report.raise_for_failure()
        verdict = f"; verified: max abs err {report.max_abs:.1e}, max rel err {report.max_rel:.1e}"
    external = {"auto": None, "yes": True, "no": False}[args.external_data]
    kerasonnx.save(onnx_model, output, external_data=external)
    size = output.stat().st_size + sum(p.stat().st_size for p in output.parent.glob(output.name + ".data"))
    print(f"{args.model} -> {output}: opset {onnx_model.opset_import[0].version}, "
          f"{len(onnx_model.graph.node)} nodes, {size / 1e6:.1f} MB, converted in "
          f"{converted - started:.2f} s{verdict}")
    return 0

