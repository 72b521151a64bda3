"""Conversion reports (markdown, HTML rendered in headless Chromium), logging and progress display."""

import io
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import keras
import numpy as np
import onnx_ir as ir
import pytest

import kerasonnx
import modern_models as mm
from kerasonnx.api import convert_with_details
from kerasonnx.cli import main
from kerasonnx.logs import Progress, capture_warnings, configure_logging
from kerasonnx.report import build_report, render_markdown, write
from models import mlp

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                                             "(Debian: apt-get install chromium)")
rng = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def restore_logger():
    """The CLI configures the "kerasonnx" logger (handler, level, no propagation): undo it after a test."""
    log = logging.getLogger("kerasonnx")
    saved = (list(log.handlers), log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]


def _report(model, inputs, **kwargs):
    conversion = convert_with_details(model)
    verification = kerasonnx.verify(model, conversion.ir_model, inputs=inputs)
    assert verification.passed, verification.summary()
    return conversion, build_report(conversion, verification=verification, **kwargs)


@pytest.fixture(scope="module")
def transformer():
    model = mm.bert_like()
    return _report(model, [rng.integers(0, mm.VOCAB, size=(2, 7)).astype("int32")],
                   source="bert_like.keras", seconds={"load": 0.25}, warnings=["an example warning"])


@pytest.fixture(scope="module")
def resnet():
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    return _report(model, [rng.standard_normal((1, 64, 64, 3)).astype("float32")])


def _table_rows(text: str, heading: str) -> list[list[str]]:
    """The body rows of the markdown table under ``## heading``."""
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_markdown_report(transformer, tmp_path):
    conversion, report = transformer
    path = write(report, tmp_path / "report.md")
    text = path.read_text()
    graph_nodes = list(conversion.ir_model.graph)
    for heading in ("Inputs and outputs", "Verification", "Timings", "Warnings", "ONNX op histogram", "Layers"):
        assert f"\n## {heading}\n" in text
    histogram = _table_rows(text, "ONNX op histogram")
    counts = {op: int(n) for op, n in histogram[:-1]}
    assert sum(counts.values()) == len(graph_nodes) == int(histogram[-1][1].strip("*"))
    assert counts == {op: sum(n.op_type == op for n in graph_nodes) for op in counts}
    inputs = _table_rows(text, "Inputs and outputs")
    assert inputs[0][:4] == ["input", "`token_ids`", "int32", "(batch, token_ids_dim1)"]
    assert "pass" in _table_rows(text, "Verification")[0]
    assert "- an example warning" in text
    layers = [row for row in _table_rows(text, "Layers") if row[0]]
    names = [row[1] for row in layers]
    assert re.fullmatch(r"`mean(_\d+)?`", names[3])  # an op's name carries Keras' global counter
    assert names[:3] + names[4:] == ["`embed`", "`block_0`", "`block_1`", "`classifier`"]
    assert [row[3] for row in layers] == ["traced"] * 3 + ["built-in converter"] * 2
    # every final node is attributed to one layer: the depth-0 rows add up to the graph
    assert sum(int(row[4].split()[0]) for row in layers) == len(graph_nodes)
    assert re.search(r"↳ `self_attention(_\d+)?`", text) and re.search(r"↳ `layer_normalization(_\d+)?`", text)


def test_report_of_a_model_without_layer_records(tmp_path):
    """A model kerasonnx did not convert from a Keras graph (tf2onnx's): no layer table, same summary."""
    proto = kerasonnx.convert(mlp())
    report = build_report(proto)
    text = render_markdown(report)
    assert "No layer records" in text and report.node_count == len(proto.graph.node)
    assert {kind for _, _, kind, _ in report.structure.boxes.values()} == {"input", "other", "output"}
    html = write(report, tmp_path / "plain.html").read_text()
    assert "<svg" in html and "No layer records" in html


