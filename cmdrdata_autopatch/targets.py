"""The version-compatibility table: what to patch, on which `openai` releases. Data only.

Each row names one resource method by its module and `Class.method`, the API it bills (the event's `api`
field), and the first and last `openai` release that has it (both inclusive; `last=None` means "still
present in the newest release checked"). The async twin (`AsyncClass.method`, same module, same range) is
patched with every row. Ranges come from `../shared/research/openai_surface.md` and are proven against
every published wheel by `python -m tools.verify_targets` (see docs/compatibility.md).

One call is billed once. The `.stream()` helpers reach the server through `create`, so their rows are
`delegates=True`: wrapped only so that `customer_id=` works on them too, never recording. On 1.40-1.49
beta `parse` calls `create` as well; the wrappers' nesting guard bills the outer call, so that row keeps
its full range.

Each row also says, as keyword fields, what the call path needs to know about the API it bills:
`path` (the request path the SDK posts to, so the safety net below the resource methods can tell which
requests bill what), `usage_kind` (how usage is read and, when OpenAI reports none, estimated) and
`stream_kind` (what a stream of this API carries). Adding an endpoint is adding a row: `patching.py`,
`usage.py` and `streams.py` never name an endpoint themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

# The newest `openai` release this table was verified against (by tools/verify_targets.py).
VERIFIED_UP_TO = "3.57.0"
OLDEST_SUPPORTED = "1.0.0"


@dataclass(frozen=True)
class Target:
    """One patch target: a resource method and the releases that have it."""

    module: str
    attr: str  # "Class.method"
    api: str  # the event's `api` field
    first: str
    last: Optional[str] = None
    # chat/completions streams report usage only when asked: the row may get `stream_options` injected
    inject_stream_usage: bool = False
    # the method reaches the server through another row (the `.stream()` helpers call `create`): it is
    # wrapped only to take our keywords off and hand the attribution down, never to record
    delegates: bool = False
    # the request path this method posts to (matched as a suffix: Azure prefixes deployments); None when
    # the method never reaches the server itself
    path: Optional[str] = None
    # how usage is read / estimated: "chat" (messages in, choices out), "text" (prompt / input /
    # instructions in, text out), "embeddings", "speech" (characters), "images" (count), "audio" (seconds)
    usage_kind: str = "text"
    # what a stream carries: "chat" (chunks with `usage`; the role and finish chunks hold no content),
    # "text" (chunks with `usage`, each one content), "events" (typed events; usage on the final one)
    stream_kind: str = "events"
    # "connect": a WebSocket session (`connect()` returns a connection manager); sessions.py observes the
    # server events its connection parses instead of a call's result
    kind: str = "call"
    # kind="object" (objects.py): the method returns a server-side object whose usage is billed once,
    # when it is terminal. `reads` names the object ("response", "batch") and so the extractor;
    # `role` says what the call does with it: "create" (remember the customer by the object's id, bill
    # nothing), "read" (bill it if terminal), "list" (bill every terminal object of the page),
    # "manager" (a stream helper returning a manager: the stream it opens is billed from its events),
    # "block" (a helper that calls object rows itself, now or when its manager is entered: our keywords
    # become a `customer()` block around those calls, object_blocks.py)
    reads: Optional[str] = None
    role: str = "read"

    @property
    def class_name(self) -> str:
        return self.attr.split(".", 1)[0]

    @property
    def method_name(self) -> str:
        return self.attr.split(".", 1)[1]

    @property
    def async_attr(self) -> str:
        return f"Async{self.attr}"

    @property
    def key(self) -> str:
        return f"{self.module}:{self.attr}"

    def covers(self, version: str) -> bool:
        """True when `version` lies inside this row's range."""
        v = parse_version(version)
        if v < parse_version(self.first):
            return False
        return self.last is None or v <= parse_version(self.last)


R = "openai.resources."

C = "chat.completions"
CANCEL_FIRST = "1.81.0"  # `Responses.cancel`
BATCH_LIST_FIRST = "1.22.0"  # `Batches.list`
RUN_STREAM_FIRST = "1.14.0"  # assistants run streams and their helpers
RUN_POLL_FIRST = "1.16.0"  # `runs.stream`, `runs.poll` and the `*_and_poll` helpers
EVALS_FIRST = "1.72.0"  # `evals.runs`
AGENTS_FIRST = "3.13.0"  # `beta.agents` sessions, their event streams, subagent turns
TURNS_FIRST = "3.25.0"  # `beta.agents.sessions.turns`

