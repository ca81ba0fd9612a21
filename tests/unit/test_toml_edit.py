"""toml_edit: layout-preserving set/remove on TiUP-shaped tikv.toml / pd.toml and a hand-written file.

The central promises: enabling touches only the intended lines, disabling gives back the original
byte for byte, a second run changes nothing (mtime untouched), check mode writes nothing.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import os
import stat
import time

import pytest

from ansible.module_utils import basic

from ansible_collections.tlsops.tikv.plugins.module_utils import _toml_edit
from ansible_collections.tlsops.tikv.plugins.module_utils._toml_edit import (
    TomlEditError,
    edit_toml,
    parse_key,
)
from ansible_collections.tlsops.tikv.plugins.modules import toml_edit

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

TIKV_TLS = {
    "security.ca-path": "/tidb-deploy/tikv-20160/tls/ca.crt",
    "security.cert-path": "/tidb-deploy/tikv-20160/tls/tikv.crt",
    "security.key-path": "/tidb-deploy/tikv-20160/tls/tikv.pem",
    "security.cert-allowed-cn": ["tikv", "pd"],
}
PD_TLS = {
    "security.cacert-path": "/tidb-deploy/pd-2379/tls/ca.crt",
    "security.cert-path": "/tidb-deploy/pd-2379/tls/pd.crt",
    "security.key-path": "/tidb-deploy/pd-2379/tls/pd.pem",
    "security.cert-allowed-cn": ["pd"],
}
TIKV_SECURITY_BLOCK = (
    "\n"
    "[security]\n"
    'ca-path = "/tidb-deploy/tikv-20160/tls/ca.crt"\n'
    'cert-path = "/tidb-deploy/tikv-20160/tls/tikv.crt"\n'
    'key-path = "/tidb-deploy/tikv-20160/tls/tikv.pem"\n'
    'cert-allowed-cn = ["tikv", "pd"]\n'
)


def fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8", newline="") as fh:
        return fh.read()


def changed_lines(before, after):
    """(removed lines, added lines) between two texts."""
    removed, added = [], []
    matcher = difflib.SequenceMatcher(None, before.splitlines(True), after.splitlines(True), autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "delete"):
            removed.extend(before.splitlines(True)[i1:i2])
        if tag in ("replace", "insert"):
            added.extend(after.splitlines(True)[j1:j2])
    return removed, added


# ---------------------------------------------------------------------------------------------------
# Keys


@pytest.mark.parametrize("text, parts", [
    ("security.ca-path", ("security", "ca-path")),
    ("log.file.filename", ("log", "file", "filename")),
    ('server.labels."zone.name"', ("server", "labels", "zone.name")),
    ("server.labels.'zone.name'", ("server", "labels", "zone.name")),
    ('"a.b"', ("a.b",)),
    (' a . b ', ("a", "b")),
    ('a."q\\"x"', ("a", 'q"x')),
])
def test_parse_key(text, parts):
    assert parse_key(text) == parts


@pytest.mark.parametrize("text", ["", "a..b", "a.", '"a.b', 'a."b"c'])
def test_parse_key_rejects(text):
    with pytest.raises(TomlEditError):
        parse_key(text)


def test_quoted_key_written_quoted_and_found_again():
    src = "[server]\nx = 1\n"
    out, values = edit_toml(src, {'server.labels."zone.name"': "z1"})
    assert out == '[server]\nx = 1\n[server.labels]\n"zone.name" = "z1"\n'
    assert values == {'server.labels."zone.name"': {"before": None, "after": "z1"}}
    again, _values = edit_toml(out, {'server.labels."zone.name"': "z1"})
    assert again == out
    back, _values = edit_toml(out, remove=['server.labels."zone.name"'])
    assert back == src


# ---------------------------------------------------------------------------------------------------
# TiUP-generated files: enable touches only the intended lines, disable restores bytes


def test_tikv_enable_appends_security_table_only():
    src = fixture("tikv.toml")
    out, values = edit_toml(src, TIKV_TLS, name="tikv.toml")
    assert out == src + TIKV_SECURITY_BLOCK
    removed, added = changed_lines(src, out)
    assert removed == []
    assert "".join(added) == TIKV_SECURITY_BLOCK
    assert values["security.ca-path"] == {"before": None, "after": TIKV_TLS["security.ca-path"]}
    assert values["security.cert-allowed-cn"] == {"before": None, "after": ["tikv", "pd"]}


def test_tikv_disable_is_byte_identical():
    src = fixture("tikv.toml")
    enabled, _values = edit_toml(src, TIKV_TLS)
    disabled, values = edit_toml(enabled, remove=list(TIKV_TLS))
    assert disabled == src
    assert values["security.key-path"] == {"before": TIKV_TLS["security.key-path"], "after": None}


def test_pd_enable_then_disable():
    src = fixture("pd.toml")
    out, _values = edit_toml(src, PD_TLS)
    removed, added = changed_lines(src, out)
    assert removed == []
    assert added[:2] == ["\n", "[security]\n"]
    assert added[2:] == ['%s = %s\n' % (k.split(".", 1)[1], json.dumps(v).replace('","', '", "'))
                         for k, v in PD_TLS.items()]
    assert edit_toml(out, remove=list(PD_TLS))[0] == src


def test_pd_root_url_keys_rewritten_in_place():
    """URLs kept in pd.toml (not as flags): only the values' characters change."""
    src = ('name = "pd-1"\nclient-urls = "http://0.0.0.0:2379"  # listen\n'
           'initial-cluster = "pd-1=http://10.0.1.1:2380"\n\n[log]\nlevel = "info"\n')
    out, values = edit_toml(src, {"client-urls": "https://0.0.0.0:2379",
                                  "initial-cluster": "pd-1=https://10.0.1.1:2380"})
    assert out == src.replace("http://", "https://")
    assert values["client-urls"]["before"] == "http://0.0.0.0:2379"


