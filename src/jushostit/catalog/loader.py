"""Load the plans, credit packs and templates shipped in the package; a broken file is an error naming the file and field."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from jushostit.catalog.spec import CreditPackSpec, PlanSpec, SeatTemplateSpec, TemplateSpec, parse_template

M = TypeVar("M", bound=BaseModel)


class CatalogError(Exception):
    pass


def _describe(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in error.errors())


def parse(model: type[M], data: object, source: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise CatalogError(f"{source}: {_describe(error)}") from error


def _read_yaml(file: Traversable) -> object:
    try:
        return yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        raise CatalogError(f"{file.name}: not valid YAML: {error}") from error


def data_dir() -> Traversable:
    return resources.files("jushostit.catalog").joinpath("data")


def load_plans(directory: Traversable | None = None) -> list[PlanSpec]:
    file = (directory or data_dir()).joinpath("plans.yaml")
    items = _read_yaml(file)
    if not isinstance(items, list):
        raise CatalogError(f"{file.name}: expected a list of plans")
    return [parse(PlanSpec, item, f"{file.name}[{i}]") for i, item in enumerate(items)]


def load_credit_packs(directory: Traversable | None = None) -> list[CreditPackSpec]:
    file = (directory or data_dir()).joinpath("credit_packs.yaml")
    items = _read_yaml(file)
    if not isinstance(items, list):
        raise CatalogError(f"{file.name}: expected a list of credit packs")
    packs = [parse(CreditPackSpec, item, f"{file.name}[{i}]") for i, item in enumerate(items)]
    if len({pack.code for pack in packs}) != len(packs):
        raise CatalogError(f"{file.name}: two packs share a code")
    return packs


def load_templates(directory: Traversable | None = None) -> list[TemplateSpec | SeatTemplateSpec]:
    folder = (directory or data_dir()).joinpath("templates")
    specs = []
    for file in sorted(folder.iterdir(), key=lambda f: f.name):
        if file.name.endswith(".yaml"):
            try:
                spec = parse_template(_read_yaml(file))
            except ValidationError as error:
                raise CatalogError(f"templates/{file.name}: {_describe(error)}") from error
            if f"{spec.code}.yaml" != file.name:
                raise CatalogError(f"templates/{file.name}: code {spec.code!r} must match the file name")
            specs.append(spec)
    return specs
