# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """How a module reaches PD's HTTP API (the options of module_utils._pd_client.PD_ARGUMENT_SPEC)."""

    DOCUMENTATION = r"""
options:
  endpoints:
    description:
      - PD client endpoints, V(host:port) or a URL. The first that answers serves each call, as with
        pd-ctl; any member answers (followers forward to the leader).
      - The scheme is ignored; TLS is used when O(ca_path) is set (as TiKV does), because a cluster
        half-way through a cutover still publishes C(http://) URLs for some members.
    type: list
    elements: str
    required: true
  ca_path:
    description: CA bundle that signed PD's certificate. Set it to talk TLS; leave it out for a plaintext cluster.
    type: path
  client_cert_path:
    description: Client certificate to present (PD requires one on its client port with TLS).
    type: path
  client_key_path:
    description: Private key of O(client_cert_path). A path, not key material.
    type: path
  timeout:
    description: Seconds to wait for each API call.
    type: float
    default: 5
"""
