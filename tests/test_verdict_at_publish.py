"""The verdict decided at publish (ROS-free): the gate monitor, recheck, and the result publisher
over random interleavings of gate, intent and camera events with frame sets in flight."""
import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from segmentation_node.contract import GateState, Reason
from segmentation_node.gate_monitor import GateMonitor
from segmentation_node.perception.actionability import Conditions, Verdict, recheck
from segmentation_node.result_publisher import ResultPublisher

GATE = "/workcell/operator_intent"
ACTIONABLE = Verdict(True, 0.9)


def test_gate_monitor_trusts_only_a_live_gate_of_the_configured_node():
    monitor = GateMonitor(GATE, timeout_s=2.0)
    assert monitor.view(0.0).state is GateState.UNKNOWN and "no gate_state" in monitor.view(0.0).problem
    assert monitor.heard(GateState.RUNNING, 7, 10.0, GATE) is None
    assert monitor.view(11.0) == monitor.view(12.0) and monitor.view(11.9).state is GateState.RUNNING
    lost = monitor.view(12.5)
    assert lost.state is GateState.UNKNOWN and "for 2.5 s" in lost.problem and lost.epoch == 7
    monitor.heard(GateState.RUNNING, 7, 12.6, None)  # a heartbeat; None: the middleware cannot say who
    assert monitor.view(12.7).state is GateState.RUNNING
    refused = monitor.heard(GateState.RUNNING, 9, 12.8, "/mallory")
    assert refused and "ignored" in refused
    forged = monitor.view(12.9)
    assert forged.state is GateState.UNKNOWN and "/mallory" in forged.problem and forged.epoch == 7
    monitor.publishers([GATE])  # the graph no longer shows mallory
    assert monitor.view(12.9).state is GateState.RUNNING
    monitor.heard(99, 8, 13.0, GATE)
    assert monitor.view(13.1).state is GateState.UNKNOWN and "unknown state 99" in monitor.view(13.1).problem


def test_recheck_keeps_an_actionable_verdict_only_if_nothing_moved():
    decided = Conditions(GateState.RUNNING, 4, intent_sequence=2)
    assert recheck(ACTIONABLE, decided, decided) is ACTIONABLE
    cases = {
        Reason.GATE_NOT_RUNNING: Conditions(GateState.PAUSED, 5, intent_sequence=2),
        Reason.GATE_LOST: Conditions(GateState.UNKNOWN, 4, "silent", intent_sequence=2),
        Reason.DECISION_STALE: Conditions(GateState.RUNNING, 6, intent_sequence=2),
        Reason.CAMERA_NOT_FRESH: Conditions(GateState.RUNNING, 4, intent_sequence=2, camera_problems={"c": "stale"}),
        Reason.CAMERA_BLIND: Conditions(GateState.RUNNING, 4, intent_sequence=2, blind_cameras={"c": "black"}),
    }
    for reason, now in cases.items():
        final = recheck(ACTIONABLE, decided, now)
        assert not final.actionable and reason in [code for code, _ in final.reasons], reason
    intent_changed = recheck(ACTIONABLE, decided, Conditions(GateState.RUNNING, 4, intent_sequence=3))
    assert not intent_changed.actionable and "intent changed from #2 to #3" in intent_changed.reasons[0][1]
    blocked = Verdict(False, 0.0, ((Reason.NO_TARGET, "none"),))
    assert recheck(blocked, decided, cases[Reason.GATE_NOT_RUNNING]) is blocked


class World:
    """The node's mutable inputs, changed only through the publisher's update() like the node."""

    def __init__(self):
        self.gate, self.epoch, self.intent, self.camera_ok = GateState.RUNNING, 1, 1, True
        self.log = []  # every update and every send, in the order they happened

    def conditions(self) -> Conditions:
        return Conditions(self.gate, self.epoch, intent_sequence=self.intent,
                          camera_problems={} if self.camera_ok else {"cam": "stale"})

    def send(self, result, verdict, now, sequence):
        self.log.append(("sent", result, verdict.actionable, now.gate, sequence))

    def change(self, kind, value):
        if kind == "gate":
            self.epoch += 1
            self.gate = value
        elif kind == "intent":
            self.intent += 1
        else:
            self.camera_ok = value
        self.log.append(("changed", kind))


events = st.lists(st.one_of(
    st.tuples(st.just("gate"), st.sampled_from([GateState.RUNNING, GateState.PAUSED, GateState.FAULT])),
    st.tuples(st.just("intent"), st.none()),
    st.tuples(st.just("camera"), st.booleans()),
    st.tuples(st.just("decide"), st.none()),
    st.tuples(st.just("publish"), st.integers(0, 5))), max_size=60)


@settings(max_examples=400, deadline=None)
@given(events=events)
def test_no_actionable_result_after_any_change_since_its_decision(events):
    world = World()
    publisher = ResultPublisher(world.conditions, world.send)
    in_flight = []  # (conditions at decision, log length at decision)
    for kind, value in events:
        if kind == "decide":
            in_flight.append((world.conditions(), len(world.log)))
        elif kind == "publish" and in_flight:
            decided, mark = in_flight.pop(min(value, len(in_flight) - 1))
            publisher.publish(mark, ACTIONABLE if decided.gate is GateState.RUNNING else Verdict(False, 0.0),
                              decided)
            sent = world.log[-1]
            if sent[2]:
                between = [entry[1] for entry in world.log[mark:-1] if entry[0] == "changed"]
                assert "gate" not in between and "intent" not in between, "a PAUSE or new intent slipped in"
                assert sent[3] is GateState.RUNNING and world.camera_ok
        elif kind in ("gate", "intent", "camera"):
            publisher.update(lambda: world.change(kind, value))
    sequences = [entry[4] for entry in world.log if entry[0] == "sent"]
    assert sequences == sorted(sequences) == list(range(1, len(sequences) + 1))


def test_threads_cannot_slip_a_pause_between_check_and_send():
    """A worker publishing as fast as it can and a gate toggling PAUSED / RUNNING: in the total
    order the publisher's lock imposes, no actionable send follows a change to the gate its
    verdict was decided before."""
    world = World()

    def slow_send(*args):  # serialising a result takes a while: the window a PAUSE could use
        time.sleep(0.0002)
        world.send(*args)

    publisher = ResultPublisher(world.conditions, slow_send)
    stop = threading.Event()

    def worker():
        while not stop.is_set():
            mark, decided = publisher.update(lambda: (len(world.log), world.conditions()))
            publisher.publish(mark, ACTIONABLE if decided.gate is GateState.RUNNING else Verdict(False, 0.0), decided)

    thread = threading.Thread(target=worker)
    thread.start()
    for toggle in range(2000):
        publisher.update(lambda: world.change("gate", GateState.PAUSED if toggle % 2 == 0 else GateState.RUNNING))
    stop.set()
    thread.join()
    sends = [(index, entry) for index, entry in enumerate(world.log) if entry[0] == "sent"]
    actionable = [(index, entry) for index, entry in sends if entry[2]]
    assert sends and actionable, "the race was exercised"
    for index, (_, mark, _, gate, _) in actionable:
        assert gate is GateState.RUNNING
        assert not any(entry[0] == "changed" for entry in world.log[mark:index]), "a change slipped in"
