"""script_flags: flag edits in TiUP run scripts (run_pd.sh, run_tikv.sh) and the URL scheme helper.

Enabling TLS changes exactly the intended flag values/lines; disabling gives back the original bytes;
a second run changes nothing (mtime untouched); check mode writes nothing.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import os
import re
import stat
import time

import pytest

from ansible.module_utils import basic

from ansible_collections.tlsops.tikv.plugins.module_utils._run_script import (
    RunScript,
    ScriptError,
    edit_script,
    quote_value,
    read_flags,
    rewrite_url_schemes,
    url_schemes,
)
from ansible_collections.tlsops.tikv.plugins.modules import script_flags

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
PD_URL_FLAGS = ("client-urls", "advertise-client-urls", "peer-urls", "advertise-peer-urls", "initial-cluster")
PD_TLS_FLAGS = {
    "cacert": "/tidb-deploy/pd-2379/tls/ca.crt",
    "cert": "/tidb-deploy/pd-2379/tls/pd.crt",
    "key": "/tidb-deploy/pd-2379/tls/pd.pem",
}


def fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8", newline="") as fh:
        return fh.read()


def changed_lines(before, after):
    removed, added = [], []
    a, b = before.splitlines(True), after.splitlines(True)
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag in ("replace", "delete"):
            removed.extend(a[i1:i2])
        if tag in ("replace", "insert"):
            added.extend(b[j1:j2])
    return removed, added


def pd_enable(flags):
    """What the config role does: https on every URL flag, plus the cert flags."""
    out = {name: rewrite_url_schemes(flags[name]) for name in PD_URL_FLAGS}
    out.update(PD_TLS_FLAGS)
    return out


# ---------------------------------------------------------------------------------------------------
# Reading


def test_reads_every_pd_flag():
    flags = read_flags(fixture("run_pd.sh"))
    assert flags == {
        "name": "pd-10.0.1.1-2379",
        "client-urls": "http://0.0.0.0:2379",
        "advertise-client-urls": "http://10.0.1.1:2379",
        "peer-urls": "http://0.0.0.0:2380",
        "advertise-peer-urls": "http://10.0.1.1:2380",
        "data-dir": "/tidb-data/pd-2379",
        "initial-cluster": "pd-10.0.1.1-2379=http://10.0.1.1:2380,pd-10.0.1.2-2379=http://10.0.1.2:2380,"
                           "pd-10.0.1.3-2379=http://10.0.1.3:2380",
        "config": "conf/pd.toml",
        "log-file": "/tidb-deploy/pd-2379/log/pd.log",
    }


def test_reads_tikv_flags_after_numactl():
    """numactl's own --cpunodebind/--membind come before the program and are not TiKV flags."""
    flags = read_flags(fixture("run_tikv.sh"))
    assert "cpunodebind" not in flags and "membind" not in flags
    assert flags["pd"] == "10.0.1.1:2379,10.0.1.2:2379,10.0.1.3:2379"
    assert flags["config"] == "conf/tikv.toml"
    assert flags["log-file"] == "/tidb-deploy/tikv-20160/log/tikv.log"
    assert list(flags)[0] == "addr"


def test_quoting_styles_and_redirections():
    text = ("#!/bin/sh\nexec bin/pd-server --a=plain --b='single q' --c=\"dq \\\"x\\\"\" --d \"sp\" "
            "--e bare --switch --f=${DEPLOY_DIR}/x 2>&1 | tee -a --not-a-flag log\n")
    script = RunScript(text)
    assert script.as_dict() == {"a": "plain", "b": "single q", "c": 'dq "x"', "d": "sp", "e": "bare",
                                "switch": None, "f": "${DEPLOY_DIR}/x"}
    assert [(f.name, f.form, f.quote) for f in script.flags] == [
        ("a", "eq", ""), ("b", "eq", "'"), ("c", "eq", '"'), ("d", "space", '"'), ("e", "space", ""),
        ("switch", "bare", ""), ("f", "eq", "")]


