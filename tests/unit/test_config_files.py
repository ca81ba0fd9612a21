"""The config role's pieces and the role itself on real-world files (no lab needed).

config_files (backup sets, swap, restore), its module utils, the url_scheme filter and file_access_info
run on copies of the fixtures (TiUP's pd.toml, run_pd.sh, tikv.toml): every operation in check mode
(nothing written), for real, then again (unchanged); damaged sets and failed swaps are refused or
undone without touching a live file. TestRoleOnRealWorldFiles runs the role with ansible-playbook on
four TiUP-style and hand-made deployments: only the intended lines change, disabling gives back the
original bytes, a second run and check mode write nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys

import pytest
from ansible.errors import AnsibleFilterError
from ansible.module_utils import basic

from ansible_collections.tlsops.tikv.plugins.filter.url_scheme import FilterModule, url_scheme
from ansible_collections.tlsops.tikv.plugins.module_utils import _backup_set as bs
from ansible_collections.tlsops.tikv.plugins.modules import config_files

import module_runner
from module_runner import ModuleFailed as Fail

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def run(args, check=False, diff=True):
    """Run config_files in-process; return its result dict, or raise Fail with the failure."""
    return module_runner.run(config_files, args, check, diff)


def fails(args, check=False):
    with pytest.raises(Fail) as exc:
        run(args, check)
    return exc.value.result["msg"]


@pytest.fixture
def deploy(tmp_path):
    """A PD deploy dir with TiUP's files (copies of the fixtures)."""
    root = tmp_path / "pd-2379"
    (root / "conf").mkdir(parents=True)
    (root / "scripts").mkdir()
    shutil.copy(os.path.join(FIXTURES, "pd.toml"), root / "conf" / "pd.toml")
    shutil.copy(os.path.join(FIXTURES, "run_pd.sh"), root / "scripts" / "run_pd.sh")
    os.chmod(root / "scripts" / "run_pd.sh", 0o755)
    return root


def files_of(root):
    return [str(root / "conf" / "pd.toml"), str(root / "scripts" / "run_pd.sh")]


