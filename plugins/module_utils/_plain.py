# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Plain Python values from what Ansible hands a filter; shared by the collection's filter plugins."""

from __future__ import annotations


def plain(value):
    """Ansible's lazy containers and tagged strings -> plain dicts, lists and str, so the filters'
    logic (and json.dumps of their results) sees ordinary Python values."""
    if isinstance(value, dict):
        return dict((str(k), plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value
