"""Make this checkout importable as ansible_collections.tlsops.tikv (tests, benchmarks).

The tree is linked (not copied) under build/collections, so edits are seen at once; the same path is
what ANSIBLE_COLLECTIONS_PATH points at for playbook runs (the Makefile creates the same link).
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, "build", "collections")


def link_collection():
    """Create the link when missing, put the collections path first on sys.path, return it."""
    link = os.path.join(COLLECTIONS, "ansible_collections", "tlsops", "tikv")
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        try:
            os.symlink(REPO, link)
        except FileExistsError:
            pass
    if COLLECTIONS not in sys.path:
        sys.path.insert(0, COLLECTIONS)
    return COLLECTIONS
