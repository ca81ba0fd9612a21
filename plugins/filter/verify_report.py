# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters ``verify_report`` and ``verify_markdown``: the verify role's judgement and its table
(documented in verify_report.yml and verify_markdown.yml; the logic is in module_utils/_verify_report.py)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.tlsops.tikv.plugins.module_utils import _verify_report
from ansible_collections.tlsops.tikv.plugins.module_utils._plain import plain


def verify_report(instances, cluster=None, settings=None):
    if not isinstance(instances, (list, tuple)):
        raise AnsibleFilterError("verify_report: expected a list of per-instance results, got %s"
                                 % type(instances).__name__)
    try:
        return _verify_report.build(_verify_report.collect(plain(instances)), plain(cluster or {}),
                                    plain(settings or {}))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AnsibleFilterError("verify_report: cannot build the report: %s: %s" % (type(exc).__name__, exc))


def verify_markdown(report):
    if not isinstance(report, dict) or "rows" not in report:
        raise AnsibleFilterError("verify_markdown: expected the output of tlsops.tikv.verify_report")
    return _verify_report.markdown(plain(report))


class FilterModule(object):
    def filters(self):
        return {"verify_report": verify_report, "verify_markdown": verify_markdown}
