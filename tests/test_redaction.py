"""Secrets stay out of messages, logs and saved configurations."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import reflectkit as rk
from reflectkit.redaction import REDACTED, is_secret_name, redact, redact_mapping
from reflectkit.stores.runlog import RunLog
from reflectkit.testing import ScriptedLLM, fail


def test_known_and_key_shaped_secrets_are_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_PASSWORD", "hunter2-but-longer")
    text = (
        "env hunter2-but-longer, given s3cr3t-value, openai sk-proj-abcdefgh1234, "
        "header Bearer abc.def.ghijkl, url ?api_key=zzzzzzzz&x=1, short sk-1"
    )
    clean = redact(text, secrets=["s3cr3t-value"])
    for secret in (
        "hunter2-but-longer",
        "s3cr3t-value",
        "sk-proj-abcdefgh1234",
        "abc.def.ghijkl",
        "zzzzzzzz",
    ):
        assert secret not in clean
    assert "api_key=" + REDACTED in clean
    assert "short sk-1" in clean  # too short to be a key


def test_mappings_lose_secret_named_values_at_any_depth() -> None:
    clean = redact_mapping(
        {
            "api_key": "x",
            "temperature": 0,
            "headers": {"Authorization": "Bearer abcdefghij"},
            "api_base": "http://127.0.0.1:8000",
            "note": "token=abcdefgh1",
        }
    )
    assert clean == {
        "api_key": REDACTED,
        "temperature": 0,
        "headers": {"Authorization": REDACTED},
        "api_base": "http://127.0.0.1:8000",
        "note": f"token={REDACTED}",
    }
    assert is_secret_name("OPENAI_API_KEY")
    assert not is_secret_name("temperature")


def test_a_configuration_is_safe_to_log() -> None:
    config = rk.ReflectConfig(
        model="gpt-4o-mini",
        model_kwargs={"api_key": "sk-live-0123456789", "temperature": 0},
        critic_kwargs={"api_key": "sk-critic-0123456789"},
    )
    dumped = json.dumps(config.public_dict())
    assert "0123456789" not in dumped
    assert config.public_dict()["model_kwargs"]["temperature"] == 0
    assert config.public_dict()["critic"] is None


# Secrets of every shape redaction knows, as they turn up in errors, reprs, headers and logs.
# Each entry: the text, and the secret in it that must not survive.
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GITHUB = "ghp_" + "A1b2C3d4E5f6G7h8I9j0" * 2
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nVJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1G"
LEAKS = [
    ('{"api_key": "zq-json-value-1"}', "zq-json-value-1"),
    ("{'api_key': 'zq-repr-value-2'}", "zq-repr-value-2"),
    ("ModelClient(model='m', api_key=zq-repr-value-3, timeout=3)", "zq-repr-value-3"),
    ('{"openaiApiKey": "with spaces inside 4"}', "with spaces inside 4"),
    ("OPENAI_API_KEY=zq-env-value-5 python app.py", "zq-env-value-5"),
    ('"{\\"api_key\\": \\"zq-escaped-value-6\\"}"', "zq-escaped-value-6"),
    ("api_base='http://user:Pa55word-7@proxy.internal:8000/v1'", "Pa55word-7"),
    ("http://admin:p@ss@word-8@db.internal/x", "p@ss@word-8"),
    ("https://" + GITHUB + "@github.com/org/repo.git", GITHUB),
    ("extra_headers={'Cookie': 'sid=cookie-value-9; theme=dark'}", "cookie-value-9"),
    ("extra_headers={'Authorization': 'Basic dXNlcjpwYXNzd29yZA=='}", "dXNlcjpwYXNzd29yZA=="),
    ('{"X-Api-Key": "x-api-value-10"}', "x-api-value-10"),
    ("Cookie: sid=cookie-value-11; theme=dark\nHost: example.com", "cookie-value-11"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZDEy\n", "dXNlcjpwYXNzd29yZDEy"),
    ("key id AKIAIOSFODNN7EXAMPLE in use", "AKIAIOSFODNN7EXAMPLE"),
    (f"aws_secret_access_key = {AWS_SECRET}", AWS_SECRET),
    (f'{{"SecretAccessKey": "{AWS_SECRET}"}}', AWS_SECRET),
    (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", AWS_SECRET),
    (f"token {GITHUB} rejected", GITHUB),
    ("gho_" + "Z9y8X7w6V5u4T3s2R1q0" * 2, "Z9y8X7w6V5u4T3s2R1q0"),
    ("github_pat_11ABCDEFG0aBcDeFgHiJkL_mNoPqRsTuVwXyZ0123456789aBcDeFgHiJkLmNoPqRsT", "mNoPqRsT"),
    ("slack xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUv", "AbCdEfGhIjKlMnOpQrStUv"),
    ("slack xoxp-1234567890-0987654321-1234567-abcdef0123456789", "abcdef0123456789"),
    ("HF hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567 here", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567"),
    ("key=AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"),
    (f"session {JWT}.", JWT.split(".")[2]),
    (f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----", "MIIEvQIB"),
    (
        json.dumps({"key": f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n-----END PRIVATE KEY-----"}),
        "VJTUt9Us8",
    ),
    (f"cut off: -----BEGIN OPENSSH PRIVATE KEY-----\n{PEM_BODY}", "VJTUt9Us8"),
]


@pytest.mark.parametrize(("text", "secret"), LEAKS, ids=[s[:24] for _, s in LEAKS])
def test_secrets_of_every_shape_are_replaced(text: str, secret: str) -> None:
    clean = redact(text)
    assert secret not in clean
    assert REDACTED in clean


# Text that looks a little like a secret and is not one: it must come out as it went in.
NOT_SECRETS = [
    "The key idea: add the numbers column by column, carrying the one.",
    "A monkey: 123456. The secretary: Smith. Authorization: the process of granting access.",
    "Fortune cookie: a crisp cookie with a paper inside.",
    "usage prompt_tokens: 1234567, completion_tokens=7654321, max_tokens=100000",
    "tokenizer=gpt2-tokenizer, num_tokens: 2048000, token_count=1234567",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b fixed it",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 matches",
    "md5 d41d8cd98f00b204e9800998ecf8427e, uuid 123e4567-e89b-12d3-a456-426614174000",
    "see https://example.com/docs/page?x=1&y=2#part and http://localhost:8000/v1",
    "postgresql://db.internal:5432/runs?sslmode=require",
    "token = input()\npassword = input('Password: ')",
    "She asked for a task-based approach to the risk-free rate.",
    "hf_hub_download(repo_id='x'), AKIA is a prefix, eyJ is base64 for {\"",
    "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAK\n-----END CERTIFICATE-----",
    "api_key=[redacted] and 'api_key': '[redacted]'",
]


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_realistic_non_secrets_survive(text: str) -> None:
    assert redact(text) == text


def test_code_that_names_a_secret_loses_the_value_it_assigns() -> None:
    """No exception for code: a secret followed by a bracket must go too."""
    assert redact("token = get_token()") == f"token = {REDACTED}()"
    assert redact("token=3f9a2c7d1e0b(expired)") == f"token={REDACTED}(expired)"


# The property: a secret of any of these shapes, in any of these settings, with any text around
# it, never survives. The surroundings meet the secret at a boundary (a space, punctuation, a
# line break), as text around a credential does; a secret glued to other letters is another
# token altogether.
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_B64 = _ALNUM + "+/"
_VALUE_CHARS = _ALNUM + "+/=_-.~"


def _chars(alphabet: str, size: int, most: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=size, max_size=size if most is None else most)


_SECRET_SHAPES: list[st.SearchStrategy[tuple[str, str]]] = [
    _chars(_ALNUM + "_-", 20, 60).map(lambda s: ("sk-" + s, s)),
    st.tuples(st.sampled_from(["AKIA", "ASIA"]), _chars(_ALNUM[:26] + "0123456789", 16)).map(
        lambda p: (p[0] + p[1], p[1])
    ),
    st.tuples(st.sampled_from(["ghp_", "gho_", "ghu_", "ghs_"]), _chars(_ALNUM, 36)).map(
        lambda p: (p[0] + p[1], p[1])
    ),
    _chars(_ALNUM + "_", 40, 82).map(lambda s: ("github_pat_" + s, s)),
    st.tuples(st.sampled_from("bp"), _chars("0123456789", 12), _chars(_ALNUM, 24)).map(
        lambda p: (f"xox{p[0]}-{p[1]}-{p[2]}", p[2])
    ),
    _chars(_ALNUM, 34).map(lambda s: ("hf_" + s, s)),
    _chars(_ALNUM + "_-", 35).map(lambda s: ("AIza" + s, s)),
    st.tuples(_chars(_ALNUM + "_-", 10, 40), _chars(_ALNUM + "_-", 10, 80)).map(
        lambda p: (f"eyJ{p[0]}.eyJ{p[1]}.{p[1][::-1]}", p[1])
    ),
    _chars(_B64, 64, 400).map(
        lambda s: (
            "-----BEGIN RSA PRIVATE KEY-----\n"
            + "\n".join(s[i : i + 64] for i in range(0, len(s), 64))
            + "\n-----END RSA PRIVATE KEY-----",
            s,
        )
    ),
]


@st.composite
def _named(draw: st.DrawFn) -> tuple[str, str]:
    """A secret under a secret-like name, written as code, JSON, a repr, a header or a URL."""
    name = draw(
        st.sampled_from(
            [
                "api_key",
                "OPENAI_API_KEY",
                "apiKey",
                "aws_secret_access_key",
                "SecretAccessKey",
                "auth_token",
                "client_secret",
                "password",
                "DB_PASSWORD",
                "x-api-key",
                "token",
            ]
        )
    )
    value = draw(_chars(_VALUE_CHARS, 12, 48))
    form = draw(st.sampled_from(["bare", "json", "repr", "escaped", "url", "cookie", "basic"]))
    if form == "bare":
        return f"{name}={value}", value
    if form == "json":
        return json.dumps({name: value}), value
    if form == "repr":
        return repr({name: value}), value
    if form == "escaped":
        return json.dumps(json.dumps({name: value})), value
    if form == "url":
        password = value.replace("/", "%2F")
        return f"http://user:{password}@host.internal:8000/v1", password
    if form == "cookie":
        return f"Cookie: session={value}; theme=dark", value
    return f"Authorization: Basic {value}", value


_BOUNDARY = st.sampled_from([" ", "\n", "\t", ", ", "; ", " (", ") ", "'", '"', "[", "] ", "|"])
_SURROUNDING = st.text(st.characters(codec="utf-8"), max_size=60)  # no lone surrogates


@settings(max_examples=500, deadline=None)
@given(
    planted=st.one_of(*_SECRET_SHAPES, _named()),
    before=_SURROUNDING,
    after=_SURROUNDING,
    left=_BOUNDARY,
    right=_BOUNDARY,
)
def test_a_planted_secret_never_survives(
    planted: tuple[str, str], before: str, after: str, left: str, right: str
) -> None:
    text, secret = planted
    pieces = {secret[i : i + 12] for i in range(max(1, len(secret) - 11))}
    assume(not any(piece in before + after for piece in pieces))
    clean = redact(f"{before}{left}{text}{right}{after}")
    assert not any(piece in clean for piece in pieces), clean


def test_a_failed_runs_secrets_stay_out_of_its_error_the_run_log_and_the_export(
    tmp_path: Path,
) -> None:
    """What a provider echoes back (its error text) and what the caller configured (an api_base
    with a password, headers with a cookie) reach neither the RunError, nor the run log file,
    nor ``runs export``."""
    echoed = {
        "aws": AWS_SECRET,
        "github": GITHUB,
        "jwt": JWT,
        "pem": PEM_BODY,
        "auth": "dXNlcjpwYXNzd29yZDEy",
    }
    message = (
        f'request {{"aws_secret_access_key": "{AWS_SECRET}", "token": "{GITHUB}"}} '
        f"session {JWT} key -----BEGIN EC PRIVATE KEY-----\n{PEM_BODY}\n"
        "-----END EC PRIVATE KEY-----\nAuthorization: Basic dXNlcjpwYXNzd29yZDEy"
    )
    configured = ["Pa55word-in-url", "cookie-value-in-header", "x-api-key-value"]
    model = ScriptedLLM([fail(400, message)]).model
    log_path = tmp_path / "runs.sqlite3"
    with pytest.raises(rk.RunError) as failed:
        rk.reflect(
            "2+2",
            model=model,
            run_log=log_path,
            api_base=f"http://user:{configured[0]}@proxy.internal:8000/v1",
            extra_headers={"Cookie": f"sid={configured[1]}", "X-Api-Key": configured[2]},
        )
    exported = io.StringIO()
    with RunLog(log_path) as log:
        assert log.export(exported) == 1
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    for secret in [*echoed.values(), *configured]:
        for piece in (secret[:16], secret[-16:]):
            assert piece not in str(failed.value)
            assert piece not in exported.getvalue()
            assert piece.encode() not in stored
    assert "http://user:[redacted]@proxy.internal:8000/v1" in exported.getvalue()


def test_runs_export_redacts_rows_an_older_version_wrote(tmp_path: Path) -> None:
    """Rows are redacted when written, with the patterns of the version that wrote them: the
    export applies today's again, so a GitHub token an older version kept does not leave."""
    log_path = tmp_path / "runs.sqlite3"
    model = ScriptedLLM(["<output>4</output>"]).model
    rk.reflect("2+2", model=model, run_log=log_path, mode="single")
    conn = sqlite3.connect(log_path)
    with conn:
        conn.execute("UPDATE runs SET error_message = ?", (f"old row: token {GITHUB}",))
    conn.close()
    exported = io.StringIO()
    with RunLog(log_path) as log:
        log.export(exported)
    record = json.loads(exported.getvalue())
    assert record["error_message"] == f"old row: token {REDACTED}"
    assert record["output"] == "4"
    assert record["prompt_tokens"] > 0
