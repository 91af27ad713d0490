"""Everything the root holds once it has started: model head, tokenizer, cluster, chain and stats.

`build_runtime(settings)` returns a whole Runtime or raises with the reason; `Startup` runs it in
the background and holds Loading, Ready (the Runtime) or Failed (the reason) for the API.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from transformers import AutoTokenizer, GenerationConfig

from common.config import RootSettings
from common.dtypes import WEIGHT_BYTES, compute_dtype_name
from common.latency import LinkModel, RequestDelays, links_for
from common.model_info import synthetic_marker
from common.placement import Device, ModelShape, Placement, PlacementError
from common.profiles import ProfileError, devices_for
from common.q80 import check_hidden as check_q80_hidden
from common.transport import TcpTransport, data_port, reachable_host, split_address

from .chain import Chain
from .cluster import Cluster
from .control import ControlClient, ControlError
from .discovery import WorkersMissing, docker_workers, fixed_workers, in_swarm, swarm_workers
from .generation import Engine
from .head import HeadModel, ModelledHead
from .metrics import Q80Delays, ReplyMetrics
from .modelled import ModelledRefused, modelled_head, played_memory, profiles_of
from .model_source import resolve_model
from .planner import PlacementView, Planner
from .prom import PromMetrics
from .stats import DockerSampler, LocalSampler, ReportedSampler, StatsHistory
from .tensor_chain import TensorChain
from .tensor_metrics import tensor_reply_metrics
from .tensor_plan import TensorRefused, shares_for, tensor_placement

log = logging.getLogger("root")


class StartupError(RuntimeError):
    """The root cannot serve; the message says why and what to change."""


class PlacementRefused(PlacementError):
    """The planned placement does not fit; carries it, so the API can show each worker's shortfall."""

    def __init__(self, message: str, placement: Placement):
        super().__init__(message)
        self.placement = placement


@dataclass
class Runtime:
    settings: RootSettings
    model_path: Path
    tokenizer: object
    eos_ids: list[int]
    head: HeadModel | ModelledHead  # ModelledHead: COMPUTE=modelled, no weights
    planner: Planner
    placement: Placement
    cluster: Cluster
    chain: object                 # backend.chain.Chain, backend.tensor_chain.TensorChain, or a test's fake
    links: list[LinkModel]
    history: StatsHistory
    stats_source: str
    slots: threading.BoundedSemaphore = None  # requests in flight (MAX_CONCURRENT)
    active: dict = field(default_factory=dict)  # request id -> cancel flag
    requests_started: itertools.count = field(default_factory=itertools.count)
    prom: PromMetrics = None

    def __post_init__(self):
        self.slots = self.slots or threading.BoundedSemaphore(self.settings.max_concurrent)
        self.prom = self.prom or PromMetrics(self.active, self.settings.compute)
        self.engine = Engine(self.head, self.chain)

    def ready(self) -> bool:
        return self.cluster.ready()

    def reply_metrics(self, t0: float, prompt_tokens: int) -> ReplyMetrics:
        """A new reply's accumulator, its delays drawn from the next request's seeded generator."""
        number, specs = next(self.requests_started), self.cluster.specs
        names = [w.name for w in specs]
        itemsize = WEIGHT_BYTES[compute_dtype_name(self.settings.dtype)]  # hidden states travel in it
        if self.settings.parallelism == "tensor":
            cfg = self.head.config
            return tensor_reply_metrics(t0, prompt_tokens, self.links, self.settings.latency_seed, number, names,
                                        cfg.num_hidden_layers, cfg.hidden_size, itemsize, self.settings.compute,
                                        self.settings.sync_dtype, self.settings.sync_topology)
        if self.settings.sync_dtype == "q80":  # the links' bandwidth terms on the bytes q80 frames carry
            delays = Q80Delays(self.links, self.settings.latency_seed, number, itemsize)
        else:
            delays = RequestDelays(self.links, self.settings.latency_seed, number)
        return ReplyMetrics(t0, prompt_tokens, delays, names, [[w.shard.start, w.shard.end] for w in specs],
                            compute=self.settings.compute)

    def context_limit(self) -> int:
        return self.planner.context_limit

    def placement_view(self) -> PlacementView:
        return PlacementView(self.planner, self.model_path, self.placement)

    def describe(self) -> dict:
        cfg = self.head.config
        marker = synthetic_marker(self.model_path)
        return {
            "model": {"path": str(self.model_path), "name": self.model_path.name,
                      "synthetic": marker is not None, "synthetic_info": marker, "dtype": self.settings.dtype,
                      "n_layers": cfg.num_hidden_layers, "hidden_size": cfg.hidden_size, "vocab_size": cfg.vocab_size},
            "latency": latency_description(self.settings),
            "parallelism": self.settings.parallelism,
            "sync_dtype": self.settings.sync_dtype,  # how hidden states travel: float32 | q80 (SYNC_DTYPE)
            # tensor mode's syncs: star (through the root) | mesh (worker to worker), SYNC_TOPOLOGY
            "sync_topology": self.settings.sync_topology if self.settings.parallelism == "tensor" else None,
            # modelled: the workers and the LM head take their devices' modelled time; no token is real
            "compute": self.settings.compute, "tokens_are_real": self.settings.compute == "real",
            "root_device": self.settings.root_device if self.settings.compute == "modelled" else None,
            "threads_root": self.settings.threads,
            "root_tensors": self.head.loaded_tensor_names,
            "workers": self.cluster.describe(),
            "chain": [w.name for w in self.cluster.specs],
            "placement": self.placement.describe(),
            "ready": self.ready(), "reason": "ready" if self.ready() else self.cluster.reason(),
            "stats_source": self.stats_source,
            "max_concurrent": self.settings.max_concurrent,
        }


