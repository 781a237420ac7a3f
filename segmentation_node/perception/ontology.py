"""The versioned workcell ontology (config/ontology.yaml): classes, roles, prompts, attributes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from segmentation_node.contract import Role
from segmentation_node.package_files import share_path

_ROLES = {"target": Role.TARGET, "forbidden": Role.FORBIDDEN, "ignore": Role.IGNORE}


class OntologyError(ValueError):
    """The ontology file is malformed; the message names the offending entry."""


@dataclass(frozen=True)
class AttributeSpec:
    name: str
    synonyms: tuple[str, ...]
    antonyms: tuple[str, ...]
    prompt_template: str  # "{}" stands for a class prompt


@dataclass(frozen=True)
class ClassSpec:
    name: str
    role: Role
    description: str
    prompts: tuple[str, ...]
    synonyms: tuple[str, ...]
    auto_pause: bool
    min_score: float

    @property
    def pickable(self) -> bool:
        return self.role is Role.TARGET


@dataclass(frozen=True)
class Ontology:
    version: str
    classes: dict[str, ClassSpec]
    attributes: dict[str, AttributeSpec]
    min_stability: float

    @property
    def pickable(self) -> list[str]:
        return [name for name, spec in self.classes.items() if spec.pickable]

    @property
    def forbidden(self) -> list[str]:
        return [name for name, spec in self.classes.items() if spec.role is Role.FORBIDDEN]

    def role_of(self, label: str) -> Role:
        spec = self.classes.get(label)
        return spec.role if spec else Role.UNKNOWN


def _phrases(entry: dict, key: str, where: str) -> tuple[str, ...]:
    values = entry.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
        raise OntologyError(f"{where}: '{key}' must be a list of non-empty strings")
    return tuple(v.strip().lower() for v in values)


def _threshold(value, where: str) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise OntologyError(f"{where}: threshold must be a number in [0, 1], got {value!r}")
    return float(value)


def parse_ontology(data: dict, source: str = "<ontology>") -> Ontology:
    if not isinstance(data, dict):
        raise OntologyError(f"{source}: expected a mapping at the top level")
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        raise OntologyError(f"{source}: 'version' must be a non-empty string")
    defaults = data.get("defaults") or {}
    default_score = _threshold(defaults.get("min_score", 0.5), f"{source}: defaults.min_score")
    min_stability = _threshold(defaults.get("min_stability", 0.6), f"{source}: defaults.min_stability")

    attributes = {}
    for name, entry in (data.get("attributes") or {}).items():
        where = f"{source}: attribute '{name}'"
        template = (entry or {}).get("prompt", "{} " + name)
        if not isinstance(template, str) or "{}" not in template:
            raise OntologyError(f"{where}: 'prompt' must contain {{}} for the class prompt")
        attributes[name] = AttributeSpec(name, _phrases(entry or {}, "synonyms", where),
                                         _phrases(entry or {}, "antonyms", where), template)

    classes = {}
    for name, entry in (data.get("classes") or {}).items():
        where = f"{source}: class '{name}'"
        entry = entry or {}
        if entry.get("role") not in _ROLES:
            raise OntologyError(f"{where}: 'role' must be one of {sorted(_ROLES)}, got {entry.get('role')!r}")
        prompts = _phrases(entry, "prompts", where)
        if not prompts:
            raise OntologyError(f"{where}: needs at least one prompt")
        classes[name] = ClassSpec(name, _ROLES[entry["role"]], str(entry.get("description", "")), prompts,
                                  _phrases(entry, "synonyms", where), bool(entry.get("auto_pause", False)),
                                  _threshold(entry.get("min_score", default_score), where))
    if not any(spec.pickable for spec in classes.values()):
        raise OntologyError(f"{source}: no class has role 'target'; nothing could ever be picked")

    seen: dict[str, str] = {}
    for owner, phrases in [(n, (n, *s.synonyms)) for n, s in classes.items()] + \
                          [(n, (n, *s.synonyms, *s.antonyms)) for n, s in attributes.items()]:
        for phrase in phrases:
            if seen.setdefault(phrase, owner) != owner:
                raise OntologyError(f"{source}: phrase '{phrase}' names both '{seen[phrase]}' and '{owner}'")
    return Ontology(version.strip(), classes, attributes, min_stability)


def load_ontology(path: Path | str | None = None) -> Ontology:
    """The given file, or the package's config/ontology.yaml."""
    path = Path(path) if path is not None else share_path("config/ontology.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OntologyError(f"ontology file not found: {path}") from None
    except yaml.YAMLError as error:
        raise OntologyError(f"{path}: not valid YAML: {error}") from None
    return parse_ontology(data, str(path))
