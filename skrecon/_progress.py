"""One progress line for long fits: a tqdm bar on stderr.

Fed by the reconstructor's ``progress(stage, done, total)`` calls: the span,
each round of the search (samples found) and each step of the joint polish.
``GradientReconstructor(verbose=1)`` shows it from the start; the command
line shows it after a delay, so that quick runs print nothing.
"""

import sys
import time

__all__ = ["ProgressLine"]


class ProgressLine:
    """A single updating line: ``stage: done/total |bar| elapsed``.

    Parameters
    ----------
    delay : float, default=0.0
        Seconds of work before the line appears.
    disable : bool or None, default=False
        ``None`` turns it off where the stream is not a terminal (as tqdm
        decides).
    file : file-like or None, default=None
        Where to write; ``None`` is ``sys.stderr``.
    """

    def __init__(self, *, delay=0.0, disable=False, file=None):
        from tqdm.auto import tqdm

        self._delay = delay
        self._bar = tqdm(total=1, delay=delay, file=file or sys.stderr,
                         unit="step", leave=False, dynamic_ncols=True,
                         disable=disable,
                         bar_format="{desc}: {n}/{total} |{bar}| {elapsed}")
        self._start = time.monotonic()

    def __call__(self, stage, done, total):
        total = max(int(total), 1)
        self._bar.set_description_str(
            f"{stage} (samples found)" if stage.startswith("search") else stage,
            refresh=False)
        if self._bar.total != total:
            self._bar.total = total
        self._bar.update(int(done) - self._bar.n)
        # (refresh() would show the line before its delay: a quick run, none)
        if not self._bar.disable and time.monotonic() - self._start >= self._delay:
            self._bar.refresh()

    def close(self):
        """Remove the line."""
        self._bar.close()
