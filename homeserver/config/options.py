"""Every config option, defined once: one frozen dataclass per section.

Each field's metadata carries its documentation (`doc`) and its bounds (`min`, `max`, `choices`); the
loader validates against them and the sample config is rendered from them. Where Synapse has an option for
the same thing, the name and meaning are Synapse's, so an operator's knowledge carries over.
"""

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from homeserver.config.types import ByteSize, ConfigValueError, Duration
from homeserver.core.ids import is_valid_server_name
from homeserver.core.json_signing import verify_key_from_base64


def opt(default: Any, doc: str, **bounds: Any) -> Any:
    """A config field: its default, one-line documentation and validation bounds."""
    if isinstance(default, (list, dict)) or hasattr(default, "__dataclass_fields__"):
        return field(default_factory=lambda: _copy(default), metadata={"doc": doc, **bounds})
    return field(default=default, metadata={"doc": doc, **bounds})


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


RESOURCE_NAMES = ("client", "federation", "metrics", "health")
# Networks a user-chosen URL must not reach unless the operator says so (as Synapse's default).
PRIVATE_RANGES = (
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "0.0.0.0/8",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
    "::/128",
)


@dataclass(frozen=True)
class ListenerResourceConfig:
    names: list[str] = opt(["client"], "what this listener serves: client, federation, metrics, health")
    compress: bool = opt(True, "gzip responses when the client accepts it and the body is worth it")

    def validate(self) -> None:
        for name in self.names:
            if name not in RESOURCE_NAMES:
                raise ConfigValueError("names", f"unknown resource {name!r}; expected one of {RESOURCE_NAMES}")


@dataclass(frozen=True)
class ListenerConfig:
    port: int = opt(8008, "TCP port", min=0, max=65535)
    bind_addresses: list[str] = opt(["127.0.0.1"], "addresses to listen on ('::' or '0.0.0.0' for all)")
    type: str = opt("http", "listener kind", choices=("http",))
    tls: bool = opt(False, "serve HTTPS with tls_certificate_path and tls_private_key_path")
    x_forwarded: bool = opt(False, "trust X-Forwarded-For from a reverse proxy for the client's address")
    resources: list[ListenerResourceConfig] = opt(
        [ListenerResourceConfig(names=["client"])], "what this listener serves; /health is served on every listener"
    )


@dataclass(frozen=True)
class DatabaseConfig:
    name: str = opt("sqlite3", "engine: sqlite3 (embedded) or psycopg2 (PostgreSQL)", choices=("sqlite3", "psycopg2"))
    args: dict[str, Any] = opt(
        {"database": "data/homeserver.db"},
        "engine arguments. sqlite3: database (a path). psycopg2: dsn (postgresql://user@host:port/db) or "
        "user, password, dbname/database, host, port. Both: cp_min and cp_max, the connection pool size",
    )
    max_waiting_transactions: int = opt(
        1000, "transactions allowed to wait for a pool connection; beyond this requests get 503 at once", min=1
    )

    def validate(self) -> None:
        args = self.args
        allowed = {"cp_min", "cp_max"} | (
            {"database"}
            if self.name == "sqlite3"
            else {
                "dsn",
                "user",
                "password",
                "dbname",
                "database",
                "host",
                "port",
                "sslmode",
                "application_name",
                "connect_timeout",
            }
        )
        for key in args:
            if key not in allowed:
                raise ConfigValueError(f"args.{key}", f"unknown argument for {self.name}")
        for key in ("cp_min", "cp_max"):
            if key in args and (not isinstance(args[key], int) or isinstance(args[key], bool) or args[key] < 1):
                raise ConfigValueError(f"args.{key}", "must be a whole number of at least 1")
        if self.cp_min > self.cp_max:
            raise ConfigValueError("args.cp_min", "must not exceed cp_max")
        if self.name == "sqlite3":
            if not isinstance(args.get("database"), str) or not args["database"]:
                raise ConfigValueError("args.database", "sqlite3 needs a database path")
        elif "dsn" in args:
            _check_dsn(args["dsn"])
        elif not any(k in args for k in ("dbname", "database", "host", "user")):
            raise ConfigValueError("args", "psycopg2 needs a dsn or connection arguments (dbname, host, user, ...)")

    @property
    def cp_min(self) -> int:
        return int(self.args.get("cp_min", 1))

    @property
    def cp_max(self) -> int:
        return int(self.args.get("cp_max", 4 if self.name == "sqlite3" else 10))


