# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """The option ``parallel`` of the modules that probe many targets in one run
    (module_utils._batch.PARALLEL_SPEC)."""

    DOCUMENTATION = r"""
options:
  parallel:
    description:
      - With O(targets), how many targets are probed at the same time (threads of the one module run).
      - One run for many targets saves Ansible's cost of starting the module for each of them, which is
        most of the time a probe takes; the probes themselves mostly wait on the network.
    type: int
    default: 8
"""
