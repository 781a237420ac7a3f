"""Ontology loading and operator intent resolution (ROS-free)."""
import pytest
import yaml

from segmentation_node.contract import Role
from segmentation_node.package_files import share_path
from segmentation_node.perception.intent import IntentError, resolve_intent
from segmentation_node.perception.ontology import OntologyError, load_ontology, parse_ontology


@pytest.fixture(scope="module")
def ontology():
    return load_ontology()


def test_bundled_ontology_is_versioned_and_complete(ontology):
    assert ontology.version
    assert ontology.pickable == ["part_a", "part_b"]
    assert set(ontology.forbidden) == {"hand", "fixture", "tool"}
    assert ontology.classes["hand"].auto_pause and not ontology.classes["tool"].auto_pause
    assert ontology.role_of("bin") is Role.IGNORE and ontology.role_of("unicorn") is Role.UNKNOWN
    assert ontology.classes["hand"].min_score < ontology.classes["part_a"].min_score  # recall first


A, B = "part_a", "part_b"
BOTH = (A, B)

# (text, pick classes, required attributes, rejected attributes) or (text, None, error, None):
# the documented grammar (segmentation_node/perception/intent.py), one phrasing per row.
PHRASINGS = [
    ("pick discs", (A,), (), ()),
    ("pick the discs", (A,), (), ()),
    ("discs", (A,), (), ()),
    ("only discs", (A,), (), ()),
    ("just the blocks please", (B,), (), ()),
    ("take blocks", (B,), (), ()),
    ("grab part a", (A,), (), ()),
    ("pick part-b", (B,), (), ()),
    ("pick discs and blocks", BOTH, (), ()),
    ("pick everything", BOTH, (), ()),
    ("all", BOTH, (), ()),
    ("anything", BOTH, (), ()),
    ("defective items only", BOTH, ("defective",), ()),
    ("only defective parts", BOTH, ("defective",), ()),
    ("damaged discs", (A,), ("defective",), ()),
    ("pick broken blocks", (B,), ("defective",), ()),
    ("scratched washers", (A,), ("scratched",), ()),
    ("good blocks", (B,), (), ("defective",)),
    ("good parts", BOTH, (), ("defective",)),
    ("pick the intact discs", (A,), (), ("defective",)),
    ("non-defective discs", (A,), (), ("defective",)),
    ("clean discs", (A,), (), ("scratched",)),
    ("take the good discs out of the bin", (A,), (), ("defective",)),
    ("pick discs from the bin", (A,), (), ()),
    ("don't pick discs", (B,), (), ()),
    ("dont pick discs", (B,), (), ()),
    ("do not pick discs", (B,), (), ()),
    ("never pick blocks", (A,), (), ()),
    ("not discs", (B,), (), ()),
    ("no discs", (B,), (), ()),
    ("skip discs", (B,), (), ()),
    ("leave the discs", (B,), (), ()),
    ("ignore blocks", (A,), (), ()),
    ("avoid blocks", (A,), (), ()),
    ("exclude discs", (B,), (), ()),
    ("everything except discs", (B,), (), ()),
    ("everything excluding blocks", (A,), (), ()),
    ("all but blocks", (A,), (), ()),
    ("everything but discs", (B,), (), ()),
    ("pick discs, not blocks", (A,), (), ()),
    ("discs but not blocks", (A,), (), ()),
    ("pick not good discs", (A,), ("defective",), ()),
    ("pick discs that are not defective", (A,), (), ("defective",)),
    ("discs that are not scratched", (A,), (), ("scratched",)),
    ("no defective parts", BOTH, (), ("defective",)),
    ("pick discs without scratches", (A,), (), ("scratched",)),
    ("discs without defects", (A,), (), ("defective",)),
    ("pick part_a, reject scratched", (A,), (), ("scratched",)),
    ("reject scratched; pick blocks", (B,), (), ("scratched",)),
    ("skip scratched and pick blocks", (B,), (), ("scratched",)),
    ("reject defective", BOTH, (), ("defective",)),
    ("skip the bad ones", BOTH, (), ("defective",)),
    ("skip the good ones", BOTH, ("defective",), ()),
    ("don't pick defective items", BOTH, (), ("defective",)),
    ("everything except scratched", BOTH, (), ("scratched",)),
    ("pick not ok parts", BOTH, ("defective",), ()),
    ("pick defective discs, skip scratched", (A,), ("defective",), ("scratched",)),
    ("pick discs, don't pick blocks", (A,), (), ()),
    ("good discs and good blocks", BOTH, (), ("defective",)),
    ("Pick Part A", (A,), (), ()),
    ("Pick part A and part B", BOTH, (), ()),
    ("damaged washers", (A,), ("defective",), ()),
    # refused: read more than one way, or nothing left, or unknown
    ("don't pick scratched discs", None, "ambiguous", None),
    ("reject scratched discs", None, "ambiguous", None),
    ("everything except scratched discs", None, "ambiguous", None),
    ("discs but blocks", None, "ambiguous", None),
    ("don't pick not good discs", None, "negation inside a negation", None),
    ("pick discs, don't", None, "nothing after it", None),
    ("pick discs, don't pick discs", None, "asked for and excluded", None),
    ("don't pick anything", None, "nothing to pick", None),
    ("don't pick discs or blocks", None, "nothing to pick", None),
    ("good defective parts", None, "asked for and rejected", None),
    ("pick the hand", None, "can never be picked", None),
    ("pick bolts", None, "unknown word", None),
]


