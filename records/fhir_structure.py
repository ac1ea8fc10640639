"""A fast structural check of FHIR JSON, giving the verdict of the fhir.resources (R4B) models without building them.

`Model.model_validate` costs 0.5 to 2 ms a resource: every nested element goes through fhir_core's Python hooks (a wrap
validator that validates the element's model again, the models' `__init__`, a before-validator looping over every
field of the class, an after-validator for required primitives and choice elements). Most resources an EHR sends are
valid, so `conforms` walks the JSON dict instead, with rules read once per model class from the models themselves:
their fields (JSON key, list or single, primitive type and its constraints from fhir_core.types, element model),
`get_required_fields()`, `get_one_of_many_fields()` and the `json_schema_extra` (`element_required`, `one_of_many`,
`one_of_many_required`).

`conforms` answers True only when it is sure the model accepts the resource. Anything it finds wrong, and anything it
has no rule for (an annotation, a primitive type or a validator it does not know, a null, an empty value, a key spelt
by its Python field name, a JSON string where pydantic would parse an object...), gives False: the caller then runs
`model_validate`, which decides and words the errors. It never accepts what the models refuse; the unit tests check
that on real bundles and on mutations of them.
"""

from __future__ import annotations

import binascii
import datetime
import functools
import importlib
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from annotated_types import Ge, Le, MaxLen, MinLen
from fhir_core import types as fhir_types
from fhir_core.constraints import FHIR_TYPES_MAPS
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from pydantic import AnyUrl, BaseModel
from pydantic.types import Base64Encoder, EncodedBytes

Check = Callable[[Any], bool]
Model = type[FHIRAbstractModel]

MAX_DEPTH = 128  # deeper than any FHIR resource: the models decide (and refuse) such input

# The model validators every FHIR model carries (fhir_core), and the one extra of FHIRPrimitiveExtension (the `_x`
# siblings of primitives); `shape` mirrors each. A model with any other validator is not understood.
KNOWN_VALIDATORS = frozenset(
    {
        ("before", "FHIRAbstractModel.reject_null_complex_elements"),
        ("after", "FHIRAbstractModel.validate_after_model_construction"),
        ("before", "FHIRPrimitiveExtension.validate_extension_or_fhir_comment_required"),
    }
)
KNOWN_CONFIG = {"extra": "forbid", "validate_assignment": True, "populate_by_name": True}


@dataclass(frozen=True, slots=True)
class Field:
    """How one JSON key of a model is checked."""

    kind: Literal["primitive", "complex", "resource", "unknown"]
    many: bool  # a JSON array
    nullable_items: bool  # an array whose items may be null (primitives, and their `_x` extension siblings)
    check: Check | None = None  # a primitive's value
    model: Model | None = None  # a complex element's model
    choice: str | None = None  # the choice element (value[x]) this key is one variant of
    registry: str | None = None  # any resource: the prefix of fhir_core's type registry its resourceType is found in


@dataclass(frozen=True, slots=True)
class Shape:
    """What `conforms` checks of one model, read from the model class once."""

    understood: bool
    fields: dict[str, Field]
    resource_type: str | None = None  # a resource's own resourceType (the only other key allowed)
    required: tuple[str, ...] = ()  # keys that must be there
    required_primitives: tuple[tuple[str, str | None], ...] = ()  # (key, its `_key`): a value or an extension
    required_choices: frozenset[str] = frozenset()
    one_of: tuple[str, ...] = ()  # at least one of these keys (FHIRPrimitiveExtension's own validator)
    any_required: bool = False  # any of the three above: `_required` has something to check


UNKNOWN = Field("unknown", False, False)
NOT_UNDERSTOOD = Shape(False, {})


def conforms(data: Any, model: Model) -> bool:
    """True if `model.model_validate(data)` accepts `data`, found without building the model. False when the data is
    wrong or when the walker cannot tell: then only `model_validate` knows."""
    try:
        return _object(data, model, 0)
    except Exception:  # RecursionError, or input this module did not foresee: the model will know
        return False


