"""Run a module's main() in-process and get its result, for every unit test of a module.

run() returns the result dict of exit_json; a fail_json raises ModuleFailed carrying the result.
"""

from __future__ import annotations

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


class ModuleExited(Exception):
    def __init__(self, result):
        super().__init__(result)
        self.result = result


class ModuleFailed(Exception):
    def __init__(self, result):
        super().__init__(result.get("msg"))
        self.result = result


def _exit_json(self, **kwargs):  # pylint: disable=unused-argument
    kwargs.setdefault("changed", False)
    raise ModuleExited(kwargs)


def _fail_json(self, msg, **kwargs):  # pylint: disable=unused-argument
    kwargs["msg"] = msg
    raise ModuleFailed(kwargs)


def run(module, args, check=False, diff=True):
    """Run module.main() with args; return its result dict, or raise ModuleFailed."""
    args = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    with patch_module_args(args):
        orig_exit, orig_fail = basic.AnsibleModule.exit_json, basic.AnsibleModule.fail_json
        basic.AnsibleModule.exit_json, basic.AnsibleModule.fail_json = _exit_json, _fail_json
        try:
            module.main()
        except ModuleExited as done:
            return done.result
        finally:
            basic.AnsibleModule.exit_json, basic.AnsibleModule.fail_json = orig_exit, orig_fail
    raise AssertionError("module returned without exit_json/fail_json")
