"""Every test sees no data set of this machine: the data folder, the cache and the system data root
(Debian's /usr/share/datasets) point at empty folders, so a test passes the same whether or not
MNIST is cached or `dataset-fashion-mnist` is installed. Tests marked `network` read the real ones."""

from __future__ import annotations

import pytest

DATA_ENV = ("TINYC_DATA_DIR", "TINYC_CACHE", "TINYC_SYSTEM_DATA")


@pytest.fixture(autouse=True)
def _no_installed_data(request, tmp_path_factory, monkeypatch):
    if request.node.get_closest_marker("network"):
        return
    empty = tmp_path_factory.mktemp("no-data")
    for name in DATA_ENV:
        monkeypatch.setenv(name, str(empty / name.lower()))