def _object(node: Any, model: Model, depth: int) -> bool:
    """One JSON object against one model: its keys, its required elements and its choice elements. (The hot loop of
    the module: the checks of a key's value are written out here rather than in more functions.)"""
    if type(node) is not dict or not node or depth > MAX_DEPTH:
        return False
    rules = shape(model)
    if not rules.understood:
        return False
    fields = rules.fields
    chosen: list[str] | None = None
    for key, value in node.items():
        rule = fields.get(key)
        if rule is None:
            if key == "resourceType" and rules.resource_type is not None and value == rules.resource_type:
                continue
            return False
        check = rule.check
        if not rule.many:
            if not (check(value) if check is not None else _element(rule, value, depth)):
                return False  # a check refuses None
        elif type(value) is not list or not value:
            return False
        else:
            for item in value:
                if item is None:
                    if not rule.nullable_items:
                        return False
                elif not (check(item) if check is not None else _element(rule, item, depth)):
                    return False
        if rule.choice is not None:
            if chosen is None:
                chosen = [rule.choice]
            elif rule.choice in chosen:
                return False  # two variants of one choice element
            else:
                chosen.append(rule.choice)
    if rules.required_choices and not rules.required_choices.issubset(chosen or ()):
        return False
    return not rules.any_required or _required(node, rules)


def _element(rule: Field, item: Any, depth: int) -> bool:
    """A complex element, or any resource (its model is the one its resourceType names)."""
    if rule.model is not None:
        return _object(item, rule.model, depth + 1)
    if rule.registry is not None and type(item) is dict:
        resource_type = item.get("resourceType")
        known = type(resource_type) is str and rule.registry + resource_type + "Type" in FHIR_TYPES_MAPS
        model = _resource_model(rule.registry, resource_type) if known else None  # (the cache stays bounded)
        return model is not None and _object(item, model, depth + 1)
    return False  # a field this module has no rule for


def _required(node: dict[str, Any], rules: Shape) -> bool:
    """Required elements: present (nulls were refused already); a required primitive may instead have a `_key`
    sibling with extensions (FHIR's data-absent pattern), as fhir_core allows."""
    for key in rules.required:
        if key not in node:
            return False
    for key, extension_key in rules.required_primitives:
        if key not in node:
            sibling = node.get(extension_key) if extension_key is not None else None
            if not (type(sibling) is dict and type(sibling.get("extension")) is list and sibling["extension"]):
                return False
    return not rules.one_of or any(key in node for key in rules.one_of)


# --- rules read from the models ---------------------------------------------------------------------------------


@functools.cache
def shape(model: Model) -> Shape:
    """The rules of one model class. A model whose behaviour differs from what these rules mirror (its own
    validators, another config, an overridden `__init__`) is not understood: `conforms` then defers to it."""
    if not _behaves_as_known(model):
        return NOT_UNDERSTOOD
    try:
        instance = model.model_construct()  # no validation: only to call the models' instance-level rule lists
        required_fields = instance.get_required_fields()
        choice_fields = instance.get_one_of_many_fields()
        alias_mapping = model.get_alias_mapping()
    except Exception:
        return NOT_UNDERSTOOD
    infos = model.model_fields
    choices = _choices(infos, choice_fields)
    if choices is None:
        return NOT_UNDERSTOOD
    fields: dict[str, Field] = {}
    required: list[str] = []
    for name, info in infos.items():
        key = info.alias or name
        rule = _field(name, info.annotation) if not info.metadata else UNKNOWN
        if name in choices[0]:
            rule = _with_choice(rule, choices[0][name])
        fields[key] = rule
        if info.is_required():
            required.append(key)
    required_primitives = _required_primitives(infos, required_fields, alias_mapping)
    if required_primitives is None:
        return NOT_UNDERSTOOD
    one_of = ("id", "extension", "fhir_comments") if _validator_names(model) >= _PRIMITIVE_EXTENSION else ()
    return Shape(
        understood=True,
        fields=fields,
        resource_type=model.get_resource_type() if model.has_resource_base() else None,
        required=tuple(required),
        required_primitives=required_primitives,
        required_choices=choices[1],
        one_of=one_of,
        any_required=bool(required or required_primitives or one_of),
    )


_PRIMITIVE_EXTENSION = {"FHIRPrimitiveExtension.validate_extension_or_fhir_comment_required"}


def _validator_names(model: Model) -> set[str]:
    decorators = model.__pydantic_decorators__
    return {getattr(d.func, "__qualname__", "?") for d in decorators.model_validators.values()}


