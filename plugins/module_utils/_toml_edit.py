# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Set and remove keys in a TOML file, leaving every other byte as it was.

Why not just ``tomlkit.parse`` -> edit -> ``dumps``: tomlkit keeps comments and order, but where it
puts the whitespace around a table it adds or removes depends on how it attributed blank lines when
parsing (they belong to the *previous* table after a re-parse), and it turns an implicit super-table
into an explicit header. Enabling and then disabling TLS must give back the original file byte for
byte, so the layout decisions are made here, on the text:

* The text is cut into statements (blank line, comment line, table header, key/value with its full
  multi-line extent) by a small scanner that understands TOML strings, arrays and inline tables.
  The file has been validated by a real parser first (tomllib, or tomlkit on Python < 3.11), so the
  scanner never has to judge validity.
* A changed value replaces only the value's characters (key, spacing and trailing comment stay).
* A new key goes after the last key of its table (same indentation and ``=`` spacing as that key).
* A new table goes at the end of the file after one blank line; a new sub-table of an existing table
  goes right after that table's group; a table that existed only implicitly (``[security.encryption]``
  without ``[security]``) gets its header after that group (after a blank line if one follows it).
* ``remove`` deletes the key's statement; a table left with no keys, no comments and no other content
  by that removal loses its header (unless one of its own sub-tables follows it directly, as TiUP
  writes ``[readpool]`` before ``[readpool.coprocessor]``), and one of the blank lines around it when it
  sat between blank lines. That is exactly the reverse of the insertions above, hence the
  byte-identical round trip.
* tomlkit renders the new values and keys. A key inside an inline table (``labels = { a = "b" }``) is
  changed by rendering that inline table again in the canonical ``{ k = v, k2 = v2 }`` form.
* After the edit the new text is parsed again and compared with the expected data (the old data with
  the requested changes applied); any other difference aborts the edit before anything is written.