def latency_description(settings: RootSettings) -> dict:
    return {**settings.link.describe(), "seed": settings.latency_seed,
            "overrides": {str(k): v for k, v in settings.link_overrides.items()}}


def docker_client_or_none():
    """The Docker SDK client when a daemon answers on the (read-only mounted) socket, else None."""
    try:
        import docker
        client = docker.from_env(timeout=5)
        client.ping()
        return client
    except Exception:  # no SDK, no socket, no daemon: local mode
        return None


def build_runtime(settings: RootSettings, progress: Callable[[str], None] = lambda reason: None,
                  docker=None) -> Runtime:
    """Every part of the root, in order; raises StartupError or PlacementError with the reason."""
    if settings.secret.file and settings.secret.current() is None:
        settings.secret.ensure()  # compose: the root makes the secret its workers read
    progress("preparing the model (a synthetic one is made on first start)")
    model_path = resolve_model(settings)
    modelled = settings.compute == "modelled"
    progress("loading the tokenizer" + ("" if modelled else ", embedding, final norm and LM head"))
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    eos = eos_ids(model_path, tokenizer)
    if modelled:  # no weights at all: the LM head takes ROOT_DEVICE's modelled time
        try:
            head = modelled_head(settings, model_path, tokenizer, eos)
        except ModelledRefused as exc:
            raise StartupError(str(exc)) from None
    else:
        # int8 / int4: the LM head quantized as the workers' projections; the embedding stays in the compute dtype.
        head = HeadModel(model_path, settings.dtype, gemv=settings.decode_gemv)
    config = json.loads((model_path / "config.json").read_text())
    if settings.sync_dtype == "q80":
        try:
            check_q80_hidden(config["hidden_size"])  # refused before any worker loads
        except ValueError as exc:
            raise StartupError(str(exc)) from None
    shape = ModelShape.from_config(config)
    model_ctx = getattr(head.config, "max_position_embeddings", None) or settings.max_context
    control = ControlClient(settings.secret)
    progress("finding the workers")
    while True:
        try:
            workers = find_workers(settings, docker)
            break
        except WorkersMissing as exc:  # swarm tasks still starting: wait, as for their reports below
            progress(f"finding the workers: {exc}")
            time.sleep(1)
    tensor = settings.parallelism == "tensor"
    if tensor:
        try:  # refused before waiting on anyone: no device report changes the count
            shares = shares_for(config, len(workers), settings.dtype, modelled=modelled)
        except TensorRefused as exc:
            raise StartupError(f"{exc} (this cluster has {len(workers)})") from None
    try:
        worker_devices = devices_for(settings.devices, len(workers))
    except ProfileError as exc:
        raise StartupError(f"{exc} (this cluster has {len(workers)} workers)") from None
    try:
        profiles = profiles_of(worker_devices) if modelled else None
    except ModelledRefused as exc:
        raise StartupError(str(exc)) from None
    devices = gather_devices(workers, control, progress)
    if modelled:  # the memory each worker has is its device's, not its share of this host
        devices = played_memory(devices, profiles)
    planner = Planner(settings, shape, lambda: devices, min(model_ctx, settings.max_context))
    if tensor:
        placement = tensor_placement(config, shares, devices, settings.dtype, planner.context_limit,
                                     settings.max_concurrent)
    else:
        placement = planner.plan()
    problems = placement.shortfalls()
    if problems and settings.memory_check:
        raise PlacementRefused("; ".join(problems) + " (see GET /api/placement; MEMORY_CHECK=off starts anyway)",
                               placement)
    for problem in problems:
        log.warning("starting anyway (MEMORY_CHECK=off): %s", problem)
    transport = TcpTransport(settings.host, settings.max_frame_bytes, settings.secret)
    return_address = f"{return_host(settings, workers)}:{data_port(settings.port)}"
    swarm = docker is not None and not settings.worker_urls and in_swarm(docker)
    # On a swarm a rescheduled task comes back at a new address: the monitor follows it.
    cluster = Cluster(workers, placement, str(model_path), settings.dtype, return_address, control,
                      rediscover=(lambda: swarm_workers(docker, settings.worker_port)) if swarm else None,
                      shares=shares if tensor else None, devices=worker_devices, compute=settings.compute,
                      sync_dtype=settings.sync_dtype, sync_topology=settings.sync_topology)
    n = len(cluster.specs)
    if tensor:
        chain = TensorChain(cluster.specs, transport, control, config["num_hidden_layers"], config["hidden_size"],
                            settings.max_frame_bytes, settings.hop_timeout_s, settings.sync_dtype,
                            settings.sync_topology)
        links = links_for(n, settings.link, settings.link_overrides)[:n]  # link i: root <-> worker i+1, both ways
    else:
        chain = Chain(cluster.specs, transport, control, return_address, settings.max_frame_bytes,
                      settings.hop_timeout_s, settings.sync_dtype)
        links = links_for(n, settings.link, settings.link_overrides)
    cluster.listeners.append(chain.follow)
    transport.serve(data_port(settings.port), chain.arrive)
    history = StatsHistory()
    runtime = Runtime(settings=settings, model_path=model_path, tokenizer=tokenizer,
                      eos_ids=eos, head=head, planner=planner, placement=placement,
                      cluster=cluster, chain=chain, links=links,
                      history=history, stats_source=start_stats(settings, docker, history, cluster, swarm))
    # The preview follows the monitor's latest reports from now on (modelled: with the devices' memory).
    planner.devices = ((lambda: played_memory(current_devices(devices, workers, cluster), profiles)) if modelled
                       else (lambda: current_devices(devices, workers, cluster)))
    cluster.start_monitor()
    return runtime


