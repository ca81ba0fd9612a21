# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading a TiUP cluster topology (``topology.yaml`` or TiUP's ``meta.yaml``) into inventory hosts.

Controller-side and free of Ansible objects, so the inventory plugin stays thin and the rules can be
unit-tested on plain data. The rules are TiUP's (pkg/cluster/spec): defaults filled per instance
(``fillCustomDefaults``), then relative directories made absolute (``ExpandRelativeDir``):

* ports default to PD client 2379 / peer 2380, TiKV 20160 / status 20180 (also when given as 0);
* a PD member's ``name`` defaults to ``pd-<host>-<client_port>``;
* an instance's ``deploy_dir`` defaults to ``<global.deploy_dir>/<component>-<port>``; a relative
  deploy dir (``global.deploy_dir`` defaults to the relative ``deploy``) is under ``/home/<user>/``;
* an instance's ``data_dir`` defaults to ``<global.data_dir>/<component>-<port>`` when the global one
  is absolute, else to the global one itself (default ``data``); a relative data or log dir is under
  the instance's deploy dir; ``log_dir`` works the same way with the default ``log``;
* the service is ``<component>-<port>.service``; TiUP reaches the machine at ``manage_host`` when set,
  else ``host``, over ``ssh_port`` (per instance, else ``global.ssh_port``, default 22) as
  ``global.user`` (default ``tidb``), the account the servers run as.

Like TiUP (which decodes with known fields only), unknown keys and duplicate keys are refused rather
than skipped: a typo such as ``pd_server:`` would otherwise silently yield a cluster without PD.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import posixpath

import yaml

DEFAULT_USER = "tidb"
DEFAULT_SSH_PORT = 22

# Fields of TiUP's GlobalOptions, PDSpec and TiKVSpec (pkg/cluster/spec/spec.go, pd.go, tikv.go).
GLOBAL_FIELDS = frozenset((
    "user", "group", "ssh_port", "ssh_type", "enable_tls", "listen_host", "deploy_dir", "data_dir",
    "log_dir", "resource_control", "os", "arch", "custom", "systemd_mode", "pd_mode",
))
PD_FIELDS = frozenset((
    "host", "manage_host", "listen_host", "advertise_client_addr", "advertise_peer_addr", "ssh_port",
    "patched", "ignore_exporter", "name", "client_port", "peer_port", "deploy_dir", "data_dir",
    "log_dir", "source", "numa_node", "config", "resource_control", "arch", "os",
))
TIKV_FIELDS = frozenset((
    "host", "manage_host", "listen_host", "advertise_addr", "ssh_port", "patched", "ignore_exporter",
    "port", "status_port", "advertise_status_addr", "deploy_dir", "data_dir", "log_dir", "offline",
    "source", "numa_node", "numa_cores", "config", "resource_control", "arch", "os",
))

# The other sections: tolerated, each instance a host in a group named after the section.
# section -> (TiUP component name, field of the main port, its default, inventory group).
OTHER_SECTIONS = {
    "tidb_servers": ("tidb", "port", 4000, "tidb"),
    "tiflash_servers": ("tiflash", "tcp_port", 9000, "tiflash"),
    "tiproxy_servers": ("tiproxy", "port", 6000, "tiproxy"),
    "tso_servers": ("tso", "port", 3379, "tso"),
    "scheduling_servers": ("scheduling", "port", 3379, "scheduling"),
    "resource_manager_servers": ("resource-manager", "port", 3379, "resource_manager"),
    "router_servers": ("router", "port", 3379, "router"),
    "tidb_dashboard_servers": ("tidb-dashboard", "port", 12333, "tidb_dashboard"),
    "pump_servers": ("pump", "port", 8250, "pump"),
    "drainer_servers": ("drainer", "port", 8249, "drainer"),
    "cdc_servers": ("cdc", "port", 8300, "cdc"),
    "kvcdc_servers": ("tikv-cdc", "port", 8600, "kvcdc"),
    "tispark_masters": ("tispark-master", "port", 7077, "tispark_masters"),
    "tispark_workers": ("tispark-worker", "port", 7078, "tispark_workers"),
    "monitoring_servers": ("prometheus", "port", 9090, "monitoring"),
    "grafana_servers": ("grafana", "port", 3000, "grafana"),
    "alertmanager_servers": ("alertmanager", "web_port", 9093, "alertmanager"),
}
TOP_LEVEL = frozenset(("global", "monitored", "component_versions", "component_sources", "server_configs",
                       "pd_servers", "tikv_servers")) | frozenset(OTHER_SECTIONS)
