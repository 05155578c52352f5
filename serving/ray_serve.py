"""The HTTP API on Ray Serve: the routes of ``serving.api`` in front of replicas of the model.

    python -m serving.ray_serve --model DIR --replicas 2 --port 8000     # RAY_ADDRESS or local

    serve deploy deploy/serve.yaml                                         # an existing cluster

Two deployments, scaled separately (as Ray Serve's own examples and the Whisper-on-KubeRay
samples do):

* ``Api`` (the ingress): FastAPI with ``serving.api``'s routes and ``serving.realtime``'s
  ``/v1/realtime`` WebSocket, upload limits, auth and error shapes, unchanged. It reads and decodes the upload, probes its length and runs the long-audio
  segmentation (VAD), then sends 16 kHz waveforms to the model deployment through a
  ``DeploymentHandle``. ``ReplicaPool`` is what ``serving.pipeline`` sees as its model holder.
* ``Transcriber`` (the model): ``num_replicas`` (or an ``autoscaling_config``) replicas, each
  with ``ray_actor_options`` (``num_cpus``, ``num_gpus``) and one model loaded at start, so a
  replica is ready when its model is. Inside a replica, one ``serving.scheduler`` (the model
  holder's, as in app.py) decodes the concurrent calls together: continuous batching across
  calls whatever their options, priorities and per-caller fairness.

A replica that dies mid-request (killed, out of memory, node lost) costs no request: the call
is sent again to another replica, and when none answers the client gets 503 with Retry-After.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from ray import serve

from .model_holder import Client, ModelHolder, ModelUnavailable, is_demo_dir
from .settings import Settings, build_parser, parse_settings

log = logging.getLogger("funasr_nano.ray_serve")

ROOT = Path(__file__).resolve().parents[1]
APP_NAME = "funasr-nano"
RETRIES = 3                 # a call lost with its replica is sent again this many times
RETRY_PAUSE_S = 0.5         # first pause before a retry (doubles): the router drops dead replicas
CALL_TIMEOUT_S = 600.0      # one model call (a batch of files or segments) never waits longer
INFO_REFRESH_S = 2.0        # how stale /health's view of the replicas may be


# --------------------------------------------------------------------------- model replicas

@serve.deployment(name="Transcriber", max_ongoing_requests=32,
                  ray_actor_options={"num_cpus": 1})
class Transcriber:
    """One model per replica; ``transcribe`` has ``FunASRNano.transcribe``'s signature."""

    def __init__(self, spec: str, device: str | None, dtype: str | None, demo: bool,
                 batch_size: int):
        self.holder = ModelHolder(spec, device, dtype, demo=demo, batch_size=batch_size)
        self.holder.watch_kernels()    # as app.py: compiled in the background if not cached
        self.holder.get()              # load now: the replica counts as ready once its model is

    async def transcribe(self, inputs: list, options: dict) -> list[dict]:
        # Each call waits in its own thread; the replica's scheduler batches them (options,
        # priority and caller travel with each call).
        return await asyncio.to_thread(self.holder.transcribe, list(inputs), **dict(options))

    def info(self) -> dict:
        # The ingress decides what /health shows (ReplicaPool.info's ``private``).
        return {**self.holder.info(private=True), "scheduler": self.holder.scheduler_stats(),
                "pid": os.getpid()}


# --------------------------------------------------------------------------- the ingress side