def return_host(settings: RootSettings, workers: list[tuple[str, str]]) -> str:
    if settings.return_host:
        return settings.return_host
    last_host = split_address(workers[-1][1].split("//", 1)[-1])[0]
    return reachable_host(last_host)


def find_workers(settings: RootSettings, docker) -> list[tuple[str, str]]:
    if settings.worker_urls:
        return fixed_workers(settings.worker_urls)
    if docker is None:
        raise StartupError("no WORKER_URLS and no Docker socket to discover the workers")
    if in_swarm(docker):
        return swarm_workers(docker, settings.worker_port)
    workers = docker_workers(docker, settings.worker_port)
    if not workers:
        raise StartupError("no worker containers found in this compose project")
    return workers


def gather_devices(workers: list[tuple[str, str]], control: ControlClient, progress: Callable[[str], None],
                   interval_s: float = 0.5) -> list[Device]:
    """Each worker's threads and memory from its /healthz; waits (as long as it takes) for all."""
    reports: dict[str, Device] = {}
    while True:
        for name, url in workers:
            if name in reports:
                continue
            try:
                health = control.health(url)
            except ControlError:
                continue
            if health.device:
                reports[name] = Device.from_report(name, url, {"threads": health.threads, "device": health.device})
        missing = [name for name, _ in workers if name not in reports]
        if not missing:
            return [reports[name] for name, _ in workers]
        progress(f"waiting for {', '.join(missing)} to report its threads and memory")
        time.sleep(interval_s)


