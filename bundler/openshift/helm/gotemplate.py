"""Go `text/template` source → a syntax tree: the lexer and the parser of the subset Helm charts use.

Owns the grammar (https://pkg.go.dev/text/template): text and actions ``{{ }}`` with the trim markers
``{{-`` / ``-}}``, comments ``{{/* */}}``, pipelines (``|``) of commands whose operands are fields
(``.A.B``), variables (``$``, ``$x.A``), function names, literals (strings, raw strings, characters,
numbers, booleans, ``nil``) and parenthesised pipelines; variable declaration and assignment (``:=``,
``=``); ``if``/``else if``/``else``, ``range`` (with ``$i, $v :=``, ``break``, ``continue``), ``with``
(and ``else with``), ``define``, ``template``, ``block``, ``end``. Evaluation is `goeval`.

Anything outside the grammar raises `TemplateSyntaxError`; a function the evaluator does not know is
caught at parse time (`Parser(known_functions=...)`) and raises `TemplateUnsupportedError`, so a chart is
never rendered half-understood.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union


class TemplateError(Exception):
    """A template that cannot be parsed or executed; `where` is ``file:line``."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class TemplateSyntaxError(TemplateError):
    pass


class TemplateUnsupportedError(TemplateError):
    """A construct of Go templates or of Helm/sprig that this evaluator does not implement."""


# -- syntax tree ------------------------------------------------------------------------------------


@dataclass
class Node:
    line: int


@dataclass
class Literal(Node):
    value: Any


@dataclass
class FieldNode(Node):
    """``.A.B`` on dot (empty names: dot itself)."""

    names: Tuple[str, ...]


@dataclass
class VariableNode(Node):
    name: str  # "$" or "$x"
    names: Tuple[str, ...] = ()


@dataclass
class IdentNode(Node):
    name: str


@dataclass
class ChainNode(Node):
    """``(pipeline).A.B``."""

    operand: "Operand"
    names: Tuple[str, ...]


@dataclass
class Command(Node):
    args: List["Operand"]


@dataclass
class Pipeline(Node):
    decl: Tuple[str, ...] = ()
    assign: bool = False  # `=` rather than `:=`
    commands: List[Command] = field(default_factory=list)


Operand = Union[Literal, FieldNode, VariableNode, IdentNode, ChainNode, Pipeline]


@dataclass
class Text(Node):
    text: str


@dataclass
class Action(Node):
    pipe: Pipeline


@dataclass
class If(Node):
    pipe: Pipeline
    body: List[Node]
    otherwise: List[Node]


@dataclass
class With(Node):
    pipe: Pipeline
    body: List[Node]
    otherwise: List[Node]


@dataclass
class Range(Node):
    pipe: Pipeline
    body: List[Node]
    otherwise: List[Node]


@dataclass
class TemplateCall(Node):
    name: str
    pipe: Optional[Pipeline]


@dataclass
class Break(Node):
    pass


@dataclass
class Continue(Node):
    pass