def _check_dsn(dsn: Any) -> None:
    if not isinstance(dsn, str) or not dsn.startswith(("postgresql://", "postgres://")):
        raise ConfigValueError("args.dsn", "must be a URL like postgresql://user:password@host:5432/dbname")
    from psycopg2.extensions import parse_dsn  # deferred: the embedded default needs no PostgreSQL driver

    try:
        parse_dsn(dsn)
    except Exception as e:  # psycopg2 raises ProgrammingError with libpq's own words
        raise ConfigValueError("args.dsn", f"not a valid PostgreSQL URL: {str(e).strip()}") from None


@dataclass(frozen=True)
class RateLimitConfig:
    per_second: float = opt(0.17, "sustained requests per second", min=0)
    burst_count: float = opt(3, "requests allowed in a burst", min=1)


@dataclass(frozen=True)
class LoginRateLimitConfig:
    address: RateLimitConfig = opt(RateLimitConfig(), "login attempts per client IP address")
    account: RateLimitConfig = opt(RateLimitConfig(), "login attempts per account")
    failed_attempts: RateLimitConfig = opt(RateLimitConfig(), "failed login attempts per account")


@dataclass(frozen=True)
class AdmissionControlConfig:
    max_connections: int = opt(
        0,
        "open client connections before the server is under pressure (above it a newcomer must bring a whole "
        "request, and evicts the longest-idle connection); 0 derives it from the file descriptor limit",
        min=0,
    )
    max_requests_in_flight: int = opt(256, "requests being handled at once, long-polls not counted", min=1)
    max_long_polls: int = opt(
        0, "long-polling requests (/sync with a timeout) at once; 0 means half the connection budget", min=0
    )
    fd_reserve: int = opt(
        64,
        "file descriptors kept back for logs, outbound requests and accept bursts; the database pool's "
        "connections are reserved on top",
        min=16,
    )
    request_timeout: float = opt(60.0, "seconds a request may take once received, before it is cut off", min=1)
    read_timeout: float = opt(
        10.0, "seconds a client has to send a whole request (headers and body) once it starts", min=0.5
    )
    idle_timeout: float = opt(30.0, "seconds an idle keep-alive connection is kept open", min=0.5)
    retry_after_ms: int = opt(1000, "Retry-After advised to refused clients, in milliseconds", min=0)
    shutdown_timeout: float = opt(
        10.0,
        "seconds a draining server (after SIGTERM or SIGINT) waits for requests in flight before it stops anyway",
        min=0,
    )


@dataclass(frozen=True)
class PushConfig:
    """Push actions are cleared in the background, never in a request."""

    prune_batch_size: int = opt(
        500,
        "push-action rows one pruner or admin-purge transaction deletes at most; each batch is one transaction, "
        "keep it short (500 rows: about 10 ms on PostgreSQL)",
        min=1,
        max=10_000,
    )
    prune_pause_ms: int = opt(50, "pause between two batches, in milliseconds: the database's time for requests", min=0)
    prune_interval: float = opt(
        30.0, "seconds the pruner rests after a run has caught up: read push actions wait at most this long", min=0.1
    )
    retention_days: float = opt(
        30.0, "push actions older than this are deleted even when unread (their unread counts stay)", min=0.01
    )


@dataclass(frozen=True)
class ThumbnailSizeConfig:
    width: int = opt(32, "width of the box, in pixels", min=1, max=4096)
    height: int = opt(32, "height of the box, in pixels", min=1, max=4096)
    method: str = opt(
        "crop", "crop: fill the box, cutting what overflows; scale: fit inside it", choices=("crop", "scale")
    )


@dataclass(frozen=True)
class MediaConfig:
    """The media repository: uploads, downloads and thumbnails."""

    media_store_path: str = opt("data/media_store", "folder the uploaded files and thumbnails are kept in")
    max_upload_size: ByteSize = opt(ByteSize(50 * 1024**2), "largest upload accepted (K, M, G suffixes allowed)", min=1)
    freeze_legacy_media: bool = opt(
        True,
        "serve media uploaded from now on only through the authenticated /_matrix/client/v1/media endpoints "
        "(Matrix 1.11); what was uploaded earlier stays on /_matrix/media/v3/download and /thumbnail too",
    )
    max_image_pixels: int = opt(
        32_000_000, "images with more pixels than this are not thumbnailed (decompression bombs)", min=1
    )
    max_pending_media_uploads: int = opt(
        5, "media ids (POST /_matrix/media/v1/create) a user may hold that are not uploaded to yet", min=1
    )
    unused_expiration_time: float = opt(86400.0, "seconds a media id from /create stays valid for its upload", min=60)
    thumbnail_sizes: list[ThumbnailSizeConfig] = opt(
        [
            ThumbnailSizeConfig(32, 32, "crop"),
            ThumbnailSizeConfig(96, 96, "crop"),
            ThumbnailSizeConfig(320, 240, "scale"),
            ThumbnailSizeConfig(640, 480, "scale"),
            ThumbnailSizeConfig(800, 600, "scale"),
        ],
        "thumbnail boxes, made on first request and kept; a request is served the smallest that is big enough",
    )


