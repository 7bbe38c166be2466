"""TrainDeck: `python app.py` starts the engine and the console in the browser.

    python app.py [--host 127.0.0.1] [--port 7860] [--workspace ./workspace] [--share]
                  [--auth USER:PASSWORD[:ROLE] ...] [--auth-file users.yaml] [--gpus 0,1,2,3]
    python app.py add-user NAME [--role admin|user] [--file users.yaml] [--quota NAME=N ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from engine.api import Engine
from engine.config import ConfigError
from engine.users import QUOTAS, ROLES, ADMIN, Users, add_user
from engine.workspace import WorkspaceBusy

CONSOLE_NICENESS = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="TrainDeck fine-tuning console")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--workspace", default="./workspace",
                        help="folder for the job database, job folders and exports")
    parser.add_argument("--share", action="store_true",
                        help="also serve through a public share link (requires --auth)")
    parser.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD[:ROLE]",
                        help="require this login (repeat for several users); ROLE is admin or "
                             "user (default admin: whoever starts the console owns it)")
    parser.add_argument("--auth-file", metavar="USERS.yaml",
                        help="logins with hashed passwords, roles and quotas "
                             "(written by `python app.py add-user`)")
    parser.add_argument("--gpus", metavar="0,1,...",
                        help="the GPU indices jobs may use (default: every GPU NVML finds)")
    return parser.parse_args(argv)


def parse_auth(pairs: list[str]) -> list[tuple[str, str, str]]:
    logins = []
    for pair in pairs:
        user, sep, rest = pair.partition(":")
        password, role = rest, ADMIN
        if rest.rsplit(":", 1)[-1] in ROLES and ":" in rest:
            password, role = rest.rsplit(":", 1)
        if not sep or not user or not password:
            raise SystemExit(f"--auth {pair!r}: expected USER:PASSWORD or USER:PASSWORD:ROLE")
        logins.append((user, password, role))
    return logins


def parse_gpus(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"--gpus {text!r}: expected comma-separated GPU indices, e.g. 0,1,2,3")
    if len(set(indices)) != len(indices) or any(i < 0 for i in indices):
        raise SystemExit(f"--gpus {text!r}: indices must be distinct and >= 0")
    return indices


def add_user_command(argv: list[str]) -> int:
    import getpass

    parser = argparse.ArgumentParser(prog="python app.py add-user",
                                     description="Add a login to a users file (or change one's "
                                                 "password, role or quotas). The password is "
                                                 "asked for, or read from stdin.")
    parser.add_argument("name")
    parser.add_argument("--role", choices=ROLES, default="user")
    parser.add_argument("--file", default="users.yaml")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of stdin (for scripts)")
    parser.add_argument("--quota", action="append", default=[], metavar="NAME=N",
                        help=f"one of {', '.join(QUOTAS)}; N may be 'none' for unlimited")
    args = parser.parse_args(argv)
    quotas = {}
    for item in args.quota:
        name, _, value = item.partition("=")
        try:
            quotas[name] = None if value.strip().lower() == "none" else int(value)
        except ValueError:
            print(f"error: --quota {item!r}: expected NAME=N", file=sys.stderr)
            return 2
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if password != getpass.getpass("again: "):
            print("error: the passwords differ", file=sys.stderr)
            return 2
    try:
        add_user(args.file, args.name, password, args.role, quotas)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.file}: {args.name} ({args.role}) saved")
    return 0


def load_users(args: argparse.Namespace) -> Users:
    if args.auth_file and not Path(args.auth_file).exists():
        raise ConfigError(f"--auth-file {args.auth_file}: no such file (create it with "
                          f"`python app.py add-user NAME --file {args.auth_file}`)")
    users = Users.from_file(args.auth_file) if args.auth_file else Users()
    users.add_logins(parse_auth(args.auth))
    return users


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["add-user"]:
        return add_user_command(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per internal request otherwise
    try:
        users = load_users(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.share and not users.enabled:
        print("error: --share publishes the console on the internet; it needs logins "
              "(--auth USER:PASSWORD or --auth-file users.yaml)", file=sys.stderr)
        return 2

    # Gradio's queue rebuilds a pandas summary of its last 10,000 events after every event by
    # default; with many polling clients that costs more than the requests themselves.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")
    # Imported after the cheap checks: gradio takes seconds to import.
    import gradio as gr

    from ui.app import CSS, build_console

    engine = Engine(args.workspace, gpu_indices=parse_gpus(args.gpus), users=users)
    try:
        engine.start()
    except (WorkspaceBusy, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Serving the UI and the API must never take CPU from training. On Linux niceness belongs to a
    # thread: the scheduler thread (already started, it launches the trainers) keeps priority 0,
    # while this thread and the web server's threads it creates from here on yield to trainers.
    os.nice(CONSOLE_NICENESS)
    # Zips are served straight from the exports folder: no copy, no hashing of large files.
    gr.set_static_paths([str(engine.workspace.exports_dir)])
    console = build_console(engine)

    def stop(*_):
        engine.close()  # trainers keep running; the next console re-attaches to them
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        console.launch(server_name=args.host, server_port=args.port, share=args.share,
                       auth=users.authenticate if users.enabled else None, ssr_mode=False, show_error=True,
                       allowed_paths=[str(engine.workspace.exports_dir)], css=CSS,
                       prevent_thread_lock=False, quiet=False)
    except KeyboardInterrupt:
        pass
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
