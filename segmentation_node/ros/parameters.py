"""Declares a node's parameters from segmentation_node.parameters, with descriptors."""
from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from segmentation_node.parameters import ParameterSpec

_TYPES = {"bool": ParameterType.PARAMETER_BOOL, "integer": ParameterType.PARAMETER_INTEGER,
          "double": ParameterType.PARAMETER_DOUBLE, "string": ParameterType.PARAMETER_STRING,
          "string[]": ParameterType.PARAMETER_STRING_ARRAY}


def descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    declared = ParameterDescriptor(type=_TYPES[spec.type_name], description=spec.description,
                                   read_only=spec.read_only)
    if spec.integers:
        declared.integer_range = [IntegerRange(from_value=spec.integers[0], to_value=spec.integers[1], step=1)]
    if spec.floats:
        declared.floating_point_range = [FloatingPointRange(from_value=spec.floats[0], to_value=spec.floats[1])]
    return declared


def declare(node, specs: tuple[ParameterSpec, ...]) -> None:
    for spec in specs:
        node.declare_parameter(spec.name, spec.default, descriptor(spec))