def test_handwritten_enable_disable_round_trip():
    src = fixture("tikv-handwritten.toml")
    settings = dict(TIKV_TLS)
    settings.update({"log.file.max-days": 3, "server.labels.host": "h1", "server.grpc-concurrency": 8,
                     "rocksdb.defaultcf.titan.blob-run-mode": "normal", "storage.io.x": "y"})
    out, _values = edit_toml(src, settings, name="handwritten")
    removed, added = changed_lines(src, out)
    # Only the inline table line is rewritten; everything else is an insertion.
    assert removed == ['  labels = { zone = "z1", "rack.id" = "r7" }\n']
    assert '  labels = { zone = "z1", "rack.id" = "r7", host = "h1" }\n' in added
    # Implicit super-table [security] gets its header after the [security.*] group, after a blank line.
    assert ('path = "/etc/tikv/master.key"\n\n[security]\nca-path = "/tidb-deploy/tikv-20160/tls/ca.crt"\n'
            in out)
    assert '\ncert-allowed-cn = ["tikv", "pd"]\n\n[gc]\n' in out
    # New key in an indented table copies its indentation; dotted tables grow with dotted keys.
    assert "  advertise-addr = \"10.0.1.1:20160\"\n  labels = " in out
    assert "  grpc-concurrency = 8\n  # grpc-concurrency = 5\n" in out
    assert "log.file.max-days = 3\n" in out
    assert 'titan.min-blob-size = "1KB"\ntitan.blob-run-mode = "normal"\n' in out
    # A new sub-table goes after the [storage] group including its comment.
    assert '# reserve-space = "5GB"\n[storage.io]\nx = "y"\n' in out
    back, _values = edit_toml(out, remove=list(settings))
    assert back == src


def test_existing_security_table_with_empty_values_restored_from_before_values():
    """TiUP writes [security] with empty paths for some components: restore by the reported before values."""
    src = ('[raftstore]\napply-pool-size = 2\n\n[security]\nca-path = ""\ncert-path = ""\nkey-path = ""\n\n'
           '[server]\ngrpc-concurrency = 4\n')
    sets = {k: v for k, v in TIKV_TLS.items() if k != "security.cert-allowed-cn"}
    out, values = edit_toml(src, sets)
    removed, added = changed_lines(src, out)
    assert removed == ['ca-path = ""\n', 'cert-path = ""\n', 'key-path = ""\n']
    assert len(added) == 3
    restore = {k: v["before"] for k, v in values.items()}
    assert restore == {k: "" for k in sets}
    assert edit_toml(out, restore)[0] == src


