"""Deployment templates: YAML files with typed inputs, resources, a command and service settings.

A template's command is a Jinja2 template rendered in a sandbox; every value it interpolates is
shell-quoted, so an input can never break out of its argument. Secret inputs are refused in the
command: they reach the process only as environment variables.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from agora.errors import InvalidInput

BUILTIN_DIR = Path(__file__).parent / "builtin"
_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_INPUT = r"^[a-z][a-z0-9_]{0,62}$"

InputType = Literal["string", "integer", "number", "boolean", "choice", "secret"]


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: InputType
    title: str = ""
    help: str = ""
    default: Any = None
    required: bool | None = None
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    choices: list[str] | None = None
    max_length: int = Field(default=1024, ge=1, le=65536)

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        if self.type == "choice" and not self.choices:
            raise ValueError("a 'choice' input needs a non-empty 'choices' list")
        if self.type != "choice" and self.choices:
            raise ValueError("'choices' only applies to inputs of type 'choice'")
        if self.min is not None and self.type not in ("integer", "number"):
            raise ValueError("'min' only applies to integer and number inputs")
        if self.max is not None and self.type not in ("integer", "number"):
            raise ValueError("'max' only applies to integer and number inputs")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("'min' is greater than 'max'")
        if self.pattern is not None:
            if self.type not in ("string", "secret"):
                raise ValueError("'pattern' only applies to string and secret inputs")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"'pattern' is not a valid regular expression: {exc}") from exc
        if self.default is not None:
            if self.type == "secret":
                raise ValueError("a secret input cannot have a default")
            try:
                self.default = coerce("default", self, self.default)
            except InvalidInput as exc:
                raise ValueError(f"bad default: {exc.detail.removeprefix('default: ')}") from exc
        if self.required is None:
            self.required = self.default is None and self.type != "boolean"
        return self


Expr = int | float | str  # a literal, or a "{{ expression }}" over the inputs


class ResourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpus: Expr = 1
    memory_mb: Expr = 1024
    gpus: Expr = 0
    #: A GPU model for the scheduler (Slurm's gres type), a literal or "{{ expression }}"; an
    #: empty result means any GPU.
    gpu_type: str | None = None
    time_limit_minutes: Expr = 60


class ServiceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Path (under the service's base URL) probed before the deployment counts as running;
    #: may use inputs, e.g. "{{ readiness_path }}".
    readiness_path: Annotated[str, StringConstraints(pattern=r"^(/\S*|\{\{.*\}\})$")] = "/"
    #: Forward /d/<id>/<path> as /<path> (for programs that know nothing of a path prefix);
    #: by default the prefix is kept and the program serves under $AGORA_BASE_URL.
    strip_prefix: bool = False
    #: Seconds to wait for the service to listen and answer its readiness path.
    start_timeout: int = Field(default=300, ge=5, le=86400)


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(pattern=_NAME)]
    title: str
    description: str = ""
    kind: Literal["service", "job"]
    inputs: dict[Annotated[str, StringConstraints(pattern=_INPUT)], InputSpec] = {}
    resources: ResourceSpec = ResourceSpec()
    command: Annotated[str, StringConstraints(min_length=1)]
    env: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = {}
    service: ServiceSpec | None = None
    #: Where the template came from ("builtin" or a file path); set by the loader.
    source: str = "builtin"

    @model_validator(mode="after")
    def _check(self) -> Template:
        if self.kind == "service" and self.service is None:
            self.service = ServiceSpec()
        if self.kind == "job" and self.service is not None:
            raise ValueError("'service' settings only apply to templates of kind 'service'")
        secrets = {k for k, v in self.inputs.items() if v.type == "secret"}
        used = _variables(self.command, "command")
        if used & secrets:
            names = ", ".join(sorted(used & secrets))
            raise ValueError(f"command uses secret input(s) {names}: pass secrets through env")
        unknown = used - set(self.inputs) - _CONTEXT
        if unknown:
            raise ValueError(f"command uses unknown name(s): {', '.join(sorted(unknown))}")
        if self.service is not None:
            unknown = (
                _variables(self.service.readiness_path, "service.readiness_path")
                - set(self.inputs)
                - _CONTEXT
            )
            if unknown:
                raise ValueError(f"service.readiness_path uses unknown name(s): {sorted(unknown)}")
        for key, value in self.env.items():
            unknown = _variables(value, f"env.{key}") - set(self.inputs) - _CONTEXT
            if unknown:
                raise ValueError(f"env.{key} uses unknown name(s): {', '.join(sorted(unknown))}")
        return self


# Names a template may use besides its inputs.
_CONTEXT = {"inputs", "deployment", "resources"}
_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_shell_env = SandboxedEnvironment(
    undefined=StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    finalize=lambda v: shlex.quote(v if isinstance(v, str) else _plain(v)),
)


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _variables(source: str, where: str) -> set[str]:
    try:
        return set(meta.find_undeclared_variables(_env.parse(source)))
    except TemplateError as exc:
        raise ValueError(f"{where} is not a valid template: {exc}") from exc


# --- inputs -----------------------------------------------------------------------------------


def coerce(name: str, spec: InputSpec, value: Any) -> Any:
    """Turn a submitted value (JSON, or a string from a form or the CLI) into the input's type."""
    t = spec.type
    try:
        if t == "boolean":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in (
                "true",
                "yes",
                "on",
                "1",
                "false",
                "no",
                "off",
                "0",
            ):
                return value.lower() in ("true", "yes", "on", "1")
            raise ValueError
        if t == "integer":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            result: Any = int(value)
        elif t == "number":
            if isinstance(value, bool):
                raise ValueError
            result = float(value)
        else:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise ValueError
            result = str(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name}: expected {_article(t)}", field=name) from None
    if t in ("integer", "number"):
        if spec.min is not None and result < spec.min:
            raise InvalidInput(f"{name}: must be at least {_num(spec.min)}", field=name)
        if spec.max is not None and result > spec.max:
            raise InvalidInput(f"{name}: must be at most {_num(spec.max)}", field=name)
    if t in ("string", "secret", "choice"):
        if len(result) > spec.max_length:
            raise InvalidInput(f"{name}: at most {spec.max_length} characters", field=name)
        if any(ord(c) < 32 and c not in "\t\n" for c in result):
            raise InvalidInput(f"{name}: must not contain control characters", field=name)
        if spec.pattern is not None and re.fullmatch(spec.pattern, result) is None:
            raise InvalidInput(f"{name}: must match the pattern {spec.pattern}", field=name)
        if t == "choice" and result not in (spec.choices or []):
            raise InvalidInput(
                f"{name}: must be one of {', '.join(spec.choices or [])}", field=name
            )
    return result


