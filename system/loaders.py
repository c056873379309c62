"""Reading the files users hand in: any bad bytes or syntax become one line naming the file.

Requests, profiles, scenarios, eval suites, claims, bundle contracts, replay CSVs and train
configs are all read with :func:`read_text` (or :func:`decode_text` for standard input) and
parsed with :func:`parse_json`, :func:`parse_yaml` or :func:`parse_csv`. A missing file, a
folder, binary or non-UTF-8 bytes, a file past :data:`MAX_BYTES`, malformed syntax (with its
line and column), duplicate keys, NaN or Infinity in JSON, integers longer than
:data:`MAX_INT_DIGITS` digits and values nested deeper than :data:`MAX_DEPTH` are refused as a
:class:`~system.errors.QsplitInputError` of one line, so a loader's own checks only ever see
plain, finite-sized values. YAML is read with PyYAML's safe loader (imported only then),
which builds plain values only.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from system.errors import QsplitInputError, shown

#: Largest file read (bytes); a larger one is refused, not read in part.
MAX_BYTES = 64 * 2**20
#: Largest CSV read (a records.csv holds one row of about 700 bytes per request and decider).
MAX_CSV_BYTES = 2**30
#: Deepest nesting of lists and mappings a file may have (the shipped files use at most 6).
MAX_DEPTH = 100
#: Most values (lists, mappings, scalars; YAML aliases counted each time they are used).
MAX_VALUES = 1_000_000
#: Longest integer literal read: a float holds at most 309 digits, so no field takes more.
MAX_INT_DIGITS = 1000
_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
         (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


class _RefusedError(Exception):
    """Raised inside a parser's hook; turned into the one-line error with the position."""

    def __init__(self, message: str, pattern: str = "", nth: int = 1) -> None:
        super().__init__(message)
        self.pattern = pattern
        self.nth = nth      # which match of ``pattern`` is the culprit; 0: the last, if found twice


