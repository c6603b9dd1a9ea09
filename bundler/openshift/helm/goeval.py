"""Executing parsed Go templates (`gotemplate`) over Helm's data: the evaluator.

Owns Go's evaluation rules as Helm uses them: truth (`false`, 0, nil, empty string/list/map are false),
field access on maps (a missing key is nil, printed as nothing, as Helm's ``missingkey=zero`` plus its
``<no value>`` clean-up give; a field of such a nil is an error, a field of a nil out of a parenthesised
pipeline or a variable is nil, both as in Go), method values (callables reached
through a field chain, e.g. ``.Files.Get``, ``.Capabilities.APIVersions.Has``), pipelines (the previous
command's result becomes the last argument), variables and their scopes, ``range`` over lists, maps (sorted
keys) and integers, ``break``/``continue``, ``with``, named templates (``template``, ``include``, ``tpl``)
with a depth bound, and Go's way of printing values (`go_str`: YAML numbers are float64 in Helm, so
``1.10`` prints ``1.1`` and ``1000000`` prints ``1e+06``). The function table is `gofuncs`.
"""

from __future__ import annotations

import decimal
from typing import Any, Callable, Dict, List, Optional, Tuple

from bundler.openshift.helm.gotemplate import (
    Action,
    Break,
    ChainNode,
    Command,
    Continue,
    FieldNode,
    IdentNode,
    If,
    Literal,
    Node,
    Pipeline,
    Range,
    TemplateCall,
    TemplateError,
    TemplateUnsupportedError,
    Text,
    VariableNode,
    With,
    parse,
)

