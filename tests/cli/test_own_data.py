"""`tinyc run --data npz:FILE --val-split F --keep-best` from the command line."""

from __future__ import annotations

import re

import numpy as np

from tests.cli.test_cli import error_lines, invoke
from tests.cli.test_run import work  # noqa: F401 (fixture)
from tests.runtime.test_npz import arrays


def test_run_on_npz_with_validation_and_best_checkpoint(work, tmp_path):  # noqa: F811
    np.savez(tmp_path / "mine.npz", **arrays(200, 50))
    ckpt = tmp_path / "run.safetensors"
    result = invoke("run", work / "mlp.ir", "--data", f"npz:{tmp_path / 'mine.npz'}", "--epochs", 2,
                    "--val-split", 0.2, "--checkpoint", ckpt, "--keep-best")
    assert result.exit_code == 0, result.output
    assert "160 train / 40 validation / 50 test examples" in result.stdout
    assert len(re.findall(r"^epoch \d/2: .*val accuracy \d+\.\d\d%, test accuracy", result.stdout, re.MULTILINE)) == 2
    assert f"best {tmp_path / 'run.best.safetensors'} (epoch " in result.stdout
    assert (tmp_path / "run.best.safetensors").exists()


def test_a_bad_npz_is_one_line_and_exit_2(work, tmp_path):  # noqa: F811
    np.savez(tmp_path / "bad.npz", images=np.zeros((3, 28, 28)))
    result = invoke("run", work / "mlp.ir", "--data", f"npz:{tmp_path / 'bad.npz'}")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert error_lines(result)[0] == (f"error: {tmp_path / 'bad.npz'}: array 'images' is neither train_<input> "
                                      "nor test_<input>")
