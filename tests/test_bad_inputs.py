"""Every case of the bad-input corpus (tests/bad_inputs.py) through the CLI, in subprocesses.

Each must exit with its code, print exactly one line on stderr naming the problem and the fix, show
no traceback, and leave the corpus directory exactly as it was (no output, no temporary file).
The subprocesses run three at a time, once per session.
"""

import importlib.util
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bad_inputs import CASES, build_corpus, snapshot


def _convert(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kerasonnx", "convert", *args], capture_output=True, text=True,
                          env={**os.environ, "KERAS_BACKEND": "numpy"}, cwd=cwd, timeout=600)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("bad_inputs"))


@pytest.fixture(scope="session")
def outcomes(corpus):
    """Each case's (before, result, after): the corpus snapshot around its CLI run."""
    before = snapshot(corpus)

    def run(case):
        args = [a.format(d=corpus) for a in case.args]
        if "-o" not in args:
            args += ["-o", str(corpus / "out.onnx")]
        return case.id, _convert(args, corpus)

    with ThreadPoolExecutor(3) as pool:
        results = dict(pool.map(run, CASES))
    return before, results


def test_corpus_has_at_least_twenty_cases():
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_line(case, corpus, outcomes):
    if case.id == "output-read-only" and _writable("/sys"):
        pytest.skip("/sys is writable here: no read-only directory to test with")
    before, results = outcomes
    result = results[case.id]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == case.exit_code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("kerasonnx: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in case.says:
        assert fragment in lines[0].lower(), lines[0]
    assert result.stdout == ""
    assert snapshot(corpus) == before  # nothing written, nothing left behind


def test_debug_adds_the_traceback(corpus):
    result = _convert([str(corpus / "truncated.h5"), "-o", str(corpus / "out.onnx"), "--debug"], corpus)
    assert result.returncode == 3 and "Traceback" in result.stderr
    assert not (corpus / "out.onnx").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is installed here")
def test_savedmodel_without_tensorflow_names_the_extra(tmp_path):
    savedmodel = tmp_path / "exported"
    (savedmodel / "variables").mkdir(parents=True)
    (savedmodel / "saved_model.pb").write_bytes(b"\x08\x01")  # detected by its file name only
    result = _convert([str(savedmodel), "-o", str(tmp_path / "out.onnx")], tmp_path)
    assert result.returncode == 3, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "SavedModel" in result.stderr and 'pip install "kerasonnx[tf]"' in result.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_directory_that_is_not_a_savedmodel_in_the_api(corpus):
    import kerasonnx

    with pytest.raises(kerasonnx.ModelLoadError, match="not a TensorFlow SavedModel"):
        kerasonnx.load_model(corpus / "plain_dir")


def _writable(directory: str) -> bool:
    try:
        os.rmdir(tempfile.mkdtemp(dir=directory))
    except OSError:
        return False
    return True
