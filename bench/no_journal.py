"""batch-engage's CLI with the journal's writes switched off, for ``make bench`` only.

The same run, minus what makes it resumable: no row is noted before its request leaves or
after its answer. Measured next to the real thing, it prices the journal.
"""

from __future__ import annotations

from batch_engage.cli import main
from batch_engage.journal import Journal


async def _sending(_self: Journal, _row: int, _identifier: str) -> None:
    return None


def _ignore(_self: Journal, *_args: object) -> None:
    return None


Journal.sending = _sending  # type: ignore[method-assign,assignment]
Journal.record = _ignore  # type: ignore[method-assign,assignment]
Journal.forget = _ignore  # type: ignore[method-assign,assignment]

if __name__ == "__main__":
    main()
