"""TrainDeck: `python app.py` starts the engine and the console in the browser.

    python app.py [--host 127.0.0.1] [--port 7860] [--workspace ./workspace] [--share]
                  [--auth USER:PASSWORD[:ROLE] | --auth @FILE ...] [--auth-file users.yaml]
                  [--data-root DIR ...] [--max-upload-mb N] [--gpus 0,1,2,3]
    python app.py add-user NAME [--role admin|user] [--file users.yaml] [--quota NAME=N ...]
    python app.py repair-db [--workspace ./workspace]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

from engine.config import ConfigError
from engine.console.engine import Engine
from engine.console.people.logins import LoginThrottle
from engine.console.people.notify import Notifier
from engine.console.people.users import QUOTAS, ROLES, USER, Users, add_user
from engine.console.records.store import DatabaseDamaged
from engine.console.records.workspace import Workspace, WorkspaceBusy
from engine.console.running.repair import repair

CONSOLE_NICENESS = 10
AUTH_ENV = "TRAINDECK_AUTH"  # USER:PASSWORD[:ROLE] logins, one per line (kept out of `ps`)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="TrainDeck fine-tuning console")
    for add_options in (_add_server_options, _add_login_options, _add_machine_options,
                        _add_cluster_options, _add_notify_options):
        add_options(parser)
    return parser.parse_args(argv)


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--workspace", default="./workspace",
                        help="folder for the job database, job folders and exports")
    parser.add_argument("--share", action="store_true",
                        help="also serve through a public share link (requires --auth)")


def _add_login_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD[:ROLE]",
                        help="require this login (repeat for several users); ROLE is user "
                             "(default) or admin. @FILE reads such lines from a file, and "
                             f"${AUTH_ENV} holds them too: both keep passwords out of `ps`")
    parser.add_argument("--auth-file", metavar="USERS.yaml",
                        help="logins with hashed passwords, roles and quotas "
                             "(written by `python app.py add-user`)")


def _add_machine_options(parser: argparse.ArgumentParser) -> None:
    """What jobs may use here: GPUs, data, uploads, disk, spare trainers."""
    parser.add_argument("--gpus", metavar="0,1,...",
                        help="the GPU indices jobs may use (default: every GPU NVML finds)")
    parser.add_argument("--data-root", action="append", default=[], metavar="DIR",
                        help="a folder whose models and datasets users may train on (repeat for "
                             "several); with logins, nothing else on the server is readable")
    parser.add_argument("--max-upload-mb", type=int, default=1024, metavar="N",
                        help="the largest dataset file one upload may be (default 1024)")
    parser.add_argument("--disk-floor-gb", type=float, metavar="GB",
                        help="no job starts while the workspace's disk has fewer GiB free "
                             "(default: the larger of 1 and twice the largest checkpoint so far)")
    parser.add_argument("--no-warm-start", action="store_true",
                        help="start every trainer as a fresh process instead of handing jobs to "
                             "a spare trainer that has its libraries imported already")


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", choices=("slurm",),
                        help="run jobs on a Slurm cluster (sbatch) instead of this machine; the "
                             "workspace must be on storage every node mounts")
    parser.add_argument("--cluster-config", type=Path, metavar="FILE",
                        help="cluster settings (default: cluster.yaml in the workspace)")
    for name in ("partition", "account", "qos", "time-limit"):
        parser.add_argument(f"--{name}", help=f"Slurm {name} (overrides cluster.yaml)")


def _add_notify_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--notify-url", action="append", default=[], metavar="URL",
                        help="a webhook every job's end (completed, failed, cancelled), "
                             "preemption and lowered micro-batch is POSTed to (repeatable)")
    parser.add_argument("--notify-format", choices=("json", "slack"), default="json",
                        help="json: TrainDeck's fields; slack: {text} for Slack or Mattermost "
                             "incoming webhooks")
    parser.add_argument("--public-url", metavar="URL",
                        help="the address people open the console at, for links in "
                             "notifications (default: the --share link when there is one)")


def load_cluster(args: argparse.Namespace):
    """The cluster settings for --cluster (None: jobs run on this machine)."""
    if not args.cluster:
        return None
    from engine.console.running.cluster import ClusterSettings
    from engine.console.running.slurm import slurm_available

    missing = slurm_available()
    if missing:
        raise ConfigError(f"--cluster slurm: {missing} (install Slurm's client commands)")
    path = args.cluster_config or Path(args.workspace) / "cluster.yaml"
    if args.cluster_config and not path.exists():
        raise ConfigError(f"--cluster-config {path}: no such file")
    return ClusterSettings.load(path, {"partition": args.partition, "account": args.account,
                                       "qos": args.qos, "time_limit": args.time_limit})


def parse_auth(pairs: list[str]) -> list[tuple[str, str, str]]:
    """USER:PASSWORD[:ROLE] logins; ROLE is user unless it says admin (least privilege)."""
    logins = []
    for pair in pairs:
        user, sep, rest = pair.partition(":")
        password, role = rest, USER
        if rest.rsplit(":", 1)[-1] in ROLES and ":" in rest:
            password, role = rest.rsplit(":", 1)
        if not sep or not user or not password:
            raise SystemExit(f"--auth: a login must be USER:PASSWORD or USER:PASSWORD:ROLE "
                             f"(got one for {user or 'no user'!r})")
        logins.append((user, password, role))
    return logins


def auth_lines(args: argparse.Namespace) -> list[str]:
    """Logins from --auth values, @files and the environment."""
    lines = []
    for value in args.auth:
        if value.startswith("@"):
            try:
                text = Path(value[1:]).read_text(encoding="utf-8")
            except OSError as exc:
                raise SystemExit(f"--auth {value}: cannot read it ({exc.strerror})") from None
            lines += [line.strip() for line in text.splitlines()]
        else:
            print("warning: a password given with --auth is visible to every account on this "
                  f"machine (ps); use --auth @FILE or ${AUTH_ENV} instead", file=sys.stderr)
            lines.append(value)
    lines += [line.strip() for line in os.environ.get(AUTH_ENV, "").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def parse_gpus(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"--gpus {text!r}: expected comma-separated GPU indices, "
                         f"e.g. 0,1,2,3") from None
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
    users.add_logins(parse_auth(auth_lines(args)))
    return users


def repair_db_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python app.py repair-db",
        description="Rebuild the job database (jobs.json) from the job folders. The old file is "
                    "kept beside it; the console must not be running.")
    parser.add_argument("--workspace", default="./workspace")
    args = parser.parse_args(argv)
    workspace = Workspace(args.workspace)
    try:
        jobs, skipped, kept = repair(workspace)
    except WorkspaceBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    print(f"{workspace.database}: rebuilt {len(jobs)} jobs from their folders ("
          + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none") + ")")
    if kept:
        print(f"the previous file is kept as {kept}")
    for folder in skipped:
        print(f"skipped {folder}: no readable job.yaml with a config", file=sys.stderr)
    return 0


def check_flags(args: argparse.Namespace, users: Users) -> str | None:
    """What is wrong with the flags, before anything starts (None: nothing)."""
    for root in args.data_root:
        if not Path(root).is_dir():
            return f"--data-root {root}: no such folder"
    if args.max_upload_mb < 1:
        return "--max-upload-mb must be at least 1"
    if args.disk_floor_gb is not None and not 0 <= args.disk_floor_gb < 2**40:
        return f"--disk-floor-gb must be a number of GiB >= 0, got {args.disk_floor_gb:g}"
    if args.share and not users.enabled:
        return ("--share publishes the console on the internet; it needs logins "
                "(--auth USER:PASSWORD or --auth-file users.yaml)")
    return None


def disk_floor_bytes(args: argparse.Namespace) -> int | None:
    return None if args.disk_floor_gb is None else int(args.disk_floor_gb * 2**30)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["add-user"]:
        return add_user_command(argv[1:])
    if argv[:1] == ["repair-db"]:
        return repair_db_command(argv[1:])
    args = parse_args(argv)
    # Gradio's queue rebuilds a pandas summary of its last 10,000 events after every event by
    # default; with many polling clients that costs more than the requests themselves. Set
    # before the engine starts: its spare trainer is started with this environment, and a job
    # started under another one would not match it.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per internal request otherwise
    try:
        users = load_users(args)
        problem = check_flags(args, users)
        if problem:
            raise ConfigError(problem)
        notifier = Notifier(args.notify_url, args.notify_format, args.public_url)
        engine = Engine(args.workspace, gpu_indices=parse_gpus(args.gpus), users=users,
                        data_roots=args.data_root, max_upload_bytes=args.max_upload_mb << 20,
                        warm_start=not args.no_warm_start, cluster=load_cluster(args),
                        notifier=notifier, disk_floor_bytes=disk_floor_bytes(args))
        engine.start()
    except (WorkspaceBusy, ConfigError, DatabaseDamaged) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        serve(engine, args, users)
    except KeyboardInterrupt:
        pass
    finally:
        engine.close()
    return 0


IDLE_CHECK_S = 5.0
# Each open job view or System tab is one long event in Gradio's queue, which runs at most
# max_threads events at once (40 by default): room for many tabs, so they never make API calls
# wait (each account keeps at most TRAINDECK_LIVE_VIEWS_PER_USER, 8 by default).
MAX_THREADS = 400
# How long the console may take to answer its own address after launch on a busy machine.
LOCAL_URL_DEADLINE_S = 60.0


def wait_until_served(url: str, deadline_s: float) -> None:
    """The console's own page answers at `url`, or the console stops saying why."""
    import httpx

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if httpx.head(url, timeout=10).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"error: the console does not answer at {url} after {deadline_s:.0f} s: "
                     "is localhost reachable (a proxy setting)? --share serves a public link")


