"""Old path of the CLI, now `proxy.process.cli`: `python -m proxy.cli` and older `sekisho` scripts."""

from proxy.process.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
