"""The one `main()` shape of every node: `--help` explains it, ROS arguments pass through, the
node is built (a configuration error is printed and exits 2) and spun until SIGINT / SIGTERM,
then shut down in order.

Why the order matters (issue 13, point 6: "terminate called without an active exception"):
rclpy's own signal handler shuts the context down from a C++ thread the moment SIGINT arrives
and raises KeyboardInterrupt in the main thread, while executor threads and the node's own
threads keep running. Those threads then either fail in their next rclpy call (context invalid)
or are still inside a C/C++ call (OpenCV, torch, rclpy) when the interpreter finalizes: Python
<= 3.13 ends such a daemon thread with pthread_exit when it takes the GIL back, and that forced
unwind through a C++ frame is std::terminate -> abort (cpython#87135).

So run_node handles SIGINT / SIGTERM itself (rclpy gets SignalHandlerOptions.NO): a signal only
sets a flag; the main thread stops spinning, lets the executor finish its callbacks
(executor.shutdown), runs the node's own shutdown path while the context is still valid, waits
for the threads the node started, destroys the node and only then shuts the context down.

The node's shutdown path, in this order, each only if the node has it:
  1. a lifecycle node (rclpy.lifecycle.LifecycleNode) gets the shutdown transition
     (`trigger_shutdown()`, so `on_shutdown` runs from whatever primary state it is in);
  2. `close()` (CLOSE_HOOK), the hook for any node that owns threads or other resources:
     called once, from the main thread, after spinning stopped and every executor callback
     has returned, before destroy_node and while the context is valid (it may still publish).
     When it returns, every thread the node started must have finished (joined), so no thread
     of the node is inside an rclpy call when the context is shut down. It must not raise
     (an exception is logged and the process exits 1).
Daemon threads started since the node was built and still alive afterwards are waited for
(THREAD_GRACE_S) and then named in a warning. (Non-daemon threads are joined by Python itself
before it finalizes, so they cannot cause the abort.)
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.utilities import remove_ros_args

from segmentation_node.parameters import ParameterSpec, render_help

try:  # Humble and later
    from rclpy.signals import SignalHandlerOptions
except ImportError:  # pragma: no cover - older rclpy: no options, rclpy installs its handlers
    SignalHandlerOptions = None

CLOSE_HOOK = "close"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SPIN_POLL_S = 0.1  # how often the main thread looks at the stop flag while spinning
THREAD_GRACE_S = 5.0  # how long daemon threads the node left running may take to finish


class _StopRequest:
    """Set from a Python signal handler (main thread, between bytecodes): a plain attribute, no lock."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __call__(self, signum, frame) -> None:
        self.signal = signum  # repeats while shutting down change nothing

    def install(self) -> bool:
        """Own SIGINT / SIGTERM; False where that is impossible (not the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self)
        return True

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()


def run_node(prog: str, description: str, build: Callable[[], rclpy.node.Node], args=None,
             parameters: tuple[ParameterSpec, ...] = ()) -> int:
    argv = remove_ros_args(args if args is not None else sys.argv)
    argparse.ArgumentParser(prog=prog, description=description, epilog=render_help(parameters) if parameters else None,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv[1:])
    stop = _StopRequest()
    own_signals = stop.install()  # before rclpy.init: a signal during start-up only sets the flag
    try:
        if own_signals and SignalHandlerOptions is not None:
            rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        else:
            rclpy.init(args=args)
        try:
            return _build_spin_shutdown(prog, build, stop)
        finally:
            rclpy.try_shutdown()
    finally:
        stop.restore()


def _build_spin_shutdown(prog: str, build, stop: _StopRequest) -> int:
    threads_before = set(threading.enumerate())
    try:
        node = build()
    except ValueError as error:  # bad configuration: refuse to start, say why
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    # One thread for every callback: each node keeps its callbacks short and its slow work on
    # threads of its own (rclpy's MultiThreadedExecutor busy-loops under load, segmentation.py).
    executor = SingleThreadedExecutor()
    try:
        executor.add_node(node)
        while stop.signal is None and executor.context.ok():
            executor.spin_once(timeout_sec=SPIN_POLL_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # rclpy's own handling (run_node outside the main thread) or a shutdown elsewhere
    finally:
        rc = _shut_down(prog, node, executor, threads_before)
    return rc


def _shut_down(prog: str, node, executor: Executor, threads_before: set) -> int:
    """Executor callbacks finished, node shut down, its threads joined, node destroyed. Returns
    0, or 1 when the node's shutdown path failed."""
    logger = rclpy.logging.get_logger(prog)
    rc = 0
    executor.shutdown()  # waits until every callback in flight has returned
    if hasattr(node, "trigger_shutdown") and _lifecycle_state(node) != "finalized":
        try:
            node.trigger_shutdown()
        except Exception as error:  # noqa: BLE001 - e.g. already finalized; the rest must still run
            logger.warning(f"lifecycle shutdown: {type(error).__name__}: {error}")
    close = getattr(node, CLOSE_HOOK, None)
    if callable(close):
        try:
            close()
        except Exception as error:  # noqa: BLE001 - report, then still destroy the node
            logger.error(f"{CLOSE_HOOK}() failed: {type(error).__name__}: {error}")
            rc = 1
    _wait_for_threads(logger, threads_before)
    try:
        node.destroy_node()
    except Exception as error:  # noqa: BLE001
        logger.warning(f"destroy_node: {type(error).__name__}: {error}")
    return rc


def _lifecycle_state(node) -> str | None:
    try:  # the label of (id, label); the same on Humble, Jazzy and Kilted
        return node._state_machine.current_state[1]
    except Exception:  # noqa: BLE001 - unknown: try the transition anyway
        return None


def _wait_for_threads(logger, threads_before: set) -> None:
    """Daemon threads started since the node was built must be gone before the context and the
    interpreter are: a daemon thread inside a C++ call at interpreter exit aborts the process."""
    deadline = time.monotonic() + THREAD_GRACE_S
    left = [t for t in threading.enumerate() if t.daemon and t not in threads_before]
    for thread in left:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in left if t.is_alive()]
    if alive:
        logger.warning(f"daemon threads still running after shutdown: {', '.join(alive)}; the node must stop "
                       f"and join them in on_shutdown or {CLOSE_HOOK}()")