def _behaves_as_known(model: Model) -> bool:
    """Only models built like every fhir.resources model: fhir_core's validators, config and hooks, unchanged."""
    decorators = model.__pydantic_decorators__
    if decorators.validators or decorators.field_validators or decorators.root_validators:
        return False
    for d in decorators.model_validators.values():
        if (d.info.mode, getattr(d.func, "__qualname__", "?")) not in KNOWN_VALIDATORS:
            return False
    return (
        dict(model.model_config) == KNOWN_CONFIG
        and model.__init__ is FHIRAbstractModel.__init__
        and model.model_post_init is BaseModel.model_post_init
        and model._validate_one_of_many is FHIRAbstractModel._validate_one_of_many
        and model._validate_required_primitive_elements is FHIRAbstractModel._validate_required_primitive_elements
        and model.validate_after_model_construction is FHIRAbstractModel.validate_after_model_construction
    )


def _choices(infos: dict[str, Any], listed: dict[str, list[str]]) -> tuple[dict[str, str], frozenset[str]] | None:
    """The choice elements: which field is a variant of which, and which choices need a value. fhir_core checks
    the groups `get_one_of_many_fields` lists; a field whose `json_schema_extra` names a group is counted in it as
    well (stricter). None when the lists do not hold together (fhir_core would then fail on an assertion)."""
    variant: dict[str, str] = {}
    required: set[str] = set()
    for prefix, names in listed.items():
        if not names or any(name not in infos for name in names):
            return None
        if _extra(infos[names[0]]).get("one_of_many") != prefix:
            return None
        for name in names:
            variant[name] = prefix
            if _extra(infos[name]).get("one_of_many_required") is True:
                required.add(prefix)
    for name, info in infos.items():
        group = _extra(info).get("one_of_many")
        if isinstance(group, str):
            variant.setdefault(name, group)
            if _extra(info).get("one_of_many_required") is True:
                required.add(group)
    return variant, frozenset(required)


def _required_primitives(
    infos: dict[str, Any], listed: list[tuple[str, str | None]], alias_mapping: dict[str, str]
) -> tuple[tuple[str, str | None], ...] | None:
    """The primitive elements with a minimum cardinality of 1, from `get_required_fields()` (what fhir_core checks)
    and from `element_required` (stricter if the two ever differ), with the key of their `_x` sibling."""
    found: dict[str, str | None] = {}
    for element, extension in listed:
        name = alias_mapping.get(element)
        if name is None or name not in infos:
            return None  # fhir_core would fail on a KeyError
        sibling = infos[extension] if extension is not None and extension in infos else None
        found[infos[name].alias or name] = (sibling.alias or extension) if sibling is not None else None
    for name, info in infos.items():
        if _extra(info).get("element_required") is True and (info.alias or name) not in found:
            found[info.alias or name] = None
    return tuple(found.items())


def _extra(info: Any) -> dict[str, Any]:
    extra = info.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def _with_choice(rule: Field, prefix: str) -> Field:
    return Field(rule.kind, rule.many, rule.nullable_items, rule.check, rule.model, prefix, rule.registry)


def _field(name: str, annotation: Any) -> Field:
    """A field's rule from its annotation: `X | None`, `List[X] | None`, `List[X | None] | None`, where X is a
    primitive of fhir_core.types, a complex type (a FhirBase naming its model) or any resource."""
    if name == "fhir_comments":
        return _comments_field(annotation)
    inner = _without_none(annotation)
    many = typing.get_origin(inner) is list
    if many:
        (item,) = typing.get_args(inner) or (None,)
        inner = _without_none(item)
        item_optional = inner is not item
    else:
        item_optional = False
    check = _primitive(inner)
    if check is not None:
        return Field("primitive", many, item_optional, check=check)
    if isinstance(inner, type) and issubclass(inner, fhir_types.FhirElementOrResourceBase):
        target = inner.get_model_klass()
        registry = getattr(inner, "_prefix", None)
        if target.__name__ == "Resource" and isinstance(registry, str):
            return Field("resource", many, False, registry=registry)
        return UNKNOWN
    if isinstance(inner, type) and issubclass(inner, fhir_types.FhirBase):
        # fhir_core lets a list of `_x` siblings hold nulls (positional placeholders); other complex lists refuse them
        return Field("complex", many, item_optional and name.endswith("__ext"), model=inner.get_model_klass())
    return UNKNOWN


def _comments_field(annotation: Any) -> Field:
    """`fhir_comments`, on every model: a string or a list of strings."""
    if annotation != typing.Union[str, typing.List[str], None]:  # noqa: UP006, UP007 (the model's own spelling)
        return UNKNOWN
    return Field("primitive", False, False, check=_is_comments)


def _is_comments(value: Any) -> bool:
    return type(value) is str or (type(value) is list and all(type(v) is str for v in value))


