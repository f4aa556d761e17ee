"""What a benchmark produces: the records bench.procedure fills in and bench.report renders."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench.calibrate import CalibrationStep
from bench.database import Integrity
from bench.serverside import ServerSide
from bench.stats import Summary


@dataclass(frozen=True)
class Options:
    quick: bool
    duration_s: float  # each measured level
    search_duration_s: float  # each capacity-search step
    calibration_duration_s: float
    warm_up_s: float
    calibration_rates: tuple[float, ...]
    multiples: tuple[float, ...]
    rates: tuple[float, ...]  # fixed levels instead of the search and multiples
    target_p99_ms: float
    timeout_s: float
    max_in_flight: int
    search_start: float
    search_steps: int
    search_resolution: float
    workers: int
    port_base: int
    plain_port: int
    calibration_port: int
    drain_timeout_s: float
    seed: int
    out: Path
    calibrate: bool
    clients: int  # accounts, one bearer token each; every request is sent by one of them
    state: Path  # the Sluice stack's state directory
    sluice_overrides: dict[str, str] = field(default_factory=dict)


@dataclass
class Run:
    deployment: str
    label: str
    rate: float
    summary: Summary
    integrity: Integrity
    rss_peak_mb: dict[str, float]
    generator_cpu: float  # cores
    cpu_ms_per_request: dict[str, float]  # by process group, and "generator"
    drain_s: float | None  # time until the server answered promptly again; None: it did not
    passed: bool
    restarted: bool = False  # it did not recover within the drain limit, so it was restarted
    server: ServerSide | None = None  # what nginx and the app recorded (None: nothing)


@dataclass
class DeploymentResult:
    name: str
    description: str
    search: list[Run] = field(default_factory=list)
    capacity: float = 0.0
    levels: list[Run] = field(default_factory=list)
    error: str = ""
    settings: dict[str, str] = field(default_factory=dict)  # the limits in force


@dataclass
class BenchResult:
    options: Options
    started: datetime
    machine: dict[str, str]
    calibration: list[CalibrationStep]
    ceiling: float
    deployments: list[DeploymentResult]
    elapsed_s: float = 0.0
