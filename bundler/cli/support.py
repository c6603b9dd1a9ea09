"""What every command shares: logging set-up, error → exit code mapping, progress rendering, output.

Only the CLI imports this module (it uses click and tqdm; the library below never does).

Output rules: every warning line on stderr starts with `warning: ` (logged by the library or printed by a
command, each message once); with `--json`, a failure still prints one JSON document on stdout,
`{"error": {"code", "message", "hint"}}`, unless the command already printed its report; lines printed while
a progress bar is drawn go above it, and a bar is cleared when it closes, before the final lines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Tuple, Type, TypeVar

import click
from urllib3.exceptions import InsecureRequestWarning

from bundler.base.errors import BundlerError, ExitCode
from bundler.base.units import human_bytes as human_bytes  # re-exported for the command modules
from bundler.registry.http import DEFAULT_RETRY_TIMES, DEFAULT_TIMEOUT, redact_text

T = TypeVar("T")
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}
log = logging.getLogger("bundler")


def debug_log_path() -> Path:
    env = os.environ.get("OCPB_DEBUG_LOG")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ocp-bundler" / "debug.log"


#: Warning messages already printed by this command (a message is printed once, logged or echoed).
_WARNED: "set[str]" = set()
_WARNED_LOCK = threading.Lock()


def _first_time(message: str) -> bool:
    with _WARNED_LOCK:
        if message in _WARNED:
            return False
        _WARNED.add(message)
        return True


def warn(message: str) -> None:
    """Print a warning line (`warning: …`) on stderr, unless the same warning was already printed."""
    if _first_time(message):
        _write_stderr(f"warning: {message}")


def _write_stderr(line: str) -> None:
    """One line on stderr; above the progress bar when one is drawn, so neither ends up half-drawn."""
    if CliProgress.active_bars():
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
    else:
        click.echo(line, err=True)


class _ConsoleFormatter(logging.Formatter):
    """`warning: ` and `error: ` prefixes on every such record; `-v` adds level and logger to the others."""

    def __init__(self, verbose: int) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.ERROR:
            return "error: " + super().format(record)
        if record.levelno >= logging.WARNING:
            return "warning: " + record.getMessage()
        return super().format(record)


class _ConsoleHandler(logging.Handler):
    """Writes records to stderr through `_write_stderr`; a warning printed before is not printed again."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno == logging.WARNING and not _first_time(record.getMessage()):
                return
            _write_stderr(self.format(record))
        except Exception:  # logging must never break the command
            self.handleError(record)