def test_unchanged_value_in_other_quoting_is_left_alone():
    src = "[security]\nca-path = '/x/ca.crt'   # literal string\n"
    assert edit_toml(src, {"security.ca-path": "/x/ca.crt"})[0] == src


def test_value_change_keeps_key_spacing_and_comment():
    src = "[security]\nca-path='/x/ca.crt'   # literal string\n"
    out, _values = edit_toml(src, {"security.ca-path": "/y/ca.crt"})
    assert out == "[security]\nca-path=\"/y/ca.crt\"   # literal string\n"


def test_type_strictness_one_is_not_true():
    src = "[x]\nflag = 1\n"
    out, values = edit_toml(src, {"x.flag": True})
    assert out == "[x]\nflag = true\n"
    assert values["x.flag"] == {"before": 1, "after": True}
    assert edit_toml("[x]\nf = 1.0\n", {"x.f": 1})[0] == "[x]\nf = 1\n"


def test_mapping_values_are_dotted_keys():
    out1, _values = edit_toml("", {"security": {"ca-path": "/a", "cert-path": "/b"}})
    out2, _values = edit_toml("", {"security.ca-path": "/a", "security.cert-path": "/b"})
    assert out1 == out2 == '[security]\nca-path = "/a"\ncert-path = "/b"\n'


def test_multiline_array_value_replaced_whole():
    src = '[a]\nlist = [\n  "x",  # one\n  "y",\n]\nafter = 1\n'
    out, _values = edit_toml(src, {"a.list": ["z"]})
    assert out == '[a]\nlist = ["z"]\nafter = 1\n'


def test_remove_table_and_its_subtables():
    src = fixture("tikv-handwritten.toml")
    out, values = edit_toml(src, remove=["security"])
    assert "security" not in out
    assert "[gc]" in out and "[rocksdb.defaultcf]" in out
    assert values["security"]["before"]["encryption"]["data-encryption-method"] == "aes128-ctr"
    assert values["security"]["after"] is None
    # The tables around it are separated by exactly one blank line still.
    assert 'titan.min-blob-size = "1KB"\n\n[gc]\n' in out


def test_tiup_empty_parent_header_is_kept():
    """TiUP writes [readpool] with no keys right before [readpool.coprocessor]: it must survive a round trip."""
    src = fixture("tikv.toml")
    out, _values = edit_toml(src, {"readpool.x": 1, "readpool.new.y": 2, "server.labels.rack": "r1"})
    assert "[readpool]\nx = 1\n[readpool.coprocessor]" in out
    assert 'max-thread-count = 8\n[readpool.new]\ny = 2\n\n[rocksdb]' in out
    assert edit_toml(out, remove=["readpool.x", "readpool.new.y", "server.labels.rack"])[0] == src


def test_nested_new_tables_round_trip():
    src = fixture("pd.toml")
    sets = {"security.tls.a": 1, "security.tls.x.y.b": 2, "log.file.k.c": 3, "log.file.k.z.d": 4}
    out, _values = edit_toml(src, sets)
    assert "\n[security.tls]\na = 1\n[security.tls.x.y]\nb = 2\n" in out
    assert edit_toml(out, remove=list(sets))[0] == src


def test_nested_inline_tables_round_trip():
    src = fixture("tikv-handwritten.toml")
    out, _values = edit_toml(src, {"server.labels.k.x.y": "v"})
    assert 'labels = { zone = "z1", "rack.id" = "r7", k = { x = { y = "v" } } }' in out
    assert edit_toml(out, remove=["server.labels.k.x.y"])[0] == src


