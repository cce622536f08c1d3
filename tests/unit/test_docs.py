"""Docs that match the code, kept so by tests.

- Every key of the config schema (and of ``configs/streamguard.toml``) has a row, with its
  default, in docs/operations.md "Configuration reference"; no row names a key that is gone.
- Every event field in the schema has a row in README "Events" and every row names a field of
  the schema; the value lists (types, sources, reasons, ...) are the schema's.
- Every documented event field is actually set (non-null) by some producer, in a real call run
  through the real cores.
- Relative links in the docs point at files (and headings) inside the repository; pointers in
  code comments (``docs/scan.md, "Windows"``, ``README "Events"``, ``foo.md``) resolve too.

Failure messages say which key or field, and where to document it.
"""

from __future__ import annotations

import json
import re
import tomllib
import types
import typing
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from streamguard.alerts import events as ev
from streamguard.alerts.bus import AlertBus
from streamguard.audio.file import read_audio
from streamguard.calls import CallPolicy, CallSession
from streamguard.config import Settings
from streamguard.evidence import EvidenceStore
from streamguard.evidence.api import handle_delete_evidence
from streamguard.scoring.outcome import Allowlisted
from streamguard.sources.senders import twilio_frames
from streamguard.sources.twilio import MediaStreamProtocol

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
OPERATIONS = ROOT / "docs" / "operations.md"
SHIPPED_CONFIG = ROOT / "configs" / "streamguard.toml"
CONFIG_REFERENCE = "Configuration reference"


# ---------------------------------------------------------------- markdown helpers


def section(text: str, heading: str, level: int = 2) -> str:
    """The body of ``## heading`` (up to the next heading of the same or a higher level)."""
    marks = "#" * level
    match = re.search(rf"^{marks} {re.escape(heading)}\s*$", text, re.M)
    assert match, f"no '{marks} {heading}' heading"
    end = re.search(rf"^#{{1,{level}}} ", text[match.end() :], re.M)
    return text[match.end() : match.end() + end.start() if end else len(text)]