@dataclass(frozen=True)
class UserDirectoryConfig:
    """Who POST /user_directory/search finds."""

    search_all_users: bool = opt(
        False, "find every local user; otherwise only those sharing a room with the searcher or in a published room"
    )


@dataclass(frozen=True)
class TrustedKeyServerConfig:
    """A notary we ask for other servers' keys (Synapse's trusted_key_servers entry)."""

    server_name: str = opt("", "the notary's server name")
    verify_keys: dict[str, str] = opt(
        {}, "its signing keys (key id -> unpadded base64); empty: fetch them from the notary itself over TLS"
    )

    def validate(self) -> None:
        if not is_valid_server_name(self.server_name):
            raise ConfigValueError("server_name", f"{self.server_name!r} is not a valid server name")
        for key_id, key in self.verify_keys.items():
            _check_verify_key(f"verify_keys.{key_id}", key_id, key)


@dataclass(frozen=True)
class OldSigningKeyConfig:
    """A signing key this server used before, still published so that what it signed can be checked."""

    key: str = opt("", "the public key, unpadded base64")
    expired_ts: int = opt(0, "when the key stopped being used, in milliseconds since the epoch", min=0)


def _check_verify_key(where: str, key_id: str, key: str) -> None:
    if not key_id.startswith("ed25519:") or len(key_id) == len("ed25519:"):
        raise ConfigValueError(where, "key ids look like ed25519:VERSION")
    try:
        verify_key_from_base64(key_id, key)
    except Exception:  # signedjson raises assorted errors for bad base64 or length
        raise ConfigValueError(where, "not an unpadded-base64 ed25519 public key") from None


@dataclass(frozen=True)
class PresenceConfig:
    """Presence: online, unavailable or offline, and status messages, shown to users sharing a room."""

    enabled: bool = opt(
        True,
        "false means no presence traffic at all: nothing stored, nothing in sync, no timers (the switch against "
        "presence storms); PUT presence then succeeds and changes nothing, GET answers offline",
    )
    idle_timeout: float = opt(
        300.0, "seconds without activity (a message sent) before online becomes unavailable", min=0.1
    )
    sync_timeout: float = opt(
        30.0, "seconds after a user's last sync ends (with none open) before they become offline", min=0.1
    )


@dataclass(frozen=True)
class FederationConfig:
    """Sending transactions to other servers (docs/federation.md, "Sending events and EDUs")."""

    min_retry_interval: Duration = opt(
        Duration(5_000), "wait before retrying a server whose transaction failed; doubles on each failure", min=100
    )
    max_retry_interval: Duration = opt(
        Duration(3_600_000), "longest wait between retries to a server that stays down", min=1_000
    )

    def validate(self) -> None:
        if self.min_retry_interval > self.max_retry_interval:
            raise ConfigValueError("min_retry_interval", "must not be above max_retry_interval")


