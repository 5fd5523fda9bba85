"""Per-agent Prometheus metrics.

Each host owns a private registry (one agent per process, but tests may run
several cores in one process); ``System.metrics()`` gathers the hosts'
exposition text so a scrape endpoint or an operator can read them all.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["AgentMetrics"]


class AgentMetrics:
    def __init__(self, agent_id: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["agent"]
        self.messages = Counter(
            "garrison_messages", "Messages by outcome (handled, rejected reasons, duplicate).",
            labels + ["outcome"], registry=self.registry,
        )
        self.handle_seconds = Histogram(
            "garrison_handle_seconds", "Time from taking a message to its state commit.",
            labels, registry=self.registry,
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
        )
        self.checkpoints = Counter("garrison_checkpoints", "Checkpoints written.", labels, registry=self.registry)
        self.checkpoint_seconds = Gauge(
            "garrison_checkpoint_last_seconds", "Duration of the last checkpoint.", labels, registry=self.registry
        )
        self.seq = Gauge("garrison_journal_seq", "Last committed journal sequence number.", labels, registry=self.registry)
        self.shipped = Gauge("garrison_journal_shipped_seq", "Last shipped journal sequence number.", labels, registry=self.registry)
        self.restores = Counter("garrison_restores", "Host starts by restore source.", labels + ["source"], registry=self.registry)
        self.background_errors = Counter(
            "garrison_background_errors", "Failures of shipping or checkpointing.", labels, registry=self.registry
        )
        self.degraded = Gauge(
            "garrison_degraded", "1 while the checkpoint store refuses shipping or checkpoints (see status).",
            labels, registry=self.registry,
        )
        self.degraded.labels(agent_id).set(0)
        self.agent_id = agent_id

    def outcome(self, outcome: str) -> None:
        self.messages.labels(self.agent_id, outcome).inc()

    def text(self) -> str:
        return generate_latest(self.registry).decode()