def subsections(text: str, level: int = 3) -> dict[str, str]:
    """``### title`` -> body, for every subsection of ``text``."""
    marks = "#" * level
    parts = re.split(rf"^{marks} (.+?)\s*$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def table_rows(text: str) -> list[list[str]]:
    """Cells of the first markdown table in ``text`` (header and rule skipped)."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows.append(cells)
        elif rows:
            break
    return [r for r in rows[2:]]


def first_code(cell: str) -> str:
    match = re.match(r"`([^`]+)`", cell)
    assert match, f"table cell {cell!r} should start with a `name`"
    return match.group(1)


def backticked(cell: str) -> set[str]:
    """The `values` a cell lists, before any '; null on ...' remark."""
    return set(re.findall(r"`([^`]+)`", cell.split(";")[0]))


# ---------------------------------------------------------------- the config schema


def _model_in(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


def config_schema(model: type[BaseModel] = Settings, label: str = "") -> dict[str, dict]:
    """Section label (``sources.rtp``, ``sources.rtp.payload_types.*``, ``webhooks``) ->
    {key: pydantic FieldInfo} for every leaf key of the daemon's config schema."""
    out: dict[str, dict] = {}
    for name, field in model.model_fields.items():
        path = f"{label}.{name}" if label else name
        annotation = field.annotation
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if (sub := _model_in(annotation)) is not None:
            out.update(config_schema(sub, path))
        elif origin is dict and args and _model_in(args[1]) is not None:
            out.update(config_schema(_model_in(args[1]), path + ".*"))
        elif origin is list and args and _model_in(args[0]) is not None:
            out.update(config_schema(_model_in(args[0]), path))  # [[path]] tables
        else:
            out.setdefault(label, {})[name] = field
    return out


def normalise_label(label: str) -> str:
    """``[a.b.<pt>]`` -> ``a.b.*`` (any placeholder); ``[[x]]`` -> ``x``."""
    label = label.strip("[]")
    return re.sub(r"<[^>]+>", "*", label)


def documented_config() -> dict[str, dict[str, str]]:
    """docs/operations.md "Configuration reference": section label -> {key: default cell}."""
    body = section(OPERATIONS.read_text(), CONFIG_REFERENCE)
    out: dict[str, dict[str, str]] = {}
    for title, text in subsections(body).items():
        match = re.fullmatch(r"`(\[\[?[^`]+\]\]?)`", title)
        assert match, f"docs/operations.md {CONFIG_REFERENCE}: heading {title!r} is not `[section]`"
        rows = table_rows(text)
        out[normalise_label(match.group(1))] = {first_code(r[0]): r[1] for r in rows}
    return out


def _default(field) -> object:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default is PydanticUndefined else field.default
    return "unset" if value is None else value


def _cell(default: object) -> str:
    """How the reference writes a default: `literal` (TOML), or the words unset / required."""
    if default in ("required", "unset"):
        return str(default)
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return f"`{json.dumps(default)}`"


def _where(label: str) -> str:
    return (
        f"the `[{label.replace('*', '<name>')}]` table of docs/operations.md, "
        f"section '{CONFIG_REFERENCE}'"
    )


def test_every_config_key_is_documented_with_its_default():
    schema = config_schema()
    documented = documented_config()
    problems: list[str] = []
    for label, fields in schema.items():
        doc = documented.get(label)
        if doc is None:
            problems.append(
                f"config section [{label}] ({', '.join(fields)}) is not documented: add a "
                f"'### `[{label.replace('*', '<name>')}]`' table (key | default | meaning) to "
                f"docs/operations.md, section '{CONFIG_REFERENCE}'"
            )
            continue
        for key, field in fields.items():
            if key not in doc:
                problems.append(
                    f"config key {label}.{key} is not documented: add a row "
                    f"'| `{key}` | {_cell(_default(field))} | what it does |' to {_where(label)}"
                )
                continue
            cell = doc[key].strip()
            expected = _default(field)
            if expected in ("required", "unset"):
                ok = cell == expected
            else:
                literal = cell.strip("`")
                try:
                    ok = tomllib.loads(f"v = {literal}")["v"] == expected
                except tomllib.TOMLDecodeError:
                    ok = False
            if not ok:
                problems.append(
                    f"config key {label}.{key}: docs say default {cell}, the schema says "
                    f"{expected!r} (fix {_where(label)})"
                )
    for label, doc in documented.items():
        for key in doc:
            if key not in schema.get(label, {}):
                problems.append(
                    f"docs/operations.md documents config key {label}.{key}, which the schema "
                    "(streamguard/config.py) does not have: remove or rename the row"
                )
    assert not problems, "\n".join(problems)


def shipped_keys() -> set[tuple[str, str]]:
    """(section label, key) for every key in configs/streamguard.toml, commented-out ones too."""
    keys: set[tuple[str, str]] = set()
    label = ""
    for line in SHIPPED_CONFIG.read_text().splitlines():
        # a commented-out header counts too: `# [[webhooks]]` (an example entry) opens a table
        if header := re.match(r"^(?:# )?\[\[?([\w.]+)\]\]?$", line):
            label = header.group(1)
            # a table under a dict of tables: [sources.rtp.payload_types.96]
            for dict_label in config_schema():
                if dict_label.endswith(".*") and re.fullmatch(
                    re.escape(dict_label[:-2]) + r"\.[^.]+", label
                ):
                    label = dict_label
            continue
        if key := re.match(r"^(?:# )?(\w+) = ", line):
            keys.add((label, key.group(1)))
    return keys


def test_every_key_in_the_shipped_config_is_documented():
    documented = documented_config()
    missing = [
        f"configs/streamguard.toml has [{label}] {key}, not documented: add a row to "
        + _where(label)
        for label, key in sorted(shipped_keys())
        if key not in documented.get(label, {})
    ]
    assert not missing, "\n".join(missing)


# ---------------------------------------------------------------- the event schema

COMMON = set(ev.EventBase.model_fields)
SUMMARIES = "Call summaries"


def documented_events() -> tuple[dict[str, str], dict[str, dict[str, str]], dict[str, str]]:
    """README "Events": (common field -> meaning cell, type -> {field: meaning}, summary)."""
    body = section(README.read_text(), "Events")
    intro = re.split(r"^### ", body, maxsplit=1, flags=re.M)[0]
    common = {first_code(r[0]): r[2] for r in table_rows(intro)}
    per_type: dict[str, dict[str, str]] = {}
    summary: dict[str, str] = {}
    for title, text in subsections(body).items():
        rows = {first_code(r[0]): r[2] for r in table_rows(text)}
        if title == SUMMARIES:
            summary = rows
        elif re.fullmatch(r"`\w+`", title):
            per_type[title.strip("`")] = rows
    return common, per_type, summary


def _compare(documented: set[str], schema: set[str], what: str, where: str) -> list[str]:
    problems = [
        f"{what} field `{name}` is in the schema (streamguard/alerts/events.py) but not in "
        f"README 'Events': add a row to {where}"
        for name in sorted(schema - documented)
    ]
    problems += [
        f"README 'Events' documents {what} field `{name}` ({where}), which the schema "
        "(streamguard/alerts/events.py) does not have"
        for name in sorted(documented - schema)
    ]
    return problems


def test_every_event_field_is_documented_and_every_documented_field_exists():
    common, per_type, summary = documented_events()
    problems = _compare(set(common), COMMON, "common", "the table of fields every event carries")
    for name, model in ev.EVENT_MODELS.items():
        if name not in per_type:
            problems.append(f"event type `{name}` has no '### `{name}`' table in README 'Events'")
            continue
        own = set(model.model_fields) - COMMON
        problems += _compare(set(per_type[name]), own, name, f"the '### `{name}`' table")
    for name in set(per_type) - set(ev.EVENT_MODELS):
        problems.append(f"README 'Events' has a '### `{name}`' table: no such event type")
    problems += _compare(
        set(summary), set(ev.CallSummary.model_fields), "summary", f"the '{SUMMARIES}' table"
    )
    assert not problems, "\n".join(problems)


def test_documented_value_lists_are_the_schemas():
    common, per_type, summary = documented_events()
    assert backticked(common["type"]) == set(ev.EVENT_TYPES)
    assert backticked(common["source"]) == set(ev.SOURCES)
    assert backticked(per_type["alert"]["state"]) == set(typing.get_args(ev.AlertState))
    assert backticked(summary["verdict"]) == set(typing.get_args(ev.Verdict))
    reasons = backticked(per_type["call_ended"]["reason"])
    assert reasons == set(ev.END_REASONS), (
        f"README 'Events', `call_ended` reason lists {sorted(reasons)}; the schema's EndReason "
        f"is {sorted(ev.END_REASONS)}"
    )
    prose = section(README.read_text(), "Events")
    explained = set(re.findall(r"`(\w+)` \(", prose.split("Reasons:", 1)[1].split("###")[0]))
    assert explained == set(ev.END_REASONS), "every reason needs its sentence under 'Reasons:'"


def test_documented_examples_parse():
    block = section(README.read_text(), "Events").split("```json", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.strip()]
    assert lines
    for line in lines:
        ev.parse_event(line)


@pytest.fixture(scope="module")
def produced(tiny_detector, fixtures_dir, tmp_path_factory) -> list[dict]:
    """Every event a real two-track Twilio call produces, through the real cores and bus.

    The Twilio core parses the provider's exact frames, a CallSession scores its windows with
    the tiny model (threshold 0.01, so it alerts), the bus numbers them, and a subscriber that
    never reads gets a ``dropped`` notice.
    """
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    core = MediaStreamProtocol()
    info = tiny_detector.info.replace(threshold=0.01)
    bus = AlertBus(info.name, history=10_000)
    slow = bus.subscribe(max_queue=1)
    session = None
    # [evidence] keep = "alerts": the session's clip operations go to a store, as the daemon's
    # evidence thread (EvidenceWriter) applies them.
    store = EvidenceStore(tmp_path_factory.mktemp("evidence"))
    policy = CallPolicy(evidence_keep="alerts", evidence_lookback_seconds=12.0)
    for _, frame in twilio_frames(np.stack([mono[0], mono[0] * 0.5]), rate, call_sid="CAdocs"):
        for event in core.receive_text(frame):
            if session is None:
                session = CallSession(event, info=info, policy=policy)
            else:
                session.handle(event)
            for pending in session.windows_to_score():
                score = float(tiny_detector(pending.window.samples[None])[0])
                if pending.track == "outbound" and pending.window.start == 0:
                    # what the engine's allow-list step hands back for an enrolled voice
                    score = Allowlisted(score, "ivr-main", 0.93)
                session.receive_score(pending, score)
            for out in session.events_to_publish():
                bus.publish(out)
            for work in session.clips_to_write():
                saved = store.apply(work.ops, call_id=work.call_id, track=work.track,
                                    source=work.source, rate=work.rate)  # fmt: skip
                for out in saved:
                    bus.publish(out)
    assert session is not None and session.finished
    handle_delete_evidence(store, session.call_id, bus.publish)
    for draft in operator_loop_events(session.call_id, info):
        bus.publish(draft)
    return [e.to_dict() for e in bus.history()] + [e.to_dict() for e in slow.drain()]


def operator_loop_events(call_id, info):
    """The operator loop's events no call produces: an analyst's label (through the parser
    POST /api/labels runs, labels.parse_label_request) and a model swap (through the daemon's
    own producer, model_swap.model_changed)."""
    from streamguard.alerts.events import ModelIdentity
    from streamguard.labels import parse_label_request
    from streamguard.model_swap import model_changed

    drafts = [
        parse_label_request(
            json.dumps({"call_id": call_id, "label": "fake", "track": "inbound", "note": "IVR"}),
            who="local",
        )
    ]
    same = ModelIdentity(name=info.name, architecture=info.architecture, sha256="0" * 64)
    drafts.append(model_changed(same, same))
    return drafts


def _set(value) -> bool:
    return value is not None and value != {} and value != []


def test_every_documented_event_field_is_set_by_a_producer(produced):
    common, per_type, summary = documented_events()
    by_type: dict[str, list[dict]] = {}
    for event in produced:
        by_type.setdefault(event["type"], []).append(event)
    problems: list[str] = []
    for name in common:
        if not any(_set(e.get(name)) for e in produced):
            problems.append(
                f"README documents `{name}` on every event; no event of a real call set it"
            )
    for type_name, fields in per_type.items():
        events = by_type.get(type_name, [])
        if not events:
            problems.append(f"a real call produced no `{type_name}` event to check")
            continue
        for name in fields:
            if not any(_set(e.get(name)) for e in events):
                problems.append(
                    f"README documents `{type_name}.{name}`, but no producer set it in a real "
                    "call (always null or absent): set it where the event is built, or fix the docs"
                )
    summaries = [e["summary"] for e in by_type.get("call_ended", [])]
    summaries += [t for e in by_type.get("call_ended", []) for t in e["tracks"].values()]
    for name in summary:
        if not any(_set(s.get(name)) for s in summaries):
            problems.append(f"README documents summary field `{name}`; no call summary set it")
    assert not problems, "\n".join(problems)
    started = by_type["call_started"][0]
    assert started["sample_rate"] == 8000  # Twilio's declared mediaFormat rate


# ---------------------------------------------------------------- links and pointers


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _headings(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return [m.group(1).strip() for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)]


MARKDOWN = sorted(
    p
    for pattern in (
        "*.md",
        "docs/*.md",
        "benchmarks/*.md",
        "streamguard/**/*.md",
        "training/**/*.md",
        "deploy/**/*.md",
    )
    for p in ROOT.glob(pattern)
)


@pytest.mark.parametrize("doc", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_stay_inside_the_repository(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path_part, _, anchor = target.partition("#")
        resolved = (doc.parent / path_part).resolve() if path_part else doc
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: points outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md":
            slugs = {_slug(h) for h in _headings(resolved)}
            if anchor not in slugs:
                problems.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
    where = doc.relative_to(ROOT)
    assert not problems, "\n".join(f"{where}: {p}" for p in problems)


CODE = sorted(
    p
    for pattern in (
        "streamguard/**/*.py",
        "streamguard/**/*.js",
        "training/**/*.py",
        "configs/*.toml",
        "scripts/*",
        "pyproject.toml",
        "setup.py",
        "Makefile",
    )
    for p in ROOT.glob(pattern)
    if p.is_file() and "__pycache__" not in p.parts
)
#: Files a comment may name by their bare name (they sit next to every model / in the package,
#: or a tool writes them into its output folder: the leave-one-family-out table).
BARE_NAMES = {"MODEL_CARD.md", "README.md", "lofo.md", "probe.md"}


def test_pointers_in_code_comments_resolve():
    """``docs/scan.md, "Windows"``, ``README "Events"`` and ``*.md`` names in code and config."""
    problems = []
    for path in CODE:
        text = path.read_text(errors="replace")
        where = path.relative_to(ROOT)
        for name in re.findall(r"(?<![\w/.])((?:[\w.-]+/)*[\w.-]+\.md)\b", text):
            if name not in BARE_NAMES and not (ROOT / name).exists():
                problems.append(f"{where}: names {name}, which is not in the repository")
        for doc, title in re.findall(r"\b(README|(?:[\w-]+/)*[\w-]+\.md),? \(?\"([^\"]+)\"", text):
            target = README if doc == "README" else ROOT / doc
            if not target.exists():
                continue  # reported above
            wanted = title.replace("`", "").lower()
            if not any(h.replace("`", "").lower().startswith(wanted) for h in _headings(target)):
                problems.append(f'{where}: points to {doc}, "{title}": no such heading there')
    assert not problems, "\n".join(problems)


def test_shipped_config_and_docs_name_the_same_sections():
    """A smoke check of the parsers above: they see real sections, not nothing."""
    assert {"server", "model", "sources.rtp.payload_types.*"} <= set(documented_config())
    assert ("sources.rtp.payload_types.*", "encoding") in shipped_keys()
    assert json.dumps(sorted(config_schema()))  # serialisable labels
