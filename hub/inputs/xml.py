"""The one hardened XML entry point (BLUEPRINT §8.4).

lxml with ``resolve_entities=False, no_network=True, load_dtd=False,
huge_tree=False``; documents with a DOCTYPE are refused outright (XXE and
"billion laughs" both need one); sizes are bounded; parsing streams (the parser
fed in blocks, or ``iterparse``) and clears what it has read, so memory stays flat
whatever the file size. A first streaming pass checks safety and well-formedness,
building the tree as the second pass will (so that it meets the same limits) but
handing no element to Python, so a file broken anywhere yields nothing at all;
validation against an XSD is either whole-document (:func:`validate` with a
schema, or :func:`conforms`, which only says yes or no, all in libxml2) or record by record
(:func:`element_schema` + :func:`schema_problems`), so that one bad record is refused
alone. Messages never quote values from the document (they may be codici fiscali).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lxml import etree

from hub.inputs import InputError

MAX_BYTES = 512 * 1024 * 1024
_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_QUOTED = re.compile(r"'[^']*'")
_FACET = re.compile(r"\[facet '(\w+)'\]")
_NAMES = re.compile(r"(Element|attribute) '(\{[^}]*\})?([^']+)'")

Source = bytes | Path


class UnsafeOrInvalidXML(InputError):
    """An XML document that cannot be trusted."""


def _open(source: Source) -> IO[bytes]:
    return io.BytesIO(source) if isinstance(source, bytes) else source.open("rb")


def _size(source: Source) -> int:
    return len(source) if isinstance(source, bytes) else source.stat().st_size


def _parse_args() -> dict[str, Any]:
    return {
        "resolve_entities": False,
        "no_network": True,
        "load_dtd": False,
        "huge_tree": False,
        "remove_comments": True,
        "remove_pis": True,
    }


def check_prolog(source: Source, *, max_bytes: int = MAX_BYTES) -> None:
    """Refuse oversize documents and any DOCTYPE / ENTITY declaration."""
    size = _size(source)
    if size > max_bytes:
        raise UnsafeOrInvalidXML(
            f"the document is {size // (1024 * 1024)} MiB, over the "
            f"limit of {max_bytes // (1024 * 1024)} MiB"
        )
    if size == 0:
        raise UnsafeOrInvalidXML("the document is empty")
    with _open(source) as f:
        head = f.read(64 * 1024)
    m = _DOCTYPE.search(head)
    if m:
        line = head[: m.start()].count(b"\n") + 1
        raise UnsafeOrInvalidXML(
            "the document declares a DOCTYPE or entities, which SIUSS flows never do; refused "
            "for safety (this is how XXE and 'billion laughs' attacks work)",
            line=line,
        )


def _explain(e: etree.XMLSyntaxError, last_line: int) -> UnsafeOrInvalidXML:
    msg = str(e.msg if hasattr(e, "msg") and e.msg else e)
    line = e.lineno or last_line
    if "Premature end" in msg or "expected '>'" in msg or "EndTag" in msg or "end of data" in msg:
        return UnsafeOrInvalidXML(
            "the document ends before the XML is complete: was it "
            "truncated while copying or downloading?",
            line=line,
        )
    if "Element" in msg and (
        "facet" in msg or "not expected" in msg or "attribute" in msg or "missing" in msg
    ):
        names = " ".join(f"{kind.lower()} {name}" for kind, _ns, name in _NAMES.findall(msg))
        rest = _QUOTED.sub("…", _NAMES.sub("", msg)).strip(" :,.")
        rest = re.sub(r"\(<string>, line \d+\)", "", rest).strip()
        return UnsafeOrInvalidXML(
            f"does not follow the official schema ({names}: {rest})", line=line
        )
    return UnsafeOrInvalidXML(f"not well-formed XML ({_QUOTED.sub('…', msg)})", line=line)


def _line_count(source: Source) -> int:
    lines = 1
    with _open(source) as f:
        while chunk := f.read(1024 * 1024):
            lines += chunk.count(b"\n")
    return lines


#: What ``iterparse`` reads at a time: fed the same blocks, the parser gives the same verdicts.
_BLOCK = 32 * 1024
_TRUNCATED = (
    "the document ends before the XML is complete: was it truncated while copying or downloading?"
)


def _pull_parser(
    f: IO[bytes],
    events: tuple[str, ...],
    tags: list[str],
    schema: etree.XMLSchema | None = None,
) -> Any:
    name = getattr(f, "name", None)
    return etree.XMLPullParser(
        events,
        tag=tags,
        schema=schema,
        base_url=name if isinstance(name, str) else None,
        **_parse_args(),
    )


def _pruned_events(f: IO[bytes], parser: Any) -> Iterator[tuple[str, Any]]:
    """Feed ``parser`` the blocks of ``f`` and give its events; after each block, drop what
    is complete under the first element an event named (:func:`_prune`). A syntax error
    (``feed`` or ``close``) reaches the caller's loop."""
    top = None
    while block := f.read(_BLOCK):
        parser.feed(block)
        for ev, el in parser.read_events():
            if top is None:
                top = el
            yield ev, el
        if top is not None:
            _prune(top)
    parser.close()


