"""`spkd service install|uninstall|print`: argument parsing and printing only; the
rendering and the systemctl / launchctl calls live in daemon/service/manager.py."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from daemon.cli.common import add_command, load_config
from daemon.errors import ExitCode
from daemon.service import manager as service

__all__ = ["register"]


def _render(args: argparse.Namespace) -> service.ServiceFile:
    return service.render(load_config(args), platform=getattr(args, "platform", None), scope=args.scope or "user",
                          service_user=args.service_user)


def cmd_service_print(args: argparse.Namespace) -> int:
    rendered = _render(args)
    print(f"# {rendered.platform} {rendered.scope} service; `spkd service install` writes it to {rendered.path}",
          file=sys.stderr)
    sys.stdout.write(rendered.text)
    return ExitCode.OK


def cmd_service_install(args: argparse.Namespace) -> int:
    import os

    from daemon.config import is_override

    config = load_config(args)
    overrides = sorted(k for k in os.environ if is_override(k))
    if overrides:
        print(f"note: the service reads only {config.source}; {', '.join(overrides)} from this shell "
              "do not reach it (put those settings in the config file)", file=sys.stderr)
    rendered = service.render(config, scope=args.scope or "user", service_user=args.service_user)
    service.install(config, rendered, service_user=args.service_user)
    return ExitCode.OK


def cmd_service_uninstall(args: argparse.Namespace) -> int:
    rendered = _render(args)
    service.uninstall(rendered)
    return ExitCode.OK


def register(subparsers: Any) -> None:
    """Add `service` to spkd's subcommands (`subparsers` from build_parser)."""
    text = "run spkd as a systemd service (Linux) or a launchd agent (macOS)"
    parent = subparsers.add_parser("service", help=text, description=text)
    sub = parent.add_subparsers(dest="service_command", metavar="COMMAND")
    sub.required = True
    commands = (
        ("install", cmd_service_install, "write the unit/plist for this installation and config, load and start it"),
        ("uninstall", cmd_service_uninstall, "stop the service and remove its unit/plist"),
        ("print", cmd_service_print, "print the unit/plist that install would write, for review"),
    )
    for name, func, help_text in commands:
        p = add_command(sub, name, func, help_text)
        scope = p.add_mutually_exclusive_group()
        scope.add_argument("--user", dest="scope", action="store_const", const="user",
                           help="a user service: ~/.config/systemd/user, or a LaunchAgent (the default)")
        scope.add_argument("--system", dest="scope", action="store_const", const="system",
                           help="a system service in /etc/systemd/system running as --service-user (needs root)")
        p.add_argument("--service-user", default=service.DEFAULT_SERVICE_USER, metavar="NAME",
                       help=f"the account a --system service runs as (default: {service.DEFAULT_SERVICE_USER})")
        if name == "print":
            p.add_argument("--platform", choices=service.PLATFORMS,
                           help="render for this service manager instead of this machine's")
        p.set_defaults(func=func, scope=None)
