"""What a benchmark produces: the records bench.procedure fills in and bench.report renders."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench.calibrate import CalibrationStep
from bench.database import Integrity
from bench.serverside import Layers, ServerSide
from bench.statements import StatementCount
from bench.stats import Summary


@dataclass(frozen=True)
class Options:
    quick: bool
    duration_s: float  # each measured level
    search_duration_s: float  # each capacity-search step
    calibration_duration_s: float
    warm_up_s: float
    calibration_rates: tuple[float, ...]
    multiples: tuple[float, ...]  # levels, x the plain deployment's capacity
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
    one_core: bool = False  # each deployment on one core, the generator on another
    # The generator runs on CPU the servers leave (SCHED_IDLE): clients would
    # not take the servers' CPU.
    generator_idle: bool = False
    baseline: str = ""  # a git revision whose stack runs beside the current code (issue 21)
    baseline_port_base: int = 0
    statement_requests: int = 100  # per kind, in the statements phase (--baseline)
    lone_client_s: float = 5.0  # the lone-client check's closed loop
    fairness: bool = True  # the heavy-and-light clients scenario
    publish: Path | None = None  # copy the plots and the summary there after the run
    command: tuple[str, ...] = ()  # how the benchmark was started, for the record


@dataclass(frozen=True)
class Group:
    """Some of a run's clients on their own: the fairness scenario's heavy and light ones."""

    clients: int
    summary: Summary  # their outcomes, client side
    server: Layers | None  # what nginx logged from their addresses


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
    groups: dict[str, Group] = field(default_factory=dict)  # by group of clients, if any


@dataclass
class DeploymentResult:
    name: str
    description: str
    search: list[Run] = field(default_factory=list)
    capacity: float = 0.0
    levels: list[Run] = field(default_factory=list)
    error: str = ""
    settings: dict[str, str] = field(default_factory=dict)  # the limits in force
    lone_client: Run | None = None  # one client, workers x L in flight, on the idle stack
    fairness: Run | None = None  # one heavy client beside light ones
    statements: dict[str, StatementCount] = field(default_factory=dict)  # by request kind
    cpus: str = ""  # where its processes' threads could run, read at the end (bench.affinity)

    @property
    def peak_goodput(self) -> float:
        """The most this deployment served in any run of the benchmark (search steps, levels)."""
        return max((r.summary.goodput_rps for r in [*self.search, *self.levels]), default=0.0)


@dataclass
class BenchResult:
    options: Options
    started: datetime
    machine: dict[str, str]
    calibration: list[CalibrationStep]
    ceiling: float
    deployments: list[DeploymentResult]
    elapsed_s: float = 0.0
    mode: str = "shared cores"  # where the processes ran (bench.affinity)
    provenance: dict[str, str] = field(default_factory=dict)  # command, commit, dirty, date
    error: str = ""  # why the procedure stopped early, if it did
    generator_cpus: str = ""  # where the generator's threads could run (bench.affinity)