# -- lexer ------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<raw>`[^`]*`)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<char>'(?:[^'\\\n]|\\.[^']*)')
  | (?P<declare>:=)
  | (?P<punct>[()|,=])
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<variable>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<number>[+-]?(?:0[xX][0-9a-fA-F_]+|0[oO]?[0-7_]+|0[bB][01_]+|(?:\d[\d_]*)?\.?\d[\d_]*(?:[eE][+-]?\d+)?))
  | (?P<dot>\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    """,
    re.VERBOSE,
)
_GO_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


def _unquote(text: str) -> str:
    body = text[1:-1]
    out: List[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[nxt]
            out.append(chr(int(body[i + 2:i + 2 + width], 16)))
            i += 2 + width
        elif nxt in _GO_ESCAPES:
            out.append(_GO_ESCAPES[nxt])
            i += 2
        else:
            raise ValueError(f"unknown escape \\{nxt}")
    return "".join(out)


def _number(text: str) -> Union[int, float]:
    clean = text.replace("_", "")
    try:
        return int(clean, 0)
    except ValueError:
        pass
    if re.fullmatch(r"[+-]?0[0-7]+", clean):
        return int(clean, 8)
    return float(clean)


@dataclass
class Token:
    kind: str
    text: str
    spaced: bool = False  # whitespace before it: `(x).F` is a field of x, `(x) .F` another operand


def _tokens(source: str, where: str) -> List[Token]:
    out: List[Token] = []
    pos = 0
    spaced = False
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            raise TemplateSyntaxError(f"unexpected {source[pos:pos + 10]!r} in action", where)
        kind = m.lastgroup or ""
        if kind != "space":
            out.append(Token(kind, m.group(), spaced))
        spaced = kind == "space"
        pos = m.end()
    return out


# -- splitting text and actions ---------------------------------------------------------------------


def _split(source: str, name: str) -> List[Tuple[str, str, int]]:
    """[(kind 'text'|'action', content, line)], trim markers applied, comments dropped."""
    parts: List[Tuple[str, str, int]] = []
    pos = 0
    line = 1
    trim_next = False
    while True:
        start = source.find("{{", pos)
        text = source[pos:] if start < 0 else source[pos:start]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        trim_next = False
        if start < 0:
            if text:
                parts.append(("text", text, line))
            return parts
        inner_start = start + 2
        if source.startswith("- ", inner_start) or source.startswith("-\t", inner_start) or source.startswith("-\n", inner_start) or source.startswith("-\r", inner_start):
            text = text.rstrip(" \t\r\n")
            inner_start += 1
        if text:
            parts.append(("text", text, line))
        line += source.count("\n", pos, start)
        end = _action_end(source, inner_start, f"{name}:{line}")
        inner = source[inner_start:end]
        close = end + 2
        if inner.endswith(" -") or inner.endswith("\t-") or inner.endswith("\n-") or inner.endswith("\r-"):
            inner = inner[:-1]
            trim_next = True
        stripped = inner.strip()
        if stripped.startswith("/*"):
            if not stripped.endswith("*/"):
                raise TemplateSyntaxError("unclosed comment", f"{name}:{line}")
        else:
            parts.append(("action", inner, line))
        line += source.count("\n", start, close)
        pos = close


def _action_end(source: str, pos: int, where: str) -> int:
    """Index of the ``}}`` closing the action that starts at `pos` (quotes and comments skipped)."""
    i = pos
    n = len(source)
    while i < n:
        c = source[i]
        if source.startswith("/*", i):
            j = source.find("*/", i + 2)
            if j < 0:
                raise TemplateSyntaxError("unclosed comment", where)
            i = j + 2
            continue
        if c in "\"'`":
            j = i + 1
            while j < n and source[j] != c:
                if source[j] == "\\" and c != "`":
                    j += 1
                elif source[j] == "\n" and c != "`":
                    raise TemplateSyntaxError("unterminated quoted string", where)
                j += 1
            i = j + 1
            continue
        if source.startswith("}}", i):
            return i
        i += 1
    raise TemplateSyntaxError("unclosed action", where)


# -- parser -----------------------------------------------------------------------------------------


class Parser:
    """Parse one template file into its main body and the templates it `define`s."""

    def __init__(self, name: str, source: str, *, known_functions: Callable[[str], bool]) -> None:
        self.name = name
        self.known = known_functions
        self.parts = _split(source, name)
        self.index = 0
        self.defines: Dict[str, List[Node]] = {}
        self._pending: List[Token] = []

    def where(self, line: int) -> str:
        return f"{self.name}:{line}"

    def parse(self) -> Tuple[List[Node], Dict[str, List[Node]]]:
        body, stop, line = self._list()
        if stop is not None:
            raise TemplateSyntaxError(f"unexpected {{{{{stop}}}}}", self.where(line))
        return body, self.defines

    def _list(self) -> Tuple[List[Node], Optional[str], int]:
        """Nodes up to an `end`/`else` (returned as the stop keyword with its remaining tokens' text)."""
        nodes: List[Node] = []
        while self.index < len(self.parts):
            kind, content, line = self.parts[self.index]
            self.index += 1
            if kind == "text":
                nodes.append(Text(line, content))
                continue
            tokens = _tokens(content, self.where(line))
            if not tokens:
                raise TemplateSyntaxError("missing value for command", self.where(line))
            head = tokens[0]
            word = head.text if head.kind == "ident" else ""
            if word in ("end", "else"):
                self._pending = tokens[1:]
                return nodes, word, line
            nodes.append(self._action(word, tokens, line))
        return nodes, None, 0

    def _action(self, word: str, tokens: List[Token], line: int) -> Node:
        where = self.where(line)
        if word == "if":
            return self._conditional(If, tokens[1:], line)
        if word == "with":
            return self._conditional(With, tokens[1:], line)
        if word == "range":
            pipe = self._pipeline(tokens[1:], line, allow_decl=True)
            body, otherwise = self._body_else("range", line, allow_chain=False)
            return Range(line, pipe, body, otherwise)
        if word in ("define", "block"):
            if len(tokens) < 2 or tokens[1].kind not in ("string", "raw"):
                raise TemplateSyntaxError(f"{word} needs a quoted template name", where)
            tname = _unquote(tokens[1].text)
            block_pipe = self._pipeline(tokens[2:], line) if word == "block" else None
            if word == "define" and len(tokens) > 2:
                raise TemplateSyntaxError("unexpected tokens after define name", where)
            body, stop, _ = self._list()
            if stop != "end" or self._pending:
                raise TemplateSyntaxError(f"{word} {tname!r} is not closed by {{{{end}}}}", where)
            self.defines[tname] = body
            return TemplateCall(line, tname, block_pipe) if word == "block" else Text(line, "")
        if word == "template":
            if len(tokens) < 2 or tokens[1].kind not in ("string", "raw"):
                raise TemplateSyntaxError("template needs a quoted template name", where)
            call_pipe = self._pipeline(tokens[2:], line) if len(tokens) > 2 else None
            return TemplateCall(line, _unquote(tokens[1].text), call_pipe)
        if word == "break":
            return Break(line)
        if word == "continue":
            return Continue(line)
        return Action(line, self._pipeline(tokens, line, allow_decl=True))

    def _conditional(self, kind: Any, tokens: List[Token], line: int) -> Node:
        pipe = self._pipeline(tokens, line, allow_decl=True)
        word = "if" if kind is If else "with"
        body, otherwise = self._body_else(word, line, allow_chain=True)
        node: Node = kind(line, pipe, body, otherwise)
        return node

    def _body_else(self, word: str, line: int, *, allow_chain: bool) -> Tuple[List[Node], List[Node]]:
        body, stop, stop_line = self._list()
        if stop is None:
            raise TemplateSyntaxError(f"{word} is not closed by {{{{end}}}}", self.where(line))
        if stop == "end":
            return body, []
        rest = self._pending
        if rest:
            chained = rest[0].text if rest[0].kind == "ident" else ""
            if not allow_chain or chained not in ("if", "with"):
                raise TemplateSyntaxError(f"unexpected {rest[0].text!r} after else", self.where(stop_line))
            # `else if` / `else with`: a nested conditional sharing this one's `end`
            return body, [self._conditional(If if chained == "if" else With, rest[1:], stop_line)]
        otherwise, stop2, _ = self._list()
        if stop2 != "end" or self._pending:
            raise TemplateSyntaxError(f"{word} ... else is not closed by {{{{end}}}}", self.where(line))
        return body, otherwise

    # -- pipelines --

    def _pipeline(self, tokens: List[Token], line: int, *, allow_decl: bool = False) -> Pipeline:
        where = self.where(line)
        pipe = Pipeline(line)
        toks = list(tokens)
        if allow_decl and toks and toks[0].kind == "variable" and "." not in toks[0].text:
            # `$x :=`, `$x =`, `$i, $v :=`
            if len(toks) > 1 and (toks[1].kind == "declare" or toks[1].text == "="):
                pipe.decl = (toks[0].text,)
                pipe.assign = toks[1].text == "="
                toks = toks[2:]
            elif len(toks) > 3 and toks[1].text == "," and toks[2].kind == "variable" and toks[3].kind == "declare":
                pipe.decl = (toks[0].text, toks[2].text)
                toks = toks[4:]
        if not toks:
            raise TemplateSyntaxError("missing value for command", where)
        pos = 0
        command: List[Operand] = []
        while pos < len(toks):
            tok = toks[pos]
            if tok.text == "|" and tok.kind == "punct":
                if not command:
                    raise TemplateSyntaxError("missing command before |", where)
                pipe.commands.append(Command(line, command))
                command = []
                pos += 1
                continue
            operand, pos = self._operand(toks, pos, line)
            command.append(operand)
        if not command:
            raise TemplateSyntaxError("missing command after |", where)
        pipe.commands.append(Command(line, command))
        for cmd in pipe.commands:
            first = cmd.args[0]
            if isinstance(first, Literal) and len(cmd.args) > 1:
                raise TemplateSyntaxError(f"can't give argument to non-function {first.value!r}", where)
        return pipe

    def _operand(self, toks: List[Token], pos: int, line: int) -> Tuple[Operand, int]:
        where = self.where(line)
        tok = toks[pos]
        kind = tok.kind
        if kind == "punct" and tok.text == "(":
            depth = 0
            end = pos
            while end < len(toks):
                if toks[end].text == "(" and toks[end].kind == "punct":
                    depth += 1
                elif toks[end].text == ")" and toks[end].kind == "punct":
                    depth -= 1
                    if depth == 0:
                        break
                end += 1
            if end >= len(toks):
                raise TemplateSyntaxError("unclosed left paren", where)
            inner = self._pipeline(toks[pos + 1:end], line, allow_decl=True)
            pos = end + 1
            if pos < len(toks) and toks[pos].kind == "field" and not toks[pos].spaced:
                names = tuple(toks[pos].text.split(".")[1:])
                return ChainNode(line, inner, names), pos + 1
            return inner, pos
        if kind == "field":
            return FieldNode(line, tuple(tok.text.split(".")[1:])), pos + 1
        if kind == "dot":
            return FieldNode(line, ()), pos + 1
        if kind == "variable":
            head, *rest = tok.text.split(".")
            return VariableNode(line, head, tuple(rest)), pos + 1
        if kind in ("string", "raw"):
            try:
                value = _unquote(tok.text) if kind == "string" else tok.text[1:-1]
            except (ValueError, IndexError) as exc:
                raise TemplateSyntaxError(f"bad string {tok.text}: {exc}", where) from None
            return Literal(line, value), pos + 1
        if kind == "char":
            return Literal(line, ord(_unquote(tok.text))), pos + 1
        if kind == "number":
            try:
                return Literal(line, _number(tok.text)), pos + 1
            except ValueError:
                raise TemplateSyntaxError(f"bad number syntax: {tok.text!r}", where) from None
        if kind == "ident":
            if tok.text in ("true", "false"):
                return Literal(line, tok.text == "true"), pos + 1
            if tok.text == "nil":
                return Literal(line, None), pos + 1
            if "." in tok.text:
                raise TemplateSyntaxError(f"unexpected {tok.text!r}", where)
            if not self.known(tok.text):
                raise TemplateUnsupportedError(f"function {tok.text!r}", where)
            return IdentNode(line, tok.text), pos + 1
        raise TemplateSyntaxError(f"unexpected {tok.text!r} in operand", where)


def parse(name: str, source: str, *, known_functions: Callable[[str], bool]) -> Tuple[List[Node], Dict[str, List[Node]]]:
    """(main body, defined templates) of the template file `name`."""
    return Parser(name, source, known_functions=known_functions).parse()
