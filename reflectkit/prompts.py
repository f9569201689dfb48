"""Prompt templates: where they are, what each one needs, and rendering them safely.

The built-in templates live in ``reflectkit/templates/``, inside the package, so a source
checkout, an editable install and an installed wheel all find them in the same place
(:data:`reflectkit.resources.TEMPLATE_DIR`).

Templates render with ``StrictUndefined`` (a misspelt variable is an error, not an empty string).
A user's ``template_dir`` overrides built-ins by file name, and then every template renders in a
sandboxed environment, because user templates are code that should not reach Python internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from reflectkit.errors import TemplateError
from reflectkit.resources import TEMPLATE_DIR
from reflectkit.tags import REFLECTION_TAGS

__all__ = ["TEMPLATES", "Prompts", "TemplateSpec", "builtin_template_dir"]


@dataclass(frozen=True)
class TemplateSpec:
    """A template reflectkit renders, and the variables it is given."""

    file: str
    purpose: str
    variables: tuple[str, ...]


TEMPLATES: dict[str, TemplateSpec] = {
    "protocol_system": TemplateSpec(
        "protocol_system.j2",
        "system prompt of the tag protocol for untuned models",
        ("scheme", "exemplar", "exemplar_question"),
    ),
    "tuned_system": TemplateSpec(
        "tuned_system.j2", "system prompt for models tuned on the tag protocol", ("scheme",)
    ),
    "exemplar_question": TemplateSpec(
        "exemplar_question.j2", "the worked example's question (format help)", ("scheme",)
    ),
    "exemplar_answer": TemplateSpec(
        "exemplar_answer.j2", "the worked example's reply, in the tags (format help)", ("scheme",)
    ),
    "generate": TemplateSpec(
        "generate.j2",
        "the user's request as the generator sees it, with lessons from earlier attempts",
        ("question", "lessons", "scheme"),
    ),
    "lesson": TemplateSpec(
        "lesson.j2",
        "asks for a Reflexion lesson after a failed trial",
        ("question", "answer", "feedback", "scheme"),
    ),
    "critique": TemplateSpec(
        "critique.j2",
        "the LLM critic's prompt; asks for a JSON verdict",
        ("question", "answer", "tool_results", "trajectory", "scheme"),
    ),
    "repair": TemplateSpec(
        "repair.j2", "asks again for only the final answer when a reply had none", ("scheme",)
    ),
    "revise": TemplateSpec(
        "revise.j2",
        "asks for a revision from the latest answer and the critique",
        ("question", "answer", "feedback", "issues", "score", "scheme", "tags"),
    ),
    "output_format": TemplateSpec(
        "output_format.j2",
        "appended to the request when the answer is typed: the JSON Schema it must match",
        ("schema", "scheme"),
    ),
    "revise_runnable": TemplateSpec(
        "revise_runnable.j2",
        "asks a runnable or agent wrapped by reflective() for a revision, with the critique",
        ("question", "answer", "feedback", "issues", "score", "standalone"),
    ),
    "recycle_instruction": TemplateSpec(
        "recycle_instruction.j2",
        "data recycling: the oracle reflects on an instruction and writes a better pair",
        ("instruction", "input", "output"),
    ),
    "recycle_response": TemplateSpec(
        "recycle_response.j2",
        "data recycling: the oracle reflects on a response and writes a better one",
        ("instruction", "input", "output"),
    ),
    "export_assistant": TemplateSpec(
        "export_assistant.j2",
        "export: a run's drafts, critiques and answer as one reply in the tag protocol",
        ("scheme", "steps", "output"),
    ),
}

# Values used to check that every template renders before a run pays for anything.
_SAMPLE_CONTEXT: dict[str, Any] = {
    "scheme": REFLECTION_TAGS,
    "question": "If a number plus 5 equals 12, what is that number minus 3?",
    "answer": "4",
    "tool_results": [{"name": "calculator", "content": "12 - 5 = 7"}],
    "trajectory": [
        {"role": "user", "content": "What is 12 - 5?", "name": "", "tool_calls": []},
        {
            "role": "assistant",
            "content": "",
            "name": "",
            "tool_calls": [{"name": "calculator", "arguments": '{"expression": "12 - 5"}'}],
        },
        {"role": "tool", "content": "7", "name": "calculator", "tool_calls": []},
        {"role": "assistant", "content": "7", "name": "", "tool_calls": []},
    ],
    "standalone": True,
    "feedback": "Show the subtraction.",
    "issues": ["The step 7 - 3 is missing."],
    "score": 6.0,
    "exemplar": "<thinking>Japan's capital is Tokyo.</thinking><output>Tokyo</output>",
    "exemplar_question": "What is the capital of Japan?",
    "lessons": ["Subtract only after finding the number."],
    "schema": '{"type": "integer"}',
    "tags": True,
    "instruction": "Give three tips for staying healthy.",
    "input": "",
    "output": "1. Eat well. 2. Exercise. 3. Sleep enough.",
    "steps": [
        {"thinking": ["x + 5 = 12, so x = 7; 7 - 3 = 5"], "answer": "5", "reflections": []},
        {"thinking": ["7 - 3 = 4"], "answer": None, "reflections": ["7 - 3 is 4, not 5."]},
    ],
}


_SANDBOX = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
)


def builtin_template_dir() -> Path:
    """The directory holding reflectkit's own templates."""
    if (TEMPLATE_DIR / TEMPLATES["protocol_system"].file).is_file():
        return TEMPLATE_DIR
    raise TemplateError(
        f"reflectkit's templates are missing (looked in {TEMPLATE_DIR}); reinstall reflectkit"
    )