MAX_DEPTH = 100


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def go_float(value: float, *, exponent_from: int = 6) -> str:
    """`fmt.Sprint(float64)`: the shortest digits, in %e form when the exponent is < -4 or >= 6, as Go's %v
    (encoding/json switches at 21: `exponent_from=21`)."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign, digit_tuple, exp = decimal.Decimal(repr(value)).as_tuple()
    digits = "".join(str(d) for d in digit_tuple).lstrip("0")
    assert isinstance(exp, int)
    exponent = len(digits) - 1 + exp
    trimmed = digits.rstrip("0") or "0"
    minus = "-" if sign else ""
    if exponent < -4 or exponent >= exponent_from:
        body = trimmed[0] + ("." + trimmed[1:] if len(trimmed) > 1 else "")
        return f"{minus}{body}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if exponent >= len(trimmed) - 1:
        return minus + trimmed + "0" * (exponent - len(trimmed) + 1)
    if exponent >= 0:
        return f"{minus}{trimmed[:exponent + 1]}.{trimmed[exponent + 1:]}"
    return f"{minus}0.{'0' * (-exponent - 1)}{trimmed}"


def go_str(value: Any, *, nested: bool = False) -> str:
    """How Go's fmt prints a template value (`%v`). YAML numbers are float64 in Helm: `1.10` prints `1.1`, `1000000` prints `1e+06`."""
    if value is None:
        return "<nil>" if nested else ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, GoObject):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return "[" + " ".join(str(b) for b in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{go_str(k, nested=True)}:{go_str(v, nested=True)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_str(v, nested=True) for v in value) + "]"
    return str(value)


def truth(value: Any) -> bool:
    """Go's `template.IsTrue`."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, (str, bytes, list, tuple, dict)):
        return len(value) > 0
    return True


def type_name(value: Any) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, (list, tuple)):
        return "[]interface {}"
    return type(value).__name__


Function = Callable[..., Any]


class GoObject:
    """A Go struct as templates see it (`.Files`, `.Capabilities.KubeVersion`): fields and methods by name,
    how it prints, what `range` visits."""

    def go_field(self, name: str) -> Any:
        raise KeyError(name)

    def go_items(self) -> List[Tuple[Any, Any]]:
        raise TypeError("not iterable")


class TemplateSet:
    """Every template of a chart (files and `define`s: one namespace, as in Helm) and the functions.

    `functions` maps names to callables taking evaluated arguments; `special` names take the evaluator first
    (`include`, `tpl`, `required`, …)."""

    def __init__(self, functions: Dict[str, Function], special: Dict[str, Function]) -> None:
        self.functions = functions
        self.special = special
        self.templates: Dict[str, Tuple[List[Node], str]] = {}

    def known(self, name: str) -> bool:
        return name in self.functions or name in self.special or name in ("and", "or")

    def add_file(self, name: str, source: str) -> None:
        body, defines = parse(name, source, known_functions=self.known)
        self.templates[name] = (body, name)
        for dname, dbody in defines.items():
            self.templates[dname] = (dbody, name)

    def execute(self, name: str, data: Any) -> str:
        if name not in self.templates:
            raise TemplateError(f'no template "{name}"')
        body, file = self.templates[name]
        ev = Evaluator(self, file, data)
        ev.run(body, data)
        return "".join(ev.out)

    def render_string(self, source: str, data: Any, *, name: str, depth: int) -> str:
        """`tpl`: parse `source` as a template (its `define`s join the set) and execute it on `data`."""
        body, defines = parse(name, source, known_functions=self.known)
        for dname, dbody in defines.items():
            self.templates[dname] = (dbody, name)
        ev = Evaluator(self, name, data, depth=depth)
        ev.run(body, data)
        return "".join(ev.out)


class Evaluator:
    def __init__(self, tset: TemplateSet, file: str, root: Any, *, depth: int = 0) -> None:
        self.tset = tset
        self.file = file
        self.out: List[str] = []
        self.vars: List[Tuple[str, Any]] = [("$", root)]
        self.depth = depth
        self.line = 0

    def fail(self, message: str) -> TemplateError:
        return TemplateError(message, f"{self.file}:{self.line}")

    def unsupported(self, message: str) -> TemplateUnsupportedError:
        return TemplateUnsupportedError(message, f"{self.file}:{self.line}")

    # -- statements --

    def run(self, nodes: List[Node], dot: Any) -> None:
        for node in nodes:
            self.line = node.line
            if isinstance(node, Text):
                self.out.append(node.text)
            elif isinstance(node, Action):
                value = self.pipeline(node.pipe, dot)
                if not node.pipe.decl:
                    self.out.append(go_str(value))
            elif isinstance(node, If):
                mark = len(self.vars)
                if truth(self.pipeline(node.pipe, dot)):
                    self.run(node.body, dot)
                else:
                    self.run(node.otherwise, dot)
                del self.vars[mark:]
            elif isinstance(node, With):
                mark = len(self.vars)
                value = self.pipeline(node.pipe, dot)
                if truth(value):
                    self.run(node.body, value)
                else:
                    self.run(node.otherwise, dot)
                del self.vars[mark:]
            elif isinstance(node, Range):
                self.range(node, dot)
            elif isinstance(node, TemplateCall):
                data = self.pipeline(node.pipe, dot) if node.pipe is not None else None
                self.out.append(self.call_template(node.name, data))
            elif isinstance(node, Break):
                raise _Break()
            elif isinstance(node, Continue):
                raise _Continue()
            else:  # pragma: no cover - the parser makes no other nodes
                raise self.unsupported(f"node {type(node).__name__}")

    def range(self, node: Range, dot: Any) -> None:
        mark = len(self.vars)
        value = self.pipeline(node.pipe, dot, declare=False)
        items: List[Tuple[Any, Any]]
        if value is None:
            items = []
        elif isinstance(value, dict):
            items = [(k, value[k]) for k in sorted(value, key=str)]
        elif isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            items = [(i, i) for i in range(value)]
        elif isinstance(value, GoObject):
            try:
                items = value.go_items()
            except TypeError:
                raise self.fail(f"range can't iterate over {go_str(value)}") from None
        else:
            raise self.fail(f"range can't iterate over {go_str(value)}")
        if not items:
            del self.vars[mark:]
            self.run(node.otherwise, dot)
            return
        decl = node.pipe.decl
        for key, elem in items:
            inner = len(self.vars)
            if len(decl) == 1:
                self.vars.append((decl[0], elem))
            elif len(decl) == 2:
                self.vars.append((decl[0], key))
                self.vars.append((decl[1], elem))
            try:
                self.run(node.body, elem)
            except _Continue:
                pass
            except _Break:
                del self.vars[inner:]
                break
            del self.vars[inner:]
        del self.vars[mark:]

    def call_template(self, name: str, data: Any) -> str:
        if self.depth >= MAX_DEPTH:
            raise self.fail(f"template {name!r}: nested too deeply (over {MAX_DEPTH} levels)")
        if name not in self.tset.templates:
            raise self.fail(f'no template "{name}" associated with template')
        body, file = self.tset.templates[name]
        ev = Evaluator(self.tset, file, data, depth=self.depth + 1)
        ev.run(body, data)
        return "".join(ev.out)

    # -- expressions --

    def pipeline(self, pipe: Pipeline, dot: Any, *, declare: bool = True) -> Any:
        value: Any = None
        first = True
        for cmd in pipe.commands:
            value = self.command(cmd, dot, None if first else (value,))
            first = False
        if pipe.decl and declare:
            if pipe.assign:
                for i in range(len(self.vars) - 1, -1, -1):
                    if self.vars[i][0] == pipe.decl[0]:
                        self.vars[i] = (pipe.decl[0], value)
                        break
                else:
                    raise self.fail(f"undefined variable: {pipe.decl[0]}")
            else:
                self.vars.append((pipe.decl[-1], value))
        return value

    def command(self, cmd: Command, dot: Any, piped: Optional[Tuple[Any]]) -> Any:
        head = cmd.args[0]
        if isinstance(head, IdentNode):
            return self.call(head.name, cmd.args[1:], dot, piped)
        if isinstance(head, (FieldNode, VariableNode, ChainNode)):
            return self.operand(head, dot, args=cmd.args[1:], piped=piped, final=True)
        if piped is not None or len(cmd.args) > 1:
            raise self.fail(f"can't give argument to non-function {go_str(self.operand(head, dot))}")
        return self.operand(head, dot)

    def call(self, name: str, arg_nodes: List[Any], dot: Any, piped: Optional[Tuple[Any]]) -> Any:
        if name in ("and", "or"):
            nodes: List[Any] = list(arg_nodes)
            if not nodes and piped is None:
                raise self.fail(f"{name}: wrong number of args: want at least 1 got 0")
            value: Any = None
            for n in nodes:
                value = self.operand(n, dot)
                if truth(value) != (name == "and"):
                    return value
            if piped is not None:
                value = piped[0]
            return value
        args = [self.operand(n, dot) for n in arg_nodes]
        if piped is not None:
            args.append(piped[0])
        special = self.tset.special.get(name)
        try:
            if special is not None:
                return special(self, *args)
            return self.tset.functions[name](*args)
        except TemplateError:
            raise
        except TypeError as exc:
            raise self.fail(f"error calling {name}: wrong arguments ({exc})") from None
        except (ValueError, KeyError, IndexError, ArithmeticError, AttributeError) as exc:
            raise self.fail(f"error calling {name}: {exc}") from None

    def operand(self, node: Any, dot: Any, *, args: Optional[List[Any]] = None, piped: Optional[Tuple[Any]] = None, final: bool = False) -> Any:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Pipeline):
            mark = len(self.vars)
            value = self.pipeline(node, dot)
            del self.vars[mark:]
            return value
        if isinstance(node, IdentNode):
            return self.call(node.name, [], dot, None)
        if isinstance(node, FieldNode):
            base, names = dot, node.names
        elif isinstance(node, VariableNode):
            base, names = self.variable(node.name), node.names
        elif isinstance(node, ChainNode):
            base, names = self.operand(node.operand, dot), node.names
        else:  # pragma: no cover
            raise self.unsupported(f"operand {type(node).__name__}")
        call_args = [self.operand(a, dot) for a in (args or [])]
        if piped is not None:
            call_args.append(piped[0])
        value = base
        called = False
        # Go: a nil that comes out of a pipeline or a variable is an invalid value, and a field of it is
        # nil again (the `((.Values).global).x` idiom); a map's missing key is a nil interface, and a field
        # of that is an error ("nil pointer evaluating interface {}.x").
        invalid = base is None
        for i, name in enumerate(names):
            if value is None and invalid:
                continue
            value = self.field(value, name)
            invalid = False
            if callable(value):
                last = i == len(names) - 1
                called = last
                value = value(*call_args) if last and final else value()
        if call_args and not called:
            raise self.fail(f"can't give argument to non-function {'.' + '.'.join(names) if names else '.'}")
        return value

    def field(self, value: Any, name: str) -> Any:
        if isinstance(value, dict):
            return value.get(name)
        if isinstance(value, GoObject):
            try:
                return value.go_field(name)
            except KeyError:
                raise self.fail(f"can't evaluate field {name} in type {type(value).__name__}") from None
        if value is None:
            raise self.fail(f"nil pointer evaluating interface {{}}.{name}")
        raise self.fail(f"can't evaluate field {name} in type {type_name(value)}")

    def variable(self, name: str) -> Any:
        for var, value in reversed(self.vars):
            if var == name:
                return value
        raise self.fail(f"undefined variable: {name}")