@pytest.mark.parametrize("name", ["pd.toml", "tikv.toml", "tikv-handwritten.toml"])
def test_random_round_trips(name):
    """Seeded fuzz: any mix of new keys, new (nested) tables and changed values is undone exactly."""
    import random
    src = fixture(name)
    data = _toml_edit.load(src)

    def tables(node, prefix=()):
        for key, value in node.items():
            if isinstance(value, dict):
                yield prefix + (key,)
                yield from tables(value, prefix + (key,))

    bases = list(tables(data)) + [(), ("security",), ("security", "tls"), ("new", "deep")]
    rnd = random.Random(name)
    for _trial in range(60):
        sets = {}
        for _edit in range(rnd.randint(1, 6)):
            key = rnd.choice(bases) + tuple("k%d" % rnd.randint(0, 2) for _part in range(rnd.randint(0, 2)))
            key += ("leaf%d" % rnd.randint(0, 5),)
            sets[_toml_edit.display_key(key)] = rnd.choice([1, "v", True, ["a", "b"], 2.5])
        try:
            out, values = edit_toml(src, sets)
        except TomlEditError as exc:
            assert "not a table" in str(exc) or "is a table" in str(exc) or "both" in str(exc)
            continue
        assert edit_toml(out, sets)[0] == out
        restore = {k: v["before"] for k, v in values.items() if v["before"] is not None}
        added = [k for k, v in values.items() if v["before"] is None]
        assert edit_toml(out, restore, added)[0] == src, sets


def test_emptied_table_with_comment_is_kept():
    src = "[a]\nx = 1\n\n[b]\n# keep me\ny = 2\n"
    out, _values = edit_toml(src, remove=["b.y"])
    assert out == "[a]\nx = 1\n\n[b]\n# keep me\n"


def test_emptied_table_between_tables_collapses_one_blank_line():
    src = "[a]\nx = 1\n\n[b]\ny = 2\n\n[c]\nz = 3\n"
    assert edit_toml(src, remove=["b.y"])[0] == "[a]\nx = 1\n\n[c]\nz = 3\n"


def test_remove_absent_key_is_noop():
    src = fixture("pd.toml")
    out, values = edit_toml(src, remove=["security.cacert-path", "nothing.here"])
    assert out == src
    assert values["nothing.here"] == {"before": None, "after": None}


def test_crlf_file_keeps_crlf():
    src = "[log]\r\nlevel = \"info\"\r\n"
    out, _values = edit_toml(src, {"security.ca-path": "/a", "log.x": 1})
    assert out == "[log]\r\nlevel = \"info\"\r\nx = 1\r\n\r\n[security]\r\nca-path = \"/a\"\r\n"
    assert edit_toml(out, remove=["security.ca-path", "log.x"])[0] == src


def test_file_without_final_newline_round_trips():
    src = "[log]\nlevel = \"info\""
    out, _values = edit_toml(src, dict(TIKV_TLS, **{"log.x": 1}))
    assert edit_toml(out, remove=list(TIKV_TLS) + ["log.x"])[0] == src


def test_root_key_in_file_with_only_comments_and_tables():
    src = fixture("pd.toml")
    out, _values = edit_toml(src, {"name": "pd-1"})
    removed, added = changed_lines(src, out)
    assert removed == [] and added == ['name = "pd-1"\n']
    assert out.index('name = "pd-1"') < out.index("[dashboard]")
    assert edit_toml(out, remove=["name"])[0] == src


# ---------------------------------------------------------------------------------------------------
# Errors


def test_invalid_toml_names_file_and_line():
    with pytest.raises(TomlEditError) as err:
        edit_toml("[a]\nx = 1\ny = = 2\n", {"a.z": 1}, name="/etc/tikv.toml")
    assert "/etc/tikv.toml" in str(err.value)
    assert "line 3" in str(err.value)


def test_path_through_scalar_names_the_key():
    with pytest.raises(TomlEditError) as err:
        edit_toml('[security]\nca-path = "/x"\n', {"security.ca-path.sub": "y"}, name="t.toml")
    assert "security.ca-path is a string, not a table" in str(err.value)
    assert "t.toml" in str(err.value)
    with pytest.raises(TomlEditError, match="security.ca-path is a string"):
        edit_toml('[security]\nca-path = "/x"\n', remove=["security.ca-path.sub"])


def test_scalar_over_table_refused():
    for value in ("x", []):
        with pytest.raises(TomlEditError, match="cannot set security .*it is a table"):
            edit_toml('[security]\nca-path = "/x"\n', {"security": value})