def _article(t: str) -> str:
    return {
        "integer": "an integer",
        "number": "a number",
        "boolean": "true or false",
        "choice": "one of the choices",
    }.get(t, "a string")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def validate_inputs(template: Template, submitted: dict[str, Any]) -> dict[str, Any]:
    """Checked, typed values for every input (defaults filled in); unknown names refused."""
    unknown = set(submitted) - set(template.inputs)
    if unknown:
        name = sorted(unknown)[0]
        known = ", ".join(template.inputs) or "none"
        raise InvalidInput(
            f"{name}: '{template.name}' has no such input (inputs: {known})", field=name
        )
    values: dict[str, Any] = {}
    for name, spec in template.inputs.items():
        if name in submitted and submitted[name] is not None and submitted[name] != "":
            values[name] = coerce(name, spec, submitted[name])
        elif spec.default is not None:
            values[name] = spec.default
        elif spec.type == "boolean":
            values[name] = False
        elif spec.required:
            raise InvalidInput(f"{name}: a value is required", field=name)
        else:
            values[name] = None
    return values


# --- rendering --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resources:
    cpus: int
    memory_mb: int
    gpus: int
    gpu_type: str | None
    time_limit_minutes: int


@dataclass(frozen=True)
class Rendered:
    script: str
    env: dict[str, str]
    resources: Resources
    readiness_path: str | None