class RedactingFilter(logging.Filter):
    """Removes query strings and URL credentials from every record before any handler writes it
    (urllib3's own debug lines carry whole request lines: upload `_state`, pre-signed `X-Amz-Signature`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is logged as it is
            return True
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def setup_logging(verbose: int) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for h in list(root.handlers):
        root.removeHandler(h)
    with _WARNED_LOCK:
        _WARNED.clear()
    console = _ConsoleHandler()
    console.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING)
    console.setFormatter(_ConsoleFormatter(verbose))
    console.addFilter(RedactingFilter())
    root.addHandler(console)
    try:
        path = debug_log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(path)
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(levelname)s %(name)s: %(message)s"))
        fh.addFilter(RedactingFilter())
        root.addHandler(fh)
    except OSError:
        pass
    # urllib3's own lines ("Connection pool is full, discarding connection", retries) are not for users:
    # our messages say what failed. -vvv shows them, redacted like everything else.
    logging.getLogger("urllib3").setLevel(logging.ERROR if verbose < 3 else logging.DEBUG)
    # --insecure-registry already says TLS is not verified for that host; no warning per request.
    warnings.filterwarnings("ignore", category=InsecureRequestWarning)


_JSON_PRINTED = threading.Event()


def _json_error(as_json: bool, code: ExitCode, message: str, hint: Optional[str]) -> None:
    """With --json and nothing printed on stdout yet: the failure as a JSON document."""
    if as_json and not _JSON_PRINTED.is_set():
        with contextlib.suppress(OSError):
            emit_json({"error": {"code": int(code), "message": message, "hint": hint}})


def run_command(verbose: int, fn: Callable[[], T], *, as_json: bool = False) -> T:
    """Run a command body: BundlerError → one line on stderr and its exit code; a bug → exit 1. With
    `as_json`, a failure is also a JSON document on stdout (see the module docstring)."""
    _JSON_PRINTED.clear()
    try:
        return fn()
    except BundlerError as exc:
        logging.getLogger("bundler").debug("command failed", exc_info=True)
        if verbose:
            traceback.print_exc(file=sys.stderr)
        click.echo(f"error: {exc}", err=True)
        _json_error(as_json, exc.exit_code, exc.message, exc.hint)
        sys.exit(int(exc.exit_code))
    except BrokenPipeError:  # output piped into `head` and the reader left: not an error
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        sys.exit(0)
    except KeyboardInterrupt:
        click.echo("interrupted: rerun the same command to resume", err=True)
        sys.exit(130)
    except click.exceptions.Exit:
        raise
    except click.ClickException:
        raise
    except OSError as exc:
        logging.getLogger("bundler").debug("OS error", exc_info=True)
        if verbose:
            traceback.print_exc(file=sys.stderr)
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        click.echo(f"error: {exc.strerror or exc}{where}", err=True)
        _json_error(as_json, ExitCode.USAGE, f"{exc.strerror or exc}{where}", None)
        sys.exit(int(ExitCode.USAGE))
    except Exception as exc:  # a bug: keep the traceback in the debug log, one line for the user
        logging.getLogger("bundler").debug("internal error", exc_info=True)  # the debug log only
        if verbose:
            traceback.print_exc(file=sys.stderr)
        click.echo(f"internal error: {type(exc).__name__}: {exc} (details in {debug_log_path()})", err=True)
        _json_error(as_json, ExitCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}", f"details in {debug_log_path()}")
        sys.exit(int(ExitCode.INTERNAL))


def command_body(fn: Callable[..., None]) -> Callable[..., None]:
    """Run a click command function the way every command runs: logging set up from its `verbose` flag,
    then its body under `run_command` (errors → one line and an exit code). Put it right above the `def`."""

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> None:
        verbose = int(kwargs.get("verbose") or 0)
        setup_logging(verbose)
        run_command(verbose, lambda: fn(**kwargs), as_json=bool(kwargs.get("as_json")))

    return wrapper


def option_group(name: str, cls: Type[Any], *options: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add `options` (click option decorators, in help order) to a command and hand their values to it as one
    dataclass `cls` in the keyword argument `name` (the dataclass's fields are the options' parameter names)."""
    fields = [f.name for f in dataclasses.fields(cls)]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            kwargs[name] = cls(**{field: kwargs.pop(field) for field in fields})
            return fn(**kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


def emit_json(obj: Any) -> None:
    _JSON_PRINTED.set()
    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=str))


class CliProgress:
    """A `Progress` drawn with tqdm on a TTY, or as a plain line every few seconds otherwise."""

    _active: "set[CliProgress]" = set()
    _active_lock = threading.Lock()

    @classmethod
    def active_bars(cls) -> bool:
        with cls._active_lock:
            return bool(cls._active)

    def __init__(self, label: str, *, enabled: bool = True, interval: float = 5.0) -> None:
        self.label = label
        self.enabled = enabled
        self.total = 0
        self.done = 0
        self.items = 0
        self.items_total = 0
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._interval = interval
        self._bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr, leave=False)
            with CliProgress._active_lock:
                CliProgress._active.add(self)

    def add_total(self, nbytes: int) -> None:
        with self._lock:
            self.total += nbytes
            if self._bar is not None:
                self._bar.total = self.total
                self._bar.refresh()

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self.done += nbytes
            if self._bar is not None:
                self._bar.update(nbytes)
            elif self.enabled:
                self._maybe_line()

    def item_done(self, name: str, status: str) -> None:
        with self._lock:
            self.items += 1
            if self._bar is not None:
                self._bar.set_postfix_str(self._items_text(), refresh=False)
            elif self.enabled:
                self._maybe_line()

    def add_items(self, count: int) -> None:
        with self._lock:
            self.items_total += count

    def _items_text(self) -> str:
        return f"{self.items} of {self.items_total} images" if self.items_total else f"{self.items} items done"

    def _maybe_line(self) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            click.echo(f"{self.label}: {human_bytes(self.done)} of {human_bytes(self.total)}, {self._items_text()}", err=True)

    def close(self) -> None:
        """Clear the bar (idempotent): whatever is printed next starts on a clean line."""
        with CliProgress._active_lock:
            CliProgress._active.discard(self)
        with self._lock:
            bar, self._bar = self._bar, None
        if bar is not None:
            bar.close()