def test_program_option_and_missing_program():
    text = "exec bin/other --x=1\nexec /opt/pd/bin/pd-server --y=2\n"
    assert read_flags(text) == {"y": "2"}
    assert read_flags(text, program="other") == {"x": "1"}
    with pytest.raises(ScriptError, match="run.sh has no 'exec' command that runs a program named tikv-server"):
        read_flags(text, program="tikv-server", name="run.sh")
    with pytest.raises(ScriptError, match="no 'exec' command"):
        read_flags("#!/bin/bash\n# exec bin/pd-server --x=1\nbin/pd-server --y=1\n")


def test_unterminated_quote_names_file_and_line():
    with pytest.raises(ScriptError, match=r"run_pd.sh: cannot read the exec command at line 2: unterminated"):
        read_flags("#!/bin/bash\nexec bin/pd-server \\\n  --name=\"x \\\n", name="run_pd.sh")


# ---------------------------------------------------------------------------------------------------
# Editing TiUP's scripts


def test_pd_enable_changes_only_url_values_and_adds_cert_lines():
    src = fixture("run_pd.sh")
    out, values, flags = edit_script(src, pd_enable(read_flags(src)), name="run_pd.sh")
    removed, added = changed_lines(src, out)
    # Every changed line differs from its original only by http -> https.
    assert len(removed) == 5
    for line in removed:
        assert line.replace("http://", "https://") in added
    new_lines = [line for line in added if line not in [r.replace("http://", "https://") for r in removed]]
    assert new_lines == [
        '    --cacert="/tidb-deploy/pd-2379/tls/ca.crt" \\\n',
        '    --cert="/tidb-deploy/pd-2379/tls/pd.crt" \\\n',
        '    --key="/tidb-deploy/pd-2379/tls/pd.pem" \\\n',
    ]
    # ...and they sit right before --config.
    assert out.index("--key=") < out.index("--config=conf/pd.toml")
    assert out.index("--initial-cluster=") < out.index("--cacert=")
    assert "http://" not in out
    assert flags["initial-cluster"].count("https://") == 3
    assert values["cacert"] == {"before": None, "after": PD_TLS_FLAGS["cacert"]}
    assert values["client-urls"] == {"before": "http://0.0.0.0:2379", "after": "https://0.0.0.0:2379"}


def test_pd_disable_is_byte_identical():
    src = fixture("run_pd.sh")
    enabled, _v, _f = edit_script(src, pd_enable(read_flags(src)))
    flags = read_flags(enabled)
    back_flags = {name: rewrite_url_schemes(flags[name], "http") for name in PD_URL_FLAGS}
    disabled, values, _f = edit_script(enabled, back_flags, remove=list(PD_TLS_FLAGS))
    assert disabled == src
    assert values["key"] == {"before": PD_TLS_FLAGS["key"], "after": None}


def test_tikv_style_space_separated_flags_round_trip():
    src = fixture("run_tikv.sh")
    out, _v, flags = edit_script(src, {"--pd": "https://10.0.1.1:2379", "extra": "a b"})
    removed, added = changed_lines(src, out)
    assert removed == ['    --pd "10.0.1.1:2379,10.0.1.2:2379,10.0.1.3:2379" \\\n']
    assert added == ['    --pd "https://10.0.1.1:2379" \\\n', '    --extra "a b" \\\n']
    assert out.index("--extra") < out.index("--config conf/tikv.toml")
    back, _v, _f = edit_script(out, {"pd": "10.0.1.1:2379,10.0.1.2:2379,10.0.1.3:2379"}, ["extra"])
    assert back == src


def test_unchanged_value_in_other_quoting_is_left_alone():
    src = fixture("run_pd.sh")
    out, values, _f = edit_script(src, {"config": "conf/pd.toml", "name": "pd-10.0.1.1-2379"})
    assert out == src
    assert values["config"] == {"before": "conf/pd.toml", "after": "conf/pd.toml"}


