"""ROS-free checks of the wire contract module and the README that documents it."""
import subprocess
import sys
from pathlib import Path

import pytest

from segmentation_node import contract
from segmentation_node.parameters import NODE_PARAMETERS
from segmentation_node.parameters import render_markdown_table as render_parameter_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_interface_table_is_the_rendered_contract():
    text = README.read_text(encoding="utf-8")
    begin, end = "<!-- contract:begin -->\n", "<!-- contract:end -->"
    assert begin in text and end in text
    documented = text.split(begin, 1)[1].split(end, 1)[0]
    assert documented == contract.render_markdown_table(), (
        "README interface table is out of date: paste the output of `workcell_contract`")


def test_topics_are_relative_except_the_ros_wide_ones():
    # Relative names so launch can namespace and remap them; /diagnostics and /tf_static are
    # ROS conventions, shared by every node of the robot.
    absolute = {item.name for item in contract.ENDPOINTS if item.name.startswith("/")}
    assert absolute == {"/diagnostics", "/tf_static"}


def test_state_topics_are_latched_and_images_in_are_best_effort():
    for node in (contract.SEGMENTATION_NODE, contract.OPERATOR_NODE):
        assert contract.endpoint(node, "gate_state").qos is contract.LATCHED
        assert contract.endpoint(node, "active_intent").qos is contract.LATCHED
    assert contract.endpoint(contract.SEGMENTATION_NODE, "{camera}/image_raw").qos.reliability \
        is contract.Reliability.BEST_EFFORT
    assert contract.endpoint(contract.SEGMENTATION_NODE, "frame_set").qos.reliability \
        is contract.Reliability.RELIABLE


def test_publisher_and_subscriber_of_a_topic_agree_on_type_and_qos():
    by_name = {}
    for item in contract.ENDPOINTS:
        if item.kind is not contract.Kind.SERVES:
            by_name.setdefault(item.name, set()).add((item.type, item.qos))
    for name, variants in by_name.items():
        assert len(variants) == 1, f"{name}: {variants}"


def test_unknown_endpoint_is_a_clear_error():
    try:
        contract.endpoint(contract.SEGMENTATION_NODE, "no_such_topic")
    except KeyError as error:
        assert "no_such_topic" in str(error)
    else:
        raise AssertionError("expected KeyError")


def test_default_values_are_the_safe_ones():
    # A default-constructed message must never read as "pick this" or "running".
    assert contract.Role(0) is contract.Role.UNKNOWN
    assert contract.GateState(0) is contract.GateState.UNKNOWN
    assert contract.Command(0) is contract.Command.NONE


def test_cli_prints_table_and_qos_rationale():
    result = subprocess.run([sys.executable, "-m", "segmentation_node.contract", "--qos"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.startswith(contract.render_markdown_table())
    assert "transient local" in result.stdout and "late" in result.stdout


@pytest.mark.parametrize("node", sorted(NODE_PARAMETERS))
def test_readme_parameter_tables_are_the_rendered_ones(node):
    text = README.read_text(encoding="utf-8")
    begin, end = f"<!-- parameters:{node}:begin -->\n", f"<!-- parameters:{node}:end -->"
    assert begin in text and end in text
    assert text.split(begin, 1)[1].split(end, 1)[0] == render_parameter_table(NODE_PARAMETERS[node]), (
        f"README parameter table of {node} is out of date: paste `workcell_contract --parameters {node}`")


def test_every_parameter_has_a_description_and_a_usable_range():
    for node, specs in NODE_PARAMETERS.items():
        assert len({spec.name for spec in specs}) == len(specs), node
        for spec in specs:
            assert spec.description.strip(), f"{node}.{spec.name}"
            bounds = spec.integers or spec.floats
            if bounds:
                assert bounds[0] <= spec.default <= bounds[1], f"{node}.{spec.name}: default outside its range"
