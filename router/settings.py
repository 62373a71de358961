"""Every tunable of peakroute in one typed object, read from ``PEAKROUTE_*`` environment variables.

Precedence: an environment variable wins; otherwise a value recorded by the embedded stack
launcher in ``<state_dir>/stack.json`` (bootstrap servers, Redis URL, broker tuning); otherwise
the default written here. Units are in the names (``_s`` seconds, ``_ms`` milliseconds).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from router.decode import MAX_TURNS
from router.errors import SettingsError

ENV_PREFIX = "PEAKROUTE_"
DEFAULT_STATE_DIR = Path(".peakroute")
STACK_FILE = "stack.json"
UTF8_MAX_BYTES_PER_CHAR = 4
RUNTIMES = ("faust", "lean")
EVENT_LOOPS = ("asyncio", "uvloop")


@dataclass(frozen=True, slots=True)
class Settings:
    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    kafka_sasl_mechanism: str = ""  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_ssl_cafile: str = ""
    kafka_rebalance_timeout_s: float = 30.0
    kafka_session_timeout_s: float = 30.0
    kafka_fetch_max_wait_ms: int = 500  # consumers' long-poll wait (the embedded stack uses 20)
    # LeaveGroup when a worker stops cleanly: its partitions move at once. The embedded Tansu
    # broker records false (a leader leaving mid-rebalance wedges its group for good:
    # docs/ARCHITECTURE.md, "Embedded stack"); the group then drops the member at its session
    # timeout, as for a crash.
    kafka_leave_group_on_stop: bool = True
    # Linger of the producers that send record by record (the gateway's, the agents' client):
    # each waits up to this long before its records leave. A worker's stages do not linger:
    # they send each batch's outputs at once (router.kafka.send_batches).
    kafka_linger_ms: int = 5
    app_id: str = "peakroute"  # consumer group of the router workers
    # Redis
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    redis_socket_timeout_s: float = 10.0  # a worker's Redis reply later than this is a timeout
    # Redis Cluster (docs/OPERATIONS.md): redis_url names any node; every process then uses a
    # cluster client (router/redis_client.py).
    redis_cluster: bool = False
    # Replicas that must have a batch's writes before it counts as done (WAIT after the
    # scripts, on each node written): a primary killed right after a batch then loses none of
    # it. 0 = do not wait (one Redis, or replication's own delay accepted).
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 1000
    # Topics (names and partition count)
    topic_contacts_inbound: str = "contacts.inbound"
    topic_bot_replies: str = "bot.replies"
    topic_routing_requests: str = "routing.requests"
    topic_agents_events: str = "agents.events"
    topic_assignments: str = "assignments"
    topic_routing_decisions: str = "routing.decisions"
    topic_deadletter: str = "deadletter"
    topic_partitions: int = 8
    topic_replication_factor: int = 1
    # Service level (the routing policy's defaults where its file does not set them)
    sla_target_s: float = 30.0
    short_abandon_s: float = 5.0
    # A waiting customer's position and estimated wait (contact.wait_updated.v1): told again
    # every wait_update_interval_s, sooner when the estimate moved by more than
    # wait_update_threshold_s; 0 interval: told only once, when the contact is queued.
    wait_update_interval_s: float = 30.0
    wait_update_threshold_s: float = 15.0
    # A notice whose estimate is at least this long offers the customer a callback
    # (contact.wait_updated.v1 callback_offered; 0: never).
    callback_offer_after_s: float = 120.0
    offer_timeout_s: float = 20.0
    # SLA accounting and metrics (docs/METRICS.md)
    sla_formula: str = "short_abandons_excluded"  # | all_abandons | answered_only
    sla_objective_ratio: float = 0.8  # share of contacts to answer within target (the SLO)
    sla_at_risk_share: float = 2 / 3  # a waiting contact is at risk past this share of target
    sla_timezone: str = "UTC"  # where "today" starts (IANA name, e.g. Asia/Shanghai)
    sla_bucket_ttl_s: int = 172_800  # minute and hour buckets expire (longer than "today")
    metrics_lease_s: float = 15.0  # the worker holding this Redis lease exports SLA gauges
    # Capacity plan and merchant service rating (issue 22; docs/OPERATIONS.md, docs/METRICS.md)
    plan_aht_s: float = 90.0  # `peakroute plan`'s handle time (the router does not measure it)
    plan_patience_s: float = 60.0  # customers' mean patience for a person (Erlang A)
    rating_window: str = "today"  # the SLA window a domain's rating is computed over
    rating_tiers: str = "gold=85,silver=70,bronze=55,basic=0"  # tier=lowest score, best first
    rating_min_contacts: int = 20  # fewer answered + abandoned in the window: unrated
    # Routing
    routing_policy: str = ""  # YAML file (docs/ROUTING.md); "" = the shipped e-commerce default
    match_scan_limit: int = 200  # how many candidates one match looks at before queueing
    contact_retention_s: int = 86_400  # how long a finished contact is remembered for dedup
    # Processing
    # The worker's stream runtime (docs/ARCHITECTURE.md, "Runtimes"): "faust" runs the stages as
    # faust-streaming agents (router/faust_app.py: a faust app users extend with their own agents,
    # tables, timers and web views); "lean" on the plain aiokafka loop (router/transport.py).
    runtime: str = "lean"
    # The worker's event loop: "asyncio" (the standard library's) or "uvloop" (libuv: cheaper
    # sockets and callbacks; docs/REHEARSAL.md has the measurement).
    event_loop: str = "asyncio"
    worker_concurrency: int = 1  # worker processes `peakroute demo` and `worker --processes` start
    batch_max: int = 2000
    batch_within_s: float = 0.02
    timer_interval_s: float = 0.5  # time-driven routing: offer expiry scan
    web_host: str = "127.0.0.1"  # 0.0.0.0 in containers
    web_port: int = 6066  # each worker's /metrics and /healthz
    # Input limits (decoding)
    max_record_bytes: int = 65_536
    max_text_chars: int = 4_000
    # Bot (docs/BOT.md)
    bot_kb_path: str = ""  # knowledge base YAML; "" = the packaged router/bot/kb/default.yaml
    bot_model_dir: str = ""  # a trained model dir; "" = trained from the KB, cached in state_dir
    bot_threshold: float = 0.0  # confidence to act on an intent; 0 = the model's own threshold
    bot_target_false_containment: float = 0.02  # training: false containment of all questions
    bot_silence_close_s: float = 120.0  # silence after a bot answer closes the contact
    bot_rephrase_max: int = 0  # times the bot asks to rephrase before escalating not_understood
    bot_vip_policy: str = "boost"  # none | boost | always_human
    bot_vip_priority_boost: int = 3  # added to a VIP escalation's priority (at most 9)
    bot_reload_interval_s: float = 10.0  # how often a worker checks the KB and model for changes
    bot_transcript_turns: int = 10  # last turns kept and sent with an escalation
    bot_transcript_turn_chars: int = 500  # each turn's text is cut to this many characters
    bot_conversation_ttl_s: int = 86_400  # conversation state kept after the last message
    # Security (issue 7, docs/DEPLOY.md): Kafka TLS client certificate, Redis ACL user and TLS.
    # Kafka SASL and the CA are above; Redis TLS is the rediss:// scheme of redis_url.
    kafka_ssl_certfile: str = ""  # client certificate (PEM) for mutual TLS
    kafka_ssl_keyfile: str = ""
    kafka_ssl_key_password: str = field(default="", repr=False)
    kafka_ssl_check_hostname: bool = True
    redis_username: str = ""  # ACL user; overrides a user in redis_url
    redis_password: str = field(default="", repr=False)  # overrides a password in redis_url
    redis_ssl_cafile: str = ""  # CA bundle for rediss://
    redis_ssl_certfile: str = ""  # client certificate for Redis TLS (tls-auth-clients yes)
    redis_ssl_keyfile: str = ""

    # Agent gateway, desktop and roster (issue 9, docs/AGENT_PROTOCOL.md)
    gateway_host: str = "127.0.0.1"  # 0.0.0.0 behind a load balancer or in containers
    gateway_port: int = 8080  # the desktop (/), the supervisor console and /ws
    gateway_domain: str = "shop-1"  # routing domain of `peakroute agents` (and tokens) by default
    gateway_jwt_algorithm: str = "HS256"  # HS256 (shared secret) | RS256 (an IdP's public key)
    # HS256 secret; "" = one generated once into <state_dir>/gateway.secret
    gateway_jwt_secret: str = field(default="", repr=False)
    gateway_jwt_public_key: str = ""  # RS256: PEM file with the IdP's public key
    gateway_jwks_url: str = ""  # RS256: the IdP's JWKS endpoint (instead of a key file)
    gateway_jwt_issuer: str = "peakroute"
    gateway_jwt_audience: str = "peakroute-desktop"
    gateway_token_ttl_s: int = 43_200  # `peakroute agents token` default lifetime (12 h)
    gateway_max_frame_bytes: int = 16_384  # a larger client frame closes the socket (1009)
    # client frames per second per agent, across all its sockets (sustained; before hello:
    # per socket)
    gateway_frames_per_s: float = 20.0
    gateway_frame_burst: int = 40  # ... and the burst above it
    gateway_sockets_per_agent: int = 8  # sockets one identity may hold open on one gateway
    # Origins allowed to open /ws ("https://desk.example.com,https://ops.example.com");
    # "" = the page's own host only. A request without Origin (not a browser) is let through.
    gateway_allowed_origins: str = ""
    gateway_jwks_ttl_s: float = 300.0  # JWKS keys are refetched after this (withdrawn keys go)
    gateway_jwks_timeout_s: float = 5.0  # one JWKS fetch gives up after this
    gateway_jwks_unknown_kid_s: float = 30.0  # an unknown kid triggers a refetch at most this often
    gateway_revocation_keep_s: int = 7 * 86_400  # a revocation refuses older tokens this long
    # Partitions of assignments and routing.decisions this instance reads ("0-3", "4,5,6,7");
    # "" = all. Records are keyed by domain: route each domain's desktops to the instances
    # that read its partition (docs/ARCHITECTURE.md, "Agent gateway").
    gateway_partitions: str = ""
    # The gateway's fetch wait for offers: an embedded Tansu broker answers a fetch only when
    # the wait ends, so it is part of every offer's latency (Apache Kafka answers on data)
    gateway_fetch_max_wait_ms: int = 5
    # an agent's figure counted once per decision: the dedupe key outlives any re-delivery of
    # the decision (the outbox re-sends after its 10 s lease; a group rebalance re-reads inputs)
    gateway_seen_ttl_s: int = 600
    gateway_flood_strikes: int = 20  # frames refused for flooding before the socket is closed
    gateway_hello_timeout_s: float = 10.0  # a socket without a valid hello by then is closed
    gateway_console_interval_s: float = 1.0  # supervisor console push period
    # The sync loop reads each round the agents a decision touched, and every connected agent
    # at least once per this many seconds (changes no decision announces: router/gateway/sync.py)
    gateway_sync_sweep_s: float = 5.0
    # The cycle collector (router/gateway/heap.py): every this many seconds the young objects
    # are collected and the survivors frozen out of its scans (0: CPython's own schedule, whose
    # full scans of 10,000 desktops stop the gateway for ~0.8 s every few seconds). Each round
    # scans what survived since the last: at 1 s and 5,000 offers/s that was 40-70 ms of the
    # loop once a second, at 0.1 s a few milliseconds ten times a second
    gateway_gc_freeze_s: float = 0.1
    # ... and a full sweep (every object scanned: ~0.1 s per 1,000 desktops) frees the garbage
    # of closed sockets once this many closed since the last one, at most every _MIN_S
    gateway_gc_sweep_after: int = 2000
    gateway_gc_sweep_min_s: float = 600.0

    # Embedded stack and logs
    state_dir: Path = DEFAULT_STATE_DIR
    log_level: str = "INFO"
    log_format: str = "json"  # json | console

    @property
    def topics(self) -> dict[str, str]:
        """Logical role -> topic name, for every topic the router uses."""
        return {
            f.name.removeprefix("topic_"): getattr(self, f.name)
            for f in fields(self)
            if f.name.startswith("topic_") and f.type == "str"
        }

    @property
    def sla_target_ms(self) -> int:
        return int(self.sla_target_s * 1000)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def gateway_partition_list(self) -> list[int] | None:
        """gateway_partitions as numbers (None: every partition)."""
        if not self.gateway_partitions.strip():
            return None
        out: set[int] = set()
        for part in self.gateway_partitions.split(","):
            first, sep, last = part.strip().partition("-")
            lo, hi = int(first), int(last) if sep else int(first)
            if lo < 0 or hi < lo:
                raise ValueError(part)
            out.update(range(lo, hi + 1))
        return sorted(out)

    def as_env(self) -> dict[str, str]:
        """The settings as PEAKROUTE_* variables, to hand to a child process."""
        return {env_name(f.name): str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_env(cls, environ: typing.Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        state_dir = Path(environ.get(env_name("state_dir"), str(DEFAULT_STATE_DIR)))
        values.update(_read_stack_file(state_dir / STACK_FILE, hints))
        for f in fields(cls):
            raw = environ.get(env_name(f.name))
            if raw is not None:
                values[f.name] = _convert(f.name, raw, hints[f.name])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.kafka_security_protocol not in {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}:
            raise SettingsError(
                f"{env_name('kafka_security_protocol')}={self.kafka_security_protocol!r}: "
                "use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
            )
        if self.kafka_sasl_mechanism not in {"", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}:
            raise SettingsError(
                f"{env_name('kafka_sasl_mechanism')}={self.kafka_sasl_mechanism!r}: "
                "use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
            )
        self._validate_security()
        positive = ("topic_partitions", "sla_target_s", "offer_timeout_s", "batch_max",
                    "max_record_bytes", "max_text_chars", "worker_concurrency", "match_scan_limit")
        for name in positive:
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise SettingsError(f"{env_name(name)} must be > 0, got {getattr(self, name)}")
        if self.runtime not in RUNTIMES:
            raise SettingsError(f"{env_name('runtime')}={self.runtime!r}: use "
                                + " or ".join(RUNTIMES))
        if self.event_loop not in EVENT_LOOPS:
            raise SettingsError(f"{env_name('event_loop')}={self.event_loop!r}: use "
                                + " or ".join(EVENT_LOOPS))
        if self.log_format not in {"json", "console"}:
            raise SettingsError(f"{env_name('log_format')} must be json or console")
        self._validate_bot()
        self._validate_sla()
        self._validate_gateway()

    def _validate_sla(self) -> None:
        from router.sla.windows import FORMULAS, timezone

        if self.sla_formula not in FORMULAS:
            raise SettingsError(f"{env_name('sla_formula')}={self.sla_formula!r}: use "
                                + ", ".join(FORMULAS))
        for name in ("sla_objective_ratio", "sla_at_risk_share"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise SettingsError(f"{env_name(name)} must be in (0, 1], got "
                                    f"{getattr(self, name)}")
        if self.sla_bucket_ttl_s < 90_000 or not self.metrics_lease_s > 0:
            raise SettingsError(f"{env_name('sla_bucket_ttl_s')} must be at least 90000 (longer "
                                f"than a day) and {env_name('metrics_lease_s')} > 0")
        timezone(self.sla_timezone)  # raises SettingsError naming the fix
        self._validate_plan_rating()

    def _validate_plan_rating(self) -> None:
        from router.sla.rating import parse_tiers
        from router.sla.windows import WINDOW_NAMES

        for name in ("plan_aht_s", "plan_patience_s", "rating_min_contacts"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise SettingsError(f"{env_name(name)} must be > 0, got {getattr(self, name)}")
        if self.rating_window not in WINDOW_NAMES:
            raise SettingsError(f"{env_name('rating_window')}={self.rating_window!r}: use "
                                + ", ".join(WINDOW_NAMES))
        parse_tiers(self.rating_tiers)  # raises SettingsError naming the fix

    def _validate_security(self) -> None:
        """Connection security that cannot work is refused at start, naming the fix."""
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL") and not (self.kafka_sasl_username
                                                and self.kafka_sasl_password):
            raise SettingsError(f"{env_name('kafka_security_protocol')}={protocol} needs "
                                f"{env_name('kafka_sasl_username')} and "
                                f"{env_name('kafka_sasl_password')}")
        if self.kafka_sasl_mechanism and not protocol.startswith("SASL"):
            raise SettingsError(f"{env_name('kafka_sasl_mechanism')} is set but "
                                f"{env_name('kafka_security_protocol')}={protocol}: use "
                                "SASL_SSL (or SASL_PLAINTEXT on a trusted network)")
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if any(tls_files) and protocol not in {"SSL", "SASL_SSL"}:
            raise SettingsError(f"Kafka TLS files are set but "
                                f"{env_name('kafka_security_protocol')}={protocol}: use SSL or "
                                "SASL_SSL")
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise SettingsError(f"{env_name('kafka_ssl_certfile')} and "
                                f"{env_name('kafka_ssl_keyfile')} go together")
        scheme = self.redis_url.split("://", 1)[0]
        if scheme not in {"redis", "rediss", "unix"}:
            raise SettingsError(f"{env_name('redis_url')} must start with redis://, rediss:// "
                                "(TLS) or unix://")
        if self.redis_cluster and (scheme == "unix"
                                   or urlsplit(self.redis_url).path not in {"", "/", "/0"}):
            raise SettingsError(f"{env_name('redis_cluster')}: a cluster is reached over TCP and "
                                f"has one database: {env_name('redis_url')} must be "
                                "redis://host:port (or .../0)")
        redis_tls = (self.redis_ssl_cafile, self.redis_ssl_certfile, self.redis_ssl_keyfile)
        if any(redis_tls) and scheme != "rediss":
            raise SettingsError(f"Redis TLS files are set but {env_name('redis_url')} is not "
                                "rediss://")
        if bool(self.redis_ssl_certfile) != bool(self.redis_ssl_keyfile):
            raise SettingsError(f"{env_name('redis_ssl_certfile')} and "
                                f"{env_name('redis_ssl_keyfile')} go together")

    def _validate_gateway(self) -> None:
        try:
            self.gateway_partition_list()
        except ValueError:
            raise SettingsError(f"{env_name('gateway_partitions')}={self.gateway_partitions!r}: "
                                "use partition numbers and ranges, e.g. 0-3 or 0,2,4") from None
        if self.gateway_jwt_algorithm not in {"HS256", "RS256"}:
            raise SettingsError(f"{env_name('gateway_jwt_algorithm')} must be HS256 or RS256")
        positive = ("gateway_token_ttl_s", "gateway_max_frame_bytes", "gateway_frames_per_s",
                    "gateway_frame_burst", "gateway_flood_strikes", "gateway_hello_timeout_s",
                    "gateway_console_interval_s", "gateway_sockets_per_agent",
                    "gateway_jwks_ttl_s", "gateway_jwks_timeout_s", "gateway_jwks_unknown_kid_s",
                    "gateway_revocation_keep_s", "gateway_seen_ttl_s",
                    "gateway_fetch_max_wait_ms", "gateway_gc_sweep_after", "gateway_sync_sweep_s",
                    "gateway_gc_sweep_min_s")
        for name in positive:
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise SettingsError(f"{env_name(name)} must be > 0, got {getattr(self, name)}")
        if not math.isfinite(self.gateway_gc_freeze_s) or self.gateway_gc_freeze_s < 0:
            raise SettingsError(f"{env_name('gateway_gc_freeze_s')} must be >= 0 (0: off), got "
                                f"{self.gateway_gc_freeze_s}")

    def _validate_bot(self) -> None:
        positive = ("bot_silence_close_s", "bot_reload_interval_s", "bot_transcript_turns",
                    "bot_transcript_turn_chars", "bot_conversation_ttl_s")
        for name in positive:
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise SettingsError(f"{env_name(name)} must be > 0, got {getattr(self, name)}")
        if self.bot_vip_policy not in {"none", "boost", "always_human"}:
            raise SettingsError(f"{env_name('bot_vip_policy')}={self.bot_vip_policy!r}: use "
                                "none, boost or always_human")
        if not 0.0 <= self.bot_threshold < 1.0:
            raise SettingsError(f"{env_name('bot_threshold')} must be in 0..1 (0 = the model's "
                                f"own), got {self.bot_threshold}")
        if not 0.0 < self.bot_target_false_containment < 1.0:
            raise SettingsError(f"{env_name('bot_target_false_containment')} must be between 0 "
                                f"and 1, got {self.bot_target_false_containment}")
        if self.bot_rephrase_max < 0 or not 0 <= self.bot_vip_priority_boost <= 9:
            raise SettingsError(f"{env_name('bot_rephrase_max')} must be >= 0 and "
                                f"{env_name('bot_vip_priority_boost')} in 0..9")
        if self.bot_transcript_turns > MAX_TURNS:
            raise SettingsError(f"{env_name('bot_transcript_turns')} must be at most {MAX_TURNS}")
        # An escalation's transcript must leave room in the record for everything else.
        transcript_bytes = (self.bot_transcript_turns * self.bot_transcript_turn_chars
                            * UTF8_MAX_BYTES_PER_CHAR)
        if transcript_bytes > self.max_record_bytes // 2:
            raise SettingsError(
                f"{env_name('bot_transcript_turns')} x {env_name('bot_transcript_turn_chars')} "
                f"x {UTF8_MAX_BYTES_PER_CHAR} bytes must fit in half of "
                f"{env_name('max_record_bytes')}; lower one of them")


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _convert(name: str, raw: str, typ: Any) -> Any:
    if isinstance(typ, types.UnionType):  # pragma: no cover - no optional settings today
        typ = next(t for t in typing.get_args(typ) if t is not type(None))
    try:
        if typ is bool:
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if typ is Path:
            return Path(raw)
        return typ(raw)
    except ValueError:
        raise SettingsError(
            f"{env_name(name)}={raw!r} is not a valid {typ.__name__}"
        ) from None


def _read_stack_file(path: Path, hints: dict[str, Any]) -> dict[str, Any]:
    """Connection settings the embedded stack launcher recorded (removed on `stack down`)."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except orjson.JSONDecodeError as exc:
        raise SettingsError(f"{path} is not valid JSON ({exc}); remove it or run "
                            "`peakroute stack down`") from None
    recorded = data.get("settings", {}) if isinstance(data, dict) else None
    if not isinstance(recorded, dict):
        raise SettingsError(f"{path} has no settings object; remove it or run "
                            "`peakroute stack down`")
    return {k: _convert(k, str(v), hints[k]) for k, v in recorded.items() if k in hints}