def test_value_keeps_quote_style_of_its_flag():
    text = "exec bin/pd-server --a=x --b='y' --c=\"z\" --d w\n"
    out, _v, _f = edit_script(text, {"a": "1", "b": "2", "c": "3", "d": "4"})
    assert out == "exec bin/pd-server --a=1 --b='2' --c=\"3\" --d 4\n"
    out, _v, _f = edit_script(text, {"a": "has space", "b": "it's", "c": 'q"$x'})
    assert out == "exec bin/pd-server --a=\"has space\" --b=\"it's\" --c=\"q\\\"$x\" --d w\n"
    assert read_flags(out)["c"] == 'q"$x'


def test_insert_before_last_line_without_config_flag():
    text = "exec bin/pd-server \\\n    --name=\"a\" \\\n    --log-file=\"l\" 2>> \"e\"\n"
    out, _v, _f = edit_script(text, {"cacert": "/ca"})
    assert out == "exec bin/pd-server \\\n    --name=\"a\" \\\n    --cacert=\"/ca\" \\\n    --log-file=\"l\" 2>> \"e\"\n"
    assert edit_script(out, remove=["cacert"])[0] == text


def test_single_line_command():
    text = "exec bin/pd-server --name=a --config=c.toml 2>> err.log\n"
    out, _v, _f = edit_script(text, {"cacert": "/ca"})
    assert out == "exec bin/pd-server --name=a --cacert=/ca --config=c.toml 2>> err.log\n"
    assert edit_script(out, remove=["cacert"])[0] == text
    text = "exec bin/pd-server --name=a\n"
    out, _v, _f = edit_script(text, {"cacert": "/ca"})
    assert out == "exec bin/pd-server --name=a --cacert=/ca\n"
    assert edit_script(out, remove=["--cacert"])[0] == text


def test_remove_last_line_of_command_takes_the_continuation():
    text = "exec bin/tikv-server \\\n    --addr \"a\" \\\n    --config conf/tikv.toml\necho never\n"
    out, _v, _f = edit_script(text, remove=["config"])
    assert out == "exec bin/tikv-server \\\n    --addr \"a\"\necho never\n"


def test_duplicate_flags_all_set_and_removed():
    text = "exec bin/pd-server --x=1 --y=2 --x=3\n"
    out, values, flags = edit_script(text, {"x": "9"})
    assert out == "exec bin/pd-server --x=9 --y=2 --x=9\n"
    assert values["x"] == {"before": "3", "after": "9"}
    assert edit_script(text, remove=["x"])[0] == "exec bin/pd-server --y=2\n"


def test_bare_switch_and_value_types():
    text = "exec bin/pd-server --a=1\n"
    out, _v, flags = edit_script(text, {"flag": None, "n": 5, "b": True, "l": ["x", "y"]})
    assert flags == {"a": "1", "flag": None, "n": "5", "b": "true", "l": "x,y"}
    assert out == "exec bin/pd-server --a=1 --flag --n=5 --b=true --l=x,y\n"


def test_set_and_remove_same_flag_refused():
    with pytest.raises(ScriptError, match="both set and removed"):
        edit_script(fixture("run_pd.sh"), {"cacert": "/x"}, ["--cacert"])
    with pytest.raises(ScriptError, match="invalid flag name"):
        edit_script(fixture("run_pd.sh"), {"--": "/x"})


def test_internal_check_stops_a_wrong_edit(monkeypatch):
    original = RunScript._insert

    def sloppy(self, name, value):
        original(self, name, value)
        self._splice(self.flags[0].vstart, self.flags[0].vend, '"changed"')

    monkeypatch.setattr(RunScript, "_insert", sloppy)
    with pytest.raises(ScriptError, match="internal error"):
        edit_script(fixture("run_pd.sh"), {"cacert": "/x"})


