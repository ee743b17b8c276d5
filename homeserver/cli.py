"""The `homeserver` command: run, generate-config, admin."""

import argparse
import gc
import getpass
import importlib
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from homeserver.config import ConfigError, HomeserverConfig, load_config
from homeserver.config.sample import HEADER, render_config, render_sample
from homeserver.config.signing_key import write_new_signing_key
from homeserver.core.errors import MatrixError
from homeserver.core.ids import is_valid_server_name, parse_user_id

EXIT_USAGE = 2
# Modules that add admin subcommands: each has `add_commands(admin_subparsers)`.
ADMIN_COMMANDS = ("homeserver.cli_admin", "homeserver.cli_media", "homeserver.cli_port_db")


class Fatal(Exception):
    """A start-up or command failure to report in one line, exit status 2."""


def main(argv: list[str] | None = None) -> None:
    from homeserver.http.sockets import passed_descriptors

    # Before anything imports twisted.internet.endpoints (the admin commands' modules do, through the
    # federation client): that module takes systemd's LISTEN_* variables away.
    passed_fds = passed_descriptors()
    parser = _parser()
    args = parser.parse_args(argv)
    args.passed_fds = passed_fds
    if not hasattr(args, "command_fn"):
        parser.print_help()
        sys.exit(EXIT_USAGE)
    try:
        args.command_fn(args)
    except (ConfigError, Fatal) as e:
        print(f"homeserver: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="homeserver", description="A Matrix homeserver for small communities.")
    sub = parser.add_subparsers(title="commands")

    run = sub.add_parser("run", help="start the server (no -c: embedded defaults, SQLite in ./data)")
    run.add_argument("-c", "--config", help="YAML config file")
    run.add_argument(
        "--take-over",
        action="store_true",
        help="require a running server with this config to hand its listening sockets over, then drain "
        "(without the flag this happens whenever one is running; docs/restarts.md)",
    )
    run.set_defaults(command_fn=cmd_run)

    gen = sub.add_parser("generate-config", help="write a complete commented config and a signing key")
    gen.add_argument("--server-name", help="the domain in user ids; cannot change later (required)")
    gen.add_argument("--data-dir", default="data", help="folder for the database and the key (default: data)")
    gen.add_argument("-c", "--config", default="homeserver.yaml", help="file to write (default: homeserver.yaml)")
    gen.add_argument("--sample", action="store_true", help="print the sample config (all defaults) and exit")
    gen.set_defaults(command_fn=cmd_generate_config)

    admin = sub.add_parser("admin", help="operator tasks on the config's database")
    admin_sub = admin.add_subparsers(title="admin commands")
    reg = admin_sub.add_parser("register-user", help="create an account")
    reg.add_argument("name", help="localpart (alice) or user id (@alice:example.org)")
    reg.add_argument("--admin", action="store_true", help="give the account the admin flag")
    reg.add_argument("--password-file", help="read the password from this file (first line); default: ask")
    reg.add_argument("-c", "--config", help="YAML config file (default: embedded defaults)")
    reg.add_argument(
        "--url",
        help="register through a running server at this base URL with the config's registration_shared_secret, "
        "instead of writing to its database",
    )
    reg.set_defaults(command_fn=cmd_register_user)
    users = admin_sub.add_parser("list-users", help="list accounts")
    users.add_argument("-c", "--config", help="YAML config file (default: embedded defaults)")
    users.set_defaults(command_fn=cmd_list_users)
    for module in ADMIN_COMMANDS:
        importlib.import_module(module).add_commands(admin_sub)
    admin.set_defaults(command_fn=lambda _: (admin.print_help(), sys.exit(EXIT_USAGE)))
    return parser


# The reactor is one thread: a full garbage collection under a sync herd stalled it for 60-115 ms.
# Young generations collected less often (Python's default is 700, 10, 10) make full ones rare.
GC_THRESHOLDS = (20_000, 20, 10)
# The reactor gives up the GIL on every socket call and must win it back from database threads; Python's
# 5 ms default made each hand-back up to 5 ms while a herd kept those threads busy.
SWITCH_INTERVAL_S = 0.001


def _freeze_startup_objects(_: Any) -> None:
    """What exists once the server listens (modules, config, routes) lives as long as the process; moved
    out of the collector's sight, it is not walked again by every full collection."""
    gc.collect()
    gc.freeze()


def cmd_run(args: argparse.Namespace) -> None:
    passed_fds = args.passed_fds  # read by main(), first thing
    config = load_config(args.config)
    from twisted.internet import reactor

    from homeserver.drain import install_signal_handlers
    from homeserver.logs import setup_logging

    setup_logging(config.logging)
    hs = _open(config, args.config, reactor)
    outcome: dict[str, Any] = {"code": 0}

    def failed(failure: Failure) -> None:
        outcome["code"] = EXIT_USAGE
        if failure.check(*_startup_errors()):
            print(f"homeserver: {failure.value}", file=sys.stderr)
        else:
            failure.printTraceback(file=sys.stderr)
        reactor.stop()

    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    reactor.callWhenRunning(
        lambda: (
            defer.ensureDeferred(hs.start(take_over=args.take_over, passed_fds=passed_fds))
            .addCallback(_freeze_startup_objects)
            .addErrback(failed)
        )
    )
    # After Twisted's own handlers are installed, so that these replace them: a signal drains, not stops.
    reactor.callWhenRunning(install_signal_handlers, hs, reactor, config.admission_control.shutdown_timeout)
    reactor.run()
    sys.exit(outcome["code"])


def _startup_errors() -> tuple[type[BaseException], ...]:
    from twisted.internet.error import CannotListenError

    from homeserver.http.sockets import InheritedSocketError
    from homeserver.storage.engines import DatabaseUnavailable
    from homeserver.storage.migrations import SchemaError

    return ConfigError, DatabaseUnavailable, SchemaError, OSError, CannotListenError, InheritedSocketError


def _open(config: HomeserverConfig, source: str | None, reactor: Any = None) -> Any:
    from homeserver.app import HomeServer

    return HomeServer(config, reactor, source or "<defaults>")


def open_for_admin(config_path: str | None) -> Any:
    """The server's parts running transactions inline, with the schema brought up to date."""
    hs = _open(load_config(config_path), config_path)
    try:
        resolve(hs.prepare_database())
    except _startup_errors() as e:
        raise Fatal(str(e)) from None
    return hs


def resolve(coroutine: Any) -> Any:
    """Run a coroutine that never really waits (inline database) to its result."""
    results: list[Any] = []
    defer.ensureDeferred(coroutine).addBoth(results.append)
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def cmd_generate_config(args: argparse.Namespace) -> None:
    if args.sample:
        sys.stdout.write(render_sample())
        return
    if not args.server_name:
        raise Fatal("generate-config: --server-name is required")
    if not is_valid_server_name(args.server_name):
        raise Fatal(f"--server-name: {args.server_name!r} is not a valid server name")
    target = Path(args.config)
    if target.exists():
        raise Fatal(f"{target} already exists; remove it or choose another path with -c")
    import dataclasses
    import secrets

    from homeserver.config.options import DatabaseConfig, MediaConfig

    data = args.data_dir.rstrip("/")
    config = dataclasses.replace(
        HomeserverConfig(),
        server_name=args.server_name,
        signing_key_path=f"{data}/{args.server_name}.signing.key",
        database=DatabaseConfig(args={"database": f"{data}/homeserver.db"}),
        media=MediaConfig(media_store_path=f"{data}/media_store"),
        registration_shared_secret=secrets.token_urlsafe(32),
    )
    title = f"# Homeserver configuration for {args.server_name}, written by `homeserver generate-config`."
    target.write_text(render_config(config, header=HEADER.replace("# Homeserver configuration.", title)), "utf-8")
    key_path = target.resolve().parent / config.signing_key_path
    if not key_path.exists():
        write_new_signing_key(key_path, str(target))
    print(f"wrote {target} and the signing key {key_path}")


def cmd_register_user(args: argparse.Namespace) -> None:
    if args.url:
        config = load_config(args.config)
        localpart = localpart_of(args.name, config.server_name)
        user_id = _register_over_http(args.url, config, localpart, _read_password(args.password_file), args.admin)
        print(f"registered {user_id}{' (admin)' if args.admin else ''}")
        return
    hs = open_for_admin(args.config)
    name = args.name
    localpart = localpart_of(name, hs.config.server_name)
    password = _read_password(args.password_file)
    try:
        resolve(hs.registration.check_available(localpart))
        user_id = resolve(hs.registration.create_account(localpart, password, admin=args.admin))
    except MatrixError as e:
        raise Fatal(f"cannot register {name}: {e.msg}") from None
    print(f"registered {user_id}{' (admin)' if args.admin else ''}")


def localpart_of(name: str, server_name: str) -> str:
    if not name.startswith("@"):
        return name
    try:
        localpart, server = parse_user_id(name)
    except ValueError:
        raise Fatal(f"{name!r} is not a valid user id") from None
    if server != server_name:
        raise Fatal(f"{name} is not on this server ({server_name})")
    return localpart


def _register_over_http(url: str, config: HomeserverConfig, localpart: str, password: str, admin: bool) -> str:
    import json
    import urllib.error
    import urllib.request

    from homeserver.handlers.shared_secret_registration import registration_mac

    if not config.registration_shared_secret:
        raise Fatal("--url needs registration_shared_secret in the config")
    endpoint = url.rstrip("/") + "/_homeserver/admin/v1/register"

    def call(data: dict | None) -> dict:
        body = json.dumps(data).encode() if data is not None else None
        request = urllib.request.Request(endpoint, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as e:
            try:
                detail = json.load(e).get("error", e.reason)
            except ValueError:
                detail = e.reason
            raise Fatal(f"{endpoint}: {e.code} {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise Fatal(f"{endpoint}: {getattr(e, 'reason', e)}") from None

    nonce = call(None)["nonce"]
    mac = registration_mac(config.registration_shared_secret, nonce, localpart, password, admin)
    answer = call({"nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac})
    return answer["user_id"]


def _read_password(password_file: str | None) -> str:
    if password_file:
        try:
            password = Path(password_file).read_text(encoding="utf-8").splitlines()[0:1]
        except OSError as e:
            raise Fatal(f"--password-file: cannot read {password_file}: {e.strerror}") from None
        if not password or not password[0]:
            raise Fatal(f"--password-file: {password_file} is empty")
        return password[0]
    if not sys.stdin.isatty():
        raise Fatal("no terminal to ask for the password on; use --password-file")
    first = getpass.getpass("Password: ")
    if not first or first != getpass.getpass("Again: "):
        raise Fatal("the passwords were empty or did not match")
    return first


def cmd_list_users(args: argparse.Namespace) -> None:
    import datetime

    hs = open_for_admin(args.config)
    users = resolve(hs.accounts.list_users())
    print(f"{'user id':40} {'admin':5} {'deactivated':11} created")
    for user in users:
        created = datetime.datetime.fromtimestamp(user.created_ts / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M")
        print(f"{user.user_id:40} {'yes' if user.admin else 'no':5} {'yes' if user.deactivated else 'no':11} {created}")
    print(f"{len(users)} user(s)")