def _without_none(annotation: Any) -> Any:
    """`X | None` (either spelling) as X; anything else unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


@functools.cache
def _resource_model(registry: str, resource_type: str) -> Model | None:
    """The model an element typed Resource (contained, Bundle.entry.resource...) is validated with: the one its
    resourceType names, found the way fhir_core finds it. None when that is not a resource the walker can vouch
    for: fhir_core would use the bare Resource model or refuse."""
    module, _, name = FHIR_TYPES_MAPS.get(registry + resource_type + "Type", "").rpartition(".")
    try:
        model = getattr(importlib.import_module(module), name)
    except (ImportError, ValueError, AttributeError):
        return None
    if not (isinstance(model, type) and issubclass(model, FHIRAbstractModel) and model.has_resource_base()):
        return None
    return model if model.get_resource_type() == resource_type else None


# --- primitives ---------------------------------------------------------------------------------------------------
#
# Each rule accepts only JSON values the fhir_core type accepts (pydantic's lax mode accepts more: "1" or 1.0 for an
# integer, 1 for a boolean, "1.5" for a decimal...; such values are left to the model). tests/unit/test_fhir_structure
# compares every rule with pydantic on generated values.


def _primitive(annotation: Any) -> Check | None:
    """The check of a primitive annotation (bool, or Annotated[base, fhir_core marker, ...]); None if it is not one
    this module knows."""
    if annotation is bool:
        return _is_bool
    if typing.get_origin(annotation) is not typing.Annotated:
        return None
    base, *metadata = typing.get_args(annotation)
    markers = [m for m in metadata if type(m).__module__ == fhir_types.__name__]
    if len(markers) != 1:
        return None
    marker = markers[0]
    others = [m for m in metadata if m is not marker]
    if type(marker) is fhir_types.Base64Binary:
        encoded = len(others) == 1 and isinstance(others[0], EncodedBytes) and others[0].encoder is Base64Encoder
        return _is_base64 if base is bytes and encoded else None
    if others:
        return None
    return _MARKER_CHECKS.get(type(marker), _unknown_marker)(base, marker)


def _unknown_marker(base: Any, marker: Any) -> Check | None:
    return None


def _is_bool(value: Any) -> bool:
    return type(value) is bool


def _is_base64(value: Any) -> bool:
    """Canonical base64 only (pydantic decodes far looser input, which is left to it)."""
    if type(value) is not str or not value:
        return False
    try:
        binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _string_rule(base: Any, marker: Any) -> Check | None:
    """string, code, id, uri, canonical, oid, markdown: a str with the length bounds and the pattern the marker
    gives pydantic (Rust regex, unanchored search). Python's `re` is used on strings where the two engines agree:
    no control character and no whitespace but space, tab, CR and LF (else the model decides); `$` is written `\\Z`,
    as Rust's `$` does not match before a final newline."""
    if base is not str:
        return None
    low, high, patterns = 1, None, []  # the empty string (valid for a few types) is left to the model
    for constraint in marker:
        if isinstance(constraint, MinLen):
            low = max(low, constraint.min_length)
        elif isinstance(constraint, MaxLen):
            high = constraint.max_length
        elif set(vars(constraint)) == {"pattern"} and isinstance(constraint.pattern, str):
            if re.search(r"\\[dDwWbBAzZ$]|\(\?|\[\^?\]", constraint.pattern):
                return None  # a construct the two engines may read differently
            patterns.append(re.compile(constraint.pattern.replace("$", r"\Z")))
        else:
            return None
    if len(patterns) > 1:
        return None
    return _string_check(low, high, patterns[0] if patterns else None)


_TAB_CR_LF = str.maketrans("", "", "\t\r\n")


def _string_check(low: int, high: int | None, pattern: re.Pattern[str] | None) -> Check:
    search = pattern.search if pattern is not None else None
    top = high if high is not None else float("inf")

    def check(value: Any) -> bool:
        if type(value) is not str or not low <= len(value) <= top:
            return False
        if not value.isprintable() and not value.translate(_TAB_CR_LF).isprintable():
            return False
        return search is None or search(value) is not None

    return check


def _any_string_rule(base: Any, marker: Any) -> Check | None:
    """url and xhtml: pydantic checks them as plain strings (fhir_core's url falls back to its str schema)."""
    return _is_text if base in (str, typing.Union[AnyUrl, str]) else None  # noqa: UP007


def _is_text(value: Any) -> bool:
    return type(value) is str and value != ""


