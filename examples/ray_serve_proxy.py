"""reflectkit's OpenAI-compatible proxy on Ray Serve, asked through the openai client.

Ray Serve runs the proxy's ASGI app in replicas (one process each, spread over a Ray cluster)
behind its own HTTP proxy; each replica is exactly what ``reflectkit serve`` runs. This script
starts a local Ray instance, deploys one replica serving the embedded local model, asks it a
question, and shuts down. On a cluster: ``ray start --head`` on one machine, ``ray start
--address HEAD:6379`` on the others, then ``serve.run(...)`` (or ``serve deploy``) with
``num_replicas`` as high as the load needs, and an ``api_key`` in the settings when the HTTP
proxy listens beyond loopback. Run it with::

    pip install 'reflectkit[server,local,ray]' openai
    python examples/ray_serve_proxy.py
"""

from __future__ import annotations

import socket

import ray
from openai import OpenAI
from ray import serve
from starlette.types import ASGIApp

MODEL = "local/smollm2-135m"


def build_proxy() -> ASGIApp:
    """The proxy's app, built in each replica (Ray Serve calls this when the replica starts)."""
    from reflectkit.server import ServerSettings, create_app

    return create_app(ServerSettings(models=(MODEL,), mode="single"))


@serve.deployment(num_replicas=1, max_ongoing_requests=64)
@serve.ingress(build_proxy)
class ReflectkitProxy:
    """One replica: one proxy process, with its own local-model worker."""


def main() -> None:
    with socket.socket() as sock:  # a free port for Ray Serve's HTTP proxy
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(ReflectkitProxy.bind(), route_prefix="/", name="reflectkit")
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="not-needed-on-loopback")
        reply = client.chat.completions.create(
            model=f"reflect/{MODEL}",
            messages=[{"role": "user", "content": "What is 2+2?"}],
            max_tokens=32,
        )
        print("answer:", reply.choices[0].message.content)
        print("usage:", reply.usage.total_tokens if reply.usage else None, "tokens")
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
