"""Wires config, database, stores, handlers and listeners together."""

import logging
from typing import Any

from twisted.internet import defer, ssl
from twisted.protocols.tls import TLSMemoryBIOFactory

from homeserver.api import health
from homeserver.api.admin import purges as admin_purges
from homeserver.api.admin import register as admin_register
from homeserver.api.admin import statistics as admin_statistics
from homeserver.api.admin import users as admin_users
from homeserver.api.client import (
    account,
    account_data,
    capabilities,
    devices,
    directory,
    keys,
    login,
    media,
    membership,
    notifications,
    presence,
    profile,
    push_rules,
    pushers,
    receipts,
    register,
    room_reads,
    room_send,
    room_upgrade,
    space_hierarchy,
    sync,
    to_device,
    typing,
    user_directory,
    versions,
)
from homeserver.api.federation import discovery as federation_discovery
from homeserver.api.federation import events as federation_events
from homeserver.api.federation import keys as federation_keys
from homeserver.api.federation import media as federation_media
from homeserver.api.federation import membership as federation_membership
from homeserver.api.federation import public_rooms as federation_public_rooms
from homeserver.api.federation import query as federation_query
from homeserver.api.federation import user_keys as federation_user_keys
from homeserver.config.options import HomeserverConfig
from homeserver.config.signing_key import load_signing_key
from homeserver.config.types import ConfigError
from homeserver.handlers.account import AccountHandler
from homeserver.handlers.account_data import AccountDataHandler
from homeserver.handlers.admin.jobs import PurgeJobs
from homeserver.handlers.admin.purges import PurgeHandler
from homeserver.handlers.admin.statistics import AdminStatistics
from homeserver.handlers.admin.users import AdminUsers
from homeserver.handlers.auth import Authenticator
from homeserver.handlers.batches import Batches, BatchPace, blocking_sleep, reactor_sleep
from homeserver.handlers.devices import DeviceHandler
from homeserver.handlers.directory import DirectoryHandler
from homeserver.handlers.e2e_keys import E2eKeysHandler
from homeserver.handlers.federation.e2e import FederatedE2e
from homeserver.handlers.federation.event_intake import EventIntake
from homeserver.handlers.federation.history import FederationHistory
from homeserver.handlers.federation.keys import KeyConfig, KeyRing
from homeserver.handlers.federation.membership import RemoteMembership
from homeserver.handlers.federation.queries import RemoteQueries
from homeserver.handlers.federation.sender import ClientTransport, FederationSender, RetryPolicy
from homeserver.handlers.federation.transactions import TransactionHandler
from homeserver.handlers.login import LoginHandler, LoginLimits
from homeserver.handlers.media import MediaHandler
from homeserver.handlers.membership import MembershipHandler
from homeserver.handlers.messages import MessageHandler
from homeserver.handlers.notifications import NotificationsHandler
from homeserver.handlers.notifier import Notifier
from homeserver.handlers.passwords import PasswordHasher
from homeserver.handlers.presence import PresenceHandler, Timeouts
from homeserver.handlers.profiles import ProfileHandler
from homeserver.handlers.push import PushActionsBuilder
from homeserver.handlers.push_pruner import PushPruner
from homeserver.handlers.push_rules import PushRulesHandler
from homeserver.handlers.pushers import NotificationBuilder, PusherHandler, PusherPool
from homeserver.handlers.ratelimit import RateLimiter
from homeserver.handlers.receipts import ReceiptHandler
from homeserver.handlers.registration import RegistrationHandler
from homeserver.handlers.room_creation import RoomCreationHandler
from homeserver.handlers.room_events import RoomEventSender
from homeserver.handlers.room_reads import ClientEventSerializer, RoomReadHandler
from homeserver.handlers.room_upgrade import RoomUpgradeHandler
from homeserver.handlers.shared_secret_registration import SharedSecretRegistration
from homeserver.handlers.space_hierarchy import SpaceHierarchyHandler
from homeserver.handlers.sync import SyncHandler, SyncSources
from homeserver.handlers.to_device import ToDeviceHandler
from homeserver.handlers.typing import TypingHandler
from homeserver.handlers.ui_auth import UiAuth
from homeserver.handlers.user_directory import UserDirectoryHandler
from homeserver.handlers.visibility import HistoryVisibility
from homeserver.http.address_filter import AddressFilter
from homeserver.http.admission import AdmissionController, derive_limits
from homeserver.http.channel import listen
from homeserver.http.fd_budget import compute_budget, database_fds
from homeserver.http.federation_client import FederationClient
from homeserver.http.routing import Endpoint, Router
from homeserver.http.server import MatrixSite
from homeserver.http.sockets import control_path, inherit_sockets, serve_control
from homeserver.metrics import MetricsEndpoint, ServerMetrics, server_collectors
from homeserver.storage.account_data import AccountDataStore
from homeserver.storage.accounts import AccountStore
from homeserver.storage.admin import AdminStore
from homeserver.storage.database import Database, DatabaseBusy
from homeserver.storage.device_lists import DeviceListStore
from homeserver.storage.e2e_keys import E2eKeyStore
from homeserver.storage.engines import create_engine
from homeserver.storage.events import EventStore
from homeserver.storage.federation_inbox import FederationInboxStore
from homeserver.storage.federation_outbox import FederationOutboxStore
from homeserver.storage.filters import FilterStore
from homeserver.storage.media import MediaStore
from homeserver.storage.media_files import MediaFiles
from homeserver.storage.migrations import migrate
from homeserver.storage.presence import PresenceStore
from homeserver.storage.profiles import ProfileStore
from homeserver.storage.purge import PurgeStore
from homeserver.storage.push import PushStore
from homeserver.storage.push_rules import PushRuleStore
from homeserver.storage.pushers import PusherStore
from homeserver.storage.receipts import ReceiptStore
from homeserver.storage.rooms import RoomStore
from homeserver.storage.server_keys import ServerKeyStore
from homeserver.storage.state import StateStore
from homeserver.storage.statistics import StatisticsStore
from homeserver.storage.sync import SyncStore
from homeserver.storage.to_device import ToDeviceStore
from homeserver.storage.ui_auth import UiAuthStore
from homeserver.storage.user_directory import UserDirectoryStore

