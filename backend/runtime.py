"""Everything the root holds: model head, tokenizer, cluster, chain and stats, set up in the background."""
from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from pathlib import Path

import requests
from transformers import AutoTokenizer, GenerationConfig

from common.config import RootSettings
from common.latency import LinkModel, links_for
from common.model_info import synthetic_marker
from common.placement import Device, ModelShape, Placement, PlacementError, plan

from .chain import Chain
from .cluster import Cluster
from .discovery import docker_workers, fixed_workers
from .head import HeadModel
from .model_source import resolve_model
from .stats import DockerSampler, LocalSampler, StatsHistory

log = logging.getLogger("root")


def docker_client_or_none():
    """The Docker SDK client when a daemon answers on the (read-only mounted) socket, else None."""
    try:
        import docker
        client = docker.from_env(timeout=5)
        client.ping()
        return client
    except Exception:  # no SDK, no socket, no daemon: local mode
        return None


class Runtime:
    def __init__(self, settings: RootSettings):
        self.settings = settings
        self.status, self.reason = "starting", "starting"
        self.model_path: Path | None = None
        self.head: HeadModel | None = None
        self.tokenizer = None
        self.eos_ids: list[int] = []
        self.cluster: Cluster | None = None
        self.chain: Chain | None = None
        self.links: list[LinkModel] = []
        self.workers: list[tuple[str, str]] = []      # (name, url) in discovery order, idle ones included
        self.devices: list[Device] = []               # what each worker reported before placement
        self.model_shape: ModelShape | None = None
        self.placement: Placement | None = None
        self.history = StatsHistory()
        self.stats_source = "none"
        self.requests_started = itertools.count()
        self.slots = threading.BoundedSemaphore(settings.max_concurrent)
        self.active: dict[str, threading.Event] = {}  # request id -> cancel flag
        self.docker = None

    # -- start-up, in a background thread so /healthz answers (503) meanwhile
    def start(self) -> None:
        threading.Thread(target=self._start, name="root-start", daemon=True).start()

    def _start(self) -> None:
        try:
            self.docker = docker_client_or_none() if self.settings.stats_source != "local" else None
            self.reason = "preparing the model (a synthetic one is made on first start)"
            self.model_path = resolve_model(self.settings)
            self.reason = "loading the tokenizer, embedding, final norm and LM head"
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_path))
            self.eos_ids = _eos_ids(self.model_path, self.tokenizer)
            # int8 quantizes the workers' projections; the root's embedding and LM head stay float32.
            self.head = HeadModel(self.model_path, "float32" if self.settings.dtype == "int8" else self.settings.dtype,
                                  gemv=self.settings.decode_gemv)
            self.model_shape = ModelShape.from_config(json.loads((self.model_path / "config.json").read_text()))
            self.reason = "finding the workers"
            workers = self.workers = self._find_workers()
            self.devices = self._gather_devices(workers)
            self.placement = self.plan()
            problems = self.placement.shortfalls()
            if problems and self.settings.memory_check:
                raise PlacementError("; ".join(problems) + " (see GET /api/placement; MEMORY_CHECK=off starts anyway)")
            for problem in problems:
                log.warning("starting anyway (MEMORY_CHECK=off): %s", problem)
            self.cluster = Cluster(workers, self.head.config.num_hidden_layers, str(self.model_path),
                                   self.settings.dtype, None, placement=self.placement)
            self.chain = Chain(self.cluster.specs, self.settings.max_frame_bytes, self.settings.hop_timeout_s)
            self.links = links_for(len(self.cluster.specs), self.settings.link, self.settings.link_overrides)
            self._start_stats()
            self.cluster.start_monitor()
            self.status, self.reason = "running", "waiting for the workers to load their slices"
        except PlacementError as exc:  # the cluster cannot hold the model this way: say where and by how much
            log.error("placement refused: %s", exc)
            self.status, self.reason = "failed", f"placement refused ({self.settings.placement}, {self.settings.dtype}): {exc}"
        except Exception as exc:  # shown by /healthz and /api/cluster: the root cannot serve
            log.exception("start-up failed")
            self.status, self.reason = "failed", f"start-up failed: {type(exc).__name__}: {exc}"

    def _gather_devices(self, workers: list[tuple[str, str]], interval_s: float = 0.5) -> list[Device]:
        """Each worker's threads and memory from its /healthz; waits (as long as it takes) for all."""
        session, reports = requests.Session(), {}
        while True:
            for name, url in workers:
                if name in reports:
                    continue
                try:
                    health = session.get(url + "/healthz", timeout=2).json()
                except (requests.RequestException, ValueError):
                    continue
                if isinstance(health, dict) and isinstance(health.get("device"), dict):
                    reports[name] = Device.from_report(name, url, health)
            missing = [name for name, _ in workers if name not in reports]
            if not missing:
                return [reports[name] for name, _ in workers]
            self.reason = f"waiting for {', '.join(missing)} to report its threads and memory"
            time.sleep(interval_s)

    def plan(self, mode: str | None = None, dtype: str | None = None, split: list[int] | None = None,
             order: list[str] | None = None, max_context: int | None = None,
             max_concurrent: int | None = None) -> Placement:
        """A placement of the model on the workers as they last reported (settings by default).

        Pure apart from reading those reports: GET /api/placement previews any mode with it."""
        s = self.settings
        mode = mode or s.placement
        if split is None and mode == "manual" and s.layer_split:
            split = list(s.layer_split)
        return plan(mode, self.model_shape, self.current_devices(), dtype or s.dtype,
                    max_context or self.context_limit(), max_concurrent or s.max_concurrent,
                    manual=split, priority=list(order) if order is not None else list(s.placement_order))

    def current_devices(self) -> list[Device]:
        """The start-up reports, refreshed by the cluster monitor's latest ones."""
        if self.cluster is None:
            return self.devices
        urls = dict(self.workers)
        return [Device.from_report(d.name, urls[d.name], {"threads": d.threads, "device": self.cluster.devices[d.name]})
                if self.cluster.devices.get(d.name) else d for d in self.devices]

    def _find_workers(self) -> list[tuple[str, str]]:
        if self.settings.worker_urls:
            return fixed_workers(self.settings.worker_urls)
        if self.docker is None:
            raise RuntimeError("no WORKER_URLS and no Docker socket to discover the workers")
        workers = docker_workers(self.docker, self.settings.worker_port)
        if not workers:
            raise RuntimeError("no worker containers found in this compose project")
        return workers

    def _start_stats(self) -> None:
        source = self.settings.stats_source
        if self.docker is not None and source in ("auto", "docker"):
            import socket
            me = self.docker.containers.get(socket.gethostname())
            project = me.labels.get("com.docker.compose.project")
            if project:
                DockerSampler(self.docker, project, self.history).start()
                self.stats_source = "docker"
                return
        LocalSampler(self._local_processes, self.history, self.settings.stats_interval_s).start()
        self.stats_source = "local"

    def _local_processes(self) -> dict[str, tuple[int, str]]:
        procs = {"root": (os.getpid(), "root")}
        for name, s in (self.cluster.status.items() if self.cluster else []):
            if s.get("pid"):
                procs[name] = (s["pid"], "worker")
        return procs

    # -- what the API reports
    def ready(self) -> bool:
        return self.status == "running" and self.cluster is not None and self.cluster.ready()

    def not_ready_reason(self) -> str:
        if self.status != "running" or self.cluster is None:
            return self.reason
        return self.cluster.reason()

    def describe(self) -> dict:
        cfg = self.head.config if self.head else None
        marker = synthetic_marker(self.model_path) if self.model_path else None
        return {
            "model": {"path": str(self.model_path) if self.model_path else None,
                      "name": self.model_path.name if self.model_path else None,
                      "synthetic": marker is not None, "synthetic_info": marker,
                      "dtype": self.settings.dtype,
                      "n_layers": cfg.num_hidden_layers if cfg else None,
                      "hidden_size": cfg.hidden_size if cfg else None,
                      "vocab_size": cfg.vocab_size if cfg else None},
            "latency": {**self.settings.link.describe(), "seed": self.settings.latency_seed,
                        "overrides": {str(k): v for k, v in self.settings.link_overrides.items()}},
            "threads_root": self.settings.threads,
            "root_tensors": self.head.loaded_tensor_names if self.head else [],
            "workers": self.cluster.describe() if self.cluster else [],
            "chain": [w.name for w in self.cluster.specs] if self.cluster else [],
            "placement": self.placement.describe() if self.placement else None,
            "ready": self.ready(), "reason": "ready" if self.ready() else self.not_ready_reason(),
            "stats_source": self.stats_source,
            "max_concurrent": self.settings.max_concurrent,
        }

    def context_limit(self) -> int:
        if self.head is None:
            return self.settings.max_context
        model_ctx = getattr(self.head.config, "max_position_embeddings", None) or self.settings.max_context
        return min(model_ctx, self.settings.max_context)


def _eos_ids(model_path: Path, tokenizer) -> list[int]:
    """End-of-sequence ids as HF generate sees them: generation_config.json first, else the tokenizer's."""
    try:
        ids = GenerationConfig.from_pretrained(str(model_path)).eos_token_id
    except OSError:
        ids = None
    if ids is None:
        ids = tokenizer.eos_token_id
    return ids if isinstance(ids, list) else ([] if ids is None else [ids])
