"""Where the networks of a run train: in this process, one after the other (`executor = "local"`), or each in its own
Ray task (`executor = "ray"`), on this machine or on a running Ray cluster.

Both take one path. The driver (the process that runs the run) fits the linear start once (`shared_linear_start`),
and every fresh network copies it; each network trains through `members.train_member` with its own seed and its own
checkpoints. A Ray task gets the run's arrays from Ray's object store, sends its log lines back through a queue, and
returns its network's weights, which the driver builds back into a Keras model (Keras models do not pickle reliably).
With the same seeds, an ensemble trained on Ray is the one trained in process. Ray is imported only here, and only for
`executor = "ray"`: a local run starts as fast as it always did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecast.config import Config
from forecast.criterion import MIN_BLOCKS
from forecast.errors import ForecastError
from forecast.linear_start import MAX_ORIGINS, fit_linear_start, linear_terms
from forecast.members import (LinearStart, MemberRun, MemberStart, TrainedMember, member_checkpoints, member_start,
                              train_member, train_members)

Log = Callable[[str], None]

MAX_RETRIES = 3  # a network whose worker dies (killed, out of memory, node lost) is trained again this often
POLL_SECONDS = 0.5  # how often the driver forwards the tasks' log lines while it waits


def train_networks(run: MemberRun, config: Config, starts: list) -> list[TrainedMember]:
    """The `config.members` networks of the run, network k from `starts[k]` (its network in the version a warm run
    continues, a Keras model; None: fresh, from the run's linear start), trained where `config.executor` says; Ray
    must be running (`runtime`). Returns them in order, as Keras models at the global batch size."""
    starts = [None if start is None else member_start(start) for start in starts]
    linear = shared_linear_start(run, config) if needs_linear_start(config, run.root, run.resuming, starts) else None
    if config.executor == "local":
        return train_members(run, config, starts, linear)
    return _train_on_ray(run, config, starts, linear)


def needs_linear_start(config: Config, root: Path, resuming: bool, starts: list) -> bool:
    """Whether some network of the run starts fresh and so needs the run's ridge fit: not one a warm run continues
    (`starts`), nor, in a resumed run, one with a checkpoint (the first network always has one)."""
    from forecast import checkpoint

    return config.linear_start and any(
        start is None and not (resuming and (index == 0 or (member_checkpoints(root, index) / checkpoint.STATE).is_file()))
        for index, start in enumerate(starts)
    )


def shared_linear_start(run: MemberRun, config: Config) -> LinearStart | None:
    """The run's linear start: the linear terms fitted by ridge regression (`linear_start.fit_linear_start`) on a
    network built for the purpose, once, for every fresh network to copy; None where gaps leave nothing to fit.
    The fit is deterministic, so the networks of an ensemble share it and a resumed run refits the same one."""
    from forecast.model import build_model

    model = build_model(config, run.layout, config.batch_size // run.replicas)
    batcher, origins = run.batcher, run.train_plan.origins()
    fit = fit_linear_start(model, batcher, origins, run.val_plan.origins(), len(run.layout.calendar))
    if fit is None:
        run.log("linear start skipped: gaps leave no fully observed window; all terms train from zero")
        return None
    scored = len(batcher.scored_origins(origins))
    run.log(
        f"linear start: ridge on {fit.windows} of the {scored} training origins (those whose whole horizon is observed"
        f"{f', at most {MAX_ORIGINS}' if scored > MAX_ORIGINS else ''}), history as {fit.history}, "
        f"covariates {'in' if fit.covariates else 'out'}, calendar {'in' if fit.calendar else 'out'}, "
        + (f"attributes {'in' if fit.attributes else 'out'}, " if "attribute_interaction" in linear_terms(model)
           else "")
        + f"penalty {fit.penalty:g}, validation MSE {fit.val_mse:.4f}"
        + (f" (t = {fit.t:.1f} over {fit.blocks} blocks against lags alone)" if fit.t else "")
        + (f"; only {fit.blocks} validation blocks of {batcher.horizon} origins, fewer than {MIN_BLOCKS}: the simplest "
           "inputs kept" if fit.blocks < MIN_BLOCKS else "")
    )
    return LinearStart(asdict(fit), {name: model.get_layer(name).get_weights() for name in linear_terms(model)})


def distribution_strategy(config: Config):
    """The tf.distribute strategy and its replica count; each replica gets B / replicas rows and keeps its own state."""
    import tensorflow as tf

    if config.distribute == "none":
        return tf.distribute.get_strategy(), 1
    # All local GPUs; on a machine without, the logical CPU devices a user configured (how the tests check it).
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    strategy = tf.distribute.MirroredStrategy(devices=[device.name for device in devices])
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ForecastError(f"config: batch_size {config.batch_size} must be a multiple of the {replicas} replicas")
    return strategy, replicas


@contextlib.contextmanager
def runtime(config: Config, log: Log) -> Iterator[None]:
    """Ray, running for the run's networks while the block lasts, with `config.executor = "ray"` (`ray_runtime`);
    does nothing for the local executor."""
    if config.executor == "local":
        yield
        return
    _grow_gpu_memory()
    with ray_runtime(config) as where:
        log(f"training the {config.members} network{'s' if config.members > 1 else ''} as Ray tasks on {where}")
        yield


@contextlib.contextmanager
def ray_runtime(config: Config) -> Iterator[str]:
    """Ray, running while the block lasts: the runtime this process already has, a new one on this machine
    (`config.ray_address` empty; shut down at the end) or the cluster at `ray_address` ("auto" or HOST:PORT). Refuses,
    in one line and before any work, a cluster that cannot be reached or that has no node with the
    `config.cpus_per_task` CPUs and `config.gpus_per_task` GPUs a task asks for. Yields the cluster in words."""
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        _connect(ray, config.ray_address)
    try:
        yield _check_resources(ray, config.cpus_per_task, config.gpus_per_task)
    finally:
        if started:
            ray.shutdown()


def _import_ray():
    """Ray, with its start-up notes (usage statistics, the dashboard) kept off the terminal."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ForecastError('executor = "ray" and `forecast tune` need Ray, which `pip install .` brings; install it '
                            'with `pip install "ray[tune]>=2.41"`') from None
    return ray


