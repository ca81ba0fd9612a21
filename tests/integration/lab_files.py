"""What the lab's instances keep on disk, as the integration tests compare it."""

from __future__ import annotations


def managed_files(lab) -> dict[str, bytes]:
    """Content of every config file and run script of the lab (what the config role edits)."""
    out = {}
    for inst in lab.instances:
        for path in (inst.config_path, inst.run_script):
            with open(path, "rb") as fh:
                out[path] = fh.read()
    return out
