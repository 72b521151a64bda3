"""``kerasonnx convert MODEL -o OUT.onnx [...]``: load, convert, optionally verify, save."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .reporting import add_output_options, refuse_batch_reports, start, write_reports
from .verify import add_verify_options, check


def add_parser(sub):
    conv = sub.add_parser("convert", help="convert a .keras/.h5 model file or a SavedModel directory to ONNX")
    conv.add_argument("model", nargs="+", help="path of a .keras or .h5 model file; several files, directories or "
                                               "glob patterns convert in parallel into -o OUTDIR")
    conv.add_argument("-o", "--output", help="output .onnx path (default: MODEL with .onnx suffix); with several "
                                             "models, the output directory (default: beside each model)")
    conv.add_argument("--jobs", type=int, help="parallel conversions for several models (default: min(2, CPUs))")
    conv.add_argument("--opset", type=int, help="target ONNX opset (default: newest supported)")
    conv.add_argument("--input-shape", action="append", default=[], metavar="[NAME=]DIMS",
                      help="input shape, e.g. 'image=?,224,224,3' ('?' or a name = dynamic); repeatable")
    conv.add_argument("--input-names", help="comma-separated ONNX input names")
    conv.add_argument("--output-names", help="comma-separated ONNX output names")
    conv.add_argument("--static-batch", action="store_true", help="fix the batch dimension to 1")
    conv.add_argument("--verify", action="store_true", help="compare with Keras in onnxruntime before saving")
    add_verify_options(conv)
    conv.add_argument("--external-data", choices=["auto", "yes", "no"], default="auto",
                      help="store weights in a side file (auto: only above 2 GB)")
    conv.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32",
                      help="weights and compute precision; inputs/outputs stay float32 (docs/precision.md)")
    conv.add_argument("--optimize", action=argparse.BooleanOptionalAction, default=True,
                      help="run the graph optimisation passes (default; --no-optimize skips them)")
    conv.add_argument("--inputs-as-nchw", metavar="NAMES",
                      help="comma-separated 3-D to 5-D inputs to expose channels-first (NCHW)")
    conv.add_argument("--outputs-as-nchw", metavar="NAMES",
                      help="comma-separated 3-D to 5-D outputs to expose channels-first (NCHW)")
    add_loading_options(conv)
    add_output_options(conv)
    return conv


def add_loading_options(parser) -> None:
    parser.add_argument("--custom-objects", metavar="FILE.py|MODULE",
                        help="Python file or module defining the model's custom layers and, in any "
                             "kerasonnx.Registry it holds, converters for them (its code runs)")
    parser.add_argument("--unsafe", action="store_true",
                        help="allow loading Lambda layers (runs code from the file; trusted files only)")


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


def check_output_path(output: Path) -> None:
    """Fail before converting when ``output`` cannot be a file: its directory is missing or a file,
    or it is itself a directory."""
    from ..core.errors import OutputWriteError

    parent = output.parent
    if parent.exists() and not parent.is_dir():
        raise OutputWriteError(f"cannot write {output}: {parent} is a file, not a directory")
    if not parent.is_dir():
        raise OutputWriteError(f"cannot write {output}: directory {parent} does not exist")
    if output.is_dir():
        raise OutputWriteError(f"cannot write {output}: it is a directory; give a file path such as "
                               f"{output / 'model.onnx'}")


def _split(text: str | None):
    return None if text is None else [part.strip() for part in text.split(",")]


def _convert(model, progress, **options):
    """``(result, model)``: result is the ``api.Conversion`` (layer records, timings) and model its
    ``onnx_ir.Model`` (verified and saved without ever copying the weights into a protobuf) or, for
    models tf2onnx converts, the ModelProto for both."""
    import kerasonnx
    from ..api import convert_with_details
    from ..engines import uses_tf2onnx

    if uses_tf2onnx(model):
        onnx_model = kerasonnx.convert(model, **options)
        return onnx_model, onnx_model
    conversion = convert_with_details(model, progress=progress, **options)
    return conversion, conversion.ir_model


def _opset_and_nodes(onnx_model) -> tuple[int, int]:
    import onnx_ir as ir

    if isinstance(onnx_model, ir.Model):
        return onnx_model.opset_imports[""], len(onnx_model.graph)
    return onnx_model.opset_import[0].version, len(onnx_model.graph.node)


def run(args) -> int:
    if isinstance(args.model, list):  # from the command line: one model, or a batch
        from .batch import is_batch, run_batch

        if is_batch(args.model):
            refuse_batch_reports(args)
            return run_batch(args)
        args.model = args.model[0]
    signature = _signature(args.input_shape)  # validate cheap arguments before importing Keras
    progress = start(args)
    output = Path(args.output) if args.output else Path(args.model).with_suffix(".onnx")

    import kerasonnx
    from ..core.errors import ModelLoadError
    from ..engines import engine_name
    from ..logs import capture_warnings

    if not Path(args.model).exists():
        raise ModelLoadError(f"model file not found: {args.model}")
    check_output_path(output)
    import keras  # noqa: F401  (Keras and its backend load here, before timing starts)

    started = time.perf_counter()
    with capture_warnings() as warned:
        with progress.stage("load"):
            custom, converters = (_objects_and_converters(_custom_objects(args.custom_objects))
                                  if args.custom_objects else (None, None))
            model = kerasonnx.load_model(args.model, custom_objects=custom, safe_mode=not args.unsafe)
        with progress.stage("convert"):
            result, onnx_model = _convert(model, progress, opset=args.opset, input_signature=signature,
                                          converters=converters, input_names=_split(args.input_names),
                                          output_names=_split(args.output_names),
                                          dynamic_batch=not args.static_batch, optimize=args.optimize,
                                          precision=args.precision,
                                          inputs_as_nchw=_split(args.inputs_as_nchw),
                                          outputs_as_nchw=_split(args.outputs_as_nchw))
        converted = time.perf_counter()
        report, verdict = None, ""
        if args.verify:
            with progress.stage("verify"):
                report = check(model, onnx_model, args, {
                    "converters": converters, "opset": args.opset, "input_signature": signature,
                    "dynamic_batch": not args.static_batch, "precision": args.precision,
                    "inputs_as_nchw": _split(args.inputs_as_nchw), "outputs_as_nchw": _split(args.outputs_as_nchw)},
                    raise_failure=False)
            if not report.passed:  # the report shows the failed checks; nothing else is written
                write_reports(args, result, verification=report, seconds=progress.seconds, warnings=warned)
                report.raise_for_failure()
            verdict = (f"; verified: max abs err {report.max_abs:.1e}, max rel err {report.max_rel:.1e}"
                       + (f" (atol {report.atol:g}, rtol {report.rtol:g})" if args.precision != "fp32" else ""))
        external = {"auto": None, "yes": True, "no": False}[args.external_data]
        with progress.stage("save"):
            kerasonnx.save(onnx_model, output, external_data=external)
    write_reports(args, result, verification=report, seconds=progress.seconds, warnings=warned, output=output)
    size = output.stat().st_size + sum(p.stat().st_size for p in output.parent.glob(output.name + ".data"))
    opset, nodes = _opset_and_nodes(onnx_model)
    print(f"{args.model} -> {output}: opset {opset}, {nodes} nodes, {size / 1e6:.1f} MB, converted in "
          f"{converted - started:.2f} s (engine: {engine_name(model)}){verdict}")
    return 0

