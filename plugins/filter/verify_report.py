# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The verify role's filters: ``verify_plan`` (what each port served, which peer probes which port) and
``verify_gather`` (every instance's results after the probes), then ``verify_report`` and ``verify_markdown``
(the judgement and its table). Documented in the .yml file of each name; the logic is in
module_utils/_verify_plan.py and module_utils/_verify_report.py."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.tlsops.tikv.plugins.module_utils import _verify_plan, _verify_report
from ansible_collections.tlsops.tikv.plugins.module_utils._plain import plain


def _mapping(name, what, value):
    if not isinstance(value, dict):
        raise AnsibleFilterError("%s: expected %s (a dict), got %s" % (name, what, type(value).__name__))
    return value


def verify_plan(controller_results, instances, groups, peer_sources, grpc_method):
    if not isinstance(controller_results, (list, tuple)):
        raise AnsibleFilterError("verify_plan: expected the controller probes' results (a list), got %s"
                                 % type(controller_results).__name__)
    served = _verify_plan.served(plain(controller_results))
    try:
        plan = _verify_plan.peer_plan(plain(_mapping("verify_plan", "the instance models by host", instances)),
                                      plain(_mapping("verify_plan", "the component groups", groups)),
                                      plain(_mapping("verify_plan", "the peer sources by channel", peer_sources)),
                                      served, grpc_method)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AnsibleFilterError("verify_plan: cannot plan the peer probes: %s: %s" % (type(exc).__name__, exc))
    return dict(plan, served=served)


def verify_gather(per_host, hosts_all, hosts_active, plan, controller_results, configs=None, peer_links=None):
    try:
        return _verify_plan.gather(list(hosts_all), list(hosts_active),
                                   plain(_mapping("verify_gather", "the per-host results", per_host)),
                                   plain(_mapping("verify_gather", "the output of tlsops.tikv.verify_plan", plan)),
                                   plain(controller_results or []), plain(configs or []), plain(peer_links or []))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AnsibleFilterError("verify_gather: cannot gather the results: %s: %s" % (type(exc).__name__, exc))


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
        return {"verify_plan": verify_plan, "verify_gather": verify_gather, "verify_report": verify_report,
                "verify_markdown": verify_markdown}
