# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One module run for many endpoints (private to the collection).

Ansible starts a Python process, unpacks the module and imports it for every task, host and loop item:
hundreds of milliseconds of CPU for a probe that takes a few. The probing modules therefore also take
a ``targets`` list and probe every target from one process, a few at once from threads (the work is
waiting on sockets). Each module documents the option ``parallel`` through the tlsops.tikv.batch doc
fragment and builds it with ``PARALLEL_SPEC``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from concurrent.futures import ThreadPoolExecutor

PARALLEL_SPEC = dict(type="int", default=8)
PARALLEL_MAX = 64


def parallel_problem(parallel):
    """None when ``parallel`` is usable, else the message to fail with."""
    if not 1 <= parallel <= PARALLEL_MAX:
        return "parallel must be between 1 and %d, got %d" % (PARALLEL_MAX, parallel)
    return None


def run_all(func, items, parallel):
    """``func(item)`` for every item, at most ``parallel`` at a time; the results in the items' order.
    ``func`` reports what it found as its result; an exception it raises ends the whole run (a bug)."""
    items = list(items)
    if not items:
        return []
    if parallel <= 1 or len(items) == 1:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(parallel, len(items))) as pool:
        return list(pool.map(func, items))


def merged(defaults, target, keys):
    """``target``'s value for each of ``keys``, or the module-level default where it is unset."""
    return dict((key, target.get(key) if target.get(key) is not None else defaults.get(key)) for key in keys)


# One target of the modules that probe host:port endpoints (tls_handshake, grpc_call); each module adds
# the options a target may set for itself.
ENDPOINT_TARGET_OPTIONS = dict(
    host=dict(type="str", required=True),
    port=dict(type="int", required=True),
    server_name=dict(type="str"),
    ca_path=dict(type="path"),
    client_cert_path=dict(type="path"),
    client_key_path=dict(type="path", no_log=False),
    tag=dict(type="raw"),
)


def endpoint_targets(module, own):
    """The endpoints to probe: O(targets), or O(host) and O(port) as the only one. Each target gets the
    module-level value of every option in ``own`` it leaves unset. Fails the module, naming the target, on a
    port out of range or a key without its certificate, and on an unusable O(parallel)."""
    params = module.params
    given = params["targets"]
    if given is None:
        given = [dict(host=params["host"], port=params["port"])]
    targets = []
    for target in given:
        full = merged(params, target, own)
        full.update(host=target["host"], port=target["port"], tag=target.get("tag"))
        if not 0 < full["port"] < 65536:
            module.fail_json(msg="%s: port must be between 1 and 65535, got %d" % (full["host"], full["port"]))
        if full["client_key_path"] and not full["client_cert_path"]:
            module.fail_json(msg="%s:%d: client_key_path needs client_cert_path" % (full["host"], full["port"]))
        targets.append(full)
    if parallel_problem(params["parallel"]):
        module.fail_json(msg=parallel_problem(params["parallel"]))
    return targets


def returned(params, targets, found, problems_key, echo):
    """What the module returns. Without O(targets): the one target's result. With it: every target's
    result in ``results`` (with the target's ``echo`` keys, as given) and all their ``problems_key``
    messages together under the same name."""
    if params["targets"] is None:
        return found[0]
    return {problems_key: [problem for result in found for problem in result[problems_key]],
            "results": [dict(result, **dict((key, target.get(key)) for key in echo))
                        for target, result in zip(targets, found)]}