def snapshot(root):
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = (fh.read(), stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return out


def stage(path, old, new):
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    assert old in text
    with open(path + ".tls-pending", "w", encoding="utf-8") as fh:
        fh.write(text.replace(old, new))
    shutil.copymode(path, path + ".tls-pending")
    return text.replace(old, new)


def read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


# ---------------------------------------------------------------------------------------------
# backup


def test_backup_check_then_real(deploy):
    backup_dir = str(deploy / "tls-backup")
    args = dict(operation="backup", files=files_of(deploy), backup_dir=backup_dir, instance="pd1")
    before = snapshot(deploy)
    res = run(args, check=True)
    assert res["changed"] and res["backup_set"].startswith(backup_dir + "/")
    assert snapshot(deploy) == before and not os.path.exists(backup_dir)

    res = run(args)
    assert res["changed"]
    set_dir = res["backup_set"]
    assert stat.S_IMODE(os.stat(backup_dir).st_mode) == 0o700
    with open(os.path.join(set_dir, "manifest.json"), encoding="utf-8") as fh:
        manifest = json.load(fh)
    assert manifest == res["manifest"]
    assert manifest["instance"] == "pd1" and manifest["operation"] == "config" and manifest["format"] == 1
    script = str(deploy / "scripts" / "run_pd.sh")
    assert manifest["files"][script]["backup"] == "run_pd.sh"
    assert manifest["files"][script]["mode"] == "0755"
    for original, entry in manifest["files"].items():
        with open(os.path.join(set_dir, entry["backup"]), "rb") as fh, open(original, "rb") as orig:
            assert fh.read() == orig.read()
    # Live files untouched (content, mode, mtime).
    assert {k: v for k, v in snapshot(deploy).items() if not k.startswith("tls-backup")} == before


def test_backup_same_second_and_same_basename(tmp_path):
    a = tmp_path / "a" / "pd.toml"
    b = tmp_path / "b" / "pd.toml"
    for p in (a, b):
        p.parent.mkdir()
        p.write_text("x = 1\n")
    backup_dir = str(tmp_path / "bk")
    first, m1 = bs.create_set(backup_dir, [str(a), str(b)], "config")
    assert sorted(e["backup"] for e in m1["files"].values()) == ["pd.toml", "pd.toml.1"]
    now = bs._utcnow().replace(year=2099)
    p1, _manifest1 = bs.create_set(backup_dir, [str(a)], "config", now=now)
    p2, _manifest2 = bs.create_set(backup_dir, [str(a)], "config", now=now)
    assert p1.endswith("/" + bs.set_name(now)) and p2 == p1 + "-1"
    assert [s["path"] for s in bs.list_sets(backup_dir)][-2:] == [p1, p2]


def test_backup_missing_file_fails(deploy):
    msg = fails(dict(operation="backup", files=[str(deploy / "conf" / "nope.toml")],
                     backup_dir=str(deploy / "tls-backup"), instance="pd1"))
    assert msg.startswith("pd1: cannot back up") and "nope.toml" in msg
    assert not os.path.exists(deploy / "tls-backup")


def test_incomplete_set_is_ignored(deploy):
    backup_dir = str(deploy / "tls-backup")
    good, _manifest = bs.create_set(backup_dir, files_of(deploy), "config")
    os.makedirs(os.path.join(backup_dir, "29991231T235959Z"))  # newer, but no manifest
    assert bs.find_set(backup_dir)["path"] == good


# ---------------------------------------------------------------------------------------------
# swap


def test_swap_check_real_again(deploy):
    toml, script = files_of(deploy)
    backup_dir = str(deploy / "tls-backup")
    originals = {toml: read(toml), script: read(script)}
    new_toml = stage(toml, "[replication]", "[security]\ncacert-path = \"/x/ca.crt\"\n\n[replication]")
    new_script = stage(script, "http://", "https://")
    args = dict(operation="swap", files=[toml, script], backup_dir=backup_dir, instance="pd1")

    before = snapshot(deploy)
    res = run(args, check=True)
    assert res["changed"] and sorted(res["promoted"]) == sorted([toml, script])
    assert snapshot(deploy) == before, "check mode wrote something"
    diffs = res["diff"]
    assert {d["before_header"] for d in diffs} == {toml, script}
    assert any("https://" in d["after"] and "http://" in d["before"] for d in diffs)

    res = run(args)
    assert res["changed"] and sorted(res["promoted"]) == sorted([toml, script])
    assert read(toml) == new_toml and read(script) == new_script
    assert not os.path.exists(toml + ".tls-pending") and not os.path.exists(script + ".tls-pending")
    assert stat.S_IMODE(os.stat(script).st_mode) == 0o755, "the live file's mode was not kept"
    manifest = res["manifest"]
    assert manifest["operation"] == "swap"
    for original, entry in manifest["files"].items():
        assert read(os.path.join(res["backup_set"], entry["backup"])) == originals[original]

    after = snapshot(deploy)
    res = run(args)
    assert not res["changed"] and res["backup_set"] is None
    assert snapshot(deploy) == after


def test_swap_discards_equal_pending(deploy):
    toml, script = files_of(deploy)
    shutil.copy(toml, toml + ".tls-pending")
    res = run(dict(operation="swap", files=[toml, script], backup_dir=str(deploy / "tls-backup")))
    assert res["changed"] and res["discarded"] == [toml + ".tls-pending"] and res["promoted"] == []
    assert not os.path.exists(toml + ".tls-pending") and not os.path.exists(deploy / "tls-backup")


def test_swap_refuses_invalid_toml(deploy):
    toml, script = files_of(deploy)
    stage(script, "http://", "https://")
    with open(toml + ".tls-pending", "w", encoding="utf-8") as fh:
        fh.write("[security\ncacert-path = \n")
    before = snapshot(deploy)
    msg = fails(dict(operation="swap", files=[toml, script], backup_dir=str(deploy / "tls-backup"), instance="pd1"))
    assert msg.startswith("pd1: ") and "not valid TOML" in msg and "nothing was swapped" in msg
    assert snapshot(deploy) == before


def test_swap_failure_puts_back_what_was_swapped(deploy, monkeypatch):
    toml, script = files_of(deploy)
    originals = {toml: read(toml), script: read(script)}
    stage(toml, "[replication]", "[security]\n\n[replication]")
    stage(script, "http://", "https://")
    real_move = basic.AnsibleModule.atomic_move
    calls = []

    def flaky_move(self, src, dest, *args, **kwargs):
        calls.append(dest)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_move(self, src, dest, *args, **kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "atomic_move", flaky_move)
    msg = fails(dict(operation="swap", files=[toml, script], backup_dir=str(deploy / "tls-backup"), instance="pd1"))
    assert "No space left" in msg and "put back" in msg
    assert read(toml) == originals[toml] and read(script) == originals[script]


# ---------------------------------------------------------------------------------------------
# restore


def test_restore_check_real_again_and_undo(deploy):
    toml, script = files_of(deploy)
    backup_dir = str(deploy / "tls-backup")
    originals = {toml: read(toml), script: read(script)}
    bs.create_set(backup_dir, [toml, script], "config", instance="pd1")
    # The "change" the set protects against, and a stale staged copy.
    with open(toml, "a", encoding="utf-8") as fh:
        fh.write("\n[security]\ncacert-path = \"/x\"\n")
    os.chmod(script, 0o700)
    changed = {toml: read(toml), script: read(script)}
    with open(toml + ".tls-pending", "w", encoding="utf-8") as fh:
        fh.write("x = 1\n")
    args = dict(operation="restore", files=[toml, script], backup_dir=backup_dir, instance="pd1")

    before = snapshot(deploy)
    res = run(args, check=True)
    assert res["changed"] and sorted(res["restored"]) == sorted([toml, script])
    assert res["discarded"] == [toml + ".tls-pending"]
    assert res["diff"]["before_header"] == toml and "[security]" in res["diff"]["before"]
    assert snapshot(deploy) == before, "check mode wrote something"

    res = run(args)
    assert res["changed"]
    assert read(toml) == originals[toml] and read(script) == originals[script]
    assert stat.S_IMODE(os.stat(script).st_mode) == 0o755
    assert not os.path.exists(toml + ".tls-pending")
    safety = bs.find_set(backup_dir, res["safety_set"])
    assert safety["manifest"]["operation"] == "restore"
    assert safety["manifest"]["restores"] == os.path.basename(res["backup_set"])

    # Again: nothing to do; the restore's own safety set is not "the latest backup".
    after = snapshot(deploy)
    res = run(args)
    assert not res["changed"] and snapshot(deploy) == after

    # The rollback can be undone by naming the safety set.
    res = run(dict(args, backup_set=os.path.basename(safety["path"])))
    assert res["changed"] and read(toml) == changed[toml]


def test_restore_refuses_damaged_set(deploy):
    toml, script = files_of(deploy)
    backup_dir = str(deploy / "tls-backup")
    path, manifest = bs.create_set(backup_dir, [toml, script], "config")
    with open(toml, "a", encoding="utf-8") as fh:
        fh.write("# changed\n")
    with open(os.path.join(path, manifest["files"][toml]["backup"]), "a", encoding="utf-8") as fh:
        fh.write("# tampered\n")
    before = snapshot(deploy)
    msg = fails(dict(operation="restore", backup_dir=backup_dir, instance="pd1"))
    assert msg.startswith("pd1: backup set") and "damaged" in msg
    assert snapshot(deploy) == before


def test_restore_without_sets_fails_clearly(deploy):
    msg = fails(dict(operation="restore", backup_dir=str(deploy / "tls-backup"), instance="pd1"))
    assert "no backup set under" in msg and msg.startswith("pd1: ")
    msg = fails(dict(operation="restore", backup_dir=str(deploy / "tls-backup"), backup_set="20200101T000000Z"))
    assert "does not exist" in msg


def test_restore_recreates_a_deleted_file(deploy):
    toml, script = files_of(deploy)
    backup_dir = str(deploy / "tls-backup")
    original = read(toml)
    bs.create_set(backup_dir, [toml], "config")
    os.unlink(toml)
    res = run(dict(operation="restore", backup_dir=backup_dir))
    assert res["changed"] and res["safety_set"] is None and read(toml) == original


# ---------------------------------------------------------------------------------------------
# url_scheme filter


@pytest.mark.parametrize("value, scheme, expected", [
    ("http://10.0.1.1:2379,http://10.0.1.2:2379", "https", "https://10.0.1.1:2379,https://10.0.1.2:2379"),
    ("pd-1=http://10.0.1.1:2380,pd-2=http://10.0.1.2:2380", "https",
     "pd-1=https://10.0.1.1:2380,pd-2=https://10.0.1.2:2380"),
    ("https://a:2379", "http", "http://a:2379"),
    ("a:2379,b:2379", "https", "a:2379,b:2379"),
    (["https://a:2379", "b:2379"], "http", ["http://a:2379", "b:2379"]),
    ("unix://x,http://a:1", "https", "unix://x,https://a:1"),
    (None, "https", None),
])
def test_url_scheme(value, scheme, expected):
    assert url_scheme(value, scheme) == expected
    assert FilterModule().filters()["url_scheme"] is url_scheme


def test_url_scheme_refuses_other_schemes_and_types():
    with pytest.raises(AnsibleFilterError):
        url_scheme("http://a", "ftp")
    with pytest.raises(AnsibleFilterError):
        url_scheme(5, "https")


# ---------------------------------------------------------------------------------------------
# file_access_info (the config role's readable-by-the-service-user check)


def run_access(args):
    from ansible_collections.tlsops.tikv.plugins.modules import file_access_info

    return module_runner.run(file_access_info, args, diff=False)


@pytest.fixture
def tls_tree():
    """tls/ 0700 with ca.crt 0644 and pd.pem 0600, open/ 0755 with a 0644 file and a link to it.

    Under /tmp itself: pytest's own tmp_path sits below a 0700 directory, which (rightly) blocks
    every other user on the way.
    """
    import pathlib
    import tempfile

    root = tempfile.mkdtemp(prefix="tlsops-access-")
    try:
        yield _tls_tree(pathlib.Path(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _tls_tree(tmp_path):
    tls = tmp_path / "tls"
    tls.mkdir()
    (tls / "ca.crt").write_text("ca")
    (tls / "pd.pem").write_text("key")
    os.chmod(tls / "ca.crt", 0o644)
    os.chmod(tls / "pd.pem", 0o600)
    os.chmod(tls, 0o700)
    opened = tmp_path / "open"
    opened.mkdir()
    os.chmod(opened, 0o755)
    (opened / "ca.crt").write_text("ca")
    os.chmod(opened / "ca.crt", 0o644)
    os.symlink(opened / "ca.crt", opened / "link.crt")
    os.chmod(tmp_path, 0o755)
    return tmp_path


def test_access_for_the_running_user_and_root(tls_tree):
    paths = [str(tls_tree / "tls" / "pd.pem"), str(tls_tree / "open" / "link.crt"), str(tls_tree / "nope")]
    res = run_access(dict(paths=paths, user=str(os.geteuid())))
    assert not res["changed"] and res["user_exists"] and res["user"]["uid"] == os.geteuid()
    assert res["missing"] == [str(tls_tree / "nope")] and res["unreadable"] == []
    link = res["files"][str(tls_tree / "open" / "link.crt")]
    assert link["islink"] and link["type"] == "file" and link["readable"]
    assert link["realpath"] == str(tls_tree / "open" / "ca.crt")
    res = run_access(dict(paths=paths))
    assert res["user"] is None and res["user_exists"] is None
    assert res["files"][paths[0]]["readable"] is None and res["files"][paths[0]]["mode"] == "0600"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs files owned by another user than 'nobody'")
def test_access_for_another_user(tls_tree):
    key, ca_in_tls, ca_open = (str(tls_tree / "tls" / "pd.pem"), str(tls_tree / "tls" / "ca.crt"),
                               str(tls_tree / "open" / "ca.crt"))
    res = run_access(dict(paths=[key, ca_in_tls, ca_open], user="nobody"))
    files = res["files"]
    assert files[ca_open]["readable"] is True
    # The key: the 0700 directory blocks the way before the file's own 0600 would.
    assert files[key]["readable"] is False and "directory %s" % (tls_tree / "tls") in files[key]["reason"]
    assert files[ca_in_tls]["readable"] is False
    assert len(res["unreadable"]) == 2
    os.chmod(tls_tree / "tls", 0o755)
    res = run_access(dict(paths=[key, ca_in_tls], user="nobody"))
    assert res["files"][ca_in_tls]["readable"] is True
    assert res["files"][key]["reason"].startswith("owner uid 0, gid 0, mode 0600: no read permission")


def test_access_unknown_user_and_relative_path(tls_tree):
    res = run_access(dict(paths=[str(tls_tree / "open" / "ca.crt")], user="no-such-user-here"))
    assert res["user_exists"] is False and res["user"] is None
    with pytest.raises(Fail) as exc:
        run_access(dict(paths=["relative/ca.crt"]))
    assert "not an absolute path" in exc.value.result["msg"]


# ---------------------------------------------------------------------------------------------
# The config role itself on real-world files (no lab: nothing is started, only files are rendered)
#
# Four instances with the shapes deployments really have: pd1 is TiUP's (URLs as flags in
# run_pd.sh), pd2 keeps its URLs in pd.toml and has no run script, tikv1 is TiUP's (--pd without a
# scheme), tikv2 carries [pd] endpoints with http:// and an existing [security] table (redact-info-log
# and encryption at rest) that the role must leave alone.

ROLE_PLAYBOOK = os.path.join(os.path.dirname(os.path.dirname(__file__)), "integration", "playbooks",
                             "config_role.yml")
ROLE_LAYOUT = {
    "pd1": ("pd", "pd.toml", "run_pd.sh"),
    "pd2": ("pd", "pd-urls-in-config.toml", None),
    "tikv1": ("tikv", "tikv.toml", "run_tikv.sh"),
    "tikv2": ("tikv", "tikv-pd-endpoints.toml", None),
}
PD1_URL_FLAGS = {
    "client": ['    --client-urls="{}://0.0.0.0:2379" \\', '    --advertise-client-urls="{}://10.0.1.1:2379" \\'],
    "peer": ['    --peer-urls="{}://0.0.0.0:2380" \\', '    --advertise-peer-urls="{}://10.0.1.1:2380" \\',
             '    --initial-cluster="pd-10.0.1.1-2379={0}://10.0.1.1:2380,pd-10.0.1.2-2379={0}://10.0.1.2:2380,'
             'pd-10.0.1.3-2379={0}://10.0.1.3:2380" \\'],
}
PD2_URL_KEYS = {
    "client": ['client-urls = "{}://0.0.0.0:2379"',
               'advertise-client-urls = "{}://10.0.1.2:2379"   # what TiKV and TiDB dial'],
    "peer": ['peer-urls = "{}://0.0.0.0:2380"', 'advertise-peer-urls = "{}://10.0.1.2:2380"',
             'initial-cluster = "pd-10.0.1.1-2379={0}://10.0.1.1:2380,pd-10.0.1.2-2379={0}://10.0.1.2:2380,'
             'pd-10.0.1.3-2379={0}://10.0.1.3:2380"'],
}
TIKV2_ENDPOINTS = 'endpoints = ["{0}://10.0.1.1:2379", "{0}://10.0.1.2:2379", "{0}://10.0.1.3:2379"]'
ALLOWED_CN = {"tikv_tls_pd_allowed_cn": ["pd", "tikv"], "tikv_tls_tikv_allowed_cn": ["pd", "tikv"]}


def schemes(lines, scheme):
    return [line.format(scheme) for line in lines]


def line_changes(before, after):
    """(removed lines, added lines) of a unified diff: everything else of the file is unchanged."""
    import difflib

    removed, added = [], []
    for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        (removed if line.startswith("-") else added).append(line[1:])
    return removed, added


def security_lines(name, root):
    component = ROLE_LAYOUT[name][0]
    tls = os.path.join(root, name, "tls")
    return ['%s = "%s/ca.crt"' % ("cacert-path" if component == "pd" else "ca-path", tls),
            'cert-path = "%s/%s.crt"' % (tls, component),
            'key-path = "%s/%s.pem"' % (tls, component),
            'cert-allowed-cn = ["pd", "tikv"]']


@pytest.fixture(scope="module")
def role_site(tmp_path_factory):
    """Deploy dirs built from the fixtures, TLS files in place, and an inventory for them."""
    import getpass

    import yaml
    from tikvlab import certs

    root = tmp_path_factory.mktemp("config-role")
    ca = certs.make_ca()
    hosts = {"pd": {}, "tikv": {}}
    originals = {}
    for name, (component, config, script) in ROLE_LAYOUT.items():
        deploy_dir = root / name
        (deploy_dir / "conf").mkdir(parents=True)
        (deploy_dir / "scripts").mkdir()
        shutil.copy(os.path.join(FIXTURES, config), deploy_dir / "conf" / ("%s.toml" % component))
        if script:
            shutil.copy(os.path.join(FIXTURES, script), deploy_dir / "scripts" / script)
            os.chmod(deploy_dir / "scripts" / script, 0o755)
        leaf = certs.make_leaf(ca, component, ["127.0.0.1", "localhost"])
        certs.write_tls_dir(str(deploy_dir / "tls"), component, ca, leaf)
        hosts[component][name] = {"ansible_host": "127.0.0.1", "deploy_dir": str(deploy_dir)}
        for sub in ("conf", "scripts"):
            for path in (deploy_dir / sub).iterdir():
                originals[str(path)] = path.read_bytes()
    inventory = root / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "tikv_tls_version": "v8.5.0", "tikv_tls_service_user": getpass.getuser()},
        "children": {"pd": {"hosts": hosts["pd"]}, "tikv": {"hosts": hosts["tikv"]}},
    }}))
    return {"root": str(root), "inventory": str(inventory), "originals": originals}