# What marks TiUP's own record of a deployed cluster (~/.tiup/storage/cluster/clusters/<name>/meta.yaml).
META_FIELDS = frozenset(("user", "tidb_version", "last_ops_ver", "topology"))


class TopologyError(ValueError):
    """The topology cannot be turned into an inventory; the message lists every problem found."""


class _StrictLoader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
    """SafeLoader that refuses a key given twice in one mapping (TiUP's YAML decoder does too)."""


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, dummy in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:
            continue  # an unhashable key; the default constructor reports it
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                "found key %r twice (first at line %d)" % (key, seen[key].line + 1), key_node.start_mark)
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_file(path):
    """The YAML document in path; TopologyError when it cannot be read or parsed."""
    try:
        with open(path, "rb") as handle:
            text = handle.read()
    except (IOError, OSError) as exc:
        raise TopologyError("cannot read the TiUP topology file %s: %s" % (path, exc.strerror or exc))
    try:
        return yaml.load(text, Loader=_StrictLoader)  # nosec B506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise TopologyError("%s is not valid YAML: %s" % (path, exc))


def clean(path):
    """Go's path.Clean for absolute POSIX paths (posixpath keeps a leading '//', Go does not)."""
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def absolute_dir(user, path):
    """TiUP's Abs(): a relative directory is under the deploy user's home, /home/<user>/."""
    path = path.strip()
    if not path.startswith("/"):
        path = posixpath.join("/home", user.strip(), path)
    return clean(path)


def under_deploy_dir(deploy_dir, path):
    """A relative data/log dir is inside the instance's deploy dir (the run script cds there)."""
    return path if path.startswith("/") else clean(posixpath.join(deploy_dir, path))


def join_host_port(host, port):
    """Go's net.JoinHostPort: IPv6 literals in brackets."""
    return "[%s]:%s" % (host, port) if ":" in host else "%s:%s" % (host, port)


def host_label(host):
    """The host part of an inventory name: ':' is the port separator in Ansible host patterns."""
    return host.replace(":", "_")


class _Problems(object):
    """Every problem of the file, so that one run shows them all."""

    def __init__(self, source):
        self.source = source
        self.items = []

    def add(self, where, text):
        self.items.append("%s: %s" % (where, text) if where else text)

    def raise_if_any(self):
        if not self.items:
            return
        if len(self.items) == 1:
            raise TopologyError("%s: %s" % (self.source, self.items[0]))
        raise TopologyError("%s: %d problems:\n  - %s" % (self.source, len(self.items), "\n  - ".join(self.items)))


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class _Context(object):
    """The topology-wide settings every instance's defaults come from."""

    def __init__(self, data, problems):
        self.problems = problems
        glob = data.get("global")
        if glob is None:
            glob = {}
        if not isinstance(glob, dict):
            problems.add("global", "must be a mapping, got %s" % type(glob).__name__)
            glob = {}
        for key in sorted(set(glob) - GLOBAL_FIELDS, key=str):
            problems.add("global", "unknown field %r (TiUP's global fields: %s)" % (key, ", ".join(sorted(GLOBAL_FIELDS))))
        self.user = self._string(glob, "user", DEFAULT_USER)
        self.group = self._string(glob, "group", "")
        self.ssh_port = self._port(glob, "ssh_port", DEFAULT_SSH_PORT, "global")
        self.deploy_dir = self._string(glob, "deploy_dir", "deploy")
        self.data_dir = self._string(glob, "data_dir", "data")
        self.log_dir = self._string(glob, "log_dir", "")
        enable_tls = glob.get("enable_tls", False)
        if not isinstance(enable_tls, bool):
            problems.add("global.enable_tls", "must be true or false, got %r" % (enable_tls,))
            enable_tls = False
        self.enable_tls = enable_tls
        versions = data.get("component_versions") or {}
        if not isinstance(versions, dict):
            problems.add("component_versions", "must be a mapping, got %s" % type(versions).__name__)
            versions = {}
        self.versions = versions
        configs = data.get("server_configs") or {}
        if not isinstance(configs, dict):
            problems.add("server_configs", "must be a mapping, got %s" % type(configs).__name__)
            configs = {}
        self.server_configs = configs

    def _string(self, glob, key, default):
        value = glob.get(key)
        if value is None or value == "":
            return default
        if not isinstance(value, str):
            self.problems.add("global.%s" % key, "must be a string, got %r" % (value,))
            return default
        return value.strip() or default

    def _port(self, spec, key, default, where):
        return port_of(spec, key, default, where, self.problems)

    def dirs(self, spec, component, port, where):
        """deploy_dir, data_dir and log_dir of one instance, resolved as TiUP does."""
        values = {}
        for key in ("deploy_dir", "data_dir", "log_dir"):
            value = spec.get(key)
            if value is not None and not isinstance(value, str):
                self.problems.add("%s.%s" % (where, key), "must be a string, got %r" % (value,))
                value = None
            values[key] = (value or "").strip()
        own = "%s-%s" % (component, port)
        deploy = values["deploy_dir"] or posixpath.join(self.deploy_dir, own)
        deploy = absolute_dir(self.user, deploy)

        def default_for(global_dir, fallback):
            if global_dir.startswith("/"):
                return posixpath.join(global_dir, own)
            return global_dir or fallback

        data = values["data_dir"] or default_for(self.data_dir, "data")
        # Some components take several data dirs, comma separated; each is resolved on its own.
        data = ",".join(under_deploy_dir(deploy, item) for item in data.split(","))
        log = under_deploy_dir(deploy, values["log_dir"] or default_for(self.log_dir, "log"))
        return deploy, data, log