def serve(engine: Engine, args: argparse.Namespace, users: Users) -> None:
    """Build the console on a started engine and serve it until stopped."""
    # Imported after the cheap checks and the engine's start: gradio takes seconds to import.
    import gradio as gr
    from starlette.middleware import Middleware

    from ui.app import CSS, build_console
    from ui.login_guard import LoginGuard

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
    # Failed logins are throttled per name and address before Gradio checks the password.
    middleware = [Middleware(LoginGuard, throttle=LoginThrottle())] if users.enabled else []
    console.launch(server_name=args.host, server_port=args.port, share=args.share,
                   auth=users.authenticate if users.enabled else None, ssr_mode=False,
                   auth_message="After 5 wrong passwords a name or address must wait before it "
                                "may try again; the wait doubles with each further one.",
                   show_error=True, allowed_paths=[str(engine.workspace.exports_dir)], css=CSS,
                   max_file_size=args.max_upload_mb << 20, app_kwargs={"middleware": middleware},
                   prevent_thread_lock=True, quiet=True, max_threads=MAX_THREADS,
                   # Gradio's own check gives the page one 3 s try and fails the launch on a busy
                   # machine (a trainer importing torch beside it); ours waits with a deadline.
                   _frontend=False)
    if not args.share:
        wait_until_served(console.local_url, LOCAL_URL_DEADLINE_S)
    # Gradio's own lines would tell people to "set share=True in launch()": ours name our flag.
    print(f"TrainDeck is running on {console.local_url}", flush=True)
    if console.share_url:
        print(f"Public link: {console.share_url} (only the logins you set can use it)", flush=True)
        engine.notifier.public_url = engine.notifier.public_url or console.share_url
    elif not args.share:
        print("For a public link, start it with --share (which needs logins: --auth or "
              "--auth-file).", flush=True)
    # Gradio's own wait checks ten times a second; an idle console should not wake at all.
    while console.is_running:
        time.sleep(IDLE_CHECK_S)  # Ctrl-C interrupts the sleep at once


if __name__ == "__main__":
    sys.exit(main())
