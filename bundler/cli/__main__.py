"""`python -m bundler.cli`."""

from bundler.cli.entry import run

if __name__ == "__main__":  # pragma: no cover
    run()
