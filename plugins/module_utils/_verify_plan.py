# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The verify role's bookkeeping around its probes (private to the collection): what each port served to
the controller, which peer probes which port with its own certificate, and, after the probes, every
instance's results gathered for ``_verify_report.collect``.

Done once per audit on the controller, for the whole cluster, instead of in per-host Jinja that reads
every other host's variables: each such task cost a worker process per host and grew with the square
of the instance count (docs/performance.md).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

COMPONENTS = ("pd", "tikv")


def served_mode(probe):
    """What a controller probe says the port served: ``tls``, ``plaintext`` or ``none`` (neither answered)."""
    if probe.get("protocol") is not None or probe.get("peer_cert") is not None:
        return "tls"
    if probe.get("plaintext_refused") is False:
        return "plaintext"
    return "none"


def served(controller_results):
    """``{instance: {channel: mode}}`` from the controller's probes (each tagged with instance and channel)."""
    out = {}
    for result in controller_results or []:
        tag = result.get("tag") or {}
        out.setdefault(tag.get("instance"), {})[tag.get("channel")] = served_mode(result)
    return out


def _source(target, component, members, index):
    """The peer of ``component`` that probes the instance at position ``index`` of its own group: the next
    instance of the same component, or the instance of the other component at the same position
    (round-robin). '' when there is none."""
    if component == target["component"]:
        return members[(index + 1) % len(members)] if len(members) > 1 else ""
    return members[index % len(members)] if members else ""


def peer_plan(instances, groups, peer_sources, served_by_instance, grpc_method):
    """Which peer probes which port, with the peer's own CA, certificate and key (used on the peer's own
    host; nothing is copied).

    ``instances``: ``{host: instance model}`` of every host that derived one in this run, in play order;
    ``groups``: ``{'pd': [...], 'tikv': [...]}``, the component groups in inventory order (hosts outside the
    run included: under --limit their certificate is unknown, so they probe nothing); ``peer_sources``:
    ``{channel: [component, ...]}``; ``served_by_instance``: served()'s answer; ``grpc_method``: the call a
    peer makes on every TiKV gRPC port it probes.

    Returns ``{'plans': {target host: [plan, ...]}, 'targets': {source host: [tls_handshake target, ...]}}``.
    A plan names its channel, port, source, source_component, target, address, the source's files and why
    it is skipped ('' when it is not). A target of a TiKV gRPC port carries ``grpc_method`` too: TiKV
    checks cert-allowed-cn on every call, not in the handshake, so only a call proves the peer's CN is
    admitted."""
    plans, targets = {}, {}
    for host, instance in instances.items():
        own = list(groups.get(instance["component"]) or [])
        index = own.index(host) if host in own else 0
        mine = plans.setdefault(host, [])
        for channel in instance.get("channels") or []:
            name = channel["channel"]
            for component in peer_sources.get(name) or []:
                source = _source(instance, component, list(groups.get(component) or []), index)
                model = instances.get(source) if source else None
                if not source:
                    skipped = "there is no other %s instance to probe from" % component
                elif not model:
                    skipped = "%s is not part of this run, so its certificate is unknown" % source
                elif (served_by_instance.get(host) or {}).get(name) == "plaintext":
                    skipped = "the port serves plaintext"
                else:
                    skipped = ""
                plan = dict(channel=name, port=channel["port"], source=source, source_component=component,
                            target=host, address=instance["address"],
                            ca_path=(model or {}).get("ca_path", ""), cert_path=(model or {}).get("cert_path", ""),
                            key_path=(model or {}).get("key_path", ""), skipped=skipped)
                mine.append(plan)
                if skipped:
                    continue
                target = dict(host=plan["address"], port=plan["port"], ca_path=plan["ca_path"],
                              client_cert_path=plan["cert_path"], client_key_path=plan["key_path"],
                              tag=dict(target=host, channel=name, source_component=component))
                if name == "tikv_grpc":
                    target["grpc_method"] = grpc_method
                targets.setdefault(source, []).append(target)
    return dict(plans=plans, targets=targets)


def _first(results, predicate):
    return next((result for result in results or [] if predicate(result)), None)


def _from_peer(plan, batch, pick):
    """The entry ``_verify_report.collect`` reads for one planned probe (``pick(result)``) or call: the
    result with its plan as ``item``, or why there is none."""
    if plan["skipped"]:
        return dict(skipped=True, item=plan)
    found = _first((batch or {}).get("results"), lambda r: (r.get("tag") or {}) == dict(
        target=plan["target"], channel=plan["channel"], source_component=plan["source_component"]))
    picked = pick(found) if found is not None else None
    if picked is None:
        return dict(skipped=True, item=dict(plan, skipped="%s made no probe (a task failed on it)" % plan["source"]))
    return dict(picked, item=plan)


def gather(hosts_all, hosts_active, per_host, plan, controller_results, configs, peer_links):
    """Every instance's results, in the order of ``hosts_all``, as ``_verify_report.collect`` reads them.

    ``per_host``: ``{host: {'instance', 'log_scan', 'peer_batch'}}`` (what each host registered; ``peer_batch``
    is its tls_handshake run as a peer). ``plan``: peer_plan()'s answer. ``controller_results``,
    ``configs`` and ``peer_links``: the ``results`` of the controller's tls_handshake (tagged with instance
    and channel), running_config and pd_peer_links runs (tagged with the host). A host that is no longer
    active (a task failed on it, or it was unreachable) is named as such; its peers' probes of it still
    count, and what it was to probe as a peer is reported as not made."""
    active = set(hosts_active)
    batches = dict((host, (per_host.get(host) or {}).get("peer_batch")) for host in active)
    out = []
    for host in hosts_all:
        mine = per_host.get(host) or {}
        instance = mine.get("instance") or dict(name=host)
        if host not in active:
            out.append(dict(instance=instance, failed_host="a task failed on it or it was unreachable during the audit"))
            continue
        plans = (plan.get("plans") or {}).get(host) or []
        out.append(dict(
            instance=instance,
            log_scan=mine.get("log_scan"),
            controller=[r for r in controller_results or [] if (r.get("tag") or {}).get("instance") == host],
            peers=[_from_peer(p, batches.get(p["source"]), lambda r: r) for p in plans],
            calls=[_from_peer(p, batches.get(p["source"]), lambda r: r.get("grpc_call"))
                   for p in plans if p["channel"] == "tikv_grpc"],
            # Absent: the port answered neither TLS nor plaintext (the report says so).
            config=_first(configs, lambda r: r.get("tag") == host) or {},
            peer_links=_first(peer_links, lambda r: r.get("tag") == host) or {},
        ))
    return out
