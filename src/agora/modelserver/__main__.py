"""``python -m agora.modelserver [--module NAME]... [--model pkg.mod:obj]... [--host H]
[--port P] [--workers N] [--queue N] [--timeout S] [--max-upload-bytes B] [--state-dir D]
[--training-heartbeat S]``

Host and port default to ``$AGORA_BIND_HOST`` and ``$PORT``; with ``$AGORA_SERVICE_TOKEN``
set every request but ``GET /health`` needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agora.modelserver.app import ServerConfig
from agora.modelserver.loader import ModelNotFound
from agora.modelserver.server import default_host, default_port, run, service_token


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    defaults = ServerConfig()
    p = argparse.ArgumentParser(prog="python -m agora.modelserver", description=__doc__)
    p.add_argument("--module", action="append", help="entry-point name (default: all)")
    p.add_argument("--model", action="append", help="import path pkg.mod:obj [NAME=pkg.mod:obj]")
    p.add_argument("--host", default=default_host())
    p.add_argument("--port", type=int, default=default_port())
    p.add_argument("--workers", type=_positive, default=defaults.workers)
    p.add_argument("--queue", type=int, default=defaults.queue)
    p.add_argument("--timeout", type=float, default=defaults.timeout)
    p.add_argument("--max-upload-bytes", type=_positive, default=defaults.max_upload_bytes)
    p.add_argument("--state-dir", type=Path, default=defaults.state_dir)
    p.add_argument(
        "--training-heartbeat",
        type=float,
        default=defaults.training_heartbeat,
        help="seconds between stamps of running trainings; a training unstamped for three is "
        "reported as cut short",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    config = ServerConfig(
        workers=args.workers,
        queue=args.queue,
        timeout=args.timeout,
        max_upload_bytes=args.max_upload_bytes,
        state_dir=args.state_dir,
        token=service_token(),
        training_heartbeat=args.training_heartbeat,
    )
    try:
        run(args.module, args.model, config, args.host, args.port)
    except ModelNotFound as exc:
        sys.exit(f"agora.modelserver: {exc}")


if __name__ == "__main__":
    main()
