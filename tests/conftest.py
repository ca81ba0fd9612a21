"""Test bootstrap: make the collection importable as ansible_collections.tlsops.tikv and the lab as tikvlab.

The collection's own tree is linked (not copied) under build/collections, so edits are seen at once;
ANSIBLE_COLLECTIONS_PATH points there for playbook runs made by the tests.
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, "build", "collections")
LINK = os.path.join(COLLECTIONS, "ansible_collections", "tlsops", "tikv")

if not os.path.islink(LINK):
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    try:
        os.symlink(REPO, LINK)
    except FileExistsError:
        pass

for path in (COLLECTIONS, os.path.join(REPO, "lab")):
    if path not in sys.path:
        sys.path.insert(0, path)
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", COLLECTIONS)
os.environ["PATH"] = os.path.join(REPO, "lab", "bin") + os.pathsep + os.environ.get("PATH", "")
