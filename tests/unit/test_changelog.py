"""The changelog (CHANGELOG.rst and changelogs/changelog.yaml, written by tools/gen-changelog).

The first test is the CI gate: the committed changelog must be what antsibull-changelog makes from
changelogs/fragments/ and the plugins' documentation for the version in galaxy.yml. The generation
runs on a scratch copy, so it never touches the checkout's fragments (other changes keep adding them)
and reads one snapshot of them. The others prove the generator on a small fake collection, so the gate
checks something that is right, not only something that is stable: earlier releases and their
fragments are kept, the release date survives a regeneration, and a new fragment makes the gate fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "gen-changelog")


def run_tool(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, check=False, timeout=600)


def read(root, relative):
    with open(os.path.join(root, relative), encoding="utf-8") as stream:
        return stream.read()


# ---------------------------------------------------------------------------------------------
# The CI gate


def test_changelog_is_in_sync_with_the_fragments():
    result = run_tool("--check")
    if result.returncode == 1:
        pytest.fail("CHANGELOG.rst is out of date: run make changelog\n%s" % result.stdout, pytrace=False)
    if result.returncode != 0:
        # Not a stale changelog: it cannot be generated (the message names the file, often a plugin's or
        # role's documentation that ansible-doc cannot read).
        pytest.fail("the changelog cannot be generated:\n%s%s" % (result.stdout, result.stderr), pytrace=False)


def test_the_config_keeps_the_fragments_and_writes_the_checked_file():
    config = yaml.safe_load(read(REPO, "changelogs/config.yaml"))
    # antsibull-changelog release deletes the fragments it used unless keep_fragments is true; they must
    # stay for `antsibull-changelog lint` and for the next regeneration.
    assert config["keep_fragments"] is True
    assert [item["file"] for item in config["output"]] == ["CHANGELOG.rst"]
    assert os.path.isfile(os.path.join(REPO, "CHANGELOG.rst"))


# ---------------------------------------------------------------------------------------------
# A fake collection, end to end

FAKE_TREE = {
    "galaxy.yml": """
        namespace: fake
        name: coll
        version: 1.1.0
        readme: README.md
        authors: [nobody]
    """,
    "changelogs/changelog.yaml": """
        ancestor: null
        releases:
          1.0.0:
            changes:
              minor_changes:
                - Old change.
            fragments:
              - old.yml
            release_date: '2019-01-01'
    """,
    "changelogs/fragments/old.yml": """
        minor_changes:
          - Old change.
    """,
    "changelogs/fragments/new.yml": """
        minor_changes:
          - New change.
    """,
    "plugins/modules/demo.py": '''
        DOCUMENTATION = r"""
        module: demo
        short_description: Demonstrate the generator
        version_added: 1.1.0
        description: Does nothing.
        author: nobody
        options: {}
        """
    ''',
}


def make_tree(root):
    for relative, text in FAKE_TREE.items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(textwrap.dedent(text).lstrip("\n"))
    shutil.copy(os.path.join(REPO, "changelogs", "config.yaml"), os.path.join(root, "changelogs", "config.yaml"))
    return root


@pytest.fixture(scope="module")
def fake_tree(tmp_path_factory):
    root = make_tree(str(tmp_path_factory.mktemp("fake") / "coll"))
    result = run_tool("--root", root, "--date", "2020-02-02")
    assert result.returncode == 0, result.stdout + result.stderr
    return root


def section(text, version):
    """The part of CHANGELOG.rst about one release."""
    start = text.index("v%s\n" % version)
    rest = text[start + 1:]
    following = [rest.index(mark) for mark in ("\nv1.", "\nv0.") if mark in rest]
    return rest[:min(following)] if following else rest


def test_the_release_holds_the_new_fragments_and_plugins_only(fake_tree):
    text = read(fake_tree, "CHANGELOG.rst")
    new, old = section(text, "1.1.0"), section(text, "1.0.0")
    assert "- New change." in new
    assert "Old change." not in new
    assert "- Old change." in old
    assert "- fake.coll.demo - Demonstrate the generator" in new


def test_earlier_releases_and_every_fragment_are_kept(fake_tree):
    changes = yaml.safe_load(read(fake_tree, "changelogs/changelog.yaml"))
    assert changes["releases"]["1.0.0"]["release_date"] == "2019-01-01"
    assert changes["releases"]["1.0.0"]["fragments"] == ["old.yml"]
    assert changes["releases"]["1.1.0"]["fragments"] == ["new.yml"]
    assert changes["releases"]["1.1.0"]["release_date"] == "2020-02-02"
    assert sorted(os.listdir(os.path.join(fake_tree, "changelogs", "fragments"))) == ["new.yml", "old.yml"]
    assert not os.path.exists(os.path.join(fake_tree, "changelogs", ".plugin-cache.yaml"))


def test_check_passes_right_after_and_fails_on_a_new_fragment(fake_tree, tmp_path):
    # Without --date the release keeps the date it has: a regeneration another day changes nothing.
    result = run_tool("--root", fake_tree, "--check")
    assert result.returncode == 0, result.stdout + result.stderr

    copy = str(tmp_path / "coll")
    shutil.copytree(fake_tree, copy)
    with open(os.path.join(copy, "changelogs", "fragments", "another.yml"), "w", encoding="utf-8") as stream:
        stream.write("bugfixes:\n  - Another change.\n")
    before = read(copy, "CHANGELOG.rst")
    result = run_tool("--root", copy, "--check")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "CHANGELOG.rst is out of date" in result.stdout
    assert "changelogs/changelog.yaml is out of date" in result.stdout
    assert "+- Another change." in result.stdout
    assert "run make changelog" in result.stdout
    # --check writes nothing
    assert read(copy, "CHANGELOG.rst") == before