def port_of(spec, key, default, where, problems):
    value = spec.get(key)
    if value is None or value == 0:
        return default  # TiUP's defaults apply to a zero value as well
    if not _is_int(value) or not 0 < value < 65536:
        problems.add("%s.%s" % (where, key), "must be a port number (1-65535), got %r" % (value,))
        return default
    return value


def _labels(value, where, problems):
    """TiKV's server.labels as a flat dict of strings (TiUP refuses anything else)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.add(where, "server.labels must be a mapping of label names to values, got %r" % (value,))
        return None
    labels = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            problems.add(where, "label %r: %r: TiKV label names and values must be strings (quote them)" % (key, item))
            continue
        labels[key] = item
    return labels


def _config_value(config, dotted):
    """A key of a TiUP `config` mapping, written dotted ('server.labels') or nested (server: {labels})."""
    if not isinstance(config, dict):
        return None
    if dotted in config:
        return config[dotted]
    head, sep, rest = dotted.partition(".")
    if sep and isinstance(config.get(head), dict):
        return _config_value(config[head], rest)
    return None


class Instance(object):
    """One inventory host: its name, its groups and its variables."""

    def __init__(self, name, component, groups, hostvars, address, ports, where):
        self.name = name
        self.component = component
        self.groups = groups
        self.vars = hostvars
        self.address = address
        self.ports = ports
        self.where = where

    def __repr__(self):
        return "Instance(%r, %r)" % (self.name, self.groups)


class Topology(object):
    """The parsed topology: cluster-wide variables (for the `all` group) and the instances."""

    def __init__(self, group_vars, instances):
        self.group_vars = group_vars
        self.instances = instances

    def hosts(self, group):
        return [inst.name for inst in self.instances if group in inst.groups]


def _entries(data, section, problems):
    value = data.get(section)
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(section, "must be a list of instances (each '- host: ...'), got %s" % type(value).__name__)
        return []
    entries = []
    for index, spec in enumerate(value):
        where = "%s[%d]" % (section, index)
        if not isinstance(spec, dict):
            problems.add(where, "must be a mapping with at least 'host', got %r" % (spec,))
            continue
        host = spec.get("host")
        if not isinstance(host, str) or not host.strip():
            problems.add(where, "needs 'host' (the address of the machine, a string), got %r" % (host,))
            continue
        entries.append(("%s (%s)" % (where, host.strip()), spec))
    return entries


def _access(ctx, spec, where, hostvars):
    """ansible_host / ansible_port: where TiUP itself connects to manage the instance."""
    host = spec["host"].strip()
    manage = spec.get("manage_host")
    if manage is not None and not isinstance(manage, str):
        ctx.problems.add(where + ".manage_host", "must be a string, got %r" % (manage,))
        manage = None
    manage = (manage or "").strip()
    hostvars["ansible_host"] = manage or host
    ssh_port = port_of(spec, "ssh_port", ctx.ssh_port, where, ctx.problems)
    if ssh_port != ctx.ssh_port:
        hostvars["ansible_port"] = ssh_port
    return host, manage


def _version(ctx, component, hostvars):
    version = ctx.versions.get(component)
    if isinstance(version, str) and version.strip():
        hostvars["tikv_tls_version"] = version.strip()


def _strings(ctx, spec, where, keys, hostvars):
    for key in keys:
        value = spec.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            ctx.problems.add("%s.%s" % (where, key), "must be a string, got %r" % (value,))
            continue
        hostvars[key] = value.strip()


def _log_paths(component, deploy, log, hostvars):
    # The verify role scans <deploy_dir>/log/ by default; point it at TiUP's log_dir when moved.
    if log != posixpath.join(deploy, "log"):
        hostvars["tikv_tls_verify_log_paths"] = [posixpath.join(log, component + ".log"),
                                                 posixpath.join(log, component + "_stderr.log")]


def _pd(ctx, where, spec):
    problems = ctx.problems
    for key in sorted(set(spec) - PD_FIELDS, key=str):
        problems.add(where, "unknown field %r for a PD server (known: %s)" % (key, ", ".join(sorted(PD_FIELDS))))
    client_port = port_of(spec, "client_port", 2379, where, problems)
    peer_port = port_of(spec, "peer_port", 2380, where, problems)
    hostvars = {}
    host, manage = _access(ctx, spec, where, hostvars)
    name = spec.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        problems.add(where + ".name", "must be a non-empty string, got %r" % (name,))
        name = None
    deploy, data, log = ctx.dirs(spec, "pd", client_port, where)
    hostvars.update({
        "pd_name": (name or "").strip() or "pd-%s-%d" % (host, client_port),
        "pd_client_port": client_port,
        "pd_peer_port": peer_port,
        "deploy_dir": deploy,
        "data_dir": data,
        "log_dir": log,
        "tiup_host": host,
        "tiup_service_name": "pd-%d.service" % client_port,
    })
    _strings(ctx, spec, where, ("advertise_client_addr", "advertise_peer_addr"), hostvars)
    if manage and manage != host:
        # Peers and clients dial `host` (TiUP's default advertise URLs); keep it visible to the
        # certificate SANs, which are taken from ansible_host and the advertise addresses.
        scheme = "https" if ctx.enable_tls else "http"
        hostvars.setdefault("advertise_client_addr", "%s://%s" % (scheme, join_host_port(host, client_port)))
        hostvars.setdefault("advertise_peer_addr", "%s://%s" % (scheme, join_host_port(host, peer_port)))
    _log_paths("pd", deploy, log, hostvars)
    _version(ctx, "pd", hostvars)
    name = "pd-%s-%d" % (host_label(host), client_port)
    return Instance(name, "pd", ["pd"], hostvars, host, (client_port, peer_port), where)


def _tikv(ctx, where, spec):
    problems = ctx.problems
    for key in sorted(set(spec) - TIKV_FIELDS, key=str):
        problems.add(where, "unknown field %r for a TiKV server (known: %s)" % (key, ", ".join(sorted(TIKV_FIELDS))))
    port = port_of(spec, "port", 20160, where, problems)
    status_port = port_of(spec, "status_port", 20180, where, problems)
    hostvars = {}
    host, manage = _access(ctx, spec, where, hostvars)
    deploy, data, log = ctx.dirs(spec, "tikv", port, where)
    hostvars.update({
        "tikv_port": port,
        "tikv_status_port": status_port,
        "deploy_dir": deploy,
        "data_dir": data,
        "log_dir": log,
        "tiup_host": host,
        "tiup_service_name": "tikv-%d.service" % port,
    })
    _strings(ctx, spec, where, ("advertise_addr", "advertise_status_addr"), hostvars)
    if manage and manage != host:
        hostvars.setdefault("advertise_addr", join_host_port(host, port))
        hostvars.setdefault("advertise_status_addr", join_host_port(host, status_port))
    config = spec.get("config")
    if config is not None and not isinstance(config, dict):
        problems.add(where + ".config", "must be a mapping, got %r" % (config,))
        config = None
    labels = _config_value(config, "server.labels")
    if labels is None:
        labels = _config_value(ctx.server_configs.get("tikv"), "server.labels")
    labels = _labels(labels, where, problems)
    hostvars["tikv_labels"] = labels or {}
    _log_paths("tikv", deploy, log, hostvars)
    _version(ctx, "tikv", hostvars)
    name = "tikv-%s-%d" % (host_label(host), port)
    return Instance(name, "tikv", ["tikv"], hostvars, host, (port, status_port), where)


def _other(ctx, section, where, spec):
    component, port_field, default_port, group = OTHER_SECTIONS[section]
    port = port_of(spec, port_field, default_port, where, ctx.problems)
    hostvars = {}
    host, dummy = _access(ctx, spec, where, hostvars)
    deploy, dummy, dummy = ctx.dirs(spec, component, port, where)
    hostvars.update({
        "deploy_dir": deploy,
        "tiup_host": host,
        "tiup_component": component,
        "tiup_port": port,
        "tiup_service_name": "%s-%d.service" % (component, port),
    })
    _version(ctx, component, hostvars)
    name = "%s-%s-%d" % (component, host_label(host), port)
    return Instance(name, component, [group], hostvars, host, (port,), where)


def _check_conflicts(instances, problems):
    """Two instances on one machine with a common port or deploy dir cannot both exist (TiUP refuses)."""
    ports = {}
    dirs = {}
    names = {}
    for inst in instances:
        for port in inst.ports:
            other = ports.setdefault((inst.address, port), inst)
            if other is not inst:
                problems.add(inst.where, "port %d on %s is already used by %s" % (port, inst.address, other.where))
        other = dirs.setdefault((inst.address, inst.vars["deploy_dir"]), inst)
        if other is not inst:
            problems.add(inst.where, "deploy_dir %s on %s is already used by %s"
                         % (inst.vars["deploy_dir"], inst.address, other.where))
        if inst.component == "pd":
            other = names.setdefault(inst.vars["pd_name"], inst)
            if other is not inst:
                problems.add(inst.where, "PD name %r is already used by %s" % (inst.vars["pd_name"], other.where))


def parse(data, source="topology.yaml", include_others=True, key_file=None):
    """Topology of a TiUP topology.yaml (or TiUP's meta.yaml) already loaded from YAML.

    ``source`` names the file in error messages; ``include_others`` adds the TiDB, TiFlash,
    monitoring... instances as hosts in their own groups; ``key_file`` is a private key that exists
    next to a meta.yaml (TiUP's per-cluster SSH key).
    """
    problems = _Problems(source)
    if not isinstance(data, dict):
        raise TopologyError("%s: a TiUP topology is a mapping with pd_servers and tikv_servers, got %s"
                            % (source, "an empty file" if data is None else type(data).__name__))
    group_vars = {}
    if "topology" in data and set(data) <= META_FIELDS:
        # TiUP's meta.yaml: the deployed topology plus the cluster version.
        version = data.get("tidb_version")
        if isinstance(version, str) and version.strip():
            group_vars["tikv_tls_version"] = version.strip()
        data = data["topology"]
        if not isinstance(data, dict):
            raise TopologyError("%s: 'topology' must be a mapping, got %s" % (source, type(data).__name__))
    for key in sorted(set(data) - TOP_LEVEL, key=str):
        problems.add("", "unknown top-level key %r (TiUP's sections: %s)" % (key, ", ".join(sorted(TOP_LEVEL))))
    ctx = _Context(data, problems)
    instances = [_pd(ctx, where, spec) for where, spec in _entries(data, "pd_servers", problems)]
    instances += [_tikv(ctx, where, spec) for where, spec in _entries(data, "tikv_servers", problems)]
    for section in OTHER_SECTIONS:
        entries = _entries(data, section, problems)
        if include_others:
            instances += [_other(ctx, section, where, spec) for where, spec in entries]
    if not any(inst.component in ("pd", "tikv") for inst in instances) and not problems.items:
        problems.add("", "no pd_servers or tikv_servers: nothing for tlsops.tikv to manage")
    _check_conflicts(instances, problems)
    problems.raise_if_any()
    group_vars.update({
        "ansible_user": ctx.user,
        "ansible_port": ctx.ssh_port,
        "tikv_tls_service_user": ctx.user,
        # TiUP creates the user without a group of its own choosing unless global.group is set, so
        # the user's primary group is the one with the user's name (the usual private group).
        "tikv_tls_service_group": ctx.group or ctx.user,
        "tiup_enable_tls": ctx.enable_tls,
    })
    if key_file:
        group_vars["ansible_ssh_private_key_file"] = key_file
    return Topology(group_vars, instances)


def read(path, include_others=True):
    """Topology of the file at path (topology.yaml, or a TiUP cluster's meta.yaml)."""
    data = load_file(path)
    key_file = None
    cluster_name = None
    if isinstance(data, dict) and "topology" in data and set(data) <= META_FIELDS:
        # ~/.tiup/storage/cluster/clusters/<name>/meta.yaml keeps the cluster's SSH key next to it.
        base = os.path.dirname(os.path.abspath(path))
        candidate = os.path.join(base, "ssh", "id_rsa")
        key_file = candidate if os.path.isfile(candidate) else None
        cluster_name = os.path.basename(base)
    topology = parse(data, source=path, include_others=include_others, key_file=key_file)
    if cluster_name:
        topology.group_vars["tikv_tls_cluster_name"] = cluster_name
    return topology