logger = logging.getLogger(__name__)


def _limiter(section: Any) -> RateLimiter:
    return RateLimiter(section.per_second, section.burst_count)


class HomeServer:
    """Everything the server is made of. With `reactor=None` it runs transactions inline, which is
    what the admin CLI uses; `start()` needs a reactor."""

    def __init__(self, config: HomeserverConfig, reactor: Any = None, config_source: str = "<defaults>") -> None:
        self.config = config
        self.config_source = config_source
        self.reactor = reactor
        self.signing_key = load_signing_key(config.signing_key_path, config_source)
        db_config = config.database
        self.db = Database(create_engine(db_config), db_config.cp_max, db_config.max_waiting_transactions, reactor)
        self.accounts = AccountStore(self.db)
        self.passwords = PasswordHasher(config.bcrypt_rounds, reactor)
        rc = config.rc_login
        login_limits = LoginLimits(_limiter(rc.address), _limiter(rc.account), _limiter(rc.failed_attempts))
        self.ui_auth = UiAuth(
            UiAuthStore(self.db), self.accounts, self.passwords, config.server_name, login_limits.failed_attempts
        )
        self.login = LoginHandler(self.accounts, self.passwords, login_limits)
        self.registration = RegistrationHandler(
            config.server_name,
            config.enable_registration,
            self.accounts,
            self.passwords,
            self.ui_auth,
            self.login,
            _limiter(config.rc_registration),
        )
        self.shared_secret_registration = SharedSecretRegistration(config.registration_shared_secret, self.registration)
        self.devices = DeviceHandler(self.accounts, self.ui_auth)
        self.account = AccountHandler(self.accounts, self.passwords, self.ui_auth)
        self.authenticator = Authenticator(self.accounts)
        self.media = MediaHandler(
            config.server_name, MediaStore(self.db), MediaFiles(config.media.media_store_path), config.media, reactor
        )
        self._build_rooms()
        self._build_federation()
        self._build_e2e()
        self._build_ephemeral()
        self._build_sync()
        self._build_federation_inbound()
        self._build_pushers()
        self._build_admin()
        self.admission: AdmissionController | None = None
        self.metrics: ServerMetrics | None = None  # built with the listeners, in start()
        self.ports: list[Any] = []

    def _build_rooms(self) -> None:
        self.state = StateStore(self.db)
        self.events = EventStore(self.db, self.state)
        self.rooms = RoomStore(self.db)
        self.profiles = ProfileHandler(self.config.server_name, ProfileStore(self.db), self.accounts)
        self.room_sender = RoomEventSender(
            self.config.server_name, self.signing_key, self.rooms, self.events, self.state
        )
        self.room_creation = RoomCreationHandler(self.room_sender, self.events, self.rooms, self.profiles)
        self.membership = MembershipHandler(self.room_sender, self.rooms, self.events, self.accounts, self.profiles)
        self.profiles.member_event_updater = self.membership.update_profile_in_rooms
        self.messages = MessageHandler(self.room_sender, self.events, self.rooms)
        self.room_reads = RoomReadHandler(self.events, self.state, self.rooms)
        self.directory = DirectoryHandler(self.config.server_name, self.room_sender, self.rooms, self.events)
        self.room_upgrades = RoomUpgradeHandler(self.room_creation, self.room_sender, self.rooms, self.events)
        self.space_hierarchy = SpaceHierarchyHandler(self.rooms, self.events)
        self.user_directory = UserDirectoryHandler(
            UserDirectoryStore(self.db, self.config.server_name), self.config.user_directory.search_all_users
        )

    def _build_federation(self) -> None:
        """Server keys, the federation client, and other servers' profiles and aliases for the client API.
        Without a reactor (the admin CLI) there is no federation."""
        self.key_ring: KeyRing | None = None
        self.federation_sender: FederationSender | None = None
        self.federation_client: FederationClient | None = None
        if self.reactor is None:
            return
        config = self.config
        self.federation_client = client = FederationClient(
            self.reactor,
            config.server_name,
            self.signing_key,
            AddressFilter(config.ip_range_blacklist, config.ip_range_whitelist),
            verify_certificates=config.federation_verify_certificates,
        )
        key_config = KeyConfig(
            config.server_name,
            self.signing_key,
            config.old_signing_keys,
            config.key_refresh_interval,
            config.trusted_key_servers,
        )
        self.key_ring = KeyRing(
            key_config,
            ServerKeyStore(self.db),
            client,
            lambda: int(self.reactor.seconds() * 1000),
            self.reactor.seconds,
        )
        self.profiles.remote = self.directory.remote = RemoteQueries(client, self.reactor.seconds)
        self.media.enable_federation(client)
        self.directory.federation = client
        retry = RetryPolicy(config.federation.min_retry_interval, config.federation.max_retry_interval)
        self.federation_sender = FederationSender(
            self.reactor,
            config.server_name,
            FederationOutboxStore(self.db),
            self.events,
            self.state,
            self.rooms,
            ClientTransport(client, config.server_name),
            retry,
        )
        self.room_sender.federation = self.federation_sender.events_persisted

    def federation_endpoints(self) -> list[Endpoint]:
        assert self.key_ring is not None
        return [
            federation_discovery.Version(),
            *federation_keys.endpoints(self.key_ring),
            *federation_query.endpoints(self.profiles, self.directory, self.config.server_name),
            *federation_public_rooms.endpoints(self.directory),
            *federation_membership.endpoints(self.remote_membership),
            *federation_user_keys.endpoints(self.e2e_keys),
            *federation_media.endpoints(
                self.media, self.config.server_name, max(1, self.config.admission_control.fd_reserve // 4)
            ),
            *federation_events.endpoints(
                self.federation_transactions, self.federation_history, self.config.server_name
            ),
        ]

    def _build_federation_inbound(self) -> None:
        """Events and EDUs other servers send, and the history they read. Needs the ephemeral handlers and
        the notifier; without a reactor (the admin CLI) there is no federation."""
        self.federation_history = FederationHistory(self.events, self.state, self.rooms)
        self.event_intake: EventIntake | None = None
        if self.key_ring is None:
            return
        self.event_intake = EventIntake(
            self.config.server_name,
            self.key_ring,
            self.federation_client,
            self.room_sender,
            self.events,
            self.state,
            self.rooms,
        )
        self.federation_transactions = TransactionHandler(
            self.config.server_name,
            self.event_intake,
            FederationInboxStore(self.db),
            self.rooms,
            self.typing,
            self.receipts,
            ToDeviceStore(self.db),
            self.device_lists,
        )
        self.federation_transactions.notify_users = self.notifier.notify_users
        self.federation_transactions.remote_keys_changed = self.e2e_keys.federation.remote_keys_changed
        if self.presence.enabled:  # disabled: other servers' presence is ignored
            self.federation_transactions.presence = self.presence
        self.room_reads.backfill = self.event_intake.backfill
        self.remote_membership = RemoteMembership(
            self.config.server_name,
            self.signing_key,
            self.room_sender,
            self.events,
            self.state,
            self.rooms,
            self.federation_client,
            self.event_intake.check_pdu,
        )
        self.remote_membership.restricted_join_authoriser = self.membership.restricted_join_authoriser
        if self.federation_sender is not None:
            self.remote_membership.relay = self.federation_sender.relay_persisted
        self.membership.remote = self.remote_membership
        self.room_creation.invite_remote = self.membership.invite
        self.membership.remote_alias = self.directory.resolve_alias

    def _build_ephemeral(self) -> None:
        """Typing, receipts and account data. Their handlers wake syncs through a `notifier`
        attribute, None until the notifier is wired."""
        self.account_data = AccountDataHandler(AccountDataStore(self.db))
        self.receipts = ReceiptHandler(
            ReceiptStore(self.db),
            self.account_data,
            self.events,
            HistoryVisibility(self.events, self.state, self.rooms),
        )
        self.typing = TypingHandler(self.reactor, self.rooms)
        if self.federation_sender is not None:
            self.typing.federation = self.federation_sender.typing_changed
            self.receipts.federation = self.federation_sender.send_room_edu
        pc = self.config.presence
        self.presence = PresenceHandler(
            self.reactor,
            PresenceStore(self.db),
            self.rooms,
            self.accounts,
            Timeouts(int(pc.idle_timeout * 1000), int(pc.sync_timeout * 1000)),
            pc.enabled and self.reactor is not None,  # its timers need a reactor: none in the admin CLI
            server_name=self.config.server_name,
        )
        if self.presence.enabled:  # disabled: neither syncs nor sends reach it
            self.messages.active = self.presence.user_active
            if self.federation_sender is not None:
                self.presence.federation = self.federation_sender.send_edu
                self.federation_sender.joined = self.presence.members_joined

    def _build_sync(self) -> None:
        # Everyone with a membership: invitees see their invite, leavers their leave.
        self.notifier = Notifier(self.reactor, lambda room_id: self.rooms.member_event_ids(room_id, None))
        self.room_sender.notify_room = self.notifier.notify_room
        self.filters = FilterStore(self.db)
        self.push_store = PushStore(self.db)
        self.push_rules = PushRulesHandler(PushRuleStore(self.db), self.account_data)
        self.account_data.push_rules = self.push_rules.ruleset
        push_actions = PushActionsBuilder(self.rooms, self.events, self.push_rules)
        self.push_rules.on_change.append(push_actions.forget)
        self.room_sender.push = push_actions
        self.receipts.push = self.push_store
        self.notifications = NotificationsHandler(
            self.push_store, self.events, ClientEventSerializer(self.events, self.state)
        )
        sleep = reactor_sleep(self.reactor) if self.reactor is not None else blocking_sleep
        self.push_pruner = PushPruner(self.push_store, Batches(self.db, sleep, self._batch_pace), self.config.push)
        self.sync_sources = SyncSources(
            push=self.push_store,
            receipts=self.receipts,
            typing=self.typing,
            account_data=self.account_data,
            to_device=self.to_device,
            device_lists=self.device_lists,
            e2e_keys=self.e2e_keys,
            presence=self.presence if self.presence.enabled else None,
        )
        for handler in (self.receipts, self.typing, self.account_data, self.to_device, self.e2e_keys, self.presence):
            handler.notifier = self.notifier
        self.sync = SyncHandler(
            self.events,
            self.state,
            self.rooms,
            HistoryVisibility(self.events, self.state, self.rooms),
            ClientEventSerializer(self.events, self.state),
            self.notifier,
            self.sync_sources,
            SyncStore(self.db),
            self.reactor,
        )

    def _build_e2e(self) -> None:
        """Device lists, E2EE keys and to-device messages. Their `notifier` attributes wake syncs once set."""
        self.device_lists = DeviceListStore(self.db)
        e2e_store = E2eKeyStore(self.db)
        self.e2e_keys = E2eKeysHandler(
            self.config.server_name, e2e_store, self.device_lists, self.rooms, self.accounts, self.ui_auth
        )
        if self.federation_client is not None:
            self.e2e_keys.federation = FederatedE2e(
                self.config.server_name, self.federation_client, self.rooms, e2e_store, self.federation_sender
            )
        self.to_device = ToDeviceHandler(self.config.server_name, ToDeviceStore(self.db))
        if self.federation_sender is not None:
            self.to_device.federation = self.federation_sender.durable_edus_stored
        # Devices created or deleted change device lists; a deleted device's keys and inbox go with it.
        self.login.e2e = self.devices.e2e = self.account.e2e = self.e2e_keys

    def _build_pushers(self) -> None:
        """HTTP pushers, woken by the events whose push actions notify their users; they start sending
        with start(). A pusher goes with its device (a foreign key), so logouts need no call here."""
        store = PusherStore(self.db)
        self.pusher_pool = PusherPool(
            store,
            NotificationBuilder(self.events, self.rooms, store),
            self.reactor,
            AddressFilter(self.config.ip_range_blacklist, self.config.ip_range_whitelist),
        )
        self.room_sender.pushed = self.pusher_pool.notified
        self.pushers = PusherHandler(store, self.pusher_pool)

    @property
    def _batch_pace(self) -> BatchPace:
        """The pruner's pace, which admin purges share (DESIGN.md: they work the same way)."""
        return BatchPace(self.config.push.prune_batch_size, self.config.push.prune_pause_ms / 1000)

    def _build_admin(self) -> None:
        """Admin purges (inline in the CLI, in the background over HTTP), deactivation and statistics.
        Joins, invites and knocks to rooms an admin blocked or is deleting are refused."""
        admin = AdminStore(self.db)
        purge_store = PurgeStore(self.db)
        self.purges = PurgeHandler(purge_store, admin, self.rooms, self.accounts, self.room_sender)
        self.membership.check_joinable = self.purges.check_joinable
        self.purge_jobs = PurgeJobs(self.reactor, self.db, self._batch_pace)
        self.admin_users = AdminUsers(self.accounts, self.account, admin, self.rooms, self.room_sender)
        self.admin_statistics = AdminStatistics(StatisticsStore(self.db), purge_store, self.rooms, admin)

    async def prepare_database(self) -> list[int]:
        return await migrate(self.db)

    def client_endpoints(self) -> list[Endpoint]:
        base_url = self.config.client_baseurl
        return [
            versions.Versions(),
            versions.ClientWellKnown(base_url),
            *login.endpoints(self.login, self.config.server_name, base_url),
            *register.endpoints(self.registration, self.config.server_name),
            *account.endpoints(self.account),
            *devices.endpoints(self.devices),
            *admin_register.endpoints(self.shared_secret_registration, self.login),
            *admin_purges.endpoints(self.purges, self.purge_jobs),
            *admin_users.endpoints(self.admin_users),
            *admin_statistics.endpoints(self.admin_statistics),
            capabilities.Capabilities(),
            *room_send.endpoints(self.room_creation, self.messages),
            *membership.endpoints(self.membership, self.rooms),
            *profile.endpoints(self.profiles),
            *room_reads.endpoints(self.room_reads),
            *directory.endpoints(self.directory),
            *room_upgrade.endpoints(self.room_upgrades),
            *space_hierarchy.endpoints(self.space_hierarchy),
            *user_directory.endpoints(self.user_directory),
            *sync.endpoints(self.sync, self.filters),
            *typing.endpoints(self.typing),
            *presence.endpoints(self.presence),
            *receipts.endpoints(self.receipts),
            *notifications.endpoints(self.notifications),
            *account_data.endpoints(self.account_data),
            *push_rules.endpoints(self.push_rules),
            *pushers.endpoints(self.pushers),
            *keys.endpoints(self.e2e_keys),
            *to_device.endpoints(self.to_device),
            # Files held open for uploads and downloads come out of the descriptors kept in reserve.
            *media.endpoints(self.media, max(1, self.config.admission_control.fd_reserve // 2)),
        ]

    def health_status(self) -> tuple[bool, dict[str, Any]]:
        db_saturated = self.db.waiting >= self.db.max_waiting
        components = {
            "database": {
                "in_use": self.db.in_use,
                "max": self.db.max_connections,
                "waiting": self.db.waiting,
                "saturated": db_saturated,
            },
            "admission": self.admission.snapshot() if self.admission else {},
            "sync": {
                "waiting": self.notifier.waiting,
                "computed": self.sync.flights.computed,
                "coalesced": self.sync.flights.shared,
                "room_states_built": self.sync.state_computations,
                "room_state_cache_bytes": self.sync.state_fragments.bytes,
                "room_sections_built": self.sync.shared.section_computations,
                "room_section_cache_bytes": self.sync.shared.sections.bytes,
            },
            "access_tokens": {"cached": len(self.accounts.tokens), "reads": self.accounts.token_reads},
            "push_pruner": self.push_pruner.status(),
        }
        return not db_saturated, components

    async def start(self, take_over: bool = False, passed_fds: list[int] | None = None) -> None:
        """Migrate, start the background work, then serve: on the sockets systemd passed (`passed_fds`), else on
        those of the server running with this config (which then drains), else on newly bound ones
        (http/sockets.py). `take_over`: refuse to start unless a running server hands its sockets over."""
        applied = await self.prepare_database()
        if applied:
            logger.info("applied database migrations %s", applied)
        self.media.prepare()
        if self.presence.enabled:
            await self.presence.start()  # stored presence, before the first sync
        self.push_pruner.start(self.reactor)  # stops itself on reactor shutdown
        await self.pusher_pool.start()  # sends what arrived while the server was down; stops on shutdown
        if self.federation_sender is not None:
            sender = self.federation_sender
            await sender.start()  # catches up every destination from its stored position
            # The transaction in flight may finish, within the drain watchdog's grace (drain.SHUTDOWN_GRACE_S).
            self.reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(sender.stop(1.5)))
        admission_config = self.config.admission_control
        budget = compute_budget(admission_config.fd_reserve, database_fds(self.config.database))
        limits = derive_limits(admission_config, budget)
        self.admission = AdmissionController(limits, admission_config.retry_after_ms)
        self.admission.watch_database(lambda: self.db.waiting / self.db.max_waiting)
        logger.info(
            "descriptor limit %d: %d for connections (evicting idle ones above %d), %d requests and %d long-polls "
            "at once",
            budget.limit,
            limits.connection_budget,
            limits.max_connections,
            limits.max_requests,
            limits.max_long_polls,
        )
        client_endpoints = self.client_endpoints()
        health_endpoint = health.Health(self.health_status)
        self.metrics = metrics = ServerMetrics(server_collectors(self, budget.limit))
        metrics_endpoint = MetricsEndpoint(metrics)
        federation_endpoints = self.federation_endpoints()
        server_well_known = federation_discovery.ServerWellKnown(self.config.server_name)
        serve_well_known = self.config.serve_server_wellknown
        wanted = [(address, listener.port) for listener in self.config.listeners for address in listener.bind_addresses]
        control = control_path(self.config.handover_socket_path, self.config.signing_key_path)
        inherited, predecessor = inherit_sockets(wanted, control, passed_fds or [], required=take_over)
        for listener in self.config.listeners:
            names = {name for res in listener.resources for name in res.names}
            router = Router()
            for endpoint in [
                health_endpoint,
                *(client_endpoints if "client" in names else []),
                *(federation_endpoints if "federation" in names else []),
                *([server_well_known] if serve_well_known and names & {"client", "federation"} else []),
                *([metrics_endpoint] if "metrics" in names else []),
            ]:
                router.add(endpoint)
            site = MatrixSite(
                router,
                self.admission,
                self.authenticator.authenticate,
                self.reactor,
                max_body_size=self.config.max_request_body_size,
                request_timeout=admission_config.request_timeout,
                read_timeout=admission_config.read_timeout,
                idle_timeout=admission_config.idle_timeout,
                compress=any(res.compress for res in listener.resources),
                x_forwarded=listener.x_forwarded,
                busy_errors=(DatabaseBusy,),
                observe=metrics.observe_request,
                authenticate_server=self.key_ring.authenticate_request if "federation" in names else None,
            )
            factory: Any = site
            if listener.tls:
                factory = TLSMemoryBIOFactory(self._tls_context(), False, site)
            for address in listener.bind_addresses:
                adopted = inherited.get((address, listener.port))
                port = listen(self.reactor, listener.port, factory, address, self.admission, adopted=adopted)
                self.ports.append(port)
                logger.info(
                    "%s on %s:%d (%s)",
                    "serving an inherited socket" if adopted else "listening",
                    address,
                    port.getHost().port,
                    ", ".join(sorted(names)),
                )
        if predecessor is not None:
            predecessor.release_predecessor()
        serve_control(self.reactor, control, lambda: self.ports)

    def _tls_context(self) -> Any:
        try:
            return ssl.DefaultOpenSSLContextFactory(self.config.tls_private_key_path, self.config.tls_certificate_path)
        except Exception as e:  # OpenSSL's errors name neither the file nor the option
            raise ConfigError(
                self.config_source,
                "tls_certificate_path",
                f"cannot load the TLS certificate {self.config.tls_certificate_path} and key "
                f"{self.config.tls_private_key_path}: {e}",
            ) from None