def current_devices(devices: list[Device], workers: list[tuple[str, str]], cluster: Cluster) -> list[Device]:
    """The start-up reports, refreshed by the cluster monitor's latest ones."""
    urls = dict(workers)
    return [Device.from_report(d.name, urls[d.name], {"threads": d.threads, "device": cluster.devices[d.name]})
            if cluster.devices.get(d.name) else d for d in devices]


def start_stats(settings: RootSettings, docker, history: StatsHistory, cluster: Cluster, swarm: bool) -> str:
    if swarm and settings.stats_source in ("auto", "reported"):
        # The root can ask only its own engine: every worker reports its own cgroup, wherever it runs.
        ReportedSampler(cluster.fresh_stats, history, interval_s=settings.stats_interval_s).start()
        return "reported"
    if docker is not None and settings.stats_source in ("auto", "docker"):
        me = docker.containers.get(socket.gethostname())
        project = me.labels.get("com.docker.compose.project")
        if project:
            DockerSampler(docker, project, history).start()
            return "docker"

    def local_processes() -> dict[str, tuple[int, str]]:
        procs = {"root": (os.getpid(), "root")}
        for name, s in cluster.status.items():
            if s.get("pid"):
                procs[name] = (s["pid"], "worker")
        return procs

    LocalSampler(local_processes, history, settings.stats_interval_s).start()
    return "local"


def eos_ids(model_path: Path, tokenizer) -> list[int]:
    """End-of-sequence ids as HF generate sees them: generation_config.json first, else the tokenizer's."""
    try:
        ids = GenerationConfig.from_pretrained(str(model_path)).eos_token_id
    except OSError:
        ids = None
    if ids is None:
        ids = tokenizer.eos_token_id
    return ids if isinstance(ids, list) else ([] if ids is None else [ids])


class Startup:
    """The root's state for the API: loading (with a reason), ready (the Runtime), or failed."""

    def __init__(self, settings: RootSettings):
        self.settings = settings
        self.state, self.reason = "loading", "starting"
        self.runtime: Runtime | None = None
        self.refused: Placement | None = None  # a placement refused at start, shown by /api/cluster

    def start(self) -> "Startup":
        threading.Thread(target=self._run, name="root-start", daemon=True).start()
        return self

    def _progress(self, reason: str) -> None:
        self.reason = reason

    def _run(self) -> None:
        try:
            docker = docker_client_or_none() if self.settings.stats_source != "local" else None
            runtime = build_runtime(self.settings, self._progress, docker)
        except PlacementError as exc:  # the cluster cannot hold the model this way: say where and by how much
            log.error("placement refused: %s", exc)
            self.refused = getattr(exc, "placement", None)
            self.state = "failed"
            self.reason = f"placement refused ({self.settings.placement}, {self.settings.dtype}): {exc}"
            return
        except Exception as exc:  # shown by /healthz and /api/cluster: the root cannot serve
            log.exception("start-up failed")
            self.state, self.reason = "failed", f"start-up failed: {type(exc).__name__}: {exc}"
            return
        self.runtime, self.state, self.reason = runtime, "ready", "ready"

    @classmethod
    def ready_with(cls, runtime: Runtime) -> "Startup":
        """A start-up that is already over (tests build their Runtime themselves)."""
        s = cls(runtime.settings)
        s.runtime, s.state, s.reason = runtime, "ready", "ready"
        return s

    def health(self) -> tuple[str, str]:
        """(ok | loading | degraded | failed, reason): what /healthz answers."""
        if self.state != "ready":
            return self.state, self.reason
        rt = self.runtime
        if rt.ready():
            return "ok", "ready"
        if rt.cluster.was_ready:
            return "degraded", "the cluster is running but " + "; ".join(rt.cluster.not_ready())
        if errors := rt.cluster.load_errors():  # e.g. a device faster than this host: waiting will not help
            return "failed", "start-up failed: " + "; ".join(errors)
        return "loading", "waiting for the workers to load their slices: " + rt.cluster.reason()
