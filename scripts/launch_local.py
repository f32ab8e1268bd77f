r"""Starts N processes of one multi-process JAX run on this machine and waits for them.

  python scripts/launch_local.py 2 --cpu_devices=2 -- \
      python -m experiments.train --config=experiments/configs/toy2d.py:quick --workdir=runs/mh

Each process gets ``JAXEBM_COORDINATOR=127.0.0.1:<a free port>``, ``JAXEBM_NUM_PROCESSES=N`` and
``JAXEBM_PROCESS_ID=i`` (what ``jaxebm.parallel.initialize_multihost`` reads), and with
``--cpu_devices`` ``JAX_NUM_CPU_DEVICES``. Their output is streamed line by line, each line prefixed
with ``[i]``. When a process exits with a non-zero status, the others are stopped (SIGTERM, then
SIGKILL after ``--grace_s``) and the launcher exits with that status (``128 + signal`` for a
process ended by a signal). SIGINT or SIGTERM to the launcher is passed on to every process (a
training run saves and stops); a second one kills them.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

__all__ = ["free_port", "launch", "main"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the coordinator binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_env(index: int, count: int, port: int, cpu_devices: int | None) -> dict[str, str]:
    """The environment of process ``index`` of ``count``."""
    env = {
        **os.environ,
        "JAXEBM_COORDINATOR": f"127.0.0.1:{port}",
        "JAXEBM_NUM_PROCESSES": str(count),
        "JAXEBM_PROCESS_ID": str(index),
        "PYTHONUNBUFFERED": "1",
    }
    if cpu_devices is not None:
        env["JAX_NUM_CPU_DEVICES"] = str(cpu_devices)
    return env


def _stream(index: int, pipe, lock: threading.Lock) -> None:
    """Copies a process's output to ours, each line prefixed with its index."""
    for line in iter(pipe.readline, b""):
        with lock:
            sys.stdout.buffer.write(f"[{index}] ".encode() + line)
            sys.stdout.buffer.flush()
    pipe.close()


def _status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _stop(processes: list[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM to every process still running, SIGKILL to those left after ``grace_s``."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def launch(
    command: list[str], count: int, *, cpu_devices: int | None = None, grace_s: float = 10.0
) -> int:
    """Runs ``command`` as processes ``0 .. count-1`` of one run; returns the run's exit status:
    0 when all end with 0, else the first non-zero status (the others are stopped then)."""
    port, lock = free_port(), threading.Lock()
    processes, readers = [], []
    for index in range(count):
        process = subprocess.Popen(
            command,
            env=process_env(index, count, port, cpu_devices),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        reader = threading.Thread(target=_stream, args=(index, process.stdout, lock), daemon=True)
        reader.start()
        processes.append(process)
        readers.append(reader)
    received: list[int] = []

    def forward(signum, frame):
        if received:  # a second signal: stop at once
            for process in processes:
                if process.poll() is None:
                    process.kill()
        received.append(signum)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    previous = {
        number: signal.signal(number, forward) for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        status = _wait(processes, grace_s, received)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    for reader in readers:
        reader.join(timeout=5)
    return status


def _wait(processes: list[subprocess.Popen], grace_s: float, received: list[int]) -> int:
    """Waits for every process; at the first non-zero status stops the others and returns it.
    Once a signal was passed on, every process is stopping by itself: all are waited for."""
    while True:
        codes = [process.poll() for process in processes]
        failed = [code for code in codes if code not in (None, 0)]
        if received and None not in codes:
            return _status(failed[0]) if failed else 0
        if failed and not received:
            index = codes.index(failed[0])
            print(
                f"[launch] process {index} exited with status {_status(failed[0])}: "
                "stopping the others",
                file=sys.stderr,
                flush=True,
            )
            _stop(processes, grace_s)
            return _status(failed[0])
        if all(code == 0 for code in codes):
            return 0
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print(
            "usage: launch_local.py N [--cpu_devices K] [--grace_s S] -- COMMAND...",
            file=sys.stderr,
        )
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("num_processes", type=int)
    parser.add_argument("--cpu_devices", type=int, help="CPU devices per process")
    parser.add_argument("--grace_s", type=float, default=10.0, help="SIGTERM to SIGKILL, seconds")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if args.num_processes < 1 or not command:
        parser.error("needs N >= 1 and a command after --")
    return launch(command, args.num_processes, cpu_devices=args.cpu_devices, grace_s=args.grace_s)


if __name__ == "__main__":
    sys.exit(main())
