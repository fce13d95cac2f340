"""The compiled update (TrainConfig.compile) needs a C++ toolchain: without one, a one-line error before any work.

That the compiled update computes what the eager one does is tests/test_update_reference.py's
`awac-compiled` case.
"""

from __future__ import annotations

import sysconfig

import pytest
from torch._inductor import config as inductor_config
from train_helpers import finetune_args, write_config

from awac_robot.cli import main
from awac_robot.train.config import ConfigError, TrainConfig, setup_torch


@pytest.fixture
def no_compiler():
    """torch.compile's compiler search pointed at a compiler that does not exist (it really runs `NAME --version`)."""
    with inductor_config.patch({"cpp.cxx": (None, "no-such-c++-compiler")}):
        yield


def test_no_compiler_is_a_config_error(no_compiler) -> None:
    with pytest.raises(ConfigError, match=r"no C\+\+ compiler .*apt-get install g\+\+.*compile: false"):
        setup_torch(TrainConfig(compile=True))
    assert setup_torch(TrainConfig(compile=False, threads=1)) == 1  # eager training needs no compiler


def test_missing_python_headers_are_a_config_error(monkeypatch, tmp_path) -> None:
    real = sysconfig.get_path
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *a, **k: str(tmp_path) if name == "include" else real(name))
    with pytest.raises(ConfigError, match=f"{tmp_path} has no Python.h.*python3-dev"):
        setup_torch(TrainConfig(compile=True))


def test_finetune_without_compiler_stops_with_one_line_and_writes_nothing(no_compiler, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    config = write_config(tmp_path, compile=True)
    store = tmp_path / "door.zarr"
    assert main(finetune_args(store, out, config, offline=10, online=0)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no C++ compiler" in err[0], err
    assert not out.exists()