Key syntax (``settings``/``remove``): dotted paths split on ``.``; a part that itself contains a dot is
quoted as in TOML, ``server.labels."zone.name"`` (double or single quotes).
"""

from __future__ import annotations

import copy
import datetime
import math
import re

try:
    import tomllib as _tomllib  # Python >= 3.11
except ImportError:  # pragma: no cover - exercised on older targets only
    _tomllib = None

try:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError
    HAS_TOMLKIT = True
    TOMLKIT_IMPORT_ERROR = None
except (ImportError, AttributeError, SyntaxError) as _exc:  # pragma: no cover
    # Missing (the sanity import test runs without it), or a tomlkit too new for this Python.
    tomlkit = None
    TOMLKIT_IMPORT_ERROR = _exc
    HAS_TOMLKIT = False

    class TOMLKitError(Exception):
        pass


class TomlEditError(Exception):
    """A request that cannot be carried out; the message names the file/key and the fix."""


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_BARE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\", "e": "\x1b"}


# --------------------------------------------------------------------------------------------------
# Keys


def parse_key(text):
    """Split a user-supplied dotted key into its parts: ``a.b`` -> (a, b); ``a."b.c"`` -> (a, b.c).

    Parts are separated by ``.``; a part in double or single quotes is taken literally (a double-quoted
    part understands TOML's backslash escapes). Whitespace around parts is ignored.
    """
    if not isinstance(text, str) or not text.strip():
        raise TomlEditError("empty key %r: give a dotted key such as security.ca-path" % (text,))
    parts = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] in "\"'":
            quote = text[i]
            j = i + 1
            buf = []
            while j < n and text[j] != quote:
                if quote == '"' and text[j] == "\\" and j + 1 < n:
                    ch, j = _decode_escape(text, j)
                    buf.append(ch)
                    continue
                buf.append(text[j])
                j += 1
            if j >= n:
                raise TomlEditError("unterminated quote in key %r" % text)
            part = "".join(buf)
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in ".\"'":
                j += 1
            part = text[i:j].strip()
            if not part:
                raise TomlEditError("empty part in key %r: quote a part that contains a dot, "
                                    "e.g. server.labels.\"zone.name\"" % text)
            i = j
        parts.append(part)
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            return tuple(parts)
        if text[i] != ".":
            raise TomlEditError("cannot parse key %r at character %d: quote parts that contain "
                                "dots or quotes" % (text, i + 1))
        i += 1


def format_key(parts):
    """TOML text of a dotted key: bare parts where allowed, quoted otherwise."""
    out = []
    for part in parts:
        if _BARE_KEY.match(part):
            out.append(part)
        else:
            out.append(tomlkit.key(part).as_string() if HAS_TOMLKIT else _quote(part))
    return ".".join(out)


def _quote(value):
    out = ['"']
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _decode_escape(text, j):
    """Decode the backslash escape at text[j]; returns (character, next index)."""
    code = text[j + 1]
    if code in _ESCAPES:
        return _ESCAPES[code], j + 2
    if code in "uU":
        width = 4 if code == "u" else 8
        return chr(int(text[j + 2:j + 2 + width], 16)), j + 2 + width
    return code, j + 2


def display_key(parts):
    """How a key is named in messages and in the ``values`` result: dotted, quoted where needed."""
    return ".".join(p if _BARE_KEY.match(p) else _quote(p) for p in parts)


# --------------------------------------------------------------------------------------------------
# Values


def render_value(value, key="value"):
    """TOML text for a Python value (strings, numbers, booleans, lists, mappings as inline tables)."""
    if value is None:
        raise TomlEditError("%s: TOML has no null; list the key under remove to delete it" % key)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return tomlkit.item(float(value)).as_string()
    if isinstance(value, str):
        return tomlkit.string(str(value)).as_string()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(render_value(v, key) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join("%s = %s" % (format_key((str(k),)), render_value(v, key))
                                for k, v in value.items()) + " }"
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    raise TomlEditError("%s: cannot write a value of type %s to TOML" % (key, type(value).__name__))


def _plain(value):
    """Python data -> plain, JSON-friendly, strictly comparable data."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return dict((str(k), _plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    return value


def same_value(a, b):
    """Equality that tells 1 from true and 1 from 1.0 (TOML keeps those apart)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a) and math.isnan(b):
        return True  # nan
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return set(a) == set(b) and all(same_value(a[k], b[k]) for k in a)
    return a == b


def _prune(data):
    """Drop empty tables recursively (an emptied table may keep or lose its header)."""
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            v = _prune(v)
            if isinstance(v, dict) and not v:
                continue
            out[k] = v
        return out
    if isinstance(data, list):
        return [_prune(v) for v in data]
    return data


# --------------------------------------------------------------------------------------------------
# Parsing


def load(text, name="TOML text", hint="; fix the file (or restore it from a backup) and run again",
         both=True):
    """Parse ``text`` into plain Python data; errors name ``name`` and the line.

    With tomllib available, ``both`` also makes tomlkit parse it (the input and the final result must
    satisfy both parsers; intermediate steps are checked with tomllib only, which is much faster).
    """
    if _tomllib is not None:
        try:
            data = _tomllib.loads(text)
        except _tomllib.TOMLDecodeError as exc:
            raise TomlEditError("%s is not valid TOML: %s%s" % (name, exc, hint))
        if HAS_TOMLKIT and both:
            # Everything written later goes through tomlkit too: both must accept the file.
            try:
                tomlkit.parse(text)
            except TOMLKitError as exc:
                raise TomlEditError("%s cannot be parsed by tomlkit: %s%s" % (name, exc, hint))
        return _plain(data)
    try:
        return _plain(tomlkit.parse(text).unwrap())
    except TOMLKitError as exc:
        raise TomlEditError("%s is not valid TOML: %s%s" % (name, exc, hint))


class _Stmt(object):
    """One statement: kind is blank, comment, header or kv; start/end are character offsets
    (end is after the newline, or at the end of the text)."""

    __slots__ = ("kind", "start", "end", "key", "array", "vstart", "vend", "indent", "sep", "comment")

    def __init__(self, kind, start, end, key=None, array=False, vstart=None, vend=None,
                 indent="", sep=" = ", comment=False):
        self.kind = kind
        self.start = start
        self.end = end
        self.key = key
        self.array = array
        self.vstart = vstart
        self.vend = vend
        self.indent = indent
        self.sep = sep
        self.comment = comment


class _Section(object):
    """A table header (None for the root) and the statements up to the next header."""

    __slots__ = ("path", "array", "header", "stmts")

    def __init__(self, path, array, header):
        self.path = path
        self.array = array
        self.header = header
        self.stmts = []

    def kvs(self):
        return [s for s in self.stmts if s.kind == "kv"]


def _eol(text, i):
    """Offset just after the newline that ends the line containing offset i."""
    j = text.find("\n", i)
    return len(text) if j < 0 else j + 1


def _skip_ws(text, i):
    while i < len(text) and text[i] in " \t":
        i += 1
    return i


def _end_basic(text, i):
    """i at the opening quote of a "basic" string; returns the offset after the closing quote."""
    j = i + 1
    while True:
        ch = text[j]
        if ch == "\\":
            j += 2
        elif ch == '"':
            return j + 1
        else:
            j += 1


def _end_multiline(text, i, delim, escapes):
    """i at an opening triple quote; returns the offset after the closing one (and up to 2 more quotes)."""
    j = i + 3
    while True:
        if escapes and text[j] == "\\":
            j += 2
            continue
        if text.startswith(delim, j):
            k = j + 3
            extra = 0
            while k < len(text) and text[k] == delim[0] and extra < 2:
                k += 1
                extra += 1
            return k
        j += 1


def _end_string(text, i):
    if text.startswith('"""', i):
        return _end_multiline(text, i, '"""', True)
    if text.startswith("'''", i):
        return _end_multiline(text, i, "'''", False)
    if text[i] == '"':
        return _end_basic(text, i)
    return text.index("'", i + 1) + 1


def _end_value(text, i):
    """Offset just after the value starting at i (strings, arrays, inline tables, scalars)."""
    ch = text[i]
    if ch in "\"'":
        return _end_string(text, i)
    if ch in "[{":
        depth = 0
        j = i
        while True:
            ch = text[j]
            if ch in "\"'":
                j = _end_string(text, j)
                continue
            if ch == "#":
                j = text.find("\n", j)
                continue
            if ch in "[{":
                depth += 1
            elif ch in "]}":
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
    # Scalar (number, boolean, date-time, which may contain one space): up to a comment or newline.
    j = i
    while j < len(text) and text[j] not in "#\n":
        j += 1
    while j > i and text[j - 1] in " \t\r":
        j -= 1
    return j


def _scan_key(text, i):
    """Parse a (dotted) key at i; returns (parts, offset after the key)."""
    parts = []
    while True:
        i = _skip_ws(text, i)
        ch = text[i]
        if ch == '"':
            j = _end_basic(text, i)
            raw = text[i + 1:j - 1]
            buf = []
            k = 0
            while k < len(raw):
                if raw[k] == "\\":
                    c, k = _decode_escape(raw, k)
                    buf.append(c)
                else:
                    buf.append(raw[k])
                    k += 1
            parts.append("".join(buf))
        elif ch == "'":
            j = text.index("'", i + 1) + 1
            parts.append(text[i + 1:j - 1])
        else:
            j = i
            while j < len(text) and text[j] in _BARE_CHARS:
                j += 1
            parts.append(text[i:j])
        i = _skip_ws(text, j)
        if i < len(text) and text[i] == ".":
            i += 1
            continue
        return tuple(parts), i


def _rest_of_line(text, i):
    """After a value or header: optional whitespace and comment; returns (end offset, has comment)."""
    j = _skip_ws(text, i)
    has_comment = j < len(text) and text[j] == "#"
    return _eol(text, i), has_comment


def scan(text):
    """Cut ``text`` (valid TOML) into sections of statements."""
    root = _Section((), False, None)
    sections = [root]
    cur = root
    i, n = 0, len(text)
    while i < n:
        j = _skip_ws(text, i)
        ch = text[j] if j < n else "\n"
        if ch == "\n" or text.startswith("\r\n", j):
            stmt = _Stmt("blank", i, _eol(text, i))
        elif ch == "#":
            stmt = _Stmt("comment", i, _eol(text, i))
        elif ch == "[":
            array = text.startswith("[[", j)
            key, k = _scan_key(text, j + (2 if array else 1))
            k = _skip_ws(text, k + (2 if array else 1))
            end, has_comment = _rest_of_line(text, k)
            stmt = _Stmt("header", i, end, key=key, array=array, indent=text[i:j], comment=has_comment)
            cur = _Section(key, array, stmt)
            sections.append(cur)
        else:
            key, k = _scan_key(text, j)
            # k is at "="
            vstart = _skip_ws(text, k + 1)
            vend = _end_value(text, vstart)
            end, has_comment = _rest_of_line(text, vend)
            sep = text[_rstrip_ws_pos(text, j, k):vstart]
            stmt = _Stmt("kv", i, end, key=key, vstart=vstart, vend=vend, indent=text[i:j], sep=sep,
                         comment=has_comment)
        cur.stmts.append(stmt)
        i = stmt.end
    return sections


def _rstrip_ws_pos(text, start, k):
    """Offset where the whitespace before the '=' at k begins (start bounds the search)."""
    while k > start and text[k - 1] in " \t":
        k -= 1
    return k


# --------------------------------------------------------------------------------------------------
# The document


class TomlDocument(object):
    """A TOML text with layout-preserving ``set`` and ``remove``; ``text`` is the current result."""

    def __init__(self, text, name="TOML text"):
        self.name = name
        self.text = text
        self.data = load(text, name)
        self.touched = set()   # tables that lost keys through remove(); tidy() looks at them
        first_line = text.split("\n", 1)[0]
        self.newline = "\r\n" if "\n" in text and first_line.endswith("\r") else "\n"
        self._rescan()

    # ---- helpers
    def _rescan(self):
        self.sections = scan(self.text)
        self.stmts = [s for sec in self.sections for s in sec.stmts]

    def _splice(self, start, end, new):
        self.text = self.text[:start] + new + self.text[end:]
        self._rescan()

    def _find_kv(self, path):
        for sec in self.sections:
            if sec.array:
                continue
            for s in sec.stmts:
                if s.kind == "kv" and sec.path + s.key == path:
                    return sec, s
        return None, None

    def _explicit(self, path):
        for sec in self.sections:
            if sec.header is not None and not sec.array and sec.path == path:
                return sec
        return None

    def _dotted_owner(self, path):
        """The section in which ``path`` is a table created by dotted keys (``file.x = 1`` in [log])."""
        for sec in self.sections:
            if sec.array:
                continue
            for s in sec.stmts:
                if s.kind != "kv":
                    continue
                full = sec.path + s.key
                if len(full) > len(path) and full[:len(path)] == path and len(path) > len(sec.path):
                    return sec
        return None

    def _is_super(self, path):
        return any(sec.header is not None and len(sec.path) > len(path) and sec.path[:len(path)] == path
                   for sec in self.sections)

    def _inline_owner(self, path):
        """The key path of the inline table (a key whose value is a {...}) that contains ``path``."""
        for k in range(len(path) - 1, 0, -1):
            if self._find_kv(path[:k])[1] is not None:
                return path[:k]
        return None

    def _walk(self, path, action):
        """Check the path against the data: every ancestor must be a table. Returns (exists, value)."""
        node = self.data
        for k, part in enumerate(path):
            if not isinstance(node, dict):
                raise TomlEditError(
                    "cannot %s %s in %s: %s is a %s, not a table; check the key" % (
                        action, display_key(path), self.name, display_key(path[:k]), _type_name(node)))
            if part not in node:
                return False, None
            node = node[part]
            if isinstance(node, list) and k < len(path) - 1 and node and all(isinstance(x, dict) for x in node):
                raise TomlEditError(
                    "cannot %s %s in %s: %s is an array of tables; address its entries another way" % (
                        action, display_key(path), self.name, display_key(path[:k + 1])))
        return True, node

    def _reload(self, both=False):
        try:
            self.data = load(self.text, "the edited %s" % self.name, hint="", both=both)
        except TomlEditError as exc:
            raise TomlEditError("internal error: %s; nothing was written. Please report this with the file."
                                % exc)

    def get(self, path):
        """The value at ``path``, or None when absent (or under a non-table)."""
        node = self.data
        for part in path:
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    # ---- set
    def set(self, path, value):
        """Set ``path`` to ``value``; returns True when the text changed."""
        value = _plain(value)
        exists, current = self._walk(path, "set")
        if exists and isinstance(current, dict) and not isinstance(value, dict):
            raise TomlEditError("cannot set %s in %s: it is a table; set its keys (%s.<key>) instead" % (
                display_key(path), self.name, display_key(path)))
        if exists and same_value(current, value):
            return False
        rendered = render_value(value, display_key(path))
        sec, stmt = self._find_kv(path)
        if stmt is not None:
            self._splice(stmt.vstart, stmt.vend, rendered)
        elif self._inline_owner(path) is not None:
            self._edit_inline(path, value)
        elif exists and isinstance(current, dict) and isinstance(value, dict):
            # A table given as a mapping value: set key by key.
            for k, v in value.items():
                self.set(path + (str(k),), v)
        elif exists:
            raise TomlEditError("cannot set %s in %s: it is an array of tables; edit the file by hand"
                                % (display_key(path), self.name))
        else:
            self._insert(path, rendered)
        self._reload()
        return True

    def _edit_inline(self, path, value=None, delete=False):
        """Set or delete a key inside an inline table: the whole inline table is rendered again."""
        owner = self._inline_owner(path)
        _sec, stmt = self._find_kv(owner)
        table = copy.deepcopy(self.get(owner))
        node = table
        for part in path[len(owner):-1]:
            node = node.setdefault(part, {})
        if delete:
            del node[path[-1]]
            # Nested inline tables emptied by this removal go too (they were added the same way).
            for depth in range(len(path) - 1, len(owner), -1):
                parent = table
                for part in path[len(owner):depth - 1]:
                    parent = parent[part]
                if parent[path[depth - 1]] == {}:
                    del parent[path[depth - 1]]
        else:
            node[path[-1]] = value
        self._splice(stmt.vstart, stmt.vend, render_value(table, display_key(owner)))

    def _kv_line(self, sec, rel, rendered):
        last = sec.kvs()[-1] if sec.kvs() else None
        indent = last.indent if last is not None else (sec.header.indent if sec.header is not None else "")
        sep = last.sep if last is not None and "=" in last.sep else " = "
        return indent + format_key(rel) + sep + rendered

    def _insert_lines_at(self, offset, body):
        """Insert ``body`` (lines joined without the final newline) at a line boundary ``offset``."""
        nl = self.newline
        if offset == len(self.text) and self.text and not self.text.endswith("\n"):
            self._splice(offset, offset, nl + body)
        else:
            self._splice(offset, offset, body + nl)

    def _after_last_kv(self, sec):
        kvs = sec.kvs()
        if kvs:
            return kvs[-1].end
        if sec.header is not None:
            return sec.header.end
        # Root without keys: right before the first table header (or at the end).
        for other in self.sections[1:]:
            return other.header.start
        return len(self.text)

    def _insert(self, path, rendered):
        parent = path[:-1]
        owner = self._explicit(parent) if parent else self.sections[0]
        if owner is not None:
            self._insert_lines_at(self._after_last_kv(owner), self._kv_line(owner, path[-1:], rendered))
            return
        dotted = self._dotted_owner(parent)
        if dotted is not None:
            self._insert_kv_in(dotted, path, rendered)
            return
        nl = self.newline
        header = "[%s]" % format_key(parent)
        kv = format_key(path[-1:]) + " = " + rendered
        if self._is_super(parent):
            # [security.encryption] exists without [security]: the new header goes after that group,
            # after a blank line when the group is followed by one (or ends the file).
            last = [sec for sec in self.sections[1:] if sec.path[:len(parent)] == parent][-1]
            content = [s for s in last.stmts if s.kind != "blank"][-1]
            idx = self.stmts.index(content)
            follower = self.stmts[idx + 1] if idx + 1 < len(self.stmts) else None
            lead = nl if follower is None or follower.kind == "blank" else ""
            if content.end == len(self.text) and not self.text.endswith("\n"):
                self._splice(content.end, content.end, nl + lead + header + nl + kv)
            else:
                self._splice(content.end, content.end, lead + header + nl + kv + nl)
            return
        # The table does not exist: find its deepest existing ancestor.
        for k in range(len(parent) - 1, 0, -1):
            anc = parent[:k]
            dotted = self._dotted_owner(anc)
            if dotted is not None:
                self._insert_kv_in(dotted, path, rendered)
                return
            if self._explicit(anc) is not None or self._is_super(anc):
                # After the last section of the group, past its comments, before its blank lines.
                last = [sec for sec in self.sections[1:] if sec.path[:k] == anc][-1]
                content = [s for s in last.stmts if s.kind != "blank"]
                self._insert_lines_at(content[-1].end, header + nl + kv)
                return
        # Nothing of it exists: a new table at the end, after one blank line.
        if self.text.strip() == "":
            self._insert_lines_at(len(self.text), header + nl + kv)
        elif self.text.endswith("\n"):
            self._splice(len(self.text), len(self.text), nl + header + nl + kv + nl)
        else:
            self._splice(len(self.text), len(self.text), nl + nl + header + nl + kv)

    def _insert_kv_in(self, sec, path, rendered):
        rel = path[len(sec.path):]
        self._insert_lines_at(self._after_last_kv(sec), self._kv_line(sec, rel, rendered))

    # ---- remove
    def remove(self, path):
        """Delete ``path`` (a key, or a table with everything in it); returns True when the text changed."""
        exists, current = self._walk(path, "remove")
        if not exists:
            return False
        sec, stmt = self._find_kv(path)
        if stmt is not None:
            self._delete_stmts([stmt])
            self.touched.add(sec.path)
        elif self._inline_owner(path) is not None:
            self._edit_inline(path, delete=True)
        else:
            self._remove_table(path)
        self._reload()
        return True

    def _delete_stmts(self, stmts):
        ranges = []
        for s in sorted(stmts, key=lambda x: x.start):
            if ranges and ranges[-1][1] == s.start:
                ranges[-1][1] = s.end
            else:
                ranges.append([s.start, s.end])
        text = self.text
        for start, end in reversed(ranges):
            if end == len(text) and start > 0 and not text[start:end].endswith("\n"):
                # The file's last line had no newline: take the newline before the range instead.
                start -= 2 if text[:start].endswith("\r\n") else 1
            text = text[:start] + text[end:]
        self.text = text
        self._rescan()

    def tidy(self):
        """Drop the headers of tables that remove() left empty, deepest first (a parent is judged
        after its new sub-tables are gone)."""
        for path in sorted(self.touched, key=len, reverse=True):
            if path:
                self._drop_if_emptied(path)
        self.touched = set()
        self._reload()

    def _drop_if_emptied(self, path):
        """Remove the header of table ``path`` if only blank lines remain under it.

        Kept when one of its own sub-tables follows it directly: that is the shape of TiUP's files
        (``[readpool]`` then ``[readpool.coprocessor]``), where the empty parent header was there before.
        """
        sec = self._explicit(path)
        if sec is None or sec.header.comment:
            return
        if any(s.kind != "blank" for s in sec.stmts[1:]):
            return
        idx = self.sections.index(sec)
        nxt = self.sections[idx + 1] if idx + 1 < len(self.sections) else None
        if nxt is not None and len(nxt.path) > len(path) and nxt.path[:len(path)] == path:
            return
        self._drop_header(sec.header)

    def _drop_header(self, header):
        idx = self.stmts.index(header)
        prev = self.stmts[idx - 1] if idx > 0 else None
        nxt = self.stmts[idx + 1] if idx + 1 < len(self.stmts) else None
        doomed = [header]
        prev_blank = prev is None or prev.kind == "blank"
        next_blank = nxt is None or nxt.kind == "blank"
        if prev_blank and next_blank and (prev is not None or nxt is not None):
            doomed.append(prev if prev is not None else nxt)
        self._delete_stmts(doomed)

    def _remove_table(self, path):
        # Keys defined with dotted keys or inline in other sections.
        doomed = []
        for sec in self.sections:
            for s in sec.stmts:
                if s.kind == "kv" and (sec.path + s.key)[:len(path)] == path and len(sec.path) < len(path):
                    doomed.append(s)
        if doomed:
            self._delete_stmts(doomed)
        # Whole sections under the table, header to last non-blank statement; then tidy blank lines.
        while True:
            target = next((sec for sec in self.sections[1:] if sec.path[:len(path)] == path), None)
            if target is None:
                break
            body = target.stmts
            last = max(k for k, s in enumerate(body) if s.kind != "blank" or k == 0)
            header_start = body[0].start
            self._delete_stmts(body[1:last + 1])
            self._drop_header(next(s for s in self.stmts if s.start == header_start))


def _type_name(value):
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def flatten_settings(settings):
    """``{"a.b": 1, "c": {"d": 2}}`` -> [((a, b), 1), ((c, d), 2)]; mappings become dotted keys."""
    out = []

    def walk(prefix, value, label):
        if isinstance(value, dict):
            if not value:
                raise TomlEditError("%s: an empty mapping sets nothing; give keys or drop it" % label)
            for k, v in value.items():
                walk(prefix + parse_key(str(k)), v, "%s.%s" % (label, k))
        else:
            out.append((prefix, value))

    for key, value in settings.items():
        walk(parse_key(str(key)), value, str(key))
    seen = {}
    for path, value in out:
        if path in seen:
            raise TomlEditError("key %s is given twice in settings" % display_key(path))
        seen[path] = value
    return out


def _apply_to_data(data, path, value=None, delete=False):
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
    if delete:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


def edit_toml(text, settings=None, remove=None, name="TOML text"):
    """Apply ``settings`` (dotted key -> value) and ``remove`` (dotted keys) to ``text``.

    Returns ``(new_text, values)`` where ``values`` maps each touched key (dotted, as displayed) to
    ``{"before": ..., "after": ...}`` (None = absent). Raises TomlEditError with a message naming
    ``name`` and the key.
    """
    if not HAS_TOMLKIT:
        raise TomlEditError("the tomlkit Python library is required on the host that edits %s" % name)
    settings = settings or {}
    remove = remove or []
    doc = TomlDocument(text, name)
    original = copy.deepcopy(doc.data)
    sets = flatten_settings(settings)
    removes = [parse_key(str(k)) for k in remove]
    for path in removes:
        for spath, _value in sets:
            if spath[:len(path)] == path or path[:len(spath)] == spath:
                raise TomlEditError("key %s is both set and removed; drop it from one of settings/remove"
                                    % display_key(spath))
    expected = copy.deepcopy(original)
    before = {}
    for path, value in sets:
        before[path] = doc.get(path)
        doc.set(path, value)
        _apply_to_data(expected, path, _plain(value))
    for path in removes:
        before[path] = doc.get(path)
        doc.remove(path)
        _apply_to_data(expected, path, delete=True)
    doc.tidy()
    doc._reload(both=True)
    result = doc.data
    if not same_value(_prune(result), _prune(expected)):
        raise TomlEditError("internal error: editing %s would change more than the requested keys; "
                            "nothing was written. Please report this with the file." % name)
    values = {}
    for path in [p for p, _v in sets] + removes:
        values[display_key(path)] = {"before": before[path], "after": doc.get(path)}
    return doc.text, values
