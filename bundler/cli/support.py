"""What every command shares: logging set-up, error → exit code mapping, progress rendering, output.

Only the CLI imports this module (it uses click and tqdm; the library below never does).
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
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s"))
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


def run_command(verbose: int, fn: Callable[[], T]) -> T:
    """Run a command body: BundlerError → one line on stderr and its exit code; a bug → exit 1."""
    try:
        return fn()
    except BundlerError as exc:
        logging.getLogger("bundler").debug("command failed", exc_info=True)
        if verbose:
            traceback.print_exc(file=sys.stderr)
        click.echo(f"error: {exc}", err=True)
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
        sys.exit(int(ExitCode.USAGE))
    except Exception as exc:  # a bug: keep the traceback in the debug log, one line for the user
        logging.getLogger("bundler").error("internal error", exc_info=True)
        if verbose:
            traceback.print_exc(file=sys.stderr)
        click.echo(f"internal error: {type(exc).__name__}: {exc} (details in {debug_log_path()})", err=True)
        sys.exit(int(ExitCode.INTERNAL))


def command_body(fn: Callable[..., None]) -> Callable[..., None]:
    """Run a click command function the way every command runs: logging set up from its `verbose` flag,
    then its body under `run_command` (errors → one line and an exit code). Put it right above the `def`."""

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> None:
        verbose = int(kwargs.get("verbose") or 0)
        setup_logging(verbose)
        run_command(verbose, lambda: fn(**kwargs))

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
    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=str))


class CliProgress:
    """A `Progress` drawn with tqdm on a TTY, or as a plain line every few seconds otherwise."""

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
        if self._bar is not None:
            self._bar.close()


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


def make_transport(ca_file: Optional[Path], insecure: Tuple[str, ...], workers: int, timeout: float, retry_times: int) -> Any:
    """The `TransportOptions` of the shared registry flags."""
    from bundler.registry.http import TransportOptions
    from bundler.registry.tls import TlsPolicy

    return TransportOptions(
        tls=TlsPolicy.from_options(insecure=insecure, ca_file=ca_file),
        read_timeout=timeout,
        max_attempts=retry_times + 1,
        pool_size=min(64, max(32, workers * 4)),  # pack streams 4 blobs per worker at once
    )


def make_registries(
    authfile: Optional[Path], ca_file: Optional[Path], insecure: Tuple[str, ...], workers: int, timeout: float, retry_times: int
) -> Any:
    from bundler.registry.auth import CredentialStore
    from bundler.registry.client import Registries

    return Registries(credentials=CredentialStore(authfile), options=make_transport(ca_file, insecure, workers, timeout, retry_times))