def test_null_value_refused():
    with pytest.raises(TomlEditError, match="no null"):
        edit_toml("", {"a.b": None})


def test_set_and_remove_same_key_refused():
    with pytest.raises(TomlEditError, match="both set and removed"):
        edit_toml("", {"a.b": 1}, ["a.b"])


def test_array_of_tables_refused():
    with pytest.raises(TomlEditError, match="array of tables"):
        edit_toml("[[a]]\nx = 1\n", {"a.x": 2})


def test_internal_check_stops_a_wrong_edit(monkeypatch):
    """If the layout engine ever produced other changes, the semantic check refuses to return them."""
    original = _toml_edit.TomlDocument._insert

    def sloppy_insert(self, path, rendered):
        original(self, path, rendered)
        if "stray" not in self.text:
            self._splice(0, 0, "stray = 1\n")

    monkeypatch.setattr(_toml_edit.TomlDocument, "_insert", sloppy_insert)
    with pytest.raises(TomlEditError, match="internal error"):
        edit_toml(fixture("tikv.toml"), TIKV_TLS)


def test_internal_check_stops_invalid_toml(monkeypatch):
    monkeypatch.setattr(_toml_edit, "render_value", lambda value, key="value": "= broken")
    with pytest.raises(TomlEditError, match="internal error: the edited t.toml is not valid TOML"):
        edit_toml(fixture("tikv.toml"), TIKV_TLS, name="t.toml")


# ---------------------------------------------------------------------------------------------------
# The module


def run_module(args, check=False, diff=False):
    """Run toml_edit in-process; returns its result dict (failed=True on fail_json)."""
    payload = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": payload}).encode()
    basic._ANSIBLE_PROFILE = "legacy"
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            toml_edit.main()
    finally:
        basic._ANSIBLE_ARGS = None
        basic._ANSIBLE_PROFILE = None
    return json.loads(out.getvalue())


@pytest.fixture
def tikv_toml(tmp_path):
    path = tmp_path / "conf" / "tikv.toml"
    path.parent.mkdir()
    path.write_text(fixture("tikv.toml"))
    os.chmod(path, 0o640)
    old = time.time() - 3600
    os.utime(path, (old, old))
    return path


def test_module_enable_idempotent_and_disable(tikv_toml):
    src = tikv_toml.read_text()
    res = run_module({"path": str(tikv_toml), "settings": TIKV_TLS})
    assert res["changed"] is True, res
    assert tikv_toml.read_text() == src + TIKV_SECURITY_BLOCK
    assert res["values"]["security.ca-path"]["after"] == TIKV_TLS["security.ca-path"]
    assert stat.S_IMODE(os.stat(tikv_toml).st_mode) == 0o640
    old = time.time() - 7200
    os.utime(tikv_toml, (old, old))
    inode = os.stat(tikv_toml).st_ino
    again = run_module({"path": str(tikv_toml), "settings": TIKV_TLS})
    assert again["changed"] is False
    assert os.stat(tikv_toml).st_mtime == pytest.approx(old)
    assert os.stat(tikv_toml).st_ino == inode
    off = run_module({"path": str(tikv_toml), "remove": list(TIKV_TLS)})
    assert off["changed"] is True
    assert tikv_toml.read_text() == src
    assert not [p for p in os.listdir(tikv_toml.parent) if p != "tikv.toml"], "temporary files left behind"


def test_module_check_mode_writes_nothing_and_diffs(tikv_toml):
    src = tikv_toml.read_bytes()
    mtime = os.stat(tikv_toml).st_mtime
    res = run_module({"path": str(tikv_toml), "settings": TIKV_TLS}, check=True, diff=True)
    assert res["changed"] is True
    assert tikv_toml.read_bytes() == src
    assert os.stat(tikv_toml).st_mtime == mtime
    diff = res["diff"]
    assert diff["before"] == src.decode()
    assert diff["after"] == src.decode() + TIKV_SECURITY_BLOCK
    assert diff["before_header"] == diff["after_header"] == str(tikv_toml)


def test_module_no_diff_when_unchanged(tikv_toml):
    res = run_module({"path": str(tikv_toml), "settings": {"server.grpc-concurrency": 4}}, diff=True)
    assert res["changed"] is False
    assert "diff" not in res


