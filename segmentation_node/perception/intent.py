"""Operator intent text -> pick / reject sets over the ontology, deterministically and with an
explanation. Unknown words and anything the grammar cannot read one way only are rejected with
suggestions, never guessed.

The grammar. An intent is clauses separated by ',' or ';'. A clause is a run of phrases:
classes ("discs"), attributes ("defective") and their antonyms ("good"), with pick words
("pick", "take", "only"...), fillers ("the", "items"...) and places ("from the bin") in between.
- A negation ("don't", "do not", "never", "reject", "skip", "exclude", "except", "without",
  "avoid", "leave", "ignore", and "not" / "no" before a class) negates every phrase after it in
  its clause: a class is excluded, an attribute rejected, an antonym's attribute required. A pick
  word right after the negation belongs to it ("don't pick discs"); a pick word after a negated
  phrase starts a new clause ("skip scratched and pick blocks").
- "not" / "no" right before an attribute or antonym flips that word only: "pick not good discs"
  = defective discs.
- "but" ends a clause; "everything but X" = "everything except X"; "X but Y" is refused.
- Refused as ambiguous: a negated clause naming a class and an attribute ("don't pick scratched
  discs": skip scratched ones, or skip all discs?), a negation inside a negation, a negation
  with nothing after it, a class both asked for and excluded.

    "defective items only"          -> pick every pickable class, attribute defective
    "pick part_a, reject scratched" -> pick part_a, exclude scratched ones
    "good blocks"                   -> pick part_b without the defective attribute
    "everything except discs"       -> pick every pickable class but part_a
    "don't pick discs"              -> pick part_b
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from segmentation_node.perception.ontology import Ontology, OntologyError
from segmentation_node.perception.types import Prompt

MAX_INTENT_CHARS = 300
_PICK_WORDS = {"pick", "take", "grab", "get", "only", "just", "select", "want"}
_REJECT_WORDS = {"reject", "skip", "ignore", "exclude", "excluding", "except", "avoid", "not", "no", "without",
                 "leave", "never", "dont", "don't"}
_FLIP_WORDS = {"not", "no"}  # before an attribute or antonym: flip that word only
_BUT_WORD = "but"
_FILLER_WORDS = {"the", "a", "an", "any", "items", "item", "ones", "one", "please", "and", "or", "of",
                 "with", "that", "are", "is", "parts", "part", "objects", "object", "do", "to",
                 "pieces", "piece", "which", "those", "these", "them", "up", "now", "i"}
_EVERYTHING_WORDS = {"everything", "anything", "all"}
_LOCATION_WORDS = {"from", "in", "inside", "out", "on"}  # "from the bin": a place, not a pick
_MAX_PHRASE_WORDS = 3


class IntentError(ValueError):
    """The text cannot be resolved; `suggestions` lists ontology phrases close to what was typed."""

    def __init__(self, message: str, suggestions: tuple[str, ...] = ()):
        super().__init__(message)
        self.suggestions = suggestions


@dataclass(frozen=True)
class ResolvedIntent:
    text: str
    ontology_version: str
    pick_classes: tuple[str, ...]
    pick_attributes: tuple[str, ...]
    reject_attributes: tuple[str, ...]
    prompts: tuple[Prompt, ...]
    explanation: str

    def wants(self, label: str, attributes: tuple[str, ...] | list[str], uncertain: tuple[str, ...] = ()) -> bool:
        """Whether an instance of `label` with `attributes` is a target under this intent; never
        when an attribute the intent asks for or rejects is `uncertain` for it."""
        present = set(attributes)
        return (label in self.pick_classes and set(self.pick_attributes) <= present
                and not present & set(self.reject_attributes)
                and not set(uncertain) & (set(self.pick_attributes) | set(self.reject_attributes)))


def _vocabulary(ontology: Ontology) -> dict[str, tuple[str, str]]:
    """Phrase -> (kind, name); kind: class, attribute, antonym, pick, reject, filler."""
    vocabulary: dict[str, tuple[str, str]] = {}
    for word in _FILLER_WORDS:
        vocabulary[word] = ("filler", word)
    for word in _LOCATION_WORDS:
        vocabulary[word] = ("location", word)
    for word in _EVERYTHING_WORDS:
        vocabulary[word] = ("everything", word)
    for word in _PICK_WORDS:
        vocabulary[word] = ("pick", word)
    for word in _REJECT_WORDS:
        vocabulary[word] = ("reject", word)
    vocabulary[_BUT_WORD] = ("but", _BUT_WORD)
    entries = [(phrase, ("attribute", name)) for name, spec in ontology.attributes.items()
               for phrase in (name, *spec.synonyms)]
    entries += [(phrase, ("antonym", name)) for name, spec in ontology.attributes.items() for phrase in spec.antonyms]
    entries += [(phrase, ("class", name)) for name, spec in ontology.classes.items()
                for phrase in (name, name.replace("_", " "), *spec.synonyms)]
    for phrase, meaning in entries:
        if vocabulary.get(phrase, meaning)[0] in ("filler", "location", "everything", "pick", "reject", "but"):
            raise OntologyError(f"ontology {ontology.version}: '{phrase}' is an intent keyword; "
                                f"it cannot also name {meaning[1]}")
        vocabulary[phrase] = meaning
    return vocabulary


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9_'\-]+|[,;]", text.lower())


def resolve_intent(text: str, ontology: Ontology) -> ResolvedIntent:
    if len(text) > MAX_INTENT_CHARS:
        raise IntentError(f"intent text is {len(text)} characters; at most {MAX_INTENT_CHARS} are accepted")
    vocabulary = _vocabulary(ontology)
    phrases, unknown = _phrases(_words(text), vocabulary)
    if unknown:
        askable = sorted(p for p, (kind, name) in vocabulary.items()  # what an operator may ask for
                         if kind in ("attribute", "antonym") or (kind == "class" and name in ontology.pickable))
        suggestions = tuple(dict.fromkeys(
            match for word in unknown for match in difflib.get_close_matches(word, askable, n=3, cutoff=0.5)))
        hint = f"; did you mean: {', '.join(suggestions)}?" if suggestions else ""
        raise IntentError(f"unknown word(s) {', '.join(repr(w) for w in unknown)} for ontology "
                          f"{ontology.version}{hint} Known classes: {', '.join(ontology.pickable)}; "
                          f"attributes: {', '.join(ontology.attributes)}.", suggestions)
    picked, excluded, pick_attributes, reject_attributes, everything = [], [], [], [], False
    for negated, clause in _clauses(phrases):
        classes = [name for kind, name in clause if kind == "class"]
        qualities = [(kind, name) for kind, name in clause if kind in ("attribute", "antonym")]
        if negated and classes and qualities:
            raise IntentError(f"'{text}' is ambiguous: a negation over both a class and an attribute; say e.g. "
                              "'pick discs, reject scratched' or 'everything except discs'")
        if negated and any(kind == "everything" for kind, _ in clause):
            raise IntentError("that leaves nothing to pick")
        everything |= any(kind == "everything" for kind, _ in clause)
        (excluded if negated else picked).extend(classes)
        for kind, name in qualities:
            (reject_attributes if negated == (kind == "attribute") else pick_attributes).append(name)
    both = sorted(set(picked) & set(excluded))
    if both:
        raise IntentError(f"'{both[0]}' is asked for and excluded at once")
    not_pickable = sorted({name for name in picked if not ontology.classes[name].pickable})
    if not_pickable:
        raise IntentError(f"{', '.join(not_pickable)} can never be picked "
                          f"(role {ontology.classes[not_pickable[0]].role.name.lower()})")
    if not (picked or excluded or pick_attributes or reject_attributes or everything):
        raise IntentError("say what to pick, e.g. 'defective items only', 'pick part_a' or 'good blocks'")
    conflict = sorted(set(pick_attributes) & set(reject_attributes))
    if conflict:
        raise IntentError(f"'{conflict[0]}' is asked for and rejected at once")
    base = list(dict.fromkeys(picked)) or ontology.pickable
    pick_classes = tuple(name for name in base if name not in excluded)
    if not pick_classes:
        raise IntentError("that leaves nothing to pick")
    pick_attributes = list(dict.fromkeys(pick_attributes))
    reject_attributes = list(dict.fromkeys(reject_attributes))
    prompts = _prompts(ontology, pick_classes, pick_attributes, reject_attributes)
    return ResolvedIntent(text, ontology.version, pick_classes, tuple(pick_attributes), tuple(reject_attributes),
                          prompts, _explain(ontology, pick_classes, pick_attributes, reject_attributes))


def _phrases(words: list[str], vocabulary: dict) -> tuple[list[tuple[str, str]], list[str]]:
    """(kind, name) of each phrase, longest phrase first ("part a" before "part"), places and
    what follows them dropped ("from the bin"); and the words no phrase knows."""
    phrases, unknown, at_location, index = [], [], False, 0
    while index < len(words):
        if words[index] in (",", ";"):
            phrases.append(("separator", words[index]))
            at_location, index = False, index + 1
            continue
        for size in range(_MAX_PHRASE_WORDS, 0, -1):
            phrase = " ".join(words[index:index + size])
            if phrase in vocabulary and "," not in phrase and ";" not in phrase:
                kind, name = vocabulary[phrase]
                break
        else:
            unknown.append(words[index])
            index += 1
            continue
        index += size
        if at_location and kind == "class":
            at_location = False
            continue
        at_location = kind == "location" or (at_location and kind == "filler")
        if kind not in ("filler", "location"):
            phrases.append((kind, name))
    return phrases, unknown


def _clauses(phrases: list[tuple[str, str]]) -> list[tuple[bool, list[tuple[str, str]]]]:
    """(negated, the clause's class / attribute / antonym / everything phrases), by the grammar
    in the module's docstring; IntentError where it reads more than one way."""
    clauses: list[tuple[bool, list]] = []
    negated, clause = False, []

    def close():
        nonlocal negated, clause
        if negated and not clause:
            raise IntentError("a negation with nothing after it: say what not to pick")
        if clause:
            clauses.append((negated, clause))
        negated, clause = False, []

    index = 0
    while index < len(phrases):
        kind, name = phrases[index]
        following = phrases[index + 1][0] if index + 1 < len(phrases) else None
        if kind == "separator":
            close()
        elif kind == "but":
            after_everything = any(k == "everything" for k, _ in clause) and not negated
            close()
            if following in ("class", "attribute", "antonym"):
                if not after_everything:
                    raise IntentError("'X but Y' is ambiguous: say 'X, not Y' or 'X except Y'")
                negated = True
        elif kind == "reject" and name in _FLIP_WORDS and following in ("attribute", "antonym"):
            if negated:
                raise IntentError("a negation inside a negation is ambiguous: say what to pick")
            flipped_kind, flipped = phrases[index + 1]
            clause.append(("antonym" if flipped_kind == "attribute" else "attribute", flipped))
            index += 1
        elif kind == "reject":
            if negated:
                raise IntentError("a negation inside a negation is ambiguous: say what to pick")
            if clause:
                close()
            negated = True
        elif kind == "pick":
            if negated and clause:
                close()  # "skip scratched and pick blocks": a new clause
        else:
            clause.append((kind, name))
        index += 1
    close()
    return clauses


def _prompts(ontology: Ontology, pick_classes, pick_attributes, reject_attributes) -> tuple[Prompt, ...]:
    """Every pickable class, also those not asked for, so their tracks already exist (and are
    stable) when the next intent asks for them; the picked classes phrased with the wanted and
    the rejected attributes, so those can be told apart; and every forbidden class, always."""
    prompts = []
    for name in ontology.pickable:
        for base in ontology.classes[name].prompts:
            prompts.append(Prompt(base, name))
            if name not in pick_classes:
                continue
            if pick_attributes:
                wanted = base
                for attribute in pick_attributes:
                    wanted = ontology.attributes[attribute].prompt_template.format(wanted)
                prompts.append(Prompt(wanted, name, tuple(pick_attributes)))
            for attribute in reject_attributes:
                prompts.append(Prompt(ontology.attributes[attribute].prompt_template.format(base), name, (attribute,)))
    return tuple(prompts) + forbidden_prompts(ontology)


def forbidden_prompts(ontology: Ontology) -> tuple[Prompt, ...]:
    """What the detector always looks for, with or without an intent."""
    return tuple(Prompt(text, name, forbidden=True) for name in ontology.forbidden
                 for text in ontology.classes[name].prompts)


def _explain(ontology: Ontology, pick_classes, pick_attributes, reject_attributes) -> str:
    parts = [f"pick {', '.join(pick_classes)}"]
    if pick_attributes:
        parts.append(f"only if {' and '.join(pick_attributes)}")
    if reject_attributes:
        parts.append(f"never if {' or '.join(reject_attributes)}")
    return (" ".join(parts) + f"; always keep clear of {', '.join(ontology.forbidden)}"
            + f" (ontology {ontology.version})")