@pytest.mark.parametrize("name", ["run_pd.sh", "run_tikv.sh", "old_pd", "single", "nocfg", "noeol"])
def test_random_round_trips(name):
    """Seeded fuzz: setting any mix of flags and then restoring/removing them gives back the bytes."""
    import random
    shapes = {
        "old_pd": fixture("run_pd.sh").replace(
            "exec \\\n    env GODEBUG=madvdontneed=1 \\\n    bin/pd-server \\\n", "exec bin/pd-server \\\n"),
        "single": "#!/bin/sh\nexec bin/pd-server --name=a --config=conf/pd.toml 2>> log\n",
        "nocfg": "exec bin/pd-server \\\n  --name='x' \\\n  --data-dir /d\n",
        "noeol": "exec bin/pd-server \\\n  --name='x' \\\n  --config=c",
    }
    src = shapes[name] if name in shapes else fixture(name)
    if name == "old_pd":
        assert src.count("exec bin/pd-server \\\n") == 1
    styles = {f.name: f.quote for f in RunScript(src).flags}
    rnd = random.Random(name)
    values = ["/x/ca.crt", "a b", 'q"x', "https://a:1,https://b:2", "$HOME/x", ""]
    for _trial in range(100):
        sets = {}
        for _edit in range(rnd.randint(1, 5)):
            key = rnd.choice(list(styles) + ["cacert", "cert", "key", "new-flag"])
            value = rnd.choice(values)
            if styles.get(key) == "" and not re.match(r"^[A-Za-z0-9_@%+=:,./-]+$", value):
                continue  # an unquoted flag cannot hold it: it gets quotes, which a restore keeps
            sets[key] = value
        out, vals, _flags = edit_script(src, sets)
        assert edit_script(out, sets)[0] == out
        restore = {k: v["before"] for k, v in vals.items() if k in styles}
        added = [k for k in vals if k not in styles]
        assert edit_script(out, restore, added)[0] == src, sets


# ---------------------------------------------------------------------------------------------------
# URL helper


@pytest.mark.parametrize("value, expected", [
    ("http://a:2379", "https://a:2379"),
    ("http://a:2379,http://b:2379", "https://a:2379,https://b:2379"),
    ("pd-1=http://a:2380,pd-2=http://b:2380", "pd-1=https://a:2380,pd-2=https://b:2380"),
    ("HTTP://a:1, http://b:2", "https://a:1, https://b:2"),
    ("a:2379,b:2379", "a:2379,b:2379"),
    ("unix://sock,https://a:1", "unix://sock,https://a:1"),
    (["http://a:1", "b:2"], ["https://a:1", "b:2"]),
])
def test_rewrite_url_schemes(value, expected):
    assert rewrite_url_schemes(value) == expected


def test_rewrite_back_to_http_and_schemes():
    assert rewrite_url_schemes("pd-1=https://a:2380", "http") == "pd-1=http://a:2380"
    assert url_schemes("pd-1=https://a:2380,pd-2=http://b:2380") == {"http", "https"}
    assert url_schemes("a:2379") == set()
    assert quote_value("a b", "") == '"a b"'


# ---------------------------------------------------------------------------------------------------
# The module


def run_module(args, check=False, diff=False):
    payload = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": payload}).encode()
    basic._ANSIBLE_PROFILE = "legacy"
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            script_flags.main()
    finally:
        basic._ANSIBLE_ARGS = None
        basic._ANSIBLE_PROFILE = None
    return json.loads(out.getvalue())


@pytest.fixture
def run_pd(tmp_path):
    path = tmp_path / "scripts" / "run_pd.sh"
    path.parent.mkdir()
    path.write_text(fixture("run_pd.sh"))
    os.chmod(path, 0o755)
    old = time.time() - 3600
    os.utime(path, (old, old))
    return path