def _root(source: Source) -> tuple[str, int] | None:
    """Local name and line of the root element; None when the document breaks before it."""
    with _open(source) as f:
        try:
            for _ev, el in etree.iterparse(f, events=("start",), **_parse_args()):
                return str(etree.QName(el).localname), el.sourceline or 0
        except etree.XMLSyntaxError:
            return None
    return None


def root_name(source: Source) -> str | None:
    """The local name of the root element; None when the document breaks before it."""
    found = _root(source)
    return None if found is None else found[0]


def _prune(root: Any) -> None:
    """Drop every complete element under ``root``: at each level of the path still open,
    all children but the last (never the last: the tree builder may still add to it)."""
    node = root
    while (n := len(node)) > 0:
        if n > 1:
            del node[: n - 1]
        node = node[0]


def validate(
    source: Source, schema: etree.XMLSchema | None, *, root: str, max_bytes: int = MAX_BYTES
) -> None:
    """First pass: safety, well-formedness, XSD validity, complete root. Flat memory.

    The pass builds the tree as it streams, as the second one will, so that it meets every
    limit of libxml2's tree builder (a depth of 256, text nodes of 10 MB) and the second
    one cannot fail half-way. Without a schema, no element reaches Python: the parser is
    fed the blocks ``iterparse`` would read, and after each block what is complete is
    dropped (docs/performance.md has the figures and why a parser target building nothing
    would not do).
    """
    check_prolog(source, max_bytes=max_bytes)
    found = _root(source) if schema is None else None
    if found is None or found[0] != root:
        _validate_per_element(source, schema, root=root)
        return
    with _open(source) as f:
        # Events: only the root's start, to hold it (a deeper element of its name too).
        parser = _pull_parser(f, ("start",), [f"{{*}}{root}"])
        try:
            for _ in _pruned_events(f, parser):
                pass
        except etree.XMLSyntaxError as e:
            error = e
        else:
            return
    # Refused. Read it again element by element for the message, which may name the line
    # of the last complete element (and will not change: same parser, same blocks).
    _validate_per_element(source, None, root=root)
    raise _syntax_error(error, source, 0)  # pragma: no cover - the line above raises


def conforms(
    source: Source, schema: etree.XMLSchema, *, root: str, max_bytes: int = MAX_BYTES
) -> bool:
    """One streaming pass, all of it in libxml2: whether the whole document is well-formed,
    complete, has the root ``root`` and follows ``schema`` (validated as it is parsed; only
    the root's start and end reach Python). Flat memory, as :func:`validate`.

    ``False`` says only that some check failed, not which: :func:`validate` (without a
    schema) and :func:`schema_problems` say what and where. An unsafe prolog (size,
    DOCTYPE) raises :class:`UnsafeOrInvalidXML` as in :func:`validate`.

    The root's end is required explicitly: lxml's parser with a schema does not report a
    document cut short (its ``close()`` returns the partial tree without an error).
    """
    check_prolog(source, max_bytes=max_bytes)
    with _open(source) as f:
        parser = _pull_parser(f, ("start", "end"), [f"{{*}}{root}"], schema)
        top = None
        closed = False
        try:
            for ev, el in _pruned_events(f, parser):
                if top is None:
                    top = el  # the first event is a start: the root's, if it is ``root``
                elif ev == "end" and el is top:
                    closed = True
        except etree.XMLSyntaxError:
            return False
    return closed and top is not None and top.getparent() is None


