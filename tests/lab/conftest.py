"""Fixtures that bring a whole lab up with `tikv-lab up` and always bring it down again.

A lab costs seconds and two cores are all there is, so one lab per cluster kind serves a whole test
class (class scope, so the two kinds never run at the same time); tests that change an instance put
it back before they end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lab_harness import LabHandle, running_lab


@pytest.fixture(scope="class")
def plaintext_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHandle]:
    with running_lab(str(tmp_path_factory.mktemp("plainlab") / "lab")) as handle:
        yield handle


@pytest.fixture(scope="class")
def tls_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHandle]:
    with running_lab(str(tmp_path_factory.mktemp("tlslab") / "lab"), "--tls") as handle:
        yield handle