def test_module_read_only(run_pd):
    mtime = os.stat(run_pd).st_mtime
    res = run_module({"path": str(run_pd)})
    assert res["changed"] is False
    assert res["flags"]["peer-urls"] == "http://0.0.0.0:2380"
    assert os.stat(run_pd).st_mtime == mtime


def test_module_enable_idempotent_disable(run_pd):
    src = run_pd.read_text()
    flags = pd_enable(read_flags(src))
    res = run_module({"path": str(run_pd), "flags": flags})
    assert res["changed"] is True
    assert res["flags"]["client-urls"] == "https://0.0.0.0:2379"
    assert stat.S_IMODE(os.stat(run_pd).st_mode) == 0o755
    old = time.time() - 7200
    os.utime(run_pd, (old, old))
    again = run_module({"path": str(run_pd), "flags": flags})
    assert again["changed"] is False
    assert os.stat(run_pd).st_mtime == pytest.approx(old)
    back = {name: rewrite_url_schemes(res["flags"][name], "http") for name in PD_URL_FLAGS}
    off = run_module({"path": str(run_pd), "flags": back, "remove": list(PD_TLS_FLAGS)})
    assert off["changed"] is True
    assert run_pd.read_text() == src
    assert sorted(os.listdir(run_pd.parent)) == ["run_pd.sh"]


def test_module_check_mode_and_diff(run_pd):
    src = run_pd.read_text()
    mtime = os.stat(run_pd).st_mtime
    res = run_module({"path": str(run_pd), "flags": PD_TLS_FLAGS}, check=True, diff=True)
    assert res["changed"] is True
    assert run_pd.read_text() == src and os.stat(run_pd).st_mtime == mtime
    assert res["diff"]["before"] == src
    assert '    --cacert="/tidb-deploy/pd-2379/tls/ca.crt" \\\n' in res["diff"]["after"]
    assert res["diff"]["after_header"] == str(run_pd)
    # What check mode predicts is what a real run does.
    real = run_module({"path": str(run_pd), "flags": PD_TLS_FLAGS}, diff=True)
    assert real["diff"]["after"] == run_pd.read_text() == res["diff"]["after"]


def test_module_backup_and_dest(run_pd):
    src = run_pd.read_text()
    dest = str(run_pd) + ".tls-pending"
    res = run_module({"path": str(run_pd), "dest": dest, "flags": PD_TLS_FLAGS, "backup": True})
    assert res["changed"] is True
    assert "backup_file" not in res  # nothing to back up: dest did not exist
    assert run_pd.read_text() == src
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o755
    assert run_module({"path": str(run_pd), "dest": dest, "flags": PD_TLS_FLAGS})["changed"] is False
    res = run_module({"path": str(run_pd), "flags": PD_TLS_FLAGS, "backup": True})
    with open(res["backup_file"]) as fh:
        assert fh.read() == src
    assert res["backup_file"].startswith(str(run_pd) + ".") and res["backup_file"].endswith(".bak")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_module_keeps_owner(run_pd):
    os.chown(run_pd, 4321, 4322)
    run_module({"path": str(run_pd), "flags": PD_TLS_FLAGS})
    st = os.stat(run_pd)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4321, 4322, 0o755)


def test_module_errors(tmp_path, run_pd):
    res = run_module({"path": str(tmp_path / "run_pd.sh"), "flags": PD_TLS_FLAGS})
    assert res["failed"] is True and "does not exist" in res["msg"]
    other = tmp_path / "other.sh"
    other.write_text("#!/bin/bash\necho hello\n")
    res = run_module({"path": str(other), "flags": PD_TLS_FLAGS})
    assert res["failed"] is True and str(other) in res["msg"] and "exec" in res["msg"]
    res = run_module({"path": str(run_pd), "program": "tikv-server"})
    assert res["failed"] is True and "tikv-server" in res["msg"]
