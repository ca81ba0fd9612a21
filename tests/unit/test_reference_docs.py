"""The generated reference (docs/reference/*.md, written by tools/gen-reference).

The first test is the CI gate: the committed pages must be what the generator makes from the roles'
argument specs and the plugins' documentation. The others prove the generator itself, on the markup
conversion and on a small fake collection tree (tools/gen-reference --root), so the gate checks
something that is right, not only something that is stable.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "gen-reference")
OUT_OF_DATE = "docs/reference is out of date: run .venv/bin/python tools/gen-reference"


def run_tool(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, check=False, timeout=120)


def load_tool():
    loader = importlib.machinery.SourceFileLoader("gen_reference", TOOL)
    spec = importlib.util.spec_from_loader("gen_reference", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


GEN = load_tool()


# ---------------------------------------------------------------------------------------------
# The CI gate


def test_reference_docs_are_in_sync_with_the_sources():
    result = run_tool("--check")
    if result.returncode != 0:
        pytest.fail("%s\n%s%s" % (OUT_OF_DATE, result.stdout, result.stderr), pytrace=False)


# ---------------------------------------------------------------------------------------------
# Ansible markup -> Markdown

LINKER = GEN.Linker("fake.coll", "modules.md", {
    ("module", "fake.coll.demo"): ("modules.md", "fakecolldemo"),
    ("filter", "fake.coll.shout"): ("plugins.md", "fakecollshout-filter"),
})


@pytest.mark.parametrize("text, expected", [
    ("Set O(state=absent) first.", "Set `state=absent` first."),
    ("O(fake.coll.demo#module:name) and RV(leader)", "`name` and `leader`"),
    ("V(v8.5.0) or C(tikv.toml)", "`v8.5.0` or `tikv.toml`"),
    (r"O(a\)b) stays one option", "`a)b` stays one option"),
    ("C(echo `id`)", "`` echo `id` ``"),
    ("E(HOME)", "`HOME`"),
    ("I(never) and B(always)", "*never* and **always**"),
    ("See M(fake.coll.demo).", "See [`fake.coll.demo`](#fakecolldemo)."),
    ("See M(ansible.builtin.copy).", "See `ansible.builtin.copy`."),
    ("P(fake.coll.shout#filter)", "[`fake.coll.shout`](plugins.md#fakecollshout-filter)"),
    ("U(https://example.com/x)", "<https://example.com/x>"),
    ("L(the guide, https://example.com/g)", "[the guide](https://example.com/g)"),
    ("under <deploy_dir>/tls", "under &lt;deploy_dir>/tls"),
    ("a *.pem file and _private", r"a \*.pem file and \_private"),
    ("tikv_tls_pd_group stays readable", "tikv_tls_pd_group stays readable"),
    ("PD(leader) and API(x) are prose", "PD(leader) and API(x) are prose"),
    ("C() is left alone", "C() is left alone"),
])
def test_markup_becomes_markdown(text, expected):
    assert GEN.markup(text, LINKER) == expected


def test_module_links_point_at_the_other_page_from_elsewhere():
    linker = GEN.Linker("fake.coll", "plugins.md", LINKER.targets)
    assert GEN.markup("M(fake.coll.demo)", linker) == "[`fake.coll.demo`](modules.md#fakecolldemo)"


def test_table_cells_escape_pipes_even_in_code_and_stay_on_one_line():
    assert GEN.table(("A", "B"), [("`a|b`", "one\ntwo")])[2] == "| `a\\|b` | one two |"


def test_headings_anchor_like_github():
    assert GEN.slug("`pki` entry point `main`") == "pki-entry-point-main"
    assert GEN.slug("fake.coll.shout (filter)") == "fakecollshout-filter"


# ---------------------------------------------------------------------------------------------
# A fake collection tree, end to end


FAKE_TREE = {
    "galaxy.yml": """
        namespace: fake
        name: coll
        version: 1.0.0
    """,
    "roles/alpha/meta/argument_specs.yml": """
        argument_specs:
          main:
            short_description: Alpha does a thing
            description:
              - Uses M(fake.coll.demo) on every host.
            options:
              tikv_tls_shared:
                description: Taken by both roles, with the same default.
                type: str
                default: same
              tikv_tls_mode:
                description: How to run.
                type: str
                choices: [fast, slow]
                default: fast
              tikv_tls_items:
                description: Things to make.
                type: list
                elements: dict
                default: []
                options:
                  name:
                    description: Name of the thing.
                    type: str
                    required: true
              tikv_tls_secret:
                description: A passphrase.
                type: str
                no_log: true
              deploy_dir:
                description: Where the instance lives.
                type: path
          extra:
            short_description: Only the extra step
            options:
              tikv_tls_shared:
                description: Same again.
                type: str
                default: same
    """,
    "roles/beta/meta/argument_specs.yml": """
        argument_specs:
          main:
            short_description: Beta
            options:
              tikv_tls_shared:
                description: Taken by both roles, another default.
                type: str
                default: other
              tikv_tls_needed:
                description: Must be given.
                type: int
                required: true
    """,
    "plugins/doc_fragments/common.py": '''
        class ModuleDocFragment(object):
            DOCUMENTATION = r"""
        options:
          endpoint:
            description: Where to connect, from the O(timeout)-bounded fragment.
            type: str
            required: true
          timeout:
            description: Seconds.
            type: float
            default: 5
        """
    ''',
    "plugins/modules/demo.py": '''
        DOCUMENTATION = r"""
        module: demo
        short_description: Demonstrate the generator
        version_added: 1.0.0
        author: nobody
        description:
          - Does C(nothing) with O(endpoint), see P(fake.coll.shout#filter).
        extends_documentation_fragment:
          - fake.coll.common
        options:
          level:
            description: How much.
            type: int
            default: 3
        attributes:
          check_mode:
            support: full
            description: Changes nothing.
          diff_mode:
            support: partial
            description: Some diffs.
        notes:
          - Mind the gap.
        """

        RETURN = r"""
        peers:
          description: The peers.
          returned: always
          type: list
          elements: dict
          contains:
            url:
              description: Peer URL.
              type: str
              returned: always
              sample: https://10.0.0.1:2380
        """
    ''',
    "plugins/filter/shout.yml": """
        DOCUMENTATION:
          name: shout
          short_description: Upper-case a string
          positional: _input, suffix
          options:
            _input:
              description: The text.
              type: str
              required: true
            suffix:
              description: Appended.
              type: str
              default: "!"
        RETURN:
          _value:
            description: The loud text.
            type: str
    """,
    "plugins/inventory/fakeinv.py": '''
        DOCUMENTATION = r"""
        name: fakeinv
        short_description: A fake inventory
        description: Hosts from nowhere, used with M(fake.coll.demo).
        extends_documentation_fragment:
          - ansible.builtin.constructed
        options:
          plugin:
            description: Marks the file.
            type: str
            required: true
        """
    ''',
}


def make_tree(root, files=None):
    for relative, text in (files or FAKE_TREE).items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(textwrap.dedent(text).lstrip("\n"))
    return root


def page(root, name):
    with open(os.path.join(root, "docs", "reference", name), encoding="utf-8") as stream:
        return stream.read()


@pytest.fixture(scope="module")
def fake_tree(tmp_path_factory):
    root = str(make_tree(tmp_path_factory.mktemp("fake") / "ansible_collections" / "fake" / "coll"))
    result = run_tool("--root", root)
    assert result.returncode == 0, result.stdout + result.stderr
    return root


def test_fake_tree_variables_page_has_one_table_per_entry_point(fake_tree):
    text = page(fake_tree, "variables.md")
    assert "## Role `fake.coll.alpha`" in text
    assert "### `alpha` entry point `main`" in text
    assert "### `alpha` entry point `extra`" in text
    # main comes first, then the other entry points
    assert text.index("entry point `main`") < text.index("entry point `extra`")
    assert "| `tikv_tls_mode` | str | `fast` | How to run.<br><br>Choices: `fast`, `slow`. |" in text
    assert "| `tikv_tls_items` | list of dict | `[]` | Things to make. |" in text
    assert "| `tikv_tls_items[].name` | str | *required* | Name of the thing. |" in text
    assert "| `tikv_tls_secret` | str |  | A passphrase.<br><br>Never logged (`no_log`). |" in text
    assert "| `tikv_tls_needed` | int | *required* | Must be given. |" in text
    assert "Uses [`fake.coll.demo`](modules.md#fakecolldemo) on every host." in text


def test_fake_tree_index_lists_every_role_taking_a_variable(fake_tree):
    index = page(fake_tree, "variables.md").split("## Index of `tikv_tls_*` variables", 1)[1]
    assert ("| `tikv_tls_shared` | str | *varies* | `alpha`: [`extra`](#alpha-entry-point-extra), "
            "[`main`](#alpha-entry-point-main); `beta`: [`main`](#beta-entry-point-main) |") in index
    assert "| `tikv_tls_mode` | str | `fast` | `alpha`: [`main`](#alpha-entry-point-main) |" in index
    assert "| `deploy_dir`" not in index
    assert "appear in the role tables above: `deploy_dir`." in index


def test_fake_tree_modules_page_merges_fragments_and_shows_check_and_diff(fake_tree):
    text = page(fake_tree, "modules.md")
    assert "## fake.coll.demo" in text
    assert "**Demonstrate the generator**" in text
    assert "Check mode: `full`. Diff mode: `partial`." in text
    # options from the doc fragment sit in the same sorted table as the module's own
    assert text.index("| `endpoint` | str | *required* |") < text.index("| `level` | int | `3` |") \
        < text.index("| `timeout` | float | `5` |")
    assert "Where to connect, from the `timeout`-bounded fragment." in text
    assert "| `peers` | list of dict | always | The peers. |" in text
    assert "| `peers[].url` | str | always | Peer URL.<br><br>Sample: `https://10.0.0.1:2380` |" in text
    assert "[`fake.coll.shout`](plugins.md#fakecollshout-filter)" in text
    assert "- Mind the gap." in text


def test_fake_tree_plugins_page_documents_filters_and_inventory(fake_tree):
    text = page(fake_tree, "plugins.md")
    assert "## fake.coll.shout (filter)" in text
    assert "Usage: `{{ input | fake.coll.shout(suffix) }}`" in text
    assert "| `suffix` | str | `!` | Appended. |" in text
    assert "## fake.coll.fakeinv (inventory)" in text
    # ansible.builtin.constructed's options are resolved from ansible-core
    assert "| `keyed_groups` | list of dict | `[]` |" in text
    assert "| `plugin` | str | *required* | Marks the file. |" in text


def test_generation_is_deterministic_and_check_passes_right_after(fake_tree, tmp_path):
    copy = str(tmp_path / "ansible_collections" / "fake" / "coll")
    shutil.copytree(fake_tree, copy)
    shutil.rmtree(os.path.join(copy, "docs"))
    assert run_tool("--root", copy).returncode == 0
    for name in ("variables.md", "modules.md", "plugins.md"):
        assert page(copy, name) == page(fake_tree, name)
    result = run_tool("--root", copy, "--check")
    assert result.returncode == 0, result.stdout


def test_check_names_the_stale_page_and_shows_the_change(fake_tree, tmp_path):
    copy = str(tmp_path / "coll")
    shutil.copytree(fake_tree, copy)
    spec = os.path.join(copy, "roles", "beta", "meta", "argument_specs.yml")
    with open(spec, encoding="utf-8") as stream:
        text = stream.read()
    with open(spec, "w", encoding="utf-8") as stream:
        stream.write(text.replace("Must be given.", "Must be given, always."))
    result = run_tool("--root", copy, "--check")
    assert result.returncode == 1
    assert "docs/reference/variables.md is out of date" in result.stdout
    assert "modules.md" not in result.stdout
    assert "+| `tikv_tls_needed` | int | *required* | Must be given, always. |" in result.stdout
    assert OUT_OF_DATE in result.stdout
    # --check writes nothing
    assert "Must be given, always." not in page(copy, "variables.md")

    os.remove(os.path.join(copy, "docs", "reference", "plugins.md"))
    result = run_tool("--root", copy, "--check")
    assert "docs/reference/plugins.md is missing" in result.stdout


def test_an_unknown_doc_fragment_fails_naming_the_module(tmp_path):
    files = dict(FAKE_TREE)
    files["plugins/modules/demo.py"] = files["plugins/modules/demo.py"].replace("fake.coll.common", "fake.coll.nosuch")
    root = make_tree(str(tmp_path / "coll"), files)
    result = run_tool("--root", root)
    assert result.returncode == 2
    assert "demo.py" in result.stderr and "fake.coll.nosuch" in result.stderr
    assert not os.path.exists(os.path.join(root, "docs"))
