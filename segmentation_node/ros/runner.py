"""The one `main()` shape of every node: `--help` explains it, ROS arguments pass through, the
node is built (a configuration error is printed and exits 2) and spun until shutdown."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.utilities import remove_ros_args


def run_node(prog: str, description: str, build: Callable[[], rclpy.node.Node], args=None,
             executor: Callable[[], Executor] | None = None) -> int:
    argv = remove_ros_args(args if args is not None else sys.argv)
    argparse.ArgumentParser(prog=prog, description=description,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv[1:])
    rclpy.init(args=args)
    try:
        try:
            node = build()
        except ValueError as error:  # bad configuration: refuse to start, say why
            print(f"{prog}: {error}", file=sys.stderr)
            return 2
        rclpy.spin(node, executor=executor() if executor else None)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()
    return 0