def test_report_paths_are_checked(transformer, tmp_path):
    _, report = transformer
    with pytest.raises(kerasonnx.InvalidInputError, match="use .md or .html"):
        write(report, tmp_path / "report.pdf")
    with pytest.raises(kerasonnx.OutputWriteError, match="does not exist"):
        write(report, tmp_path / "missing" / "report.md")
    assert list(tmp_path.iterdir()) == []


def _read_png(path: Path) -> np.ndarray:
    """Decode an 8-bit, non-interlaced RGB(A) PNG (what Chromium writes) into an HxWxC array."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0
    channels = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(chunks)), np.uint8).reshape(height, 1 + width * channels)
    image = np.zeros((height, width * channels), np.int32)
    prior = np.zeros(width * channels, np.int32)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if kind == 0:
            row = line
        elif kind == 1:
            row = np.cumsum(line.reshape(width, channels), axis=0).ravel() % 256
        elif kind == 2:
            row = (line + prior) % 256
        else:
            row = _unfilter_sequential(kind, line.tolist(), prior.tolist(), channels)
        image[y] = prior = np.asarray(row, np.int32)
    return image.reshape(height, width, channels)[..., :3].astype(np.uint8)


def _unfilter_sequential(kind: int, line: list, prior: list, bpp: int) -> list:
    out = [0] * len(line)
    for i, value in enumerate(line):
        a = out[i - bpp] if i >= bpp else 0
        b = prior[i]
        if kind == 3:
            out[i] = (value + (a + b) // 2) % 256
            continue
        c = prior[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        out[i] = (value + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) % 256
    return out


def _chromium(*args, tmp_path) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", f"--user-data-dir={profile}", "--enable-logging=stderr", *args],
                          capture_output=True, text=True, timeout=120)


@needs_chromium
@pytest.mark.parametrize("which", ["resnet", "transformer"])
def test_html_report_renders_in_chromium(which, request, tmp_path):
    conversion, report = request.getfixturevalue(which)
    page = write(report, tmp_path / f"{which}.html")
    html = page.read_text()
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<link" not in html  # self-contained: no external assets

    dom = _chromium("--dump-dom", page.as_uri(), tmp_path=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<table class="layers">' in dom.stdout and "<svg" in dom.stdout
    depth0 = [r.path for r in conversion.records if r.depth == 0]
    missing = [name for name in depth0 if f"<code>{name}</code>" not in dom.stdout]
    assert not missing, f"layers missing from the rendered table: {missing[:5]}"
    assert "verified" in dom.stdout
    assert "Failed to load resource" not in dom.stderr and "Uncaught" not in dom.stderr

    shot = tmp_path / f"{which}.png"
    result = _chromium(f"--screenshot={shot}", "--window-size=1280,1800", "--force-device-scale-factor=0.5",
                       page.as_uri(), tmp_path=tmp_path)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    image = _read_png(shot)
    assert image.shape[0] >= 800 and image.shape[1] >= 600
    colours, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
    common = colours[counts > image.shape[0] * image.shape[1] * 0.001]
    assert len(common) >= 8, f"screenshot looks blank: {len(common)} colours"
    header = image[5:60].reshape(-1, 3).astype(int)  # the blue title band at the top of the page
    assert ((header[:, 2] - header[:, 0]) > 60).mean() > 0.3


def _cli(*args, cwd):
    env = {**os.environ, "KERAS_BACKEND": "numpy"}
    return subprocess.run([sys.executable, "-m", "kerasonnx", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def mlp_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "mlp.keras"
    mlp().save(path)
    return path


def test_cli_quiet_prints_nothing_on_stderr(mlp_file, tmp_path, capfd):
    assert main(["convert", str(mlp_file), "-o", str(tmp_path / "m.onnx"), "--quiet"]) == 0
    out, err = capfd.readouterr()
    assert err == "" and len(out.splitlines()) == 1


def test_cli_verbose_logs_stages_and_writes_reports(mlp_file, tmp_path):
    result = _cli("convert", mlp_file, "-o", tmp_path / "m.onnx", "--verify", "-v", "--report", "r.md",
                  "--report", "r.html", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    for stage in ("loading", "converting", "verifying", "saving"):
        assert f"kerasonnx: info: {stage} ..." in lines
    assert any(line.startswith("kerasonnx: info: convert done in ") for line in lines)
    assert "\r" not in result.stderr and "\x1b" not in result.stderr  # not a terminal: no progress line
    assert len(result.stdout.splitlines()) == 1 and "verified" in result.stdout
    markdown = (tmp_path / "r.md").read_text()
    assert "`hidden`" in markdown and "| verification | passed |" in markdown
    assert "| load |" in markdown and "| optimize |" in markdown and "| save |" in markdown
    assert '<table class="layers">' in (tmp_path / "r.html").read_text()


def test_cli_refuses_unknown_report_format_before_converting(mlp_file, tmp_path, capfd):
    assert main(["convert", str(mlp_file), "-o", str(tmp_path / "m.onnx"), "--report", str(tmp_path / "r.txt")]) == 2
    out, err = capfd.readouterr()
    assert out == "" and err == f"kerasonnx: error: report {tmp_path / 'r.txt'}: unknown format '.txt' (use .md or .html)\n"
    assert not any(tmp_path.iterdir())


def test_debug_lines_name_each_layer(capsys):
    configure_logging(verbose=2)
    kerasonnx.convert(mlp())
    lines = capsys.readouterr().err.splitlines()
    assert "kerasonnx: debug: hidden (Dense): converter, 2 ONNX node(s)" in lines


def _read_pty(fd, quiet_for: float = 0.5) -> str:
    """Everything written to the pseudo-terminal: Linux hands pty output over asynchronously, so
    one read right after the writes can miss the last bytes."""
    import select

    data = b""
    while select.select([fd], [], [], quiet_for)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.decode()


def test_progress_line_on_a_terminal():
    """A real pseudo-terminal: the line is redrawn in place, erased at the end and around log lines."""
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as terminal:
            progress = Progress(stream=terminal, delay=0, min_redraw=0)
            assert progress.live
            with progress.stage("convert"):
                convert_with_details(mlp(), progress=progress)
            terminal.flush()
        output = _read_pty(master)
    finally:
        os.close(master)
        os.close(slave)
    assert "\rconverting 1/2 layers  hidden" in output.replace("\x1b[K", "")
    assert "converting 2/2 layers  probs" in output and "optimizing" in output
    assert output.endswith("\r\x1b[K")  # nothing left on the terminal line


def test_progress_off_a_terminal_logs_instead(caplog):
    stream = io.StringIO()
    progress = Progress(stream=stream, delay=0, log_every=0)
    assert not progress.live
    with caplog.at_level(logging.INFO, logger="kerasonnx"):
        with progress.stage("convert"):
            convert_with_details(mlp(), progress=progress)
    assert stream.getvalue() == ""
    messages = [r.getMessage() for r in caplog.records]
    assert "converting ..." in messages and "convert: 2/2 layers" in messages
    assert set(progress.seconds) == {"convert"}


def test_capture_warnings_collects_log_and_python_warnings():
    with capture_warnings() as collected:
        logging.getLogger("kerasonnx.converters.test").warning("converted as a Loop")
        for _ in range(3):
            warnings.warn("deprecated option", DeprecationWarning)
        np.float32(1e38) * np.float32(1e38)  # numpy float noise is not a conversion warning
    assert collected == ["converted as a Loop", "DeprecationWarning: deprecated option (x3)"]


def test_report_of_an_ir_model_counts_subgraph_nodes_apart():
    report = build_report(ir.from_proto(kerasonnx.convert(mm.control_flow_layers())))
    assert report.subgraph_nodes > 0
    assert sum(n for _, n in report.op_histogram) == report.node_count