class ReplicaPool:
    """The model holder that ``serving.pipeline`` and ``serving.api`` use in the ingress: each
    ``transcribe`` goes to one of the Transcriber replicas, and comes back from another one if
    the first dies on the way."""

    def __init__(self, handle, spec: str, device: str | None, dtype: str | None, demo: bool,
                 call_timeout_s: float = CALL_TIMEOUT_S):
        self._handle = handle
        self._timeout = call_timeout_s
        self._local = ModelHolder(spec, device, dtype, demo=demo)   # /health before any answer
        self._info: dict | None = None
        self._info_at = 0.0
        self._refreshing = threading.Lock()
        self.retries = 0   # calls sent again after their replica died (for the log and tests)

    # what serving.pipeline and serving.realtime call; the replicas load their model at start
    loaded = True

    def get(self):
        return self

    def preload_in_background(self) -> None:
        return None

    def client(self, priority: str = "interactive", caller: str | None = None):
        return Client(self, priority, caller)

    def scheduler_stats(self) -> dict:
        """A replica's scheduler (as of the last refresh), for /health."""
        info = self._info or {}
        return info.get("scheduler") or self._local.scheduler_stats()

    def transcribe(self, inputs, **options) -> list[dict]:
        from ray.exceptions import GetTimeoutError, RayActorError
        from ray.serve.exceptions import (BackPressureError, DeploymentUnavailableError,
                                          ReplicaUnavailableError)

        pause = RETRY_PAUSE_S
        for attempt in range(RETRIES + 1):
            try:
                results = self._handle.transcribe.remote(list(inputs), options).result(
                    timeout_s=self._timeout)
                return results
            except (RayActorError, ReplicaUnavailableError) as e:
                # The replica died with the call in it (RayActorError covers ActorDiedError and
                # ActorUnavailableError). The engine has no side effects: sending it again is safe.
                if attempt == RETRIES:
                    raise ModelUnavailable("the model replicas are restarting; try again in a "
                                           "few seconds") from e
                self.retries += 1
                log.warning("a model replica was lost (%s); sending the call again (%d of %d)",
                            type(e).__name__, attempt + 1, RETRIES)
                time.sleep(pause)
                pause *= 2
            except BackPressureError as e:
                raise ModelUnavailable("every model replica is busy; try again shortly") from e
            except DeploymentUnavailableError as e:
                raise ModelUnavailable("the model deployment failed to start") from e
            except GetTimeoutError as e:
                raise ModelUnavailable(f"no model replica answered within {self._timeout:g} s"
                                       ) from e

    # what /health and /v1/models show
    def info(self, private: bool = False) -> dict:
        """A replica's view (at most INFO_REFRESH_S old) and how many replicas are running;
        ``private`` as ModelHolder.info (paths and error details for the operator only).
        Never blocks the event loop: the refresh runs in a thread."""
        if time.monotonic() - self._info_at > INFO_REFRESH_S and self._refreshing.acquire(False):
            threading.Thread(target=self._refresh, daemon=True).start()
        info = dict(self._info or {**self._local.info(private=True), "replicas": None})
        info.pop("pid", None)
        info.pop("scheduler", None)   # /health has its own field for it
        if not private:
            for key in ("model_path", "model_dir", "load_error_detail"):
                info.pop(key, None)
        return {**info, "backend": "ray-serve"}

    def _refresh(self) -> None:
        try:
            info = self._handle.info.remote().result(timeout_s=10)
            info["replicas"] = _running_replicas()
            self._info = info
        except Exception as e:  # noqa: BLE001 - /health reports what it last knew
            log.debug("replica info: %s", e)
        finally:
            self._info_at = time.monotonic()
            self._refreshing.release()


def _running_replicas() -> int | None:
    """Running Transcriber replicas of this replica's own application."""
    try:
        app = serve.status().applications[serve.get_replica_context().app_name]
        return int(app.deployments["Transcriber"].replica_states.get("RUNNING", 0))
    except Exception:  # noqa: BLE001 - /health says None rather than fail
        return None