def test_module_backup(tikv_toml):
    src = tikv_toml.read_text()
    res = run_module({"path": str(tikv_toml), "settings": TIKV_TLS, "backup": True})
    backup = res["backup_file"]
    assert os.path.basename(backup).startswith("tikv.toml.")
    assert backup.endswith(".bak")
    stamp = os.path.basename(backup)[len("tikv.toml."):-len(".bak")]
    time.strptime(stamp, "%Y%m%dT%H%M%S")
    with open(backup) as fh:
        assert fh.read() == src
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o640
    # No change, no backup.
    assert "backup_file" not in run_module({"path": str(tikv_toml), "settings": TIKV_TLS, "backup": True})


def test_module_dest_staging_leaves_path_untouched(tikv_toml):
    src = tikv_toml.read_bytes()
    mtime = os.stat(tikv_toml).st_mtime
    dest = str(tikv_toml) + ".tls-pending"
    res = run_module({"path": str(tikv_toml), "dest": dest, "settings": TIKV_TLS}, diff=True)
    assert res["changed"] is True and res["dest"] == dest
    assert tikv_toml.read_bytes() == src
    assert os.stat(tikv_toml).st_mtime == mtime
    with open(dest) as fh:
        assert fh.read() == src.decode() + TIKV_SECURITY_BLOCK
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o640
    # The diff of a new staged file is against the live file, not against nothing.
    assert res["diff"]["before"] == src.decode()
    again = run_module({"path": str(tikv_toml), "dest": dest, "settings": TIKV_TLS})
    assert again["changed"] is False


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_module_keeps_owner(tikv_toml):
    os.chown(tikv_toml, 4321, 4322)
    run_module({"path": str(tikv_toml), "settings": TIKV_TLS})
    st = os.stat(tikv_toml)
    assert (st.st_uid, st.st_gid) == (4321, 4322)
    dest = str(tikv_toml) + ".tls-pending"
    run_module({"path": str(tikv_toml), "dest": dest, "remove": list(TIKV_TLS)})
    st = os.stat(dest)
    assert (st.st_uid, st.st_gid) == (4321, 4322)


def test_module_mode_option(tikv_toml):
    res = run_module({"path": str(tikv_toml), "settings": {}, "mode": "0600"}, diff=True)
    assert res["changed"] is True
    assert stat.S_IMODE(os.stat(tikv_toml).st_mode) == 0o600
    assert run_module({"path": str(tikv_toml), "mode": "0600"})["changed"] is False


def test_module_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.toml"
    res = run_module({"path": str(missing), "settings": TIKV_TLS})
    assert res["failed"] is True and str(missing) in res["msg"] and "does not exist" in res["msg"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\naddr = \n")
    res = run_module({"path": str(bad), "settings": TIKV_TLS})
    assert res["failed"] is True
    assert str(bad) in res["msg"] and "line 2" in res["msg"]
    assert bad.read_text() == "[server]\naddr = \n"
    res = run_module({"path": str(bad.parent), "settings": TIKV_TLS})
    assert res["failed"] is True and "directory" in res["msg"]


def test_module_without_tomlkit_fails_cleanly(tikv_toml, monkeypatch):
    monkeypatch.setattr(toml_edit, "HAS_TOMLKIT", False)
    res = run_module({"path": str(tikv_toml), "settings": TIKV_TLS})
    assert res["failed"] is True
    assert "tomlkit" in res["msg"]


def test_without_tomllib_tomlkit_parses_and_validates(monkeypatch):
    """Targets with Python < 3.11 have no tomllib: tomlkit alone must do."""
    monkeypatch.setattr(_toml_edit, "_tomllib", None)
    src = fixture("tikv-handwritten.toml")
    out, values = edit_toml(src, TIKV_TLS)
    assert values["security.cert-allowed-cn"]["after"] == ["tikv", "pd"]
    assert edit_toml(out, remove=list(TIKV_TLS))[0] == src
    with pytest.raises(TomlEditError, match=r"bad.toml is not valid TOML: .*line 2"):
        edit_toml("[a]\nx = = 1\n", {"a.y": 1}, name="bad.toml")