def _connect(ray, address: str) -> None:
    """Starts Ray on this machine (`address` empty) or joins the cluster at `address`; one line where none answers."""
    import logging

    if address and address != "auto" and not address.startswith("ray://"):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except ValueError:
            raise ForecastError(f"--ray-address {address!r}: give HOST:PORT (the head node's GCS port, 6379 by "
                                "default), 'auto', or nothing to start Ray on this machine") from None
        except OSError as exc:
            raise ForecastError(f"--ray-address {address}: no Ray cluster answers there ({exc.strerror or exc}); start "
                                "one with `ray start --head`, or leave --ray-address empty to start Ray on this "
                                "machine") from None
    try:
        # log_to_driver off: the tasks send their lines through the run's log; the workers' own output stays in
        # Ray's session logs (/tmp/ray/session_latest/logs).
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ForecastError(f"--ray-address {address or '(empty)'}: cannot start or join Ray "
                            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def _check_resources(ray, cpus: int, gpus: float) -> str:
    """A description of the cluster, once it is known that some node can run a task (a network's or a search's trial)
    with `cpus` CPUs and `gpus` GPUs: a task asking for more than any node has would wait for ever."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    total_cpus = sum(node.get("CPU", 0) for node in nodes)
    total_gpus = sum(node.get("GPU", 0) for node in nodes)
    where = f"{len(nodes)} node{'s' if len(nodes) != 1 else ''} ({total_cpus:g} CPUs, {total_gpus:g} GPUs)"
    if gpus > 0 and total_gpus == 0:
        raise ForecastError(f"gpus_per_task = {gpus:g}, but the Ray cluster ({where}) has no GPU; set gpus_per_task = 0 "
                            "to train on the CPUs")
    if not any(node.get("CPU", 0) >= cpus and node.get("GPU", 0) >= gpus for node in nodes):
        raise ForecastError(f"no node of the Ray cluster ({where}) has the {cpus} CPUs and {gpus:g} GPUs a task asks "
                            "for; lower cpus_per_task or gpus_per_task")
    return f"{where}, {cpus} CPU{'s' if cpus > 1 else ''}" + (f" and {gpus:g} GPU" if gpus else "") + " each"


@dataclass(frozen=True)
class MemberOutcome:
    """What a Ray task returns for its network: the weights (`get_weights` order, at the global batch size), the
    layers it kept frozen (the linear terms), its `checkpoint.ResumeState`, the weights it started from, its
    per-epoch history and the Ray node it trained on (its id, hexadecimal)."""

    weights: list
    frozen: tuple
    state: object
    start_weights: list | None
    history: pd.DataFrame
    node: str


def _train_on_ray(run: MemberRun, config: Config, starts: list, linear: LinearStart | None) -> list[TrainedMember]:
    """Each network in its own Ray task (`config.cpus_per_task` CPUs, `config.gpus_per_task` GPUs, retried
    MAX_RETRIES times when its worker dies), the tasks' log lines forwarded to `run.log` as they come."""
    import ray
    from ray.util.queue import Queue

    # The tasks may run in other directories and on other machines (on one filesystem): paths absolute.
    job = dataclasses.replace(run, root=run.root.resolve(), strategy=None, replicas=1, extra_callbacks=(), verbose=0,
                              log=None)
    if config.tensorboard_dir:
        config = config.replace(tensorboard_dir=str(Path(config.tensorboard_dir).resolve()))
    lines = Queue(actor_options={"num_cpus": 0})
    task = ray.remote(_member_task).options(num_cpus=config.cpus_per_task, num_gpus=config.gpus_per_task,
                                            max_retries=MAX_RETRIES)
    job_ref, linear_ref = ray.put(job), ray.put(linear)
    refs = {task.remote(job_ref, index, config, start, linear_ref, lines): index for index, start in enumerate(starts)}
    outcomes = {}
    try:
        while len(outcomes) < len(refs):
            done, _ = ray.wait([ref for ref in refs if refs[ref] not in outcomes], num_returns=1, timeout=POLL_SECONDS)
            _forward(lines, run.log)
            for ref in done:
                outcomes[refs[ref]] = _outcome(ray, ref, refs[ref], config)
                run.log(f"network {refs[ref] + 1} of {len(starts)} trained on Ray node {outcomes[refs[ref]].node}")
        _forward(lines, run.log)
    finally:
        for ref, index in refs.items():
            if index not in outcomes:
                ray.cancel(ref, force=True)
        ray.kill(lines.actor)
    return [_rebuilt(outcomes[index], config, run.layout) for index in range(len(starts))]


def _forward(lines, log: Log) -> None:
    """Passes the lines the tasks have queued to the run's log."""
    size = lines.qsize()
    for line in lines.get_nowait_batch(size) if size else ():
        log(line)


def _outcome(ray, ref, index: int, config: Config) -> MemberOutcome:
    """The finished task's result; a network that failed for good fails the run in one line that names it."""
    label = f"network {index + 1} of {config.members} (seed {config.seed + index})"
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ForecastError):  # the user's to fix, as in a local run: same type, the network named
            raise type(cause)(f"{label}: {cause}") from None
        reason = f"{type(cause).__name__}: {_first_line(cause)}" if cause is not None else _first_line(exc)
        raise ForecastError(f"{label} failed in its Ray task ({reason})") from None
    except ray.exceptions.RayError as exc:  # its worker or node died, MAX_RETRIES times over
        retries = f"{MAX_RETRIES} {'retry' if MAX_RETRIES == 1 else 'retries'}"
        raise ForecastError(f"{label} failed on Ray after {retries} ({type(exc).__name__}: "
                            f"{_first_line(exc)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _rebuilt(outcome: MemberOutcome, config: Config, layout) -> TrainedMember:
    """A task's network as a Keras model again: built as the task built it, its weights set, its frozen layers
    frozen."""
    from forecast.model import build_model

    model = build_model(config, layout, config.batch_size)
    model.set_weights(outcome.weights)
    for name in outcome.frozen:
        model.get_layer(name).trainable = False
    return TrainedMember(model, outcome.state, outcome.start_weights, outcome.history)


def _member_task(job: MemberRun, index: int, config: Config, start: MemberStart | None, linear: LinearStart | None,
                 lines) -> MemberOutcome:
    """Network `index` of the run `job` (a `MemberRun` without its process-local parts), trained in a Ray task with
    TensorFlow on `config.cpus_per_task` threads; its log lines go to the queue `lines`, each with the network named,
    and its epoch lines too where `config.verbose` asks for them."""
    limit_threads(config.cpus_per_task)
    from forecast.checkpoint import EpochLogger

    def log(message: str) -> None:
        named = config.members == 1 or message.startswith("network ")
        lines.put(message if named else f"network {index + 1}: {message}")

    strategy, replicas = distribution_strategy(config)
    run = dataclasses.replace(job, strategy=strategy, replicas=replicas, log=log,
                              extra_callbacks=(EpochLogger(log),) if config.verbose else ())
    trained = train_member(run, index, config, start, linear)
    model = trained.model
    frozen = tuple(layer.name for layer in model.layers if not layer.trainable)
    weights = [np.asarray(weight) for weight in model.get_weights()]
    import ray

    return MemberOutcome(weights, frozen, trained.state, trained.start_weights, trained.history,
                         ray.get_runtime_context().get_node_id())


def limit_threads(threads: int) -> None:
    """TensorFlow's thread pools sized to the task's CPUs, before TensorFlow starts its runtime in this worker."""
    from forecast import backend

    backend.quiet_tensorflow_start()
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # a worker Ray reuses: its TensorFlow already runs, on the threads the first task set
        pass
    _grow_gpu_memory()
    backend.keras()


def _grow_gpu_memory() -> None:
    """TensorFlow takes GPU memory as it needs it, not all of it at the start, so that the driver and the tasks on
    its node (or two tasks with `gpus_per_task` = 0.5) can share a GPU."""
    from forecast import backend

    backend.quiet_tensorflow_start()
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # TensorFlow already runs on it, with what it took
            pass