@serve.deployment(name="Api", max_ongoing_requests=128, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Api:
    """FastAPI with serving.api's routes; the model calls go to the Transcriber replicas."""

    def __init__(self, transcriber, settings: Settings, spec: str, demo: bool):
        logging.basicConfig(level=settings.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.settings = settings
        self.pool = ReplicaPool(transcriber, spec, settings.device, settings.dtype, demo)

    def __serve_build_asgi_app__(self):
        from fastapi import FastAPI

        from . import api, realtime
        from .live import LiveSessions

        app = FastAPI(title="Fun-ASR-MLT-Nano (Ray Serve)", docs_url="/v1/docs",
                      openapi_url="/v1/openapi.json", redoc_url=None)
        live = LiveSessions(self.settings.live_sessions)   # per ingress replica
        api.install(app, self.settings, self.pool, live=live)
        app.include_router(realtime.create_router(self.settings, self.pool, live))
        return app


# --------------------------------------------------------------------------- building the app

RAY_FLAGS = (
    # (flag, default, type, help); the model and HTTP flags are app.py's (serving.settings)
    ("--replicas", 1, int, "model replicas (the minimum when --max-replicas is larger)"),
    ("--max-replicas", None, int, "autoscale between --replicas and this many replicas"),
    ("--num-cpus", 1.0, float, "CPUs each model replica reserves (its torch threads)"),
    ("--num-gpus", 0.0, float, "GPUs each model replica reserves (fractions share one)"),
    ("--name", APP_NAME, str, "Serve application name"),
    ("--route-prefix", "/", str, "URL prefix of the API"),
)


def build_ray_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag, default, typ, text in RAY_FLAGS:
        p.add_argument(flag, type=typ, default=default, help=f"{text} (default: {default})")
    return p


def build_application(settings: Settings, replicas: int = 1, max_replicas: int | None = None,
                      num_cpus: float = 1.0, num_gpus: float = 0.0):
    """The bound Serve application: Api -> Transcriber(replicas)."""
    from .model_choice import choose_model

    spec, note = choose_model(settings.model)
    if note:
        log.warning("%s", note)
    demo = note is not None or is_demo_dir(spec)
    scaling = ({"autoscaling_config": {"min_replicas": replicas, "max_replicas": max_replicas,
                                       "target_ongoing_requests": max(1, settings.batch_size)}}
               if max_replicas and max_replicas > replicas else {"num_replicas": replicas})
    transcriber = Transcriber.options(
        **scaling, max_ongoing_requests=4 * max(1, settings.batch_size),
        ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus},
    ).bind(spec, settings.device, settings.dtype, demo, settings.batch_size)
    return Api.bind(transcriber, settings, spec, demo)


def build_app(args: dict):
    """``serve deploy`` / ``serve run`` entry point (``import_path: serving.ray_serve:build_app``).
    ``args`` take the command line's flag names (``model``, ``replicas``, ``api_key``, ...);
    unset ones come from the FUNASR_NANO_* environment as for app.py."""
    argv = []
    for key, value in (args or {}).items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value not in (None, False):
            argv += [flag, str(value)]
    ray_args, rest = build_ray_parser().parse_known_args(argv)
    settings = parse_settings(rest)
    return build_application(settings, ray_args.replicas, ray_args.max_replicas,
                             ray_args.num_cpus, ray_args.num_gpus)


def parse_args(argv=None) -> tuple[argparse.Namespace, Settings]:
    ray_parser = build_ray_parser()
    full = argparse.ArgumentParser(
        prog="python -m serving.ray_serve", parents=[build_parser(), ray_parser],
        conflict_handler="resolve", allow_abbrev=False,
        description="The HTTP API (/health, /v1/models, /v1/audio/transcriptions, /v1/realtime) "
        "on Ray Serve: "
        "joins the cluster at RAY_ADDRESS if set, else starts a local one. Model and HTTP flags "
        "are app.py's, with its environment variables.")
    full.parse_args(argv)                       # --help, and errors name every flag
    ray_args, rest = ray_parser.parse_known_args(argv)
    return ray_args, parse_settings(rest)


def main(argv=None) -> int:
    ray_args, settings = parse_args(argv)
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import ray

    # Workers import this repository's modules (serving, engine, model) from here.
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env={"env_vars": env})
    else:
        ray.init(include_dashboard=False, runtime_env={"env_vars": env})
    log.info("ray cluster: %s (%s CPUs, %s GPUs)", address or "local",
             ray.cluster_resources().get("CPU"), ray.cluster_resources().get("GPU", 0))
    serve.start(http_options={"host": settings.host, "port": settings.port})
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.run(build_application(settings, ray_args.replicas, ray_args.max_replicas,
                                    ray_args.num_cpus, ray_args.num_gpus),
                  name=ray_args.name, route_prefix=ray_args.route_prefix)
    except Exception as e:  # noqa: BLE001 - a clear line, not a traceback
        log.error("the application did not start: %s", e)
        _shutdown(ray_args.name, local=not address)
        return 1
    host = "localhost" if settings.host in ("0.0.0.0", "::") else settings.host
    prefix = ray_args.route_prefix.rstrip("/")
    log.info("ready: http://%s:%d%s (/health, /v1/models, /v1/audio/transcriptions, "
             "/v1/realtime), %d model "
             "replica(s)", host, settings.port, prefix, ray_args.replicas)
    stop.wait()
    _shutdown(ray_args.name, local=not address)
    return 0


def _shutdown(name: str, local: bool) -> None:
    """Our application leaves the cluster with us; a local cluster goes away entirely."""
    import ray
    try:
        if local:
            serve.shutdown()
        else:
            serve.delete(name)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
