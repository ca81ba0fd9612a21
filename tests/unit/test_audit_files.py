"""tlsops.tikv.audit_files: the report files and the probe-window record an audit keeps on the controller."""

from __future__ import annotations

import json
import os
import stat

import pytest
import yaml

from ansible_collections.tlsops.tikv.plugins.modules import audit_files
from module_runner import ModuleFailed, run

WINDOW = {"since": "2026-12-07T12:00:00Z", "until": "2026-12-07T12:00:09Z"}


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def report_args(tmp_path, **extra):
    args = dict(dir=str(tmp_path / "report"), files=[dict(name="verify.json", content='{"verdict": "pass"}\n'),
                                                     dict(name="verify.md", content="# TLS audit\n")],
                windows_path=str(tmp_path / "ctl" / "audit_probes.json"), window=WINDOW)
    args.update(extra)
    return args


def test_check_mode_writes_nothing_then_every_file_is_written_then_only_the_window_changes(tmp_path):
    args = report_args(tmp_path)
    planned = run(audit_files, args, check=True)
    assert planned["written"] == [str(tmp_path / "report" / "verify.json"), str(tmp_path / "report" / "verify.md")]
    assert planned["windows"] == 1
    assert not (tmp_path / "report").exists() and not (tmp_path / "ctl").exists()

    done = run(audit_files, args)
    assert done["changed"] is True and done["written"] == planned["written"]
    assert (tmp_path / "report" / "verify.json").read_text() == '{"verdict": "pass"}\n'
    assert (tmp_path / "report" / "verify.md").read_text() == "# TLS audit\n"
    assert mode(str(tmp_path / "report" / "verify.md")) == 0o644 and mode(str(tmp_path / "report")) == 0o755
    record = str(tmp_path / "ctl" / "audit_probes.json")
    assert json.loads(open(record).read()) == [WINDOW]
    assert mode(record) == 0o600 and mode(str(tmp_path / "ctl")) == 0o700

    again = run(audit_files, dict(args, window=dict(WINDOW, until="2026-12-07T12:00:10Z")))
    assert again["written"] == [] and again["windows"] == 2
    assert [w["until"] for w in json.loads(open(record).read())] == ["2026-12-07T12:00:09Z", "2026-12-07T12:00:10Z"]
    # No temporary file is left beside the written ones.
    assert sorted(os.listdir(str(tmp_path / "report"))) == ["verify.json", "verify.md"]
    assert os.listdir(str(tmp_path / "ctl")) == ["audit_probes.json"]


def test_the_record_keeps_the_newest_windows_and_starts_afresh_from_anything_but_a_list(tmp_path):
    record = tmp_path / "audit_probes.json"
    record.write_text(json.dumps([dict(WINDOW, since="2026-12-0%dT00:00:00Z" % day) for day in range(1, 6)]))
    out = run(audit_files, dict(windows_path=str(record), window=WINDOW, keep_windows=3))
    kept = json.loads(record.read_text())
    assert out["windows"] == 3 and out["written"] == []
    assert [w["since"] for w in kept] == ["2026-12-04T00:00:00Z", "2026-12-05T00:00:00Z", WINDOW["since"]]
    record.write_text('{"not": "a list"}')
    run(audit_files, dict(windows_path=str(record), window=WINDOW))
    assert json.loads(record.read_text()) == [WINDOW]
    record.write_text("damaged[")
    run(audit_files, dict(windows_path=str(record), window=WINDOW))
    assert json.loads(record.read_text()) == [WINDOW]


def test_a_changed_mode_alone_rewrites_the_file(tmp_path):
    args = dict(dir=str(tmp_path), files=[dict(name="verify.md", content="x\n")])
    run(audit_files, args)
    os.chmod(str(tmp_path / "verify.md"), 0o600)
    assert run(audit_files, args)["written"] == [str(tmp_path / "verify.md")]
    assert mode(str(tmp_path / "verify.md")) == 0o644


@pytest.mark.parametrize("args, text", [
    (dict(files=[dict(name="verify.md", content="x")]), "files need dir"),
    (dict(dir="/tmp", files=[dict(name="../verify.md", content="x")]), "'../verify.md' is not a file name"),
    (dict(dir="/tmp", files=[dict(name="verify.md", content="x", mode="rw")]), "mode 'rw' is not an octal mode"),
    (dict(windows_path="/tmp/w.json", window={"since": "yesterday", "until": "2026-12-07T12:00:09Z"}),
     "window must have since and until, ISO 8601 UTC times"),
    (dict(windows_path="/tmp/w.json", window={"since": "2026-12-07T12:00:00Z"}), "window must have since and until"),
    (dict(windows_path="/tmp/w.json", window=WINDOW, keep_windows=0), "keep_windows must be at least 1"),
    (dict(window=WINDOW), "missing parameter(s) required by 'window': windows_path"),
])
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, args, text):
    with pytest.raises(ModuleFailed) as failed:
        run(audit_files, args)
    assert text in failed.value.result["msg"]
    assert not os.path.exists("/tmp/w.json")


def test_an_unwritable_directory_fails_naming_the_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ModuleFailed) as failed:
        run(audit_files, dict(dir=str(blocker / "report"), files=[dict(name="verify.md", content="x")]))
    assert "cannot create the directory %s" % (blocker / "report") in failed.value.result["msg"]


def test_documentation_matches_the_argument_spec():
    doc = yaml.safe_load(audit_files.DOCUMENTATION)
    source = open(audit_files.__file__).read()
    for option in doc["options"]:
        assert "%s=dict(" % option in source, option
    for option in doc["options"]["files"]["suboptions"]:
        assert "%s=dict(" % option in source, option
    assert set(yaml.safe_load(audit_files.RETURN)) == {"written", "windows"}
    assert doc["attributes"]["check_mode"]["support"] == "full"
