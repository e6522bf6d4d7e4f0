"""Time to a clear error for a hub weights file that is not cached, with downloads allowed
(``offline: false``) and the hub unreachable: dissectkit's ``weights.resolve`` vs a bare
``hf_hub_download`` (which retries with back-off). The hub is made unreachable by pointing the
endpoint at a local port nothing listens on (or set ``--endpoint``). Prints both times and the ratio.

    .venv/bin/python benchmarks/hub_unreachable.py [--endpoint http://10.255.255.1]
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time


def closed_port_endpoint() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", default=None)
    args = ap.parse_args()
    endpoint = args.endpoint or closed_port_endpoint()
    os.environ.pop("HF_HUB_OFFLINE", None)
    os.environ["HF_ENDPOINT"] = endpoint
    os.environ["HF_HOME"] = tempfile.mkdtemp()
    from huggingface_hub import hf_hub_download

    from dissectkit.base.context import BuildContext
    from dissectkit.base.errors import WeightsError
    from dissectkit.base.weights import resolve

    t0 = time.perf_counter()
    try:
        resolve({"hf": "org/none", "file": "w.bin"}, BuildContext(offline=False, cache_dir=tempfile.mkdtemp()))
    except WeightsError:
        ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        hf_hub_download("org/none", "w.bin")
    except Exception:  # noqa: BLE001 - any failure ends the baseline
        bare = time.perf_counter() - t0
    print(f"endpoint {endpoint}: dissectkit {ours:.2f} s, bare hf_hub_download {bare:.2f} s, ratio {bare / ours:.1f}x")


if __name__ == "__main__":
    main()
