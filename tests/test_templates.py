"""Prompt templates: found, rendered strictly, overridable, sandboxed for users."""

from __future__ import annotations

from pathlib import Path

import pytest

import reflectkit as rk
from reflectkit.prompts import TEMPLATES, Prompts, builtin_template_dir
from reflectkit.testing import ScriptedLLM

REPO = Path(__file__).resolve().parents[1]
TEMPLATES_DIR = REPO / "reflectkit" / "templates"


def test_the_built_in_templates_are_found_and_all_render() -> None:
    assert builtin_template_dir() == TEMPLATES_DIR
    prompts = Prompts()
    prompts.check()
    assert not prompts.sandboxed
    system = prompts.render(
        "protocol_system", scheme=rk.REFLECTION_TAGS, exemplar=None, exemplar_question=None
    )
    assert "<thinking>" in system
    assert "<reflection>" in system
    assert "<output>" in system
    assert "12 legs" not in system


def test_the_exemplar_is_a_worked_example_in_the_schemes_tags() -> None:
    chinese = rk.TagScheme("推理", "反思", "输出")
    prompts = Prompts()
    answer = prompts.render("exemplar_answer", scheme=chinese)
    parsed = rk.parse(answer, chinese)
    assert parsed.status is rk.ParseStatus.COMPLETE
    assert parsed.output == "3 cats have 12 legs."
    assert parsed.thinking == ["A cat has 4 legs, so 3 cats have 3 × 4 = 12 legs."]
    question = prompts.render("exemplar_question", scheme=chinese)
    assert question == "How many legs do 3 cats have?"
    system = prompts.render(
        "protocol_system", scheme=chinese, exemplar=answer, exemplar_question=question
    )
    assert system.endswith(f"Question: {question}\n{answer}")


def test_the_tuned_prompt_is_reflection_70bs_word_for_word() -> None:
    text = Prompts().render("tuned_system", scheme=rk.REFLECTION_TAGS)
    assert text == (
        "You are a world-class AI system, capable of complex reasoning and reflection. Reason "
        "through the query inside <thinking> tags, and then provide your final response inside "
        "<output> tags. If you detect that you made a mistake in your reasoning at any point, "
        "correct yourself inside <reflection> tags."
    )


def test_templates_follow_the_schemes_tag_names() -> None:
    prompts = Prompts()
    chinese = rk.TagScheme("推理", "反思", "输出")
    system = prompts.render(
        "protocol_system", scheme=chinese, exemplar=None, exemplar_question=None
    )
    assert "<推理>" in system
    assert "<输出>" in system
    assert "<thinking>" not in system
    think = prompts.render(
        "protocol_system", scheme=rk.THINK_TAGS, exemplar=None, exemplar_question=None
    )
    assert "after </think>" in think
    assert "<reflection>" not in think


def test_a_missing_variable_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(rk.TemplateError, match="'answer' is undefined"):
        Prompts().render("critique", question="q", scheme=rk.REFLECTION_TAGS)
    with pytest.raises(rk.TemplateError, match="unknown template 'nope'"):
        Prompts().render("nope")


def test_revise_template_handles_missing_feedback() -> None:
    text = Prompts().render(
        "revise",
        question="q",
        answer="a",
        feedback="",
        issues=[],
        score=None,
        scheme=rk.REFLECTION_TAGS,
    )
    assert "gave no details" in text
    assert "scored" not in text


async def test_a_users_template_dir_overrides_by_file_name(tmp_path: Path) -> None:
    (tmp_path / "protocol_system.j2").write_text(
        "Think in <{{ scheme.thinking }}>, answer in <{{ scheme.output }}>. Be terse."
    )
    fake = ScriptedLLM(["<output>4</output>"])
    result = await rk.areflect("2+2", model=fake.model, mode="single", template_dir=tmp_path)
    assert result.output == "4"
    assert fake.requests[0].system_text == "Think in <thinking>, answer in <output>. Be terse."
    prompts = Prompts(tmp_path)
    assert prompts.sandboxed
    assert prompts.source("protocol_system")[0] == tmp_path / "protocol_system.j2"
    assert prompts.source("critique")[0] == TEMPLATES_DIR / "critique.j2"


def test_user_templates_cannot_reach_python_internals(tmp_path: Path) -> None:
    (tmp_path / "generate.j2").write_text("{{ question.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(rk.TemplateError):
        Prompts(tmp_path).render("generate", question="q", scheme=rk.REFLECTION_TAGS)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{{ scheme.thinking }} {{ not_a_variable }}", "not_a_variable"),
        ("{% if %}", "does not parse"),
    ],
)
def test_a_broken_user_template_fails_before_any_model_call(
    tmp_path: Path, content: str, match: str
) -> None:
    (tmp_path / "revise.j2").write_text(content)
    fake = ScriptedLLM([])
    with pytest.raises(rk.TemplateError, match=match):
        rk.Reflector(fake.model, template_dir=tmp_path)
    assert fake.requests == []


def test_template_dir_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(rk.ConfigurationError, match="not a directory"):
        rk.Reflector(ScriptedLLM([]).model, template_dir=tmp_path / "missing")


def test_every_template_documents_its_variables() -> None:
    for name, spec in TEMPLATES.items():
        source = (TEMPLATES_DIR / spec.file).read_text()
        assert source.startswith("{#-"), f"{name} has no header comment"
        for variable in spec.variables:
            assert variable in source.split("-#}")[0], f"{name} header does not name {variable}"