TARGETS: tuple[Target, ...] = (
    Target(
        R + "chat.completions",
        "Completions.create",
        C,
        "1.0.0",
        inject_stream_usage=True,
        path="/chat/completions",
        usage_kind="chat",
        stream_kind="chat",
    ),
    Target(
        R + "chat.completions.completions",
        "Completions.parse",
        C,
        "1.92.0",
        path="/chat/completions",
        usage_kind="chat",
        stream_kind="chat",
    ),
    Target(
        R + "beta.chat.completions",
        "Completions.parse",
        C,
        "1.40.0",
        "1.91.0",
        path="/chat/completions",
        usage_kind="chat",
        stream_kind="chat",
    ),
    Target(R + "chat.completions.completions", "Completions.stream", C, "1.92.0", delegates=True),
    Target(R + "beta.chat.completions", "Completions.stream", C, "1.40.0", "1.91.0", delegates=True),
    Target(
        R + "completions",
        "Completions.create",
        "completions",
        "1.0.0",
        inject_stream_usage=True,
        path="/completions",
        usage_kind="text",
        stream_kind="text",
    ),
    Target(R + "edits", "Edits.create", "edits", "1.0.0", "1.7.1", path="/edits", usage_kind="text"),
    Target(
        R + "embeddings",
        "Embeddings.create",
        "embeddings",
        "1.0.0",
        path="/embeddings",
        usage_kind="embeddings",
    ),
    Target(R + "responses.responses", "Responses.create", "responses", "1.66.0", path="/responses"),
    Target(R + "responses.responses", "Responses.parse", "responses", "1.66.0", path="/responses"),
    Target(R + "responses.responses", "Responses.stream", "responses", "1.66.0", delegates=True),
    Target(R + "beta.responses.responses", "Responses.create", "responses", "2.45.0", path="/responses"),
    Target(
        R + "responses.responses",
        "Responses.compact",
        "responses.compact",
        "2.9.0",
        path="/responses/compact",
    ),
    Target(
        R + "beta.responses.responses",
        "Responses.compact",
        "responses.compact",
        "2.45.0",
        path="/responses/compact",
    ),
    Target(R + "decisions", "Decisions.create", "decisions", "3.26.0", path="/decisions"),
    Target(
        R + "images", "Images.generate", "images", "1.0.0", path="/images/generations", usage_kind="images"
    ),
    Target(R + "images", "Images.edit", "images", "1.0.0", path="/images/edits", usage_kind="images"),
    Target(
        R + "images",
        "Images.create_variation",
        "images",
        "1.0.0",
        path="/images/variations",
        usage_kind="images",
    ),
    Target(
        R + "audio.transcriptions",
        "Transcriptions.create",
        "audio.transcriptions",
        "1.0.0",
        path="/audio/transcriptions",
        usage_kind="audio",
    ),
    Target(
        R + "audio.translations",
        "Translations.create",
        "audio.translations",
        "1.0.0",
        path="/audio/translations",
        usage_kind="audio",
    ),
    Target(
        R + "audio.speech",
        "Speech.create",
        "audio.speech",
        "1.1.0",
        path="/audio/speech",
        usage_kind="speech",
    ),
    # Usage read from server-side objects (issue 12), billed once per object: see objects.py
    Target(
        R + "responses.responses",
        "Responses.retrieve",
        "responses",
        "1.66.0",
        kind="object",
        reads="response",
    ),
    Target(
        R + "responses.responses",
        "Responses.cancel",
        "responses",
        CANCEL_FIRST,
        kind="object",
        reads="response",
    ),
    Target(
        R + "beta.responses.responses",
        "Responses.retrieve",
        "responses",
        "2.45.0",
        kind="object",
        reads="response",
    ),
    Target(R + "batches", "Batches.create", "batches", "1.18.0", kind="object", reads="batch", role="create"),
    Target(R + "batches", "Batches.retrieve", "batches", "1.18.0", kind="object", reads="batch"),
    Target(
        R + "batches", "Batches.list", "batches", BATCH_LIST_FIRST, kind="object", reads="batch", role="list"
    ),
    Target(R + "beta.threads.runs", "Runs.retrieve", "assistants.runs", "1.1.0", kind="object", reads="run"),
    # assistants runs created or continued here: a queued run is remembered (who pays); a streamed one
    # (`stream=True`, or a helper's manager: role "manager") is billed from its terminal run event; the
    # polling helpers (role "block") only carry `customer_id=` to the create / retrieve they call
    *(
        Target(R + module, attr, "assistants.runs", first, kind="object", reads="run", role=role)
        for module, attr, first, role in (
            ("beta.threads.runs", "Runs.create", "1.1.0", "create"),
            ("beta.threads.runs", "Runs.submit_tool_outputs", "1.1.0", "read"),
            ("beta.threads", "Threads.create_and_run", "1.1.0", "create"),
            ("beta.threads.runs", "Runs.create_and_stream", RUN_STREAM_FIRST, "manager"),
            ("beta.threads.runs", "Runs.submit_tool_outputs_stream", RUN_STREAM_FIRST, "manager"),
            ("beta.threads", "Threads.create_and_run_stream", RUN_STREAM_FIRST, "manager"),
            ("beta.threads.runs", "Runs.stream", RUN_POLL_FIRST, "manager"),
            ("beta.threads.runs", "Runs.create_and_poll", RUN_POLL_FIRST, "block"),
            ("beta.threads.runs", "Runs.submit_tool_outputs_and_poll", RUN_POLL_FIRST, "block"),
            ("beta.threads.runs", "Runs.poll", RUN_POLL_FIRST, "block"),
            ("beta.threads", "Threads.create_and_run_poll", RUN_POLL_FIRST, "block"),
        )
    ),
    Target(R + "fine_tuning.jobs", "Jobs.retrieve", "fine_tuning.jobs", "1.0.0", kind="object", reads="job"),
    Target(
        R + "fine_tuning.jobs",
        "Jobs.create",
        "fine_tuning.jobs",
        "1.0.0",
        kind="object",
        reads="job",
        role="create",
    ),
    # evals runs: one event per model of a finished run (`per_model_usage`)
    Target(
        R + "evals.runs.runs", "Runs.retrieve", "evals.runs", EVALS_FIRST, kind="object", reads="eval_run"
    ),
    Target(R + "evals.runs.runs", "Runs.cancel", "evals.runs", EVALS_FIRST, kind="object", reads="eval_run"),
    Target(
        R + "evals.runs.runs",
        "Runs.list",
        "evals.runs",
        EVALS_FIRST,
        kind="object",
        reads="eval_run",
        role="list",
    ),
    # agent session turns (`beta.agents`): a finished turn read back, or its turn-ended stream event;
    # `sessions.stream` opens `events.stream` when entered (role "block": entered in the call's customer)
    *(
        Target(
            R + "beta.agents.sessions." + module,
            attr,
            "agents.turns",
            first,
            kind="object",
            reads="turn",
            role=role,
        )
        for module, attr, first, role in (
            ("turns.turns", "Turns.retrieve", TURNS_FIRST, "read"),
            ("turns.turns", "Turns.list", TURNS_FIRST, "list"),
            ("subagents.turns.turns", "Turns.retrieve", AGENTS_FIRST, "read"),
            ("subagents.turns.turns", "Turns.list", AGENTS_FIRST, "list"),
            ("events", "Events.stream", AGENTS_FIRST, "read"),
            ("sessions", "Sessions.create", AGENTS_FIRST, "create"),
            ("sessions", "Sessions.stream", AGENTS_FIRST, "block"),
        )
    ),
    # WebSocket sessions (issue 11): one event per billable server event, see sessions.py
    Target(R + "beta.realtime.realtime", "Realtime.connect", "realtime", "1.58.0", kind="connect"),
    Target(R + "realtime.realtime", "Realtime.connect", "realtime", "1.103.0", kind="connect"),
    Target(R + "responses.responses", "Responses.connect", "responses", "2.22.0", kind="connect"),
    Target(R + "beta.responses.responses", "Responses.connect", "responses", "2.45.0", kind="connect"),
    Target(R + "live.live", "Live.connect", "live", "3.12.0", kind="connect"),
    Target(R + "live.sideband", "Sideband.connect", "live", "3.12.0", kind="connect"),
    Target(R + "live.forks", "Forks.connect", "live", "3.12.0", kind="connect"),
)

