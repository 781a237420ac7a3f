"""Calling a service from a tool with a bound on the wait, as operators expect an answer."""
from __future__ import annotations

import rclpy


def call(node, client, request, timeout_s: float):
    """The response, or TimeoutError naming the service when it is absent or silent."""
    if not client.wait_for_service(timeout_sec=timeout_s):
        raise TimeoutError(f"no '{client.srv_name}' service within {timeout_s:g} s: "
                           "is the operator_intent node running?")
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout_s)
    if not future.done():
        raise TimeoutError(f"'{client.srv_name}' did not answer within {timeout_s:g} s")
    return future.result()
