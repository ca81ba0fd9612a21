# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """How a module reaches PD's HTTP API: DOCUMENTATION, the endpoints (with TLS, list both fragments:
    tlsops.tikv.pd_client and tlsops.tikv.pd_client.tls); TLS, the client TLS options of a module that
    talks to one PD or TiKV HTTP endpoint (module_utils._pd_client.TLS_ARGUMENT_SPEC)."""

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
"""

    TLS = r"""
options:
  ca_path:
    description: CA bundle that signed the server's certificate. Set it to talk TLS; leave it out for a plaintext cluster.
    type: path
  client_cert_path:
    description: Client certificate to present (PD requires one on its client port with TLS; so does TiKV's status port with cert-allowed-cn).
    type: path
  client_key_path:
    description: Private key of O(client_cert_path). A path, not key material.
    type: path
  timeout:
    description: Seconds to wait for each call.
    type: float
    default: 5
"""
