"""Integration fixtures: a lab cluster plus an inventory for it, for real ansible-playbook runs.

Labs are class-scoped (a lab costs seconds and two cores are all there is); a test that changes the
cluster in a way the next test would notice must use its own class or put the cluster back.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lab"))

from lab_harness import LabHandle, running_lab  # noqa: E402  pylint: disable=wrong-import-position


class LabWithInventory:
    """A running lab and the inventory file `tikv-lab inventory` wrote for it."""

    def __init__(self, handle: LabHandle, inventory: str):
        self.handle = handle
        self.inventory = inventory
        self.root = handle.root


def lab_with_inventory(tmp_path_factory: pytest.TempPathFactory, name: str, *up_args: str
                       ) -> Iterator[LabWithInventory]:
    """A lab brought up with `tikv-lab up <up_args>` and its inventory, taken down after use."""
    base = tmp_path_factory.mktemp(name)
    with running_lab(str(base / "lab"), *up_args) as handle:
        inventory = str(base / "inventory.yml")
        with open(inventory, "w", encoding="utf-8") as fh:
            fh.write(handle.ok("inventory"))
        yield LabWithInventory(handle, inventory)


@pytest.fixture(scope="class")
def plaintext_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabWithInventory]:
    """A plaintext 3 PD + 3 TiKV lab."""
    yield from lab_with_inventory(tmp_path_factory, "plain")


@pytest.fixture(scope="class")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabWithInventory]:
    """A 3 PD + 3 TiKV lab made TLS by the lab itself (`up --tls`; CA in <root>/ca, operator
    certificate in <root>/client-tls)."""
    yield from lab_with_inventory(tmp_path_factory, "tls", "--tls")


@pytest.fixture
def make_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LabWithInventory]]:
    """make_lab(name, *up_args): a lab of another shape (`--pd 5` ...) for one test, taken down after it."""
    with contextlib.ExitStack() as stack:
        def make(name: str, *up_args: str) -> LabWithInventory:
            return stack.enter_context(contextlib.contextmanager(lab_with_inventory)(tmp_path_factory, name, *up_args))
        yield make