def _syntax_error(e: etree.XMLSyntaxError, source: Source, last_line: int) -> UnsafeOrInvalidXML:
    if e.lineno and e.lineno >= _line_count(source):
        # Broken on the very last line: the document was cut short.
        return UnsafeOrInvalidXML(_TRUNCATED, line=e.lineno)
    return _explain(e, last_line)


def _validate_per_element(source: Source, schema: etree.XMLSchema | None, *, root: str) -> None:
    """The first pass with an XSD, or when the root is not the expected one (or cannot be
    read): every element reaches Python and is cleared at its end."""
    last = None
    closed = False
    with _open(source) as f:
        try:
            for _ev, el in etree.iterparse(f, events=("end",), schema=schema, **_parse_args()):
                last = el
                el.clear(keep_tail=True)
                if el.getprevious() is not None:  # drop what is done, so memory stays flat
                    parent = el.getparent()
                    while el.getprevious() is not None:
                        del parent[0]
                elif el.getparent() is None:
                    closed = etree.QName(el).localname == root
        except etree.XMLSyntaxError as e:
            raise _syntax_error(e, source, _line(last)) from None
    if not closed:
        raise UnsafeOrInvalidXML(_TRUNCATED, line=_line(last))


def _line(el: Any) -> int:
    return (el.sourceline or 0) if el is not None else 0


def iter_elements(
    source: Source, tags: set[str], events: tuple[str, ...] = ("end",)
) -> Iterator[tuple[str, Any]]:
    """Second pass: (event, element) for elements whose local name is in ``tags``.

    Elements are cleared once the caller has moved past them, with their
    already-read siblings, so memory stays bounded.
    """
    last_line = 0
    with _open(source) as f:
        try:
            for ev, el in etree.iterparse(f, events=events, **_parse_args()):
                last_line = el.sourceline or last_line
                name = etree.QName(el).localname
                if name in tags:
                    yield ev, el
                if ev == "end" and el.getparent() is not None and name in tags:
                    el.clear(keep_tail=True)
                    parent = el.getparent()
                    while el.getprevious() is not None and parent is not None:
                        del parent[0]
        except etree.XMLSyntaxError as e:
            raise _explain(e, last_line) from None


def iter_top_elements(
    source: Source, tags: set[str] | None = None, *, keep: bool = False
) -> Iterator[Any]:
    """Second pass: each complete child of the root, in document order.

    A child is yielded once its end tag has been read (its whole subtree is
    there, e.g. a ``Beneficiario`` with its ``PrestazioniSociali``), then
    cleared with its already-read siblings, so memory is bounded by the largest
    child, not the document. With ``keep`` (and ``tags``), a child asked for is taken
    out of the document instead of cleared: it stays whole for as long as the caller
    holds it (who then bounds the memory: :func:`hub.inputs.parts.in_parts` holds a part).

    With ``tags`` (local names: the children expected), only those children's end
    tags reach Python, as the parser reads them; the others are yielded, in their
    place, when the next expected child ends or the block read ends, so the order and
    the memory bound are the same.
    """
    if not tags:
        if keep:
            raise ValueError("keep needs the tags of the children to keep")
        yield from _iter_top_all(source)
        return
    found = _root(source)
    if found is None:
        yield from _iter_top_all(source)  # raises the document's own error
        return
    root_tag = f"{{*}}{found[0]}"
    with _open(source) as f:
        parser = _pull_parser(f, ("start", "end"), [root_tag, *(f"{{*}}{t}" for t in tags)])
        top: Any = None
        done: Any = None  # the last child yielded, cleared and kept (it may be the last one)
        try:
            more = True
            while more:
                block = f.read(_BLOCK)
                if block:
                    parser.feed(block)
                else:
                    parser.close()
                    more = False
                for ev, el in parser.read_events():
                    if top is None:
                        top = el  # the first start event is the root's
                        continue
                    if ev == "start" or el.getparent() is not top:
                        continue  # a start, the root's end, or deeper than its children
                    prev = el.getprevious()
                    if prev is not None and prev is not done:  # not asked for, before it
                        yield from _unexpected(el.itersiblings(preceding=True), done, True)
                    yield el
                    while el.getprevious() is not None:
                        del top[0]
                    if keep:
                        top.remove(el)  # whole, out of the tree (``done`` stays None)
                    else:
                        el.clear(keep_tail=True)
                        done = el
                if top is not None:
                    # Children not asked for, complete (all but the last; at the end, all).
                    n = len(top) if not more else len(top) - 1
                    if n > 0 and (n > 1 or top[0] is not done):
                        yield from _unexpected(top[:n], done, False)
                        del top[:n]
        except etree.XMLSyntaxError as e:
            raise _explain(e, 0) from None


