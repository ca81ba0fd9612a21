# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: tiup_topology
short_description: Inventory of a TiKV cluster from a TiUP topology.yaml
version_added: "0.1.0"
author:
  - tlsops.tikv maintainers (@tlsops)
description:
  - Reads the TiUP cluster topology (the C(topology.yaml) given to C(tiup cluster deploy), or the
    C(meta.yaml) TiUP keeps for a deployed cluster) and yields one inventory host per PD and TiKV
    instance, named C(pd-<host>-<client_port>) and C(tikv-<host>-<port>), in the groups C(pd) and
    C(tikv), with the variables the roles of C(tlsops.tikv) read, resolved as TiUP resolves them.
  - "PD hosts get C(pd_name) (default C(pd-<host>-<client_port>)), C(pd_client_port) (2379),
    C(pd_peer_port) (2380); TiKV hosts C(tikv_port) (20160), C(tikv_status_port) (20180) and
    C(tikv_labels) (the instance's C(server.labels)). Both get C(deploy_dir), C(data_dir), C(log_dir),
    C(tiup_host) (the address the cluster uses), C(tiup_service_name) (C(<component>-<port>.service))
    and the advertise addresses the topology gives (C(advertise_client_addr), C(advertise_peer_addr),
    C(advertise_addr), C(advertise_status_addr))."
  - "Directories follow TiUP: C(deploy_dir) defaults to C(<global.deploy_dir>/<component>-<port>); a
    relative deploy dir is under C(/home/<user>/) (C(global.deploy_dir) itself defaults to the relative
    C(deploy)); a relative C(data_dir) or C(log_dir) is under the instance's deploy dir; an absolute
    C(global.data_dir) gives C(<global.data_dir>/<component>-<port>)."
  - C(ansible_host) is the instance's C(manage_host) when set (the address TiUP manages it through),
    else its C(host); C(ansible_port) its C(ssh_port) (else C(global.ssh_port), default 22).
  - "Cluster-wide values are variables of the C(all) group, so C(group_vars) override them:
    C(ansible_user) and C(tikv_tls_service_user) from C(global.user) (default C(tidb)),
    C(tikv_tls_service_group) from C(global.group) (default the user's name), C(ansible_port),
    C(tiup_enable_tls) from C(global.enable_tls); from a C(meta.yaml) also C(tikv_tls_version),
    C(tikv_tls_cluster_name) (the cluster's directory name) and C(ansible_ssh_private_key_file) (TiUP's
    C(ssh/id_rsa) next to it)."
  - C(component_versions.pd) / C(component_versions.tikv) set C(tikv_tls_version) of those instances.
  - The other sections (C(tidb_servers), C(tiflash_servers), C(monitoring_servers), C(grafana_servers),
    C(alertmanager_servers), ...) are accepted; their instances become hosts in groups named after
    the section (C(tidb), C(tiflash), C(monitoring), C(grafana), C(alertmanager), ...), which the
    collection's playbooks do not touch.
  - A malformed topology (not YAML, a key given twice, an unknown field, a missing C(host), a bad
    port, two instances sharing a port or a deploy dir on one machine, two PD members with one name)
    fails with every problem listed and where it is.
  - The configuration file name must end in C(tiup_topology.yml) or C(tiup_topology.yaml).
extends_documentation_fragment:
  - ansible.builtin.constructed
options:
  plugin:
    description: Marks the file as a configuration of this plugin.
    type: str
    required: true
    choices:
      - tlsops.tikv.tiup_topology
  topology_file:
    description:
      - Path of the TiUP C(topology.yaml), or of a deployed cluster's
        C(~/.tiup/storage/cluster/clusters/<name>/meta.yaml).
      - A relative path is relative to the directory of this configuration file; C(~) and
        environment variables are expanded.
    type: str
    required: true
  other_components:
    description:
      - Add the instances of the other sections (TiDB, TiFlash, monitoring, ...) as hosts in groups
        named after their sections. V(false) leaves them out (the sections are still accepted).
    type: bool
    default: true
notes:
  - Needs nothing beyond ansible-core (it reads YAML with PyYAML, an ansible-core dependency).
seealso:
  - name: TiUP topology configuration file
    description: The fields of topology.yaml, documented by PingCAP.
    link: https://docs.pingcap.com/tidb/stable/tiup-cluster-topology-reference
"""

EXAMPLES = r"""
# inventory/tiup_topology.yml -- then: ansible-playbook -i inventory/tiup_topology.yml tlsops.tikv.verify
plugin: tlsops.tikv.tiup_topology
topology_file: topology.yaml

# A cluster TiUP already deployed: its meta.yaml also gives the version and TiUP's SSH key.
# plugin: tlsops.tikv.tiup_topology
# topology_file: ~/.tiup/storage/cluster/clusters/prod/meta.yaml

# Groups per data center from the TiKV labels, and a variable composed from the topology's ones.
# plugin: tlsops.tikv.tiup_topology
# topology_file: topology.yaml
# keyed_groups:
#   - key: tikv_labels.dc
#     prefix: dc
# compose:
#   tikv_tls_extra_sans: "[tiup_host ~ '.example.internal']"
"""

import os

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

from ansible_collections.tlsops.tikv.plugins.plugin_utils import _tiup_topology


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "tlsops.tikv.tiup_topology"

    def verify_file(self, path):
        """Only configuration files named *tiup_topology.yml / *tiup_topology.yaml are ours."""
        if not super(InventoryModule, self).verify_file(path):
            return False
        return path.endswith(("tiup_topology.yml", "tiup_topology.yaml"))

    def _topology_path(self, config_path):
        value = os.path.expandvars(os.path.expanduser(str(self.get_option("topology_file"))))
        if not os.path.isabs(value):
            value = os.path.join(os.path.dirname(os.path.abspath(config_path)), value)
        return value

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache=cache)
        self._read_config_data(path)
        topology_path = self._topology_path(path)
        try:
            topology = _tiup_topology.read(topology_path, include_others=self.get_option("other_components"))
        except _tiup_topology.TopologyError as exc:
            raise AnsibleParserError("tlsops.tikv.tiup_topology (%s): %s" % (path, exc))

        for key, value in topology.group_vars.items():
            self.inventory.set_variable("all", key, value)
        strict = self.get_option("strict")
        for inst in topology.instances:
            for group in inst.groups:
                self.inventory.add_group(group)
            self.inventory.add_host(inst.name, group=inst.groups[0])
            for group in inst.groups[1:]:
                self.inventory.add_child(group, inst.name)
            for key, value in inst.vars.items():
                self.inventory.set_variable(inst.name, key, value)
            # compose/groups/keyed_groups see the cluster-wide values too, as a play would.
            hostvars = dict(topology.group_vars)
            hostvars.update(inst.vars)
            hostvars["inventory_hostname"] = inst.name
            hostvars["group_names"] = list(inst.groups)
            self._set_composite_vars(self.get_option("compose"), hostvars, inst.name, strict=strict)
            hostvars = self.inventory.get_host(inst.name).get_vars()
            hostvars = dict(topology.group_vars, **hostvars)
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, inst.name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, inst.name, strict=strict)
