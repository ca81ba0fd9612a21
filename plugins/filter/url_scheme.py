# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter ``url_scheme``: switch the scheme of PD URL lists (documented in url_scheme.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.tlsops.tikv.plugins.module_utils._run_script import rewrite_url_schemes

_SCHEMES = ("http", "https")


def url_scheme(value, scheme="https"):
    """``http://a:2379,http://b:2379`` -> ``https://a:2379,https://b:2379``; lists item by item;
    PD's ``initial-cluster`` form (``name=http://...``) alike; items without a scheme are kept."""
    if scheme not in _SCHEMES:
        raise AnsibleFilterError("url_scheme: scheme must be http or https, not %r" % (scheme,))
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [url_scheme(item, scheme) for item in value]
    if not isinstance(value, str):
        raise AnsibleFilterError("url_scheme: expected a string or a list of strings, got %s" % type(value).__name__)
    return rewrite_url_schemes(value, scheme, only=_SCHEMES)


class FilterModule(object):
    def filters(self):
        return {"url_scheme": url_scheme}