def role_run(site, *args):
    from playbook_runner import run_playbook

    return run_playbook(ROLE_PLAYBOOK, site["inventory"], *args)


def conf_text(site, name):
    component = ROLE_LAYOUT[name][0]
    return read(os.path.join(site["root"], name, "conf", "%s.toml" % component))


def tree(site):
    """Content and mtime of every file under the deploy dirs (TLS files included)."""
    out = {}
    for dirpath, _dirs, names in os.walk(site["root"]):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[path] = (fh.read(), os.stat(path).st_mtime_ns)
    return out


class TestRoleOnRealWorldFiles:
    """Check, enable in the cutover's two steps, again, disable: only the intended lines move."""

    def test_check_diff_writes_nothing_and_shows_each_change(self, role_site):
        before = tree(role_site)
        run = role_run(role_site, "--check", "--diff", "-e", json.dumps(ALLOWED_CN)).assert_ok()
        assert tree(role_site) == before, "check mode wrote something"
        assert set(run.changed()) == set(ROLE_LAYOUT)
        root = role_site["root"]
        assert "--- before: %s/pd1/scripts/run_pd.sh" % root in run.output
        assert "+" + schemes(PD1_URL_FLAGS["peer"], "https")[0] in run.output
        assert "+" + security_lines("tikv1", root)[0] in run.output
        assert "+" + TIKV2_ENDPOINTS.format("https") in run.output

    def test_enable_client_side_first_changes_only_the_intended_lines(self, role_site):
        root, orig = role_site["root"], role_site["originals"]
        run = role_run(role_site, "-e", "tikv_tls_pd_peer_scheme=http", "-e", json.dumps(ALLOWED_CN)).assert_ok()
        assert set(run.changed()) == set(ROLE_LAYOUT)

        pd1_script = os.path.join(root, "pd1", "scripts", "run_pd.sh")
        assert line_changes(orig[pd1_script].decode(), read(pd1_script)) == (
            schemes(PD1_URL_FLAGS["client"], "http"), schemes(PD1_URL_FLAGS["client"], "https"))
        pd1_conf = os.path.join(root, "pd1", "conf", "pd.toml")
        assert line_changes(orig[pd1_conf].decode(), read(pd1_conf)) == (
            [], ["", "[security]"] + security_lines("pd1", root))

        pd2_conf = os.path.join(root, "pd2", "conf", "pd.toml")
        removed, added = line_changes(orig[pd2_conf].decode(), read(pd2_conf))
        assert removed == schemes(PD2_URL_KEYS["client"], "http")
        assert added == schemes(PD2_URL_KEYS["client"], "https") + ["", "[security]"] + security_lines("pd2", root)

        tikv1_conf = os.path.join(root, "tikv1", "conf", "tikv.toml")
        assert line_changes(orig[tikv1_conf].decode(), read(tikv1_conf)) == (
            [], ["", "[security]"] + security_lines("tikv1", root))
        # TiUP's --pd has no scheme (TiKV uses TLS whenever ca-path is set): run_tikv.sh is untouched.
        tikv1_script = os.path.join(root, "tikv1", "scripts", "run_tikv.sh")
        assert read(tikv1_script).encode() == orig[tikv1_script]

        tikv2_conf = os.path.join(root, "tikv2", "conf", "tikv.toml")
        removed, added = line_changes(orig[tikv2_conf].decode(), read(tikv2_conf))
        assert removed == [TIKV2_ENDPOINTS.format("http")]
        # The keys join the existing [security] table, after its own key; encryption stays as it was.
        assert added == [TIKV2_ENDPOINTS.format("https")] + security_lines("tikv2", root)
        assert "redact-info-log = true\n" + security_lines("tikv2", root)[0] in read(tikv2_conf)

        # One backup set per instance, holding exactly the files that changed, as they were.
        for name in ROLE_LAYOUT:
            sets = bs.list_sets(os.path.join(root, name, "tls-backup"))
            assert len(sets) == 1 and sets[0]["manifest"]["instance"] == name
            for original, entry in sets[0]["manifest"]["files"].items():
                assert read(os.path.join(sets[0]["path"], entry["backup"])).encode() == orig[original]
        assert not [p for p in tree(role_site) if p.endswith(".tls-pending")]

    def test_enable_peer_side_then_changes_only_the_peer_urls(self, role_site):
        root = role_site["root"]
        pd1_script = os.path.join(root, "pd1", "scripts", "run_pd.sh")
        before = {name: conf_text(role_site, name) for name in ROLE_LAYOUT}
        script_before = read(pd1_script)
        run = role_run(role_site, "-e", json.dumps(ALLOWED_CN)).assert_ok()
        assert set(run.changed()) == {"pd1", "pd2"}
        assert line_changes(script_before, read(pd1_script)) == (
            schemes(PD1_URL_FLAGS["peer"], "http"), schemes(PD1_URL_FLAGS["peer"], "https"))
        assert conf_text(role_site, "pd1") == before["pd1"]
        assert line_changes(before["pd2"], conf_text(role_site, "pd2")) == (
            schemes(PD2_URL_KEYS["peer"], "http"), schemes(PD2_URL_KEYS["peer"], "https"))
        assert conf_text(role_site, "tikv1") == before["tikv1"] and conf_text(role_site, "tikv2") == before["tikv2"]

    def test_second_run_changes_nothing(self, role_site):
        before = tree(role_site)
        run = role_run(role_site, "-e", json.dumps(ALLOWED_CN)).assert_ok()
        assert run.changed() == {}
        assert tree(role_site) == before, "an unchanged run rewrote a file"

    def test_disable_gives_back_the_original_bytes(self, role_site):
        run = role_run(role_site, "-e", "tikv_tls_config_state=disabled").assert_ok()
        assert set(run.changed()) == set(ROLE_LAYOUT)
        for path, content in role_site["originals"].items():
            with open(path, "rb") as fh:
                assert fh.read() == content, "%s differs from the original after disabling" % path
        before = tree(role_site)
        assert role_run(role_site, "-e", "tikv_tls_config_state=disabled").assert_ok().changed() == {}
        assert tree(role_site) == before

    def test_staged_then_restore_in_one_run_leaves_nothing_behind(self, role_site):
        """A rollback right after a staged render: no live file changes, every staged copy goes."""
        playbook = os.path.join(os.path.dirname(ROLE_PLAYBOOK), "config_then_restore.yml")
        from playbook_runner import run_playbook

        run = run_playbook(playbook, role_site["inventory"], "-e", "tikv_tls_config_mode=staged",
                           "-e", json.dumps(ALLOWED_CN)).assert_ok()
        assert set(run.changed()) == set(ROLE_LAYOUT)
        for path, content in role_site["originals"].items():
            with open(path, "rb") as fh:
                assert fh.read() == content, "%s changed by a staged render" % path
        assert not [p for p in tree(role_site) if p.endswith(".tls-pending")]
