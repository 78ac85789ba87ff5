"""`--threads` and $TINYC_NUM_THREADS on `tinyc run` and `tinyc eval`."""

from __future__ import annotations

from typer.testing import CliRunner

from tests.cli.test_run import assert_one_line_error, trained, work  # noqa: F401 (fixtures)
from tinyc.cli.main import app


def invoke(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def test_threads_flag_trains_and_evaluates(work, trained):  # noqa: F811
    data = f"idx:{work / 'data'}"
    result = invoke("run", work / "mlp.ir", "--data", data, "--epochs", 1, "--limit", 64, "--threads", 1)
    assert result.exit_code == 0, result.stderr
    result = invoke("eval", work / "mlp.ir", "--weights", trained["ckpt"], "--data", data, "--threads", 2)
    assert result.exit_code == 0, result.stderr
    assert invoke("run", work / "mlp.ir", "--data", data, "--threads", 0).exit_code == 2  # click's usage error


def test_bad_environment_is_one_line_before_any_work(work, tmp_path):  # noqa: F811
    ckpt = tmp_path / "c.safetensors"
    for command in (("run", "--checkpoint", ckpt), ("eval", "--weights", ckpt)):
        result = invoke(command[0], work / "mlp.ir", "--data", f"idx:{work / 'data'}", *command[1:],
                        env={"TINYC_NUM_THREADS": "many"})
        assert_one_line_error(result, "TINYC_NUM_THREADS='many' is not a whole number >= 1")
    assert not ckpt.exists()
