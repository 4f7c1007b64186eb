"""Reading YAML that a user or another program handed us: configs, sweep files, manifests.

`yaml.safe_load` never runs code, but it still accepts what no accelsim file needs and
what turns a small file into a hang, a blow-up or a silently wrong run:

- duplicate mapping keys (PyYAML keeps the last: `tiles: 16` then `tiles: 3` ran with 3);
- aliases (`*name`), whose expansion is unbounded ("billion laughs": 1 KB of YAML, gigabytes
  of lists); no accelsim file uses anchors, so every alias is refused;
- nesting deeper than any schema goes (500 nested lists hit Python's recursion limit);
- integers of thousands of digits (Python refuses to convert them, with a traceback);
- files that are not regular files (a FIFO blocks the reader forever, /dev/zero never ends)
  or are larger than any config (read whole before parsing).

`load(path, max_bytes)` checks the file, then parses it with a loader that refuses all of
the above; `loads(text)` parses text. Problems raise `YAMLInputError`, one line, with the
line number where there is one and every quoted value cut to `QUOTE_CHARS` characters.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

MAX_DEPTH = 32           # nested mappings/sequences; the deepest schema (sweeps) uses 5
MAX_INT_DIGITS = 30      # no count, size or cycle budget needs more
QUOTE_CHARS = 80         # longest piece of the input an error message repeats
DEFAULT_MAX_BYTES = 1 << 20


class YAMLInputError(ValueError):
    """A YAML file or text accelsim refuses; the message is one line."""


def has_control_characters(text: str) -> bool:
    """Whether `text` holds a NUL, newline, escape or other control character: a mistake in
    a name or path, and one that would break the one-line messages that quote it."""
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def cut(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` on one line, at most `limit` characters (an ellipsis marks a cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _line(node_or_mark) -> str:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    return f"line {mark.line + 1}: " if mark is not None else ""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases, duplicate keys, deep nesting or huge integers."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise YAMLInputError(f"{_line(event)}alias *{cut(event.anchor, 40)}: aliases are not "
                                 "accepted (write the value out)")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YAMLInputError(f"{_line(self.peek_event())}nested deeper than {MAX_DEPTH} "
                                 "levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:       # an unhashable key: PyYAML's own error follows
                    continue
                if duplicate:
                    raise YAMLInputError(f"{_line(key_node)}duplicate key {cut(repr(key), 40)}")
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        text = str(node.value)
        digits = sum(ch.isalnum() for ch in text)
        if digits > MAX_INT_DIGITS:
            raise YAMLInputError(f"{_line(node)}integer of {digits} digits: expected at most "
                                 f"{MAX_INT_DIGITS}")
        _refuse_yaml11_number(node, text)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node):
        _refuse_yaml11_number(node, str(node.value))
        try:
            return super().construct_yaml_float(node)
        except (OverflowError, ValueError) as e:
            raise YAMLInputError(f"{_line(node)}number {cut(repr(node.value), 40)}: {cut(e)}") from None


def _refuse_yaml11_number(node, text: str) -> None:
    """YAML 1.1 reads `1:00` as 60 (base 60) and `020` as 16 (octal): surprising in a
    config, so refused; write the number plainly."""
    bare = text.lstrip("+-").replace("_", "")
    if ":" in bare:
        raise YAMLInputError(f"{_line(node)}{cut(repr(text), 40)}: a base-60 number in YAML 1.1; "
                             "expected a plain number (quote it if it is text)")
    if len(bare) > 1 and bare[0] == "0" and bare[1].isdigit() and "." not in bare and "e" not in bare.lower():
        raise YAMLInputError(f"{_line(node)}{cut(repr(text), 40)}: an octal number in YAML 1.1 "
                             f"(it means {int(bare, 8) if set(bare) <= set('01234567') else '?'}); "
                             "expected a plain number without a leading zero")


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_yaml_float)


def loads(text: str) -> Any:
    """The data of YAML `text`, or `YAMLInputError`."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except YAMLInputError:
        raise
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or e
        raise YAMLInputError(f"{_line(mark)}not valid YAML: {cut(problem)}") from None
    except (ValueError, RecursionError) as e:
        raise YAMLInputError(f"not valid YAML: {cut(e)}") from None


def read_text(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """The UTF-8 text of `path`, which must be a regular file of at most `max_bytes`
    (checked before anything is read: a FIFO or device is never opened). Raises
    `FileNotFoundError` / `IsADirectoryError` as `open` would, else `YAMLInputError`."""
    path = Path(path)
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(21, "Is a directory", str(path))
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device"
                if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
        raise YAMLInputError(f"expected a regular file, found {kind}")
    if st.st_size > max_bytes:
        raise YAMLInputError(f"{st.st_size:,} bytes: expected at most {max_bytes:,}")
    if st.st_size == 0:  # also /proc files, which say 0 and may block when read
        return ""
    with open(path, "rb") as f:
        data = f.read(st.st_size)  # what the file says it holds, never to an end that may not come
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise YAMLInputError(f"expected UTF-8 text, found byte 0x{data[e.start]:02x} at offset "
                             f"{e.start}") from None


def load(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """`read_text` then `loads`."""
    return loads(read_text(path, max_bytes))