@dataclass(frozen=True)
class LoggingConfig:
    level: str = opt("INFO", "root log level", choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    format: str = opt("plain", "plain text or one JSON object per line", choices=("plain", "json"))
    loggers: dict[str, str] = opt({}, "log level per module, e.g. {homeserver.storage: DEBUG}")

    def validate(self) -> None:
        for name, level in self.loggers.items():
            if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
                raise ConfigValueError(f"loggers.{name}", f"unknown level {level!r}")


@dataclass(frozen=True)
class HomeserverConfig:
    server_name: str = opt("localhost", "the domain in user ids (@alice:SERVER_NAME); cannot change later")
    public_baseurl: str = opt(
        "", "URL clients reach the client API at; empty means http://SERVER_NAME:PORT/ of the first listener"
    )
    signing_key_path: str = opt("data/signing.key", "ed25519 signing key; generated on first start if missing")
    listeners: list[ListenerConfig] = opt([ListenerConfig()], "where the server listens")
    handover_socket_path: str = opt(
        "",
        "UNIX socket through which a new `homeserver run` takes over the listening sockets of the running "
        "server (docs/restarts.md); empty: homeserver.control in the signing key's folder",
    )
    tls_certificate_path: str | None = opt(None, "PEM certificate chain for listeners with tls: true")
    tls_private_key_path: str | None = opt(None, "PEM private key for listeners with tls: true")
    database: DatabaseConfig = opt(DatabaseConfig(), "the database")
    enable_registration: bool = opt(False, "let anyone register an account through the client API")
    registration_shared_secret: str | None = opt(
        None, "secret for admin registration over HTTP (/_homeserver/admin/v1/register); unset disables it"
    )
    bcrypt_rounds: int = opt(12, "bcrypt cost of password hashes", min=4, max=31)
    rc_login: LoginRateLimitConfig = opt(LoginRateLimitConfig(), "rate limits on /login")
    rc_registration: RateLimitConfig = opt(RateLimitConfig(), "rate limit on /register, per client IP address")
    max_request_body_size: ByteSize = opt(
        ByteSize(1024 * 1024), "largest JSON request body accepted (K, M suffixes allowed)", min=1024
    )
    admission_control: AdmissionControlConfig = opt(AdmissionControlConfig(), "limits on work accepted at once")
    push: PushConfig = opt(PushConfig(), "push notifications")
    ip_range_blacklist: list[str] = opt(
        list(PRIVATE_RANGES),
        "address ranges (CIDR) the server never sends user-chosen requests to, such as push gateways; "
        "private, loopback and link-local networks by default",
    )
    ip_range_whitelist: list[str] = opt([], "exceptions to ip_range_blacklist, e.g. a push gateway on your network")
    media: MediaConfig = opt(MediaConfig(), "the media repository")
    trusted_key_servers: list[TrustedKeyServerConfig] = opt(
        [],
        "notaries asked for other servers' signing keys before asking those servers themselves "
        "(Synapse's default is matrix.org; empty: always ask the server itself)",
    )
    federation_verify_certificates: bool = opt(
        True, "check other servers' TLS certificates; turn off only for test set-ups with self-signed certificates"
    )
    serve_server_wellknown: bool = opt(
        False,
        "serve /.well-known/matrix/server pointing other servers at SERVER_NAME:443 (for a reverse proxy on 443)",
    )
    old_signing_keys: dict[str, OldSigningKeyConfig] = opt(
        {}, "signing keys used before, published as old_verify_keys (key id -> {key, expired_ts})"
    )
    key_refresh_interval: Duration = opt(
        Duration(86_400_000), "how long other servers may cache our signing keys (valid_until_ts); 1d", min=60_000
    )
    user_directory: UserDirectoryConfig = opt(UserDirectoryConfig(), "the user directory")
    presence: PresenceConfig = opt(PresenceConfig(), "presence")
    federation: FederationConfig = opt(FederationConfig(), "sending to other servers")
    logging: LoggingConfig = opt(LoggingConfig(), "logging")

    def validate(self) -> None:
        if not is_valid_server_name(self.server_name):
            raise ConfigValueError("server_name", f"{self.server_name!r} is not a valid server name")
        if self.public_baseurl and not self.public_baseurl.startswith(("http://", "https://")):
            raise ConfigValueError("public_baseurl", "must start with http:// or https://")
        if not self.listeners:
            raise ConfigValueError("listeners", "at least one listener is needed")
        for key in ("ip_range_blacklist", "ip_range_whitelist"):
            for i, cidr in enumerate(getattr(self, key)):
                try:
                    ipaddress.ip_network(cidr)
                except ValueError as e:
                    raise ConfigValueError(f"{key}[{i}]", f"{cidr!r} is not an address range: {e}") from None
        for key_id, old in self.old_signing_keys.items():
            _check_verify_key(f"old_signing_keys.{key_id}", key_id, old.key)
        if any(listener.tls for listener in self.listeners):
            for key in ("tls_certificate_path", "tls_private_key_path"):
                if not getattr(self, key):
                    raise ConfigValueError(key, "a listener has tls: true, so this is required")

    @property
    def client_baseurl(self) -> str:
        if self.public_baseurl:
            return self.public_baseurl if self.public_baseurl.endswith("/") else self.public_baseurl + "/"
        listener = self.listeners[0]
        scheme = "https" if listener.tls else "http"
        return f"{scheme}://{self.server_name}:{listener.port}/"