def _position(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    return f"line {line} column {index - (text.rfind(chr(10), 0, index) + 1) + 1}"


def decode_text(data: bytes, where: str, max_bytes: int = MAX_BYTES) -> str:
    """UTF-8 text from bytes (a UTF-8 byte-order mark is dropped); binary, UTF-16 and other
    encodings are refused in one line."""
    if len(data) > max_bytes:
        raise QsplitInputError(f"{where}: larger than {max_bytes // 2**20} MiB; refused unread")
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise QsplitInputError(f"{where}: {name} text (byte-order mark {bom.hex()}); "
                                   "save it as UTF-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise QsplitInputError(f"{where}: binary data or UTF-16/32 text (a NUL byte at offset "
                               f"{nul}); expected UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise QsplitInputError(f"{where}: not UTF-8 text (byte 0x{data[exc.start]:02x} at "
                               f"offset {exc.start}); save it as UTF-8") from None


def read_text(path: str | Path, where: str, max_bytes: int = MAX_BYTES) -> str:
    """The UTF-8 text of a file, or one line saying why it cannot be read."""
    p = Path(path)
    try:
        if p.is_dir():
            raise QsplitInputError(f"{where}: {p} is a folder, expected a file")
        with open(p, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise QsplitInputError(f"{where}: cannot read {p}: {exc.strerror or exc}") from None
    except ValueError as exc:             # a path with a NUL character
        raise QsplitInputError(f"{where}: cannot read {shown(str(p))}: {exc}") from None
    return decode_text(data, f"{where} {p}", max_bytes)


def read_stdin(where: str) -> str:
    """Standard input as UTF-8 text, refused as :func:`decode_text` says."""
    return decode_text(sys.stdin.buffer.read(MAX_BYTES + 1), where)


def is_file(path: str | Path) -> bool:
    """Whether ``path`` is a file; a name the system cannot look up (too long, a NUL) is not."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def is_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder; a name the system cannot look up is not."""
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


def user_path(raw: object, base_dir: Path | None = None) -> Path:
    """A path a user wrote in a file: ``~`` expanded where it can be, relative to ``base_dir``."""
    p = Path(str(raw))
    with contextlib.suppress(RuntimeError):   # ~name of no known user: left as written
        p = p.expanduser()
    return base_dir / p if base_dir is not None and not p.is_absolute() else p


def check_shape(value: object, where: str) -> object:
    """Refuse values nested deeper than MAX_DEPTH or with more than MAX_VALUES parts.

    Iterative, so it cannot itself run out of stack; YAML aliases are followed, which also
    catches a structure that contains itself. A container's scalars are counted in bulk and
    only its containers are visited (a batch of requests is mostly scalars); a mapping's
    keys are counted, and are scalars (JSON's strings, YAML's hashable keys).
    """
    stack: list[tuple[object, int]] = [(value, 1)]
    count = 1
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):          # keys count; the loaders' keys are never containers
            items: Any = v.values()
            count += len(v)
        elif isinstance(v, _CONTAINERS):
            items = v
        else:
            continue
        if not items:
            continue
        if depth >= MAX_DEPTH:
            raise QsplitInputError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        count += len(items)
        if count > MAX_VALUES:
            raise QsplitInputError(f"{where}: more than {MAX_VALUES:,} values (aliases counted "
                                   "each time they are used)")
        stack.extend([(x, depth + 1) for x in items if type(x) in _EXACT or (
            type(x) not in _SCALARS and isinstance(x, _CONTAINERS_OR_DICT))])
    return value


_CONTAINERS = (list, tuple, set, frozenset)
_CONTAINERS_OR_DICT = (dict, *_CONTAINERS)
#: The containers and scalars the loaders make, known by their exact type (two set lookups
#: are half an isinstance against five types); anything else is asked isinstance.
_EXACT = frozenset(_CONTAINERS_OR_DICT)
_SCALARS = frozenset((str, int, float, bool, type(None)))


# ------------------------------------------------------------------------------ JSON

def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = dict(pairs)
    if len(out) == len(pairs):                  # no key twice (the dict built in C)
        return out
    out = {}
    for k, v in pairs:
        if k in out:
            raise _RefusedError(f"duplicate key {shown(k)}; each key may appear once",
                                re.escape(json.dumps(k)) + r"\s*:", nth=0)
        out[k] = v
    return out


def _json_int(s: str) -> int:
    digits = len(s.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _RefusedError(f"an integer of {digits} digits (at most {MAX_INT_DIGITS}; no field "
                            "takes a number past 1.8e308)", rf"-?\d{{{MAX_INT_DIGITS + 1},}}")
    return int(s)


def _json_constant(name: str) -> float:
    raise _RefusedError(f"{name} is not a number JSON allows; expected a finite number",
                        rf"(?<![\w\"]){re.escape(name)}(?![\w\"])")


def _refused(text: str, exc: _RefusedError, where: str) -> QsplitInputError:
    """The error with the position of its culprit, where the text shows it unambiguously."""
    found = [m.start() for m in re.finditer(exc.pattern, text)] if exc.pattern else []
    if exc.nth == 0:
        found = found[1:] if len(found) == 2 else []
    at = f" at {_position(text, found[0])}" if found else ""
    return QsplitInputError(f"{where}{at}: {exc}")


def parse_json(text: str, where: str) -> Any:
    """A JSON document, strictly: duplicate keys, NaN and Infinity, integers past
    MAX_INT_DIGITS digits and nesting past MAX_DEPTH are refused with the line and column."""
    try:
        data = json.loads(text, object_pairs_hook=_json_object, parse_int=_json_int,
                          parse_constant=_json_constant)
    except _RefusedError as exc:
        raise _refused(text, exc, where) from None
    except json.JSONDecodeError as exc:
        raise QsplitInputError(f"{where}: malformed JSON at line {exc.lineno} column "
                               f"{exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise QsplitInputError(f"{where}: nested deeper than {MAX_DEPTH} levels") from None
    return check_shape(data, where)


# ------------------------------------------------------------------------------ YAML

def _yaml_loader() -> type:
    """PyYAML's SafeLoader, refusing duplicate keys, overlong integers and deep nesting."""
    import yaml
    from yaml.composer import ComposerError
    from yaml.constructor import ConstructorError

    class StrictLoader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                        self.peek_event().start_mark)
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    dup = key in seen
                except TypeError:
                    continue          # unhashable: the base class refuses it with its mark
                if dup:
                    raise ConstructorError("while constructing a mapping", node.start_mark,
                                           f"found duplicate key {shown(key)}; each key may "
                                           "appear once", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_int(self, node: Any) -> Any:
            digits = len(str(node.value).lstrip("+-"))
            if digits > MAX_INT_DIGITS:
                raise ConstructorError(None, None, f"an integer of {digits} digits (at most "
                                       f"{MAX_INT_DIGITS}; no field takes a number past 1.8e308)",
                                       node.start_mark)
            return super().construct_yaml_int(node)

    StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
    return StrictLoader


_LOADER: list[type] = []


def _yaml_error(text: str, exc: Exception, where: str) -> QsplitInputError:
    """A PyYAML error as one line: what is wrong, and where (line and column)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    if problem is None and hasattr(exc, "position"):          # yaml.reader.ReaderError
        code = exc.character if isinstance(exc.character, int) else -1  # type: ignore[attr-defined]
        return QsplitInputError(f"{where}: malformed YAML at {_position(text, exc.position)}: "  # type: ignore[attr-defined]
                                f"character #x{code:04x} is not allowed in YAML")
    at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    context = getattr(exc, "context", None)
    what = " ".join(str(problem or exc).split())
    if context and context != problem:
        what += f" ({' '.join(str(context).split())})"
    return QsplitInputError(f"{where}: malformed YAML{at}: {what}")


def parse_yaml(text: str, where: str) -> Any:
    """A YAML document with PyYAML's safe loader; duplicate keys, overlong integers and
    nesting past MAX_DEPTH are refused, and every error is one line with its position."""
    import yaml

    if not _LOADER:
        _LOADER.append(_yaml_loader())
    try:
        data = yaml.load(text, Loader=_LOADER[0])  # a SafeLoader: plain values only
    except yaml.YAMLError as exc:
        raise _yaml_error(text, exc, where) from None
    except RecursionError:
        raise QsplitInputError(f"{where}: nested deeper than {MAX_DEPTH} levels") from None
    return check_shape(data, where)


# ------------------------------------------------------------------------------ CSV

def parse_csv(text: str, where: str, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV with a header holding ``columns`` (others allowed), as (line, row) pairs.

    Blank lines are skipped; a row with another number of cells than the header, a repeated
    header name or a CSV syntax error is refused naming the line.
    """
    if not text.strip():
        raise QsplitInputError(f"{where}: empty file; expected a header row naming the columns")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        missing = [c for c in columns if c not in header]
        if missing:
            raise QsplitInputError(f"{where}: missing column(s) {shown(missing)} in the header")
        repeated = sorted(c for c, n in Counter(header).items() if n > 1)
        if repeated:
            raise QsplitInputError(f"{where}: column(s) {shown(repeated)} named twice in the header")
        rows = []
        for cells in reader:
            if not cells:
                continue
            if len(cells) != len(header):
                raise QsplitInputError(f"{where} line {reader.line_num}: {len(cells)} cells, "
                                       f"the header has {len(header)}")
            rows.append((reader.line_num, dict(zip(header, cells, strict=True))))
    except csv.Error as exc:
        raise QsplitInputError(f"{where} line {reader.line_num}: malformed CSV: {exc}") from None
    return rows


def cell_float(label: str, text: object) -> float:
    """A number written in a CSV cell (``repr`` of a float, an integer, ``inf``, ``nan``)."""
    try:
        return float(str(text))
    except ValueError:
        raise QsplitInputError(f"{label}: expected a number, got {shown(text)}") from None


def cell_int(label: str, text: object) -> int:
    """A whole number written in a CSV cell (at most 18 digits)."""
    t = str(text).strip()
    if not re.fullmatch(r"[+-]?\d{1,18}", t):
        raise QsplitInputError(f"{label}: expected a whole number, got {shown(text)}")
    return int(t)
