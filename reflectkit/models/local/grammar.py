"""GBNF grammars that hold a model to the tag protocol while it decodes.

Providers that constrain decoding with a grammar (``grammar`` capability: the embedded local
model, through llama.cpp) can be made to write only replies the parser reads as
:attr:`~reflectkit.tags.ParseStatus.COMPLETE`: reasoning in the thinking block, at most one
reflection block, then the answer in the output block, and nothing after it. The text inside the
blocks is free, except that it cannot open or close a tag of the scheme (a ``<`` is allowed when
what follows cannot start one, as in ``3 < 5`` or ``x <= 2``).

:func:`tag_grammar` builds the grammar from a :class:`~reflectkit.tags.TagScheme`, so custom
tag names get their own grammar. It starts where the prefill leaves off (after the opening
thinking tag and its newline) when ``prefilled``, else at the start of the reply. The thinking
block can be bounded in characters: a tiny model that would ramble until ``max_tokens`` is made
to close it and answer (see docs/format-help.md for what the bound costs and buys).
"""

from __future__ import annotations

from reflectkit.tags import TagScheme

__all__ = ["gbnf_literal", "tag_grammar"]


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def _class_member(char: str) -> str:
    """One character inside a GBNF character class, escaped unless it is a plain letter/digit."""
    if char.isascii() and char.isalnum():
        return char
    code = ord(char)
    if code < 0x80:
        return f"\\x{code:02X}"
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    return f"\\U{code:08X}"


def _lt_rule(scheme: TagScheme) -> str:
    """A ``<`` in free text: followed (after up to three spaces, as the parser allows inside a
    tag) by something that cannot start a tag of the scheme: not ``/``, not ``<``, not the first
    letter of a tag name in either case."""
    banned = {" ", "/", "<"}
    for name in scheme.names:
        first = name[0]
        banned |= {first, first.lower(), first.upper()}
    members = "".join(_class_member(c) for c in sorted(banned))
    return f'lt ::= "<" " "{{0,3}} [^{members}]'


def tag_grammar(
    scheme: TagScheme,
    *,
    prefilled: bool = True,
    max_thinking_chars: int | None = None,
    reflection: bool = True,
) -> str:
    """A GBNF grammar for one reply in ``scheme``'s tags.

    ``prefilled``: the reply continues a prefill that opened the thinking block (reflectkit's
    format help sends ``"<thinking>\\n"``); otherwise the grammar opens it. ``max_thinking_chars``
    bounds the thinking block in characters, and a reflection block to half as many; ``None``
    leaves both to ``max_tokens``. ``reflection``: whether a reflection block may follow the
    thinking (only if the scheme has one). Without an output tag, the answer is the text after
    the thinking block.
    """
    if max_thinking_chars is not None and max_thinking_chars < 1:
        raise ValueError("max_thinking_chars must be at least 1")
    bound = short = "*"
    if max_thinking_chars is not None:
        # A correction is shorter than the reasoning it corrects; together they must leave the
        # answer room within max_tokens.
        bound = f"{{0,{max_thinking_chars}}}"
        short = f"{{0,{max(1, max_thinking_chars // 2)}}}"
    thinking = scheme.thinking
    sequence: list[str] = []
    if not prefilled:
        sequence.append(f"sep {gbnf_literal(f'<{thinking}>')}")
    sequence += ["think", gbnf_literal(f"</{thinking}>"), "sep"]
    rules = [f"think ::= text{bound}"]
    if reflection and scheme.reflection is not None:
        sequence.append("reflect?")
        opening, closing = f"<{scheme.reflection}>", f"</{scheme.reflection}>"
        rules.append(f"reflect ::= {gbnf_literal(opening)} text{short} {gbnf_literal(closing)} sep")
    if scheme.output is not None:
        output = scheme.output
        sequence += [gbnf_literal(f"<{output}>"), "answer", gbnf_literal(f"</{output}>")]
    else:
        sequence.append("answer")
    rules += [
        # The answer holds at least one visible character; max_tokens bounds its length.
        "answer ::= [ \\t\\n]{0,4} visible text*",
        "visible ::= [^<\\x20\\t\\n] | lt",
        "text ::= [^<] | lt",
        _lt_rule(scheme),
        "sep ::= [ \\t\\n]{0,2}",
    ]
    return "\n".join([f"root ::= {' '.join(sequence)}", *rules]) + "\n"
