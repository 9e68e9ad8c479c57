"""What compile() returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CompileResult:
    path: Path
    size_bytes: int
    metrics_before: dict
    metrics_after: dict
    parity: dict
    plan: list
    target: str
    param_bytes: dict = field(default_factory=dict)
    latency_estimate: dict = field(default_factory=dict)
    budgets: dict = field(default_factory=dict)
    search: object = None
    report: dict = field(default_factory=dict)
    model_bytes: int = 0           # the bundle without app artifacts (.pte/.tflite): what memory budgets bound
    warnings: list = field(default_factory=list)     # e.g. an artifact format skipped (toolchain missing)
    vs_source: dict = field(default_factory=dict)    # per backend: the bundle vs the source model (not the program)
    data_roles: dict = field(default_factory=dict)   # which rows each figure came from (train / validation / test)
    formats: dict = field(default_factory=dict)      # per shipped format: bytes vs budget, latency, test metrics

    def summary(self) -> dict:
        return {"bundle": str(self.path), "size_bytes": self.size_bytes, "model_bytes": self.model_bytes,
                "target": self.target,
                "metrics_before": self.metrics_before, "metrics_after": self.metrics_after,
                "parity": self.parity, "vs_source": self.vs_source, "data_roles": self.data_roles,
                "formats": self.formats,
                "plan": [c.to_dict() for c in self.plan],
                "latency_estimate": self.latency_estimate, "budgets": self.budgets,
                "report": {k: str(v) for k, v in self.report.items()}}
