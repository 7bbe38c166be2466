"""TrainDeck: `python app.py` starts the engine and the console in the browser.

    python app.py [--host 127.0.0.1] [--port 7860] [--workspace ./workspace]
                  [--share] [--auth user:password ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from engine.api import Engine
from engine.config import ConfigError
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
    parser.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD",
                        help="require this login (repeat for several users)")
    return parser.parse_args(argv)


def parse_auth(pairs: list[str]) -> list[tuple[str, str]]:
    logins = []
    for pair in pairs:
        user, sep, password = pair.partition(":")
        if not sep or not user or not password:
            raise SystemExit(f"--auth {pair!r}: expected USER:PASSWORD")
        logins.append((user, password))
    return logins


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per internal request otherwise
    logins = parse_auth(args.auth)
    if args.share and not logins:
        print("error: --share publishes the console on the internet; it needs --auth USER:PASSWORD",
              file=sys.stderr)
        return 2

    # Gradio's queue rebuilds a pandas summary of its last 10,000 events after every event by
    # default; with many polling clients that costs more than the requests themselves.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")
    # Imported after the cheap checks: gradio takes seconds to import.
    import gradio as gr

    from ui.app import CSS, build_console

    engine = Engine(args.workspace)
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
                       auth=logins or None, ssr_mode=False, show_error=True,
                       allowed_paths=[str(engine.workspace.exports_dir)], css=CSS,
                       prevent_thread_lock=False, quiet=False)
    except KeyboardInterrupt:
        pass
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