def registry_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Flags every command that talks to registries shares."""
    fn = click.option(
        "--retry-times",
        type=click.IntRange(0, 20),
        default=DEFAULT_RETRY_TIMES,
        show_default=True,
        help="Retries of a request after connection errors, stalls, HTTP 429 and 5xx (with backoff).",
    )(fn)
    fn = click.option(
        "--timeout",
        type=click.FloatRange(1, 3600),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        metavar="SECONDS",
        help="Per attempt: a transfer moving under 1 KiB in this time is stalled; manifests and tokens must arrive in full within it.",
    )(fn)
    fn = click.option("--workers", type=click.IntRange(1, 64), default=8, show_default=True, help="Parallel blob transfers.")(fn)
    fn = click.option(
        "--insecure-registry",
        "insecure",
        multiple=True,
        metavar="HOST[:PORT]",
        help="Use plain HTTP or unverified TLS for this host only (repeatable). TLS is verified everywhere else.",
    )(fn)
    fn = click.option(
        "--proxy",
        metavar="URL",
        help="HTTP(S) proxy for every registry, instead of $HTTPS_PROXY / $HTTP_PROXY ($NO_PROXY still applies).",
    )(fn)
    fn = click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Extra CA certificate(s) to trust (PEM).")(fn)
    fn = click.option(
        "--authfile",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Auth file or OpenShift pull secret. Default: $REGISTRY_AUTH_FILE, then podman's and docker's auth files.",
    )(fn)
    return fn


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(fn)
    fn = click.option("-v", "--verbose", count=True, help="More detail on stderr (-vv for debug); tracebacks on errors.")(fn)
    return fn


def make_transport(
    ca_file: Optional[Path], insecure: Tuple[str, ...], workers: int, timeout: float, retry_times: int, *, proxy: Optional[str] = None, conf: Any = None
) -> Any:
    """The `TransportOptions` of the shared registry flags and of the host's conventions: the proxy
    environment, the hosts registries.conf marks insecure, CA files and client certificates in certs.d."""
    from dataclasses import replace

    from bundler.registry.certsd import CertsD
    from bundler.registry.http import TransportOptions
    from bundler.registry.proxy import ProxySettings
    from bundler.registry.registries_conf import RegistriesConf
    from bundler.registry.tls import TlsPolicy

    conf = conf if conf is not None else RegistriesConf.load()
    host_ca_files, client_certs = CertsD().scan()
    tls = TlsPolicy.from_options(insecure=tuple(insecure) + tuple(sorted(conf.insecure_hosts())), ca_file=ca_file)
    return TransportOptions(
        tls=replace(tls, host_ca_files=host_ca_files, client_certs=client_certs),
        read_timeout=timeout,
        max_attempts=retry_times + 1,
        pool_size=min(128, max(64, workers * 8)),  # pack streams 4 blobs per worker at once, small items and look-ups beside them
        proxies=ProxySettings.from_environment(override=proxy),
    )


def make_registries(
    authfile: Optional[Path], ca_file: Optional[Path], insecure: Tuple[str, ...], workers: int, timeout: float, retry_times: int,
    *, proxy: Optional[str] = None,
) -> Any:
    """The registries of one command: flags, auth files, proxy environment, registries.conf and certs.d."""
    from bundler.registry.auth import CredentialStore
    from bundler.registry.client import Registries
    from bundler.registry.registries_conf import RegistriesConf

    conf = RegistriesConf.load()
    return Registries(
        credentials=CredentialStore(authfile), options=make_transport(ca_file, insecure, workers, timeout, retry_times, proxy=proxy, conf=conf), conf=conf
    )