def test_the_table_has_enough_phrasings():
    assert len(PHRASINGS) >= 60
    assert len({text for text, *_ in PHRASINGS}) == len(PHRASINGS)


@pytest.mark.parametrize("text, classes, wanted, rejected", PHRASINGS)
def test_phrasing_resolves_as_the_grammar_says(ontology, text, classes, wanted, rejected):
    if classes is None:
        with pytest.raises(IntentError, match=wanted):
            resolve_intent(text, ontology)
        return
    intent = resolve_intent(text, ontology)
    assert (intent.pick_classes, intent.pick_attributes, intent.reject_attributes) == (classes, wanted, rejected)
    assert intent.ontology_version == ontology.version
    assert intent.explanation.startswith("pick ")


def test_resolution_is_deterministic(ontology):
    assert resolve_intent("defective items only", ontology) == resolve_intent("defective items only", ontology)


def test_prompts_carry_attributes_and_always_watch_forbidden_classes(ontology):
    intent = resolve_intent("defective items only", ontology)
    texts = {p.text: p for p in intent.prompts}
    assert texts["defective metal disc"].label == "part_a"
    assert texts["defective metal disc"].attributes == ("defective",)
    assert {"human hand", "yellow clamp", "screwdriver"} <= set(texts)
    rejecting = resolve_intent("pick part_a, reject scratched", ontology)
    assert {p.text for p in rejecting.prompts} >= {"metal disc", "scratched metal disc"}


def test_wants_applies_classes_and_attributes(ontology):
    intent = resolve_intent("pick part_a, reject scratched", ontology)
    assert intent.wants("part_a", ())
    assert not intent.wants("part_a", ("scratched",))
    assert not intent.wants("part_b", ())
    defective_only = resolve_intent("defective items only", ontology)
    assert defective_only.wants("part_b", ("defective",)) and not defective_only.wants("part_b", ())


@pytest.mark.parametrize("text, message, suggestion", [
    ("pick bolts", r"unknown word\(s\) 'bolts'", "blocks"),
    ("defectve items", r"unknown word\(s\) 'defectve'", "defective"),
    ("pick the hand", "can never be picked", None),
    ("", "say what to pick", None),
    ("please", "say what to pick", None),
    ("good defective parts", "asked for and rejected", None),
    ("everything except discs and blocks", "nothing to pick", None),
    ("x" * 301, "at most 300", None),
])
def test_bad_intent_is_rejected_with_a_reason(ontology, text, message, suggestion):
    with pytest.raises(IntentError, match=message) as raised:
        resolve_intent(text, ontology)
    if suggestion:
        assert suggestion in raised.value.suggestions


def test_ontology_errors_name_the_problem(tmp_path):
    good = yaml.safe_load(share_path("config/ontology.yaml").read_text())
    broken_role = {**good, "classes": {**good["classes"], "hand": {**good["classes"]["hand"], "role": "maybe"}}}
    with pytest.raises(OntologyError, match="class 'hand': 'role' must be one of"):
        parse_ontology(broken_role)
    clash = {**good, "classes": {**good["classes"], "part_b": {**good["classes"]["part_b"], "synonyms": ["disc"]}}}
    with pytest.raises(OntologyError, match="'disc' names both"):
        parse_ontology(clash)
    with pytest.raises(OntologyError, match="version"):
        parse_ontology({**good, "version": ""})
    with pytest.raises(OntologyError, match="nothing could ever be picked"):
        parse_ontology({**good, "classes": {"hand": good["classes"]["hand"]}})
    with pytest.raises(OntologyError, match="not found"):
        load_ontology(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("classes: [")
    with pytest.raises(OntologyError, match="not valid YAML"):
        load_ontology(tmp_path / "bad.yaml")


def test_ontology_phrase_that_is_an_intent_keyword_is_refused():
    good = yaml.safe_load(share_path("config/ontology.yaml").read_text())
    good["attributes"]["defective"]["synonyms"].append("reject")
    with pytest.raises(OntologyError, match="'reject' is an intent keyword"):
        resolve_intent("defective items only", parse_ontology(good))