def _unexpected(siblings: Any, done: Any, reverse: bool) -> Iterator[Any]:
    found = [el for el in siblings if el is not done]
    if reverse:
        found.reverse()
    yield from found


def _iter_top_all(source: Source) -> Iterator[Any]:
    last = None
    depth = 0
    with _open(source) as f:
        try:
            for ev, el in etree.iterparse(f, events=("start", "end"), **_parse_args()):
                if ev == "start":
                    depth += 1
                    continue
                depth -= 1
                if depth != 1:
                    continue  # the root itself, or deeper than its children
                last = el
                yield el
                el.clear(keep_tail=True)
                if el.getprevious() is not None:
                    parent = el.getparent()
                    while el.getprevious() is not None:
                        del parent[0]
        except etree.XMLSyntaxError as e:
            raise _explain(e, _line(last)) from None


def first_child_name(source: Source, *, max_bytes: int = MAX_BYTES) -> str | None:
    """Local name of the first element after the root's first child (cheap peek)."""
    check_prolog(source, max_bytes=max_bytes)
    depth = 0
    seen = 0
    with _open(source) as f:
        try:
            for ev, el in etree.iterparse(f, events=("start", "end"), **_parse_args()):
                if ev == "start":
                    depth += 1
                    if depth == 2:
                        seen += 1
                        if seen == 2:
                            return str(etree.QName(el).localname)
                else:
                    depth -= 1
        except etree.XMLSyntaxError as e:
            raise _explain(e, 0) from None
    return None


def load_schema(path: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(path), etree.XMLParser(**_parse_args())))


_XS = "http://www.w3.org/2001/XMLSchema"


def element_schema(path: Path, elements: dict[str, str]) -> etree.XMLSchema:
    """The schema of ``path`` with extra global declarations ``name -> complex type``.

    Official schemas declare only the document root globally; declaring, say,
    ``Beneficiario`` of type ``BeneficiarioType`` lets each record element be
    validated alone (:func:`schema_problems`) with exactly the official rules.
    """
    doc = etree.parse(str(path), etree.XMLParser(**_parse_args()))
    root = doc.getroot()
    for name, type_name in elements.items():
        decl = etree.SubElement(root, f"{{{_XS}}}element")
        decl.set("name", name)
        decl.set("type", type_name)
    return etree.XMLSchema(doc)


@dataclass(frozen=True)
class SchemaProblem:
    """Why an element breaks its schema: the line, the field (attribute or
    element name) and a reason that never quotes values."""

    line: int
    field: str
    reason: str


def _problem(message: str, line: int) -> SchemaProblem:
    found = _NAMES.findall(message)
    names = " ".join(f"{kind.lower()} {name}" for kind, _ns, name in found)
    rest = _FACET.sub(r"\1 rule:", _NAMES.sub("", message))
    rest = _QUOTED.sub("…", rest).strip(" :,.")
    rest = re.sub(r"\{[^}]*\}", "", rest)  # namespaces of names in the rest
    field = found[-1][2] if found else ""
    reason = f"{names}: {rest}" if names else rest
    return SchemaProblem(line, field, reason)


def schema_problems(schema: etree.XMLSchema, element: Any) -> list[SchemaProblem]:
    """Validate one element (and its subtree) against ``schema``; [] when valid."""
    if schema.validate(element):
        return []
    line = element.sourceline or 0
    return [_problem(str(e.message), e.line or line) for e in schema.error_log]