def _integer_rule(base: Any, marker: Any) -> Check | None:
    """integer, unsignedInt, positiveInt: a JSON integer (not a boolean) within the marker's bounds."""
    if base is not int:
        return None
    low, high = None, None
    for constraint in marker:
        if isinstance(constraint, Ge):
            low = constraint.ge
        elif isinstance(constraint, Le):
            high = constraint.le
        else:
            return None
    if not (isinstance(low, int) and isinstance(high, int)):
        return None
    return lambda value: type(value) is int and low <= value <= high


def _decimal_rule(base: Any, marker: Any) -> Check | None:
    """decimal: fhir_core matches str(value) against its pattern and makes a Decimal of it; JSON numbers only."""
    pattern = getattr(type(marker), "pattern", None)
    if not isinstance(pattern, re.Pattern):
        return None

    def check(value: Any) -> bool:
        if type(value) is not int and type(value) is not float:
            return False
        try:
            return pattern.fullmatch(str(value)) is not None
        except ValueError:  # an integer too long to print
            return False

    return check


def _moment_rule(base: Any, marker: Any) -> Check | None:
    """date, dateTime, instant, time: fhir_core's pattern (a fullmatch), then a real calendar date and time of
    day, which pydantic's parser checks. A partial date (YYYY, YYYY-MM) is taken as is, as fhir_core does; a leap
    second (:60), which fhir_core checks in another way, is left to it."""
    pattern = getattr(type(marker), "pattern", None)
    parse = _PARSERS.get(type(marker))
    if not isinstance(pattern, re.Pattern) or parse is None:
        return None

    def check(value: Any) -> bool:
        if type(value) is not str or pattern.fullmatch(value) is None:
            return False
        if len(value) <= 7 and type(marker) in (fhir_types.Date, fhir_types.DateTime):
            return True  # YYYY or YYYY-MM: the pattern is the whole check
        if _LEAP_SECOND.search(value):
            return False
        try:
            parse(value)
        except ValueError:
            return False
        return True

    return check


_LEAP_SECOND = re.compile(r":60(?!\d)")


def _datetime(value: str) -> object:
    return datetime.datetime.fromisoformat(value) if "T" in value else datetime.date.fromisoformat(value)


_PARSERS: dict[type, Callable[[str], object]] = {
    fhir_types.Date: datetime.date.fromisoformat,
    fhir_types.DateTime: _datetime,
    fhir_types.Instant: datetime.datetime.fromisoformat,
    fhir_types.Time: datetime.time.fromisoformat,
}

_MARKER_CHECKS: dict[type, Callable[[Any, Any], Check | None]] = {
    fhir_types.String: _string_rule,
    fhir_types.Code: _string_rule,
    fhir_types.Id: _string_rule,
    fhir_types.Uri: _string_rule,
    fhir_types.Canonical: _string_rule,
    fhir_types.Oid: _string_rule,
    fhir_types.Markdown: _string_rule,
    fhir_types.Url: _any_string_rule,
    fhir_types.Xhtml: _any_string_rule,
    fhir_types.Integer: _integer_rule,
    fhir_types.UnsignedInt: _integer_rule,
    fhir_types.PositiveInt: _integer_rule,
    fhir_types.Decimal: _decimal_rule,
    fhir_types.Date: _moment_rule,
    fhir_types.DateTime: _moment_rule,
    fhir_types.Instant: _moment_rule,
    fhir_types.Time: _moment_rule,
}


def primitive_checks(models: Iterable[Model]) -> list[tuple[Any, Check]]:
    """Every primitive annotation of these models that this module has a rule for, once each, with its rule (the
    tests compare each rule with pydantic)."""
    seen: dict[str, tuple[Any, Check]] = {}
    for model in models:
        for name, info in model.model_fields.items():
            annotation = _without_none(info.annotation)
            if typing.get_origin(annotation) is list:
                annotation = _without_none(typing.get_args(annotation)[0])
            check = _field(name, info.annotation).check
            if check is not None and name != "fhir_comments":
                seen.setdefault(repr(annotation), (annotation, check))
    return list(seen.values())


def models_under(roots: Iterable[Model]) -> set[Model]:
    """These models and every model their elements use, at any depth."""
    pending, seen = list(roots), set()
    while pending:
        model = pending.pop()
        if model not in seen:
            seen.add(model)
            pending.extend(rule.model for rule in shape(model).fields.values() if rule.model is not None)
    return seen