# The safety net (`net.py`): the SDK client's own request method, below every resource method. Present, with
# `options` as its second argument, in every release from 1.0.0 to 3.57.0.
NET_MODULE = "openai._base_client"
NET_METHODS = (("SyncAPIClient", "request"), ("AsyncAPIClient", "request"))

_NUM = re.compile(r"\d+")


def parse_version(version: str) -> tuple[int, ...]:
    """'1.66.5' -> (1, 66, 5). Pre-release tags are ignored ('2.0.0rc1' -> (2, 0, 0))."""
    core = re.split(r"[^0-9.]", version.strip(), maxsplit=1)[0]
    parts = tuple(int(p) for p in _NUM.findall(core)[:3])
    return parts + (0,) * (3 - len(parts))


def targets_for(version: str) -> list[Target]:
    """The rows whose range covers `version`. On a release newer than `VERIFIED_UP_TO`, rows still open
    (`last=None`) apply: they are tried, and any that does not resolve is skipped and reported."""
    return [t for t in TARGETS if t.covers(version)]


def billable_paths(version: str) -> tuple[tuple[str, Target], ...]:
    """(path, row) for every row of `version` that reaches the server itself, longest path first (so
    `/images/edits` is never taken for `/edits`, nor `/chat/completions` for `/completions`)."""
    seen: dict[str, Target] = {}
    for row in targets_for(version):
        if row.path is not None and not row.delegates:
            seen.setdefault(row.path, row)
    return tuple(sorted(seen.items(), key=lambda item: -len(item[0])))


def is_newer_than_verified(version: str) -> bool:
    """True when `version` is newer than the newest release the table was verified against."""
    return parse_version(version) > parse_version(VERIFIED_UP_TO)
