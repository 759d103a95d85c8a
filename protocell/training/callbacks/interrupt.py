"""``StopOnInterrupt``: Ctrl-C (SIGINT) stops a run cleanly at the next batch end, however it was started."""

from __future__ import annotations

import signal
import threading

from lightning.pytorch.callbacks import Callback


class StopOnInterrupt(Callback):
    """During fit a SIGINT only sets a flag; the next training or validation batch end raises
    ``KeyboardInterrupt`` there, which Lightning turns into its graceful stop (``EpochCheckpoint`` names
    the epoch ``resume=`` continues from; train.py exits 130). Python's own handler raises the
    ``KeyboardInterrupt`` wherever the main thread happens to be — inside a destructor it is swallowed
    ("Exception ignored in …") and the Ctrl-C lost — and a process started with SIGINT ignored (a
    background job of a non-interactive shell inherits that) never sees it; both happened to train.py
    under the test suite's load. The previous handler is restored when fit ends."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _flag(self, signum, frame):
        self.requested = True

    def on_fit_start(self, trainer, pl_module):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._flag)

    def _stop_if_asked(self):
        if self.requested:
            self.requested = False
            raise KeyboardInterrupt

    def on_train_batch_end(self, *args, **kwargs):
        self._stop_if_asked()

    def on_validation_batch_end(self, *args, **kwargs):
        self._stop_if_asked()

    def _restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_fit_end(self, trainer, pl_module):
        self._restore()

    def on_exception(self, trainer, pl_module, exception):
        if not isinstance(exception, KeyboardInterrupt):  # on Ctrl-C Lightning ignores further ones while it stops
            self._restore()