class Prompts:
    """Renders reflectkit's templates, with a user's ``template_dir`` taking precedence."""

    def __init__(self, template_dir: Path | None = None) -> None:
        self.builtin_dir = builtin_template_dir()
        self.template_dir = template_dir
        search = [str(self.builtin_dir)]
        env_type: type[jinja2.Environment] = jinja2.Environment
        if template_dir is not None:
            search.insert(0, str(template_dir))
            env_type = ImmutableSandboxedEnvironment
        self._env = env_type(
            loader=jinja2.FileSystemLoader(search),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
            keep_trailing_newline=False,
        )
        self._cache: dict[str, jinja2.Template] = {}
        self._sources: dict[str, jinja2.Template] = {}

    @property
    def sandboxed(self) -> bool:
        """True when user templates are in play and rendering is sandboxed."""
        return isinstance(self._env, ImmutableSandboxedEnvironment)

    def _template(self, name: str) -> jinja2.Template:
        template = self._cache.get(name)
        if template is not None:
            return template
        spec = TEMPLATES.get(name)
        if spec is None:
            known = ", ".join(sorted(TEMPLATES))
            raise TemplateError(f"unknown template {name!r}; known templates: {known}")
        try:
            template = self._env.get_template(spec.file)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(
                f"template {spec.file} does not parse: {error.message} (line {error.lineno})"
            ) from None
        except jinja2.TemplateNotFound:
            raise TemplateError(f"template {spec.file} not found") from None
        self._cache[name] = template
        return template

    def render(self, name: str, **context: Any) -> str:
        """Render template ``name`` (a key of :data:`TEMPLATES`) with ``context``."""
        template = self._template(name)
        try:
            return template.render(**context).strip()
        except jinja2.UndefinedError as error:
            raise TemplateError(f"template {TEMPLATES[name].file}: {error.message}") from None
        except jinja2.TemplateError as error:
            raise TemplateError(f"template {TEMPLATES[name].file}: {error}") from None

    def render_source(self, source: str, **context: Any) -> str:
        """Render template text given as a string (a critic's own template), always sandboxed
        and strict, compiled once per distinct text."""
        template = self._sources.get(source)
        if template is None:
            try:
                template = _SANDBOX.from_string(source)
            except jinja2.TemplateSyntaxError as error:
                raise TemplateError(
                    f"template string does not parse: {error.message} (line {error.lineno})"
                ) from None
            self._sources[source] = template
        try:
            return template.render(**context).strip()
        except jinja2.TemplateError as error:
            raise TemplateError(f"template string: {error}") from None

    def source(self, name: str) -> tuple[Path, str]:
        """Where template ``name`` comes from and its text (the user's copy if it has one)."""
        template = self._template(name)
        path = Path(template.filename or TEMPLATES[name].file)
        return path, path.read_text(encoding="utf-8")

    def check(self) -> None:
        """Render every template with sample values; raise TemplateError on the first failure."""
        for name in TEMPLATES:
            self.render(name, **_SAMPLE_CONTEXT)
