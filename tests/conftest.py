"""Test bootstrap: make the collection importable as ansible_collections.tlsops.tikv and the lab as tikvlab.

ANSIBLE_COLLECTIONS_PATH points at the linked checkout for playbook runs made by the tests.
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))

from collection_link import link_collection  # noqa: E402  pylint: disable=wrong-import-position

COLLECTIONS = link_collection()
if os.path.join(REPO, "lab") not in sys.path:
    sys.path.insert(0, os.path.join(REPO, "lab"))
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", COLLECTIONS)
os.environ["PATH"] = os.path.join(REPO, "lab", "bin") + os.pathsep + os.environ.get("PATH", "")
