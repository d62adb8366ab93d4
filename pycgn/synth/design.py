"""Dataset designs: how each mechanism's class is drawn given the label (spurious-correlation benchmarks).

A design names the label mechanism (default ``shape``), the classes of the benchmark (default all;
e.g. 10 ImageNet classes) and, for every other mechanism, a rule:

    uniform          uniform over the classes (independent of the label)
    agree:P          the label's class with probability P, else uniform over the other classes
    permute:P        perm(label) with probability P, else uniform over the classes other than perm(label);
                     perm is a fixed permutation of the classes (default: the next class, cyclically)
    fixed:C          always class C
    subset:A|B|...   uniform over the classes A, B, ...

The label is uniform over the classes. Written on the command line as
``texture=agree:0.99,bg=uniform,classes=0|1|2`` or in JSON as
``{"label": "shape", "classes": [0, 1, 2], "texture": {"rule": "agree", "p": 0.99}, "bg": "uniform"}``.

Randomness: every draw of sample ``i`` is a function of ``(seed, i)`` through the sampler's
counter-based streams ``DESIGN_LABEL``, ``DESIGN_COIN`` and ``DESIGN_CLASS`` (one column per
mechanism), so a design's classes are the same whatever the batch, worker or engine. A benchmark's
split ``name`` gets its own seed, ``split_seed(seed, name)``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..sampler import DESIGN_CLASS, DESIGN_COIN, DESIGN_LABEL, SEED_MAX, integers

MECHANISMS = ("shape", "texture", "bg")
RULES = ("uniform", "agree", "permute", "fixed", "subset")
_WITH_P = ("agree", "permute")


def split_seed(seed: int, split: str) -> int:
    """The seed of the split ``split`` of a benchmark made with ``seed``: a 64-bit hash of both."""
    digest = hashlib.sha256(f"pycgn-benchmark-split\0{int(seed)}\0{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & SEED_MAX


@dataclass(frozen=True)
class Rule:
    kind: str = "uniform"
    p: float | None = None
    classes: tuple = ()  # fixed: (C,); subset: its classes; permute: the image of each design class

    def to_json(self) -> dict:
        out: dict = {"rule": self.kind}
        if self.p is not None:
            out["p"] = self.p
        if self.kind == "fixed":
            out["class"] = self.classes[0]
        elif self.kind == "subset":
            out["classes"] = list(self.classes)
        elif self.kind == "permute" and self.classes:
            out["permutation"] = list(self.classes)
        return out


@dataclass(frozen=True)
class Design:
    label: str = "shape"
    classes: tuple | None = None  # None: every class of the model
    rules: dict = field(default_factory=dict)  # mechanism -> Rule; a mechanism not listed is uniform

    def rule(self, mech: str) -> Rule:
        return self.rules.get(mech, Rule())

    def factors(self) -> tuple[str, ...]:
        """The mechanisms other than the label, in the sampler's order."""
        return tuple(m for m in MECHANISMS if m != self.label)

    def to_json(self) -> dict:
        out: dict = {"label": self.label, "classes": None if self.classes is None else list(self.classes)}
        for m in self.factors():
            out[m] = self.rule(m).to_json()
        return out

    def __str__(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    def text(self) -> str:
        """The command-line form, ``label=shape,texture=agree:0.99,...`` (``parse_design`` reads it)."""
        parts = [f"label={self.label}"]
        if self.classes is not None:
            parts.append("classes=" + "|".join(map(str, self.classes)))
        for mech, r in self.rules.items():
            text = r.kind
            if r.kind in _WITH_P:
                text += f":{r.p}" + (":" + "|".join(map(str, r.classes)) if r.classes else "")
            elif r.kind in ("fixed", "subset"):
                text += ":" + "|".join(map(str, r.classes))
            parts.append(f"{mech}={text}")
        return ",".join(parts)

    # --- binding to a model -------------------------------------------------------------------
    def resolve(self, gen) -> "Design":
        """This design with every class an id of ``gen``'s model (names looked up, ids checked)."""
        def ids(where, values):
            return tuple(int(gen.class_ids(where, v, 1)) for v in values)

        n = len(gen.class_names)
        classes = tuple(range(n)) if self.classes is None else ids("design.classes", self.classes)
        if len(set(classes)) != len(classes):
            raise ValueError(f"design.classes: a class is listed twice in {list(classes)}")
        rules = {}
        for m, r in self.rules.items():
            cls = ids(f"design.{m}", r.classes)
            if r.kind == "permute" and cls and sorted(cls) != sorted(classes):
                raise ValueError(f"design.{m}: permutation {list(cls)} must list each of the design's classes "
                                 f"{list(classes)} once")
            if r.kind == "subset" and len(set(cls)) != len(cls):
                raise ValueError(f"design.{m}: a class is listed twice in the subset {list(cls)}")
            rules[m] = Rule(r.kind, r.p, cls)
        return Design(self.label, classes, rules)

    # --- drawing -------------------------------------------------------------------------------
    def draw(self, seed: int, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The class ids of every mechanism for the sample indices ``idx`` (a resolved design)."""
        if self.classes is None:
            raise ValueError("design.classes: resolve the design against a model first (Design.resolve)")
        cls = np.asarray(self.classes, dtype=np.int64)
        m = len(cls)
        y = integers(seed, idx, DESIGN_LABEL, 1, m)[:, 0]  # positions in ``classes``
        out = {self.label: cls[y]}
        coins = integers(seed, idx, DESIGN_COIN, len(MECHANISMS), 1 << 53).astype(np.float64) * 2.0**-53
        for col, mech in enumerate(MECHANISMS):
            if mech == self.label:
                continue
            r = self.rule(mech)
            if r.kind == "fixed":
                out[mech] = np.full(idx.shape[0], r.classes[0], dtype=np.int64)
            elif r.kind == "subset":
                sub = np.asarray(r.classes, dtype=np.int64)
                out[mech] = sub[integers(seed, idx, DESIGN_CLASS, len(MECHANISMS), len(sub))[:, col]]
            elif r.kind == "uniform" or m == 1:
                out[mech] = cls[integers(seed, idx, DESIGN_CLASS, len(MECHANISMS), m)[:, col]]
            else:
                target = y if r.kind == "agree" else self._perm(r)[y]
                other = integers(seed, idx, DESIGN_CLASS, len(MECHANISMS), m - 1)[:, col]
                other = other + (other >= target)  # uniform over the positions other than target
                out[mech] = cls[np.where(coins[:, col] < r.p, target, other)]
        return out

    def _perm(self, r: Rule) -> np.ndarray:
        """Positions: the permutation maps the design's class at position j to position perm[j]."""
        m = len(self.classes)
        if not r.classes:
            return (np.arange(m) + 1) % m
        where = {c: j for j, c in enumerate(self.classes)}
        return np.array([where[c] for c in r.classes], dtype=np.int64)

    def requested_agreement(self, mech: str) -> float:
        """P(class of ``mech`` == label) the design asks for (label uniform over the classes)."""
        cls, r = list(self.classes), self.rule(mech)
        m = len(cls)
        if r.kind == "uniform":
            return 1.0 / m
        if r.kind == "fixed":
            return (r.classes[0] in cls) / m
        if r.kind == "subset":
            return len(set(r.classes) & set(cls)) / (m * len(r.classes))
        if m == 1:
            return 1.0
        if r.kind == "agree":
            return r.p
        fixed_points = int((self._perm(r) == np.arange(m)).sum())
        return (fixed_points * r.p + (m - fixed_points) * (1 - r.p) / (m - 1)) / m


class DesignSampler:
    """A model's sampler whose classes come from a design: latents, noise and offsets are the
    model's own draws for the same seed and index; only the classes are the design's."""

    def __init__(self, base, design: Design, seed: int):
        self.base, self.design, self.seed = base, design, int(seed)

    def draw(self, indices, **_):
        idx = np.arange(indices.start, indices.stop, indices.step, dtype=np.int64) \
            if isinstance(indices, range) else np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and idx.min() < 0:
            raise ValueError(f"indices must be >= 0, got {int(idx.min())}")
        return self.base.draw(idx, **self.design.draw(self.seed, idx))


def make_sampler(gen, seed: int, counterfactuals: int, design: Design | None):
    """The sampler every engine uses: the model's own, or its design-driven wrapper."""
    base = gen.sampler(seed, counterfactuals=counterfactuals)
    return base if design is None else DesignSampler(base, design, seed)


# --- parsing ---------------------------------------------------------------------------------

def _prob(where: str, value) -> float:
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: p must be a number in [0, 1], got {value!r}") from None
    if isinstance(value, bool) or not 0.0 <= p <= 1.0:  # NaN fails the comparison too
        raise ValueError(f"{where}: p must be in [0, 1], got {value!r}")
    return p


def _class_list(where: str, value) -> tuple:
    items = value.split("|") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(f"{where}: expected a non-empty list of classes, got {value!r}")
    out = []
    for v in items:
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise ValueError(f"{where}: a class must be an id or a name, got {v!r}")
        out.append(v)
    return tuple(out)


def parse_rule(where: str, spec) -> Rule:
    """A rule from ``"agree:0.9"`` or ``{"rule": "agree", "p": 0.9}`` (errors name ``where``)."""
    if isinstance(spec, str):
        kind, _, rest = spec.strip().partition(":")
        if kind in _WITH_P:
            p, _, perm = rest.partition(":")
            spec = {"rule": kind, "p": p, **({"permutation": perm} if perm else {})}
        elif kind == "fixed":
            spec = {"rule": kind, "class": rest}
        elif kind == "subset":
            spec = {"rule": kind, "classes": rest}
        else:
            spec = {"rule": kind, **({"extra": rest} if rest else {})}
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: expected a rule such as 'agree:0.9' or {{\"rule\": \"agree\", \"p\": 0.9}}, "
                         f"got {spec!r}")
    kind = spec.get("rule")
    if kind not in RULES:
        raise ValueError(f"{where}: rule must be one of {', '.join(RULES)}, got {kind!r}")
    allowed = {"uniform": {"rule"}, "agree": {"rule", "p"}, "permute": {"rule", "p", "permutation"},
               "fixed": {"rule", "class"}, "subset": {"rule", "classes"}}[kind]
    extra = sorted(set(spec) - allowed)
    if extra:
        raise ValueError(f"{where}: rule {kind!r} takes no {extra[0]!r}")
    if kind in _WITH_P:
        if "p" not in spec or spec["p"] in ("", None):
            raise ValueError(f"{where}: rule {kind!r} needs p, e.g. '{kind}:0.9'")
        perm = _class_list(f"{where}.permutation", spec["permutation"]) if "permutation" in spec else ()
        return Rule(kind, _prob(where, spec["p"]), perm)
    if kind == "fixed":
        c = spec.get("class")
        if c in ("", None):
            raise ValueError(f"{where}: rule 'fixed' needs a class, e.g. 'fixed:3'")
        return Rule(kind, None, _class_list(where, [c]))
    if kind == "subset":
        return Rule(kind, None, _class_list(where, spec.get("classes")))
    return Rule()


def parse_design(spec, where: str = "design") -> Design:
    """A design from a dict (JSON) or a string ``mech=rule,...,label=shape,classes=0|1``."""
    if isinstance(spec, Design):
        return spec
    if isinstance(spec, str):
        items: dict = {}
        for part in filter(None, (s.strip() for s in spec.split(","))):
            key, eq, value = part.partition("=")
            if not eq:
                raise ValueError(f"{where}: expected key=value, got {part!r} (e.g. texture=agree:0.9)")
            if key.strip() in items:
                raise ValueError(f"{where}.{key.strip()}: given twice")
            items[key.strip()] = value.strip()
        spec = items
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: expected an object of mechanism rules, got {type(spec).__name__}")
    label = spec.get("label", "shape")
    if label not in MECHANISMS:
        raise ValueError(f"{where}.label: must be a mechanism, one of {', '.join(MECHANISMS)}; got {label!r}")
    unknown = sorted(set(spec) - {"label", "classes", *MECHANISMS})
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r}; expected label, classes or a mechanism "
                         f"({', '.join(MECHANISMS)})")
    classes = spec.get("classes")
    classes = None if classes is None else _class_list(f"{where}.classes", classes)
    rules = {m: parse_rule(f"{where}.{m}", spec[m]) for m in MECHANISMS if m in spec}
    if label in rules and rules[label].kind != "uniform":
        raise ValueError(f"{where}.{label}: {label} is the label, drawn uniformly over the design's classes; "
                         f"give a class subset as classes=... instead of a rule")
    rules.pop(label, None)
    return Design(label, classes, rules)


def read_splits(path) -> dict[str, tuple[int | None, Design]]:
    """``{split: (n or None, design)}`` from a JSON file ``{"splits": {name: {"n": N, ...}}, ...}``;
    top-level label, classes and mechanism rules are defaults for every split."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"design: cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ValueError(f"design: {path} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("splits"), dict) or not doc["splits"]:
        raise ValueError(f"design: {path} must hold {{\"splits\": {{name: {{\"n\": N, mechanism: rule}}}}}}")
    shared = {k: v for k, v in doc.items() if k != "splits"}
    out = {}
    for name, spec in doc["splits"].items():
        if not isinstance(spec, dict):
            raise ValueError(f"design.splits.{name}: expected an object, got {type(spec).__name__}")
        spec = {**shared, **spec}
        n = spec.pop("n", None)
        out[check_split_name(name)] = (n, parse_design(spec, f"design.splits.{name}"))
    return out


def parse_split(text: str) -> tuple[str, int, Design]:
    """``NAME:N:DESIGN`` (``train:20000:texture=agree:0.99``) from the command line."""
    name, _, rest = text.partition(":")
    n, _, design = rest.partition(":")
    try:
        count = int(n)
    except ValueError:
        raise ValueError(f"--split: expected NAME:N:DESIGN (e.g. train:20000:texture=agree:0.99), "
                         f"got {text!r}") from None
    return check_split_name(name), count, parse_design(design, f"--split {name}")


def check_split_name(name) -> str:
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"split name must be letters, digits, '-' or '_', got {name!r}")
    return name
