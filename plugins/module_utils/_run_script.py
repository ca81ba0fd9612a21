# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read and edit the flags of the ``exec bin/<component>-server ...`` command of a TiUP run script.

TiUP starts every instance through ``<deploy_dir>/scripts/run_<component>.sh``; PD's URLs live there
as flags (``--client-urls="http://..."``), TiKV's PD endpoints too (``--pd "host:port,..."``).
This module finds the ``exec`` statement (with its ``\\`` continuation lines) that runs the server
program, splits it into shell words the way bash would (quotes, escapes, redirections), and edits
single flags in place:

* a changed value replaces only the value's characters, in the quoting style that flag already uses
  (``--name="v"``, ``--name='v'``, ``--name=v``, ``--name "v"``, ``--name v``);
* a new flag goes on its own line before ``--config`` (or before the last line, which carries the
  ``2>>`` redirection), indented like that line and in the style most flags of the script use:
  ``    --cacert="/path" \\`` for run_pd.sh, ``    --cacert "/path" \\`` for run_tikv.sh;
* a removed flag takes its line with it when it had a line to itself, otherwise just its words.

Everything else (comments, other lines, indentation, the redirection) is left byte for byte, so adding
and then removing a flag gives back the original file.

``rewrite_url_schemes`` is a pure helper for URL-valued flags and keys (used by the config role):
``http://a:2379,http://b:2379`` -> ``https://a:2379,https://b:2379``, and PD's
``--initial-cluster`` form ``pd-1=http://a:2380,pd-2=http://b:2380`` alike.
"""

from __future__ import annotations

import re
from collections import Counter


class ScriptError(Exception):
    """A request that cannot be carried out; the message names the file/flag and the fix."""


_OPERATOR_CHARS = frozenset("<>|&;")
_SAFE_UNQUOTED = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")
_URL = re.compile(r"^(\s*)([A-Za-z][A-Za-z0-9+.-]*)://")


class _Word(object):
    """A shell word: raw span [start, end) in the text, decoded text, and whether it is an operator."""

    __slots__ = ("start", "end", "value", "operator")

    def __init__(self, start, end, value, operator=False):
        self.start = start
        self.end = end
        self.value = value
        self.operator = operator


class Flag(object):
    """One ``--name[=| ]value`` occurrence in the command."""

    __slots__ = ("name", "dashes", "form", "quote", "value", "start", "end", "vstart", "vend")

    def __init__(self, name, dashes, form, quote, value, start, end, vstart, vend):
        self.name = name        # without leading dashes
        self.dashes = dashes    # "--" or "-"
        self.form = form        # "eq", "space" or "bare"
        self.quote = quote      # '"', "'" or "" (how the value is written)
        self.value = value      # decoded value; None for a bare switch
        self.start = start      # span of the whole flag (name and value words)
        self.end = end
        self.vstart = vstart    # span of the value's raw text (with its quotes)
        self.vend = vend


def _decode_double(text, i):
    """i after an opening double quote; returns (decoded, offset after the closing quote)."""
    out = []
    while True:
        if i >= len(text):
            raise ScriptError("unterminated double quote")
        ch = text[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in '"\\$`\n':
            if text[i + 1] != "\n":
                out.append(text[i + 1])
            i += 2
            continue
        out.append(ch)
        i += 1


def _words(text, i):
    """Split the shell statement starting at offset i into words, up to its unescaped newline.

    Returns (words, end offset of the statement).
    """
    words = []
    n = len(text)
    while True:
        # Separators: blanks and backslash-newline continuations.
        while i < n:
            if text[i] in " \t":
                i += 1
            elif text.startswith("\\\n", i):
                i += 2
            elif text.startswith("\\\r\n", i):
                i += 3
            else:
                break
        if i >= n:
            return words, n
        if text[i] == "\n" or text.startswith("\r\n", i):
            return words, i
        if text[i] == "#":
            j = text.find("\n", i)
            return words, n if j < 0 else j
        start = i
        out = []
        operator = False
        while i < n:
            ch = text[i]
            if ch in " \t\n" or text.startswith("\r\n", i):
                break
            if ch in _OPERATOR_CHARS:
                if out and not "".join(out).isdigit():
                    break
                # An operator (or a redirection with an fd number such as 2>>): take the run of them.
                operator = True
                while i < n and text[i] in _OPERATOR_CHARS:
                    out.append(text[i])
                    i += 1
                break
            if ch == "'":
                j = text.find("'", i + 1)
                if j < 0:
                    raise ScriptError("unterminated single quote")
                out.append(text[i + 1:j])
                i = j + 1
            elif ch == '"':
                decoded, i = _decode_double(text, i + 1)
                out.append(decoded)
            elif ch == "\\" and i + 1 < n:
                if text[i + 1] == "\n":
                    i += 2
                    break
                out.append(text[i + 1])
                i += 2
            else:
                out.append(ch)
                i += 1
        words.append(_Word(start, i, "".join(out), operator))


def _quote_style(raw):
    """How a raw value word is quoted: the whole word in one pair of quotes, or not at all."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        inner = raw[1:-1]
        if raw[0] == "'" and "'" not in inner:
            return "'"
        if raw[0] == '"':
            try:
                _decoded, end = _decode_double(raw, 1)
            except ScriptError:
                return ""
            if end == len(raw):
                return '"'
    return ""


