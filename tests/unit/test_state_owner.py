"""The routing state has one owner (router/routing/state.py): nothing else builds its keys or
names its fields, the SLA buckets are router/sla's alone, the Lua scripts use only what the
owner defines, the gateway does not reach into the bot, and docs/ROUTING.md shows the layout the
owner holds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import msgspec
import pytest

from router.routing import state
from router.routing.state import (
    ARG_TYPES,
    SCRIPTS,
    AgentProfile,
    AgentRecord,
    ContactRecord,
    layout_markdown,
    lua_prelude,
    script_source,
)
from tests.conftest import repo_root

ROOT = repo_root()
OWNER = ROOT / "router" / "routing" / "state.py"
SLA = ROOT / "router" / "sla"
CODE = [p for d in ("router", "agents", "load_tests", "tests") for p in (ROOT / d).rglob("*.py")
        if p != Path(__file__)]
SCRIPTS_DIR = ROOT / "router" / "routing" / "scripts"

ROUTING_PREFIX = re.compile(r"pr:\{")  # the routing prefix, written out
# prefix(d) + "c:", f"{p}c:{cid}", f"{prefix(d)}a:" ...
PREFIX_PLUS = re.compile(r"prefix\([^()]*\)\s*\+\s*[fr]?[\"']|\{p\}[a-z]+:|\{prefix\([^()]*\)\}")
SLA_BUCKET = re.compile(r"[\"'](?:sm|sh|sq):")
FIELD_NAMES = {*ContactRecord.__struct_fields__, *AgentRecord.__struct_fields__,
               *AgentProfile.__struct_fields__} - {"n"}
RAW_FIELD_READ = re.compile(
    r"\.h(?:m?get|set|incrby|exists)\([^)]*[\"'](" + "|".join(sorted(FIELD_NAMES)) + r")[\"']")


def offenders(pattern: re.Pattern[str], allowed: set[Path]) -> list[str]:
    out = []
    for path in CODE:
        if path in allowed or any(a in path.parents for a in allowed):
            continue
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if pattern.search(line):
                out.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    return out


def test_no_module_but_the_owner_builds_a_routing_key() -> None:
    assert offenders(ROUTING_PREFIX, {OWNER}) == []
    assert offenders(PREFIX_PLUS, {OWNER, SLA / "buckets.py"}) == []


def test_no_module_but_router_sla_builds_an_sla_bucket_key() -> None:
    assert offenders(SLA_BUCKET, {SLA}) == []


def test_no_module_but_the_owner_names_a_routing_record_field_in_a_redis_call() -> None:
    assert offenders(RAW_FIELD_READ, {OWNER}) == []


def test_nothing_under_the_gateway_imports_the_bot() -> None:
    found = []
    for path in (ROOT / "router" / "gateway").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            found += [f"{path.name}: {n}" for n in names if n.startswith("router.bot")]
    assert found == []


def _lua(name: str) -> str:
    return (SCRIPTS_DIR / f"{name}.lua").read_text()


@pytest.mark.parametrize("record", ["c", "a", "p"])
def test_the_scripts_use_only_record_fields_the_owner_defines(record: str) -> None:
    fields = set({"c": ContactRecord, "a": AgentRecord, "p": AgentProfile}[record]
                 .__struct_fields__)
    pattern = re.compile(rf"\b{record}\.([a-z_]+)\b")
    used = {m for name in [*SCRIPTS, "common"] for m in pattern.findall(_lua(name))}
    assert used, "no record access found: the pattern is wrong"
    assert used <= fields, used - fields


@pytest.mark.parametrize("args", ARG_TYPES, ids=lambda t: t.SCRIPT)
def test_each_script_reads_only_its_own_arguments(args: type[state.Args]) -> None:
    used = set(re.findall(r"\bA\.([a-z_]+)\b", _lua(args.SCRIPT)))
    assert used <= set(args.__struct_fields__), used - set(args.__struct_fields__)


def test_common_reads_only_arguments_every_script_that_needs_them_has() -> None:
    used = set(re.findall(r"\bA\.([a-z_]+)\b", _lua("common")))
    # offer() and matching read the offer timeout; every script that can match has it.
    for args in ARG_TYPES:
        if args.SCRIPT in {"accept", "bot"}:
            continue
        assert used <= set(args.__struct_fields__), (args.SCRIPT, used)


def test_the_transition_constructors_come_from_the_owner() -> None:
    prelude = lua_prelude("request")
    for cls in state.TRANSITION_TYPES:
        tag = str(cls.__struct_config__.tag)
        assert f"local function T_{tag}(" in prelude
    called = {m for name in [*SCRIPTS, "common"]
              for m in re.findall(r"\bT_([a-z_]+)\(", _lua(name))}
    assert called <= {str(c.__struct_config__.tag) for c in state.TRANSITION_TYPES}


def _declared(source: str) -> set[str]:
    # A script's `local K_X = KEYS[i]`, or the apply library's bind: `K_X = keys[i]`.
    return set(re.findall(r"^(?:local |  )K_([A-Z_]+) = (?:KEYS|keys)\[\d+\]", source, re.M))


def test_every_script_declares_the_keys_it_can_reach() -> None:
    # Redis runs the bot's script and `apply`, whose bodies are every other script.
    assert set(state.BODIES) | {state.BOT} == set(SCRIPTS)
    for name, bodies in ((state.BOT, [state.BOT]), (state.APPLY, state.BODIES)):
        source = script_source(name)
        declared = _declared(source)
        for body in bodies:
            reached = state.keys_named(body)
            assert reached, body
            assert reached <= declared, (body, reached - declared)
        assert "KEYS[1] .." not in source, name
        assert "P .. " not in source, name
    with pytest.raises(ValueError, match="request"):
        script_source("request")  # a body is not a script of its own


def test_the_reachability_of_keys_is_what_the_scripts_call() -> None:
    # accept never matches: it declares neither the waiting lists nor the free index.
    assert {"WAITING", "FREE"}.isdisjoint(state.keys_named("accept"))
    assert {"WAITING", "FREE", "PENDING"} <= state.keys_named("complete")


def test_routing_md_shows_the_owners_layout() -> None:
    doc = (ROOT / "docs" / "ROUTING.md").read_text()
    assert layout_markdown() in doc, (
        "docs/ROUTING.md's layout table differs from router/routing/state.py: paste the output "
        "of `python -m router.routing.state`")


def test_the_callback_channel_is_the_contracts() -> None:
    from router.events import Channel
    assert Channel.CALLBACK.value == state.CALLBACK_CHANNEL


def test_a_map_form_row_of_an_unknown_kind_is_a_validation_error() -> None:
    """The fallback for rows an earlier version kept as maps refuses what the array decoder
    refuses: an unknown kind is a ValidationError, not a KeyError."""
    legacy = msgspec.msgpack.encode([[["e1", [{"k": "offered", "contact_id": "c1"}]]]])
    [[entry]] = state.decode_applied(legacy, "d")  # type: ignore[misc]
    assert entry.rows == [state.Offered(contact_id="c1", domain="d")]
    unknown = msgspec.msgpack.encode([[["e1", [{"k": "no_such_kind", "contact_id": "c1"}]]]])
    with pytest.raises(msgspec.ValidationError):
        state.decode_applied(unknown, "d")