def _evaluate(field: str, expr: Expr, context: dict[str, Any], low: int, high: int) -> int:
    if isinstance(expr, str):
        try:
            raw = _env.from_string(expr).render(context).strip()
            value = float(raw)
        except (TemplateError, ValueError) as exc:
            raise InvalidInput(
                f"resources.{field}: '{expr}' did not give a number ({exc})"
            ) from exc
    else:
        value = float(expr)
    if not value.is_integer() or not low <= value <= high:
        raise InvalidInput(
            f"resources.{field}: {_num(value)} is not a whole number in {low}..{high}"
        )
    return int(value)


def _gpu_type(expr: str | None, context: dict[str, Any]) -> str | None:
    """The GPU type, rendered from inputs; it ends up in a batch-script line, so it is checked."""
    if expr is None:
        return None
    try:
        value = _env.from_string(expr).render(context).strip()
    except TemplateError as exc:
        raise InvalidInput(f"resources.gpu_type: '{expr}' could not be rendered ({exc})") from exc
    if not value:
        return None
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", value):
        raise InvalidInput(
            f"resources.gpu_type: '{value}' is not a GPU type (letters, digits, '_', '.', '-')"
        )
    return value


def render(template: Template, values: dict[str, Any], deployment: dict[str, Any]) -> Rendered:
    """Resources, script and environment for validated input values."""
    context = {**values, "inputs": values, "deployment": deployment}
    r = template.resources
    resources = Resources(
        cpus=_evaluate("cpus", r.cpus, context, 1, 4096),
        memory_mb=_evaluate("memory_mb", r.memory_mb, context, 16, 16 * 1024 * 1024),
        gpus=_evaluate("gpus", r.gpus, context, 0, 64),
        gpu_type=_gpu_type(r.gpu_type, context),
        time_limit_minutes=_evaluate(
            "time_limit_minutes", r.time_limit_minutes, context, 1, 525600
        ),
    )
    context["resources"] = resources.__dict__
    try:
        script = _shell_env.from_string(template.command).render(context)
        env = {k: _env.from_string(v).render(context) for k, v in template.env.items()}
        ready = None
        if template.service is not None:
            ready = _env.from_string(template.service.readiness_path).render(context).strip()
    except TemplateError as exc:
        raise InvalidInput(f"template '{template.name}' could not be rendered: {exc}") from exc
    if ready is not None and not re.fullmatch(r"/[^\s]*", ready):
        raise InvalidInput(f"readiness path '{ready}' must start with '/' and have no spaces")
    return Rendered(script=script, env=env, resources=resources, readiness_path=ready)


# --- loading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadProblem:
    source: str
    message: str


def parse(text: str, source: str) -> Template:
    """One template from YAML text; raises InvalidInput naming the field and the rule."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{source}: a template must be a YAML mapping")
    data["source"] = source
    try:
        return Template.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "template"
        msg = str(first["msg"]).removeprefix("Value error, ")
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise InvalidInput(f"{source}: {where}: {msg}{more}") from exc


def load_directory(directory: Path) -> tuple[dict[str, Template], list[LoadProblem]]:
    """Every ``*.yaml``/``*.yml`` in a directory; a bad file is reported, the others still load."""
    found: dict[str, Template] = {}
    problems: list[LoadProblem] = []
    if not directory.is_dir():
        return found, [LoadProblem(str(directory), "is not a directory")]
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        try:
            template = parse(path.read_text(encoding="utf-8"), str(path))
        except (InvalidInput, OSError, UnicodeDecodeError) as exc:
            problems.append(LoadProblem(str(path), str(exc)))
            continue
        if template.name in found:
            problems.append(LoadProblem(str(path), f"duplicate template name '{template.name}'"))
            continue
        found[template.name] = template
    return found, problems


def load_all(extra_dirs: list[Path]) -> tuple[dict[str, Template], list[LoadProblem]]:
    """Built-ins first; operator directories may add templates or replace a built-in by name."""
    templates, problems = load_directory(BUILTIN_DIR)
    for directory in extra_dirs:
        more, bad = load_directory(directory)
        templates.update(more)
        problems.extend(bad)
    return templates, problems