def quote_value(value, style):
    """Shell text for ``value`` in the given quoting style (falls back to double quotes when needed).

    Inside double quotes ``\\``, ``"`` and backquotes are escaped; ``$`` is left for the shell, as TiUP's
    scripts use ``${DEPLOY_DIR}``-style expansions.
    """
    if style == "'" and "'" not in value:
        return "'" + value + "'"
    if style == "" and _SAFE_UNQUOTED.match(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")
    return '"' + escaped + '"'


class RunScript(object):
    """A run script with its server command parsed; ``text`` is the current (edited) text."""

    def __init__(self, text, name="run script", program=None):
        self.text = text
        self.name = name
        self.program = program
        self._parse()

    def _parse(self):
        text = self.text
        pos = 0
        tried = []
        while True:
            match = re.compile(r"^[ \t]*exec\b", re.M).search(text, pos)
            if match is None:
                break
            try:
                words, end = _words(text, match.start())
            except ScriptError as exc:
                raise ScriptError("%s: cannot read the exec command at line %d: %s; fix the script" % (
                    self.name, text.count("\n", 0, match.start()) + 1, exc))
            prog = self._find_program(words)
            if prog is not None:
                self.words = words
                self.stmt_start = match.start()
                self.stmt_end = end
                self.prog_index = prog
                self._parse_flags()
                return
            tried.append(text[match.start():match.end()].strip())
            pos = end + 1 if end < len(text) else len(text)
            if pos >= len(text):
                break
        what = ("a program named %s" % self.program) if self.program else "a *-server program"
        raise ScriptError("%s has no 'exec' command that runs %s; is this a TiUP run script? "
                          "(set program: to the server binary's name)" % (self.name, what))

    def _find_program(self, words):
        for k, word in enumerate(words):
            if word.operator:
                return None
            base = word.value.rsplit("/", 1)[-1]
            if self.program:
                if word.value == self.program or base == self.program:
                    return k
            elif base.endswith("-server") and not word.value.startswith("-"):
                return k
        return None

    def _parse_flags(self):
        self.flags = []
        words = self.words
        k = self.prog_index + 1
        while k < len(words):
            word = words[k]
            if word.operator:
                break
            if not word.value.startswith("-") or word.value == "-":
                k += 1
                continue
            raw = self.text[word.start:word.end]
            dashes = "--" if raw.startswith("--") else "-"
            if "=" in word.value:
                eq = raw.index("=")
                name = raw[len(dashes):eq]
                rawv = raw[eq + 1:]
                self.flags.append(Flag(name, dashes, "eq", _quote_style(rawv), word.value.split("=", 1)[1],
                                       word.start, word.end, word.start + eq + 1, word.end))
                k += 1
                continue
            name = word.value[len(dashes):]
            nxt = words[k + 1] if k + 1 < len(words) else None
            if nxt is not None and not nxt.operator and not nxt.value.startswith("-"):
                rawv = self.text[nxt.start:nxt.end]
                self.flags.append(Flag(name, dashes, "space", _quote_style(rawv), nxt.value,
                                       word.start, nxt.end, nxt.start, nxt.end))
                k += 2
            else:
                self.flags.append(Flag(name, dashes, "bare", "", None, word.start, word.end, None, None))
                k += 1

    # ---- reading
    def as_dict(self):
        """Every flag of the command, name (without dashes) -> value (None for a bare switch)."""
        out = {}
        for flag in self.flags:
            out[flag.name] = flag.value
        return out

    def get(self, name):
        found = [f for f in self.flags if f.name == name]
        return found[-1].value if found else None

    def has(self, name):
        return any(f.name == name for f in self.flags)

    # ---- editing
    def _splice(self, start, end, new):
        self.text = self.text[:start] + new + self.text[end:]
        self._parse()

    def _style(self):
        valued = [f for f in self.flags if f.form in ("eq", "space")]
        if not valued:
            return "eq", '"', "--"
        form = Counter(f.form for f in valued).most_common(1)[0][0]
        quote = Counter(f.quote for f in valued).most_common(1)[0][0]
        dashes = Counter(f.dashes for f in self.flags).most_common(1)[0][0]
        return form, quote, dashes

    def set(self, name, value):
        """Set every occurrence of ``--name`` to ``value`` (None: a bare switch); True when changed."""
        changed = False
        while True:
            todo = [f for f in self.flags if f.name == name and f.value != value]
            if not todo:
                break
            flag = todo[-1]
            if value is None:
                # Turn a valued flag into a bare switch.
                self._splice(flag.start, flag.end, self.text[flag.start:flag.start + len(flag.dashes) + len(name)])
            elif flag.form == "bare":
                form, quote, _dashes = self._style()
                joiner = "=" if form == "eq" else " "
                self._splice(flag.end, flag.end, joiner + quote_value(value, quote))
            else:
                self._splice(flag.vstart, flag.vend, quote_value(value, flag.quote))
            changed = True
        if not self.has(name):
            self._insert(name, value)
            changed = True
        return changed

    def _flag_text(self, name, value):
        form, quote, dashes = self._style()
        if value is None:
            return dashes + name
        return dashes + name + ("=" if form == "eq" else " ") + quote_value(value, quote)

    def _line_start(self, offset):
        return self.text.rfind("\n", 0, offset) + 1

    def _insert(self, name, value):
        new = self._flag_text(name, value)
        anchor = None
        for flag in self.flags:
            if flag.name == "config":
                anchor = flag.start
                break
        if anchor is None:
            # The first word of the statement's last line (the one with the redirection in TiUP's scripts).
            last_line = self._line_start(self.stmt_end if self.stmt_end < len(self.text) else len(self.text))
            args = [w for w in self.words[self.prog_index + 1:] if w.start >= last_line]
            if args and last_line > self.stmt_start:
                anchor = args[0].start
        if anchor is not None:
            line_start = self._line_start(anchor)
            indent = self.text[line_start:anchor]
            if indent.strip() == "" and line_start > self.stmt_start:
                nl = "\r\n" if self.text[:line_start].endswith("\r\n") else "\n"
                self._splice(line_start, line_start, indent + new + " \\" + nl)
            else:
                self._splice(anchor, anchor, new + " ")
            return
        # Single-line command without a redirection: append after the last argument.
        tail = [w for w in self.words if not w.operator]
        end = tail[-1].end
        self._splice(end, end, " " + new)

    def remove(self, name):
        """Delete every occurrence of ``--name``; True when changed."""
        changed = False
        while True:
            found = [f for f in self.flags if f.name == name]
            if not found:
                return changed
            self._delete(found[-1])
            changed = True

    def _delete(self, flag):
        text = self.text
        line_start = self._line_start(flag.start)
        eol = text.find("\n", flag.end)
        eol = len(text) if eol < 0 else eol
        before = text[line_start:flag.start]
        after = text[flag.end:eol].rstrip("\r")
        if before.strip() == "" and line_start > self.stmt_start:
            if after.strip() == "\\":
                # The flag had a line to itself: drop the line.
                self._splice(line_start, eol + 1 if eol < len(text) else eol, "")
                return
            if after.strip() == "":
                # Last line of the command: drop it and the previous line's continuation.
                prev_end = line_start - 1
                if text[:prev_end].endswith("\r"):
                    prev_end -= 1
                cont = text.rfind("\\", 0, prev_end)
                while cont > 0 and text[cont - 1] in " \t":
                    cont -= 1
                self._splice(cont, flag.end, "")
                return
        # Words on a shared line: drop them and the blanks after (or before, at the end of a line).
        end = flag.end
        while end < len(text) and text[end] in " \t":
            end += 1
        start = flag.start
        if end == flag.end or text.startswith("\\\n", end) or text.startswith("\\\r\n", end):
            end = flag.end
            while start > 0 and text[start - 1] in " \t":
                start -= 1
        self._splice(start, end, "")


def _normalize_flag_name(name):
    name = str(name).strip()
    while name.startswith("-"):
        name = name[1:]
    if not name or any(c in name for c in " \t=\"'"):
        raise ScriptError("invalid flag name %r: give it as client-urls or --client-urls" % (name,))
    return name


def _flag_value(name, value):
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        raise ScriptError("flag %s: a mapping is not a flag value" % name)
    return str(value)


def edit_script(text, flags=None, remove=None, program=None, name="run script"):
    """Apply ``flags`` (name -> value) and ``remove`` (names) to the server command in ``text``.

    Returns ``(new_text, values, all_flags)``: ``values`` maps each touched flag to
    ``{"before": ..., "after": ...}`` (None = absent or bare), ``all_flags`` is every flag of the
    edited command. Raises ScriptError naming ``name``.
    """
    flags = flags or {}
    remove = remove or []
    script = RunScript(text, name, program)
    sets = [(_normalize_flag_name(k), _flag_value(k, v)) for k, v in flags.items()]
    removes = [_normalize_flag_name(k) for k in remove]
    both = set(k for k, _v in sets) & set(removes)
    if both:
        raise ScriptError("flag %s is both set and removed; drop it from one of flags/remove"
                          % ", ".join(sorted(both)))
    names = [k for k, _v in sets] + removes
    if len(set(names)) != len(names):
        raise ScriptError("a flag is given twice (with and without dashes?): %s" % ", ".join(names))
    before = dict((k, script.get(k)) for k in names)
    for key, value in sets:
        script.set(key, value)
    for key in removes:
        script.remove(key)
    # Check the result: the requested flags as asked, every other flag exactly as it was.
    check = RunScript(script.text, name, program)
    expected = RunScript(text, name, program).as_dict()
    for key, value in sets:
        expected[key] = value
    for key in removes:
        expected.pop(key, None)
    got = check.as_dict()
    if got != expected or [f.name for f in check.flags if f.name not in names] != [
            f.name for f in RunScript(text, name, program).flags if f.name not in names]:
        raise ScriptError("internal error: editing %s would change more than the requested flags; "
                          "nothing was written. Please report this with the file." % name)
    values = dict((k, {"before": before[k], "after": check.get(k)}) for k in names)
    return script.text, values, got


def read_flags(text, program=None, name="run script"):
    """Every flag of the server command in ``text`` (name -> value)."""
    return RunScript(text, name, program).as_dict()


def rewrite_url_schemes(value, scheme="https", only=("http", "https")):
    """Rewrite the scheme of every URL in a comma-separated list (or a list of strings).

    Handles plain URL lists (``http://a:2379,http://b:2379``) and PD's ``--initial-cluster`` form
    (``pd-1=http://a:2380,pd-2=http://b:2380``). Items without a scheme (``a:2379``, as in TiKV's
    ``--pd``) and schemes not in ``only`` are left as they are; whitespace is kept.
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [rewrite_url_schemes(v, scheme, only) for v in value]
    out = []
    for item in str(value).split(","):
        prefix, url = "", item
        eq = item.find("=")
        sep = item.find("://")
        if 0 <= eq and (sep < 0 or eq < sep):
            prefix, url = item[:eq + 1], item[eq + 1:]
        match = _URL.match(url)
        if match and match.group(2).lower() in only:
            url = match.group(1) + scheme + "://" + url[match.end():]
        out.append(prefix + url)
    return ",".join(out)


def url_schemes(value):
    """The set of URL schemes used in a comma-separated URL list or initial-cluster value."""
    found = set()
    if value is None:
        return found
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    for item in items:
        item = str(item)
        eq = item.find("=")
        sep = item.find("://")
        if 0 <= eq and (sep < 0 or eq < sep):
            item = item[eq + 1:]
        match = _URL.match(item)
        if match:
            found.add(match.group(2).lower())
    return found
