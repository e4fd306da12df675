"""The node: one per process running jobs. It supervises its components and stops them
gracefully.

    node = Node(database, workers, config, bus, queues={"default": 10})
    await node.start()      # registers the node, then starts every component
    ...
    await node.stop()       # stop claiming, let jobs finish, return the rest, deregister

Components (each an asyncio task, restarted with backoff if it crashes, never taking the
node down): one producer per queue, the acker, the stager, the lifeline and, where it may
LISTEN (`Config.listens`), the notifier. Two daemon threads stay off the event loop: the
heartbeat, on a connection of its own, and the watchdog, which names a job that holds the
loop.

A node knows the database object (its pools, statements and connections), the worker
registry, the configuration and the event bus it is given, and nothing of the app.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from shigoto import _validate as check
from shigoto._version import __version__
from shigoto.db import execution, faults
from shigoto.db.operations import Operation
from shigoto.events import batch_event, custom_event, job_event
from shigoto.job import Job, JobState
from shigoto.runtime.acker import Acker
from shigoto.runtime.executor import Executor
from shigoto.runtime.finish import Finisher
from shigoto.runtime.heartbeat import Heartbeat
from shigoto.runtime.leader import Leader
from shigoto.runtime.lifeline import Lifeline
from shigoto.runtime.notifier import Notifier
from shigoto.runtime.producer import Producer
from shigoto.runtime.pruner import Pruner
from shigoto.runtime.retrying import TRANSIENT
from shigoto.runtime.scheduler import Scheduler
from shigoto.runtime.stager import Stager
from shigoto.runtime.vacuumer import Vacuumer
from shigoto.runtime.watchdog import Watchdog

if TYPE_CHECKING:
    from shigoto.config import Config
    from shigoto.db.database import Database
    from shigoto.events import EventBus
    from shigoto.features.batches import Batch
    from shigoto.schedules import ScheduleInfo
    from shigoto.worker import WorkerRegistry

logger = logging.getLogger("shigoto.node")
logger.addFilter(faults.SCRUBBED)  # a component or a hook may crash with a database error

# A stop's steps that need the database, after its jobs, share this many seconds.
STOP_WRITES_TIMEOUT = 3.0
# A component gets this long to end once cancelled (within a stop, no longer than the
# stop's deadline).
CANCEL_TIMEOUT = 10.0
# The most statements a node's components run at once besides one claim per queue: the
# acker, stager, lifeline (rescue, audit), leader, scheduler, pruner, vacuumer and the
# listener's probe. The node's own pool has that many connections at most, made as needed.
NODE_STATEMENTS = 8

T = TypeVar("T")


def new_node_id() -> str:
    """Stable for the life of the process and unique across restarts: host-pid-random."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Node:
    """The runtime of one process; `declare_schedules` is the operation that saves the
    app's declared schedules, run as the node starts."""

    def __init__(
        self,
        database: Database,
        workers: WorkerRegistry,
        config: Config,
        bus: EventBus,
        *,
        queues: Mapping[str, int] | None = None,
        declare_schedules: Callable[[], Operation[None]] | None = None,
    ) -> None:
        self.database = database
        self.queries = database.queries
        self.workers = workers
        self.config = config
        self._declare_schedules = declare_schedules
        self.id = new_node_id()
        self.queues = dict(self.config.queues if queues is None else queues)
        for name, limit in self.queues.items():
            check.queue(name, "queues")
            check.integer(limit, f"queues[{name!r}]", (1, 10_000))
        self.bus = bus
        self.executor = Executor(
            workers,
            threads=self.config.thread_count,
            node_id=self.id,
            max_result_bytes=self.config.max_result_bytes,
            bus=self.bus,
        )
        self._finisher = Finisher(self.bus, self.id, on_discard=self.executor.on_discard)
        self.producers: dict[str, Producer] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._crashed: set[str] = set()  # components waiting to be restarted
        self._acker: Acker | None = None
        self._stager: Stager | None = None
        self._lifeline: Lifeline | None = None
        self._heart: Heartbeat | None = None
        self._watchdog: Watchdog | None = None
        self.notifier: Notifier | None = None
        self.started = False
        self._stopping = False
        self._hurry = asyncio.Event()
        self.paused = False
        self.leader: Leader | None = None
        self.vacuumer: Vacuumer | None = None
        self._pool: AsyncConnectionPool | None = None

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self.started:
            return
        q = self.queries
        meta = {"version": __version__}
        # The runtime's statements have connections of their own: jobs holding every
        # connection of the app's pool (app.connection()) never hold up a claim or an ack.
        self._pool = await self.database.open_pool(
            "shigoto-node", 1, len(self.queues) + NODE_STATEMENTS
        )
        try:
            # Registered before anything is claimed: rescue trusts the nodes table.
            await self._db(execution.register_node(q, self.id, self.queues, meta))
            if self._declare_schedules is not None:
                await self._db(self._declare_schedules())
        except BaseException:
            await self._close_pool()
            raise
        self._heart = Heartbeat(
            connect=self.database.connect_heartbeat,
            queries=q,
            node_id=self.id,
            queues=self._limits,
            meta=meta,
            interval=self.config.heartbeat_interval,
            on_news=self._heart_news,
        )
        self._heart.start()
        if self.config.watchdog_threshold is not None:
            self._watchdog = Watchdog(
                threshold=self.config.watchdog_threshold, describe=self.describe_task
            )
            self._watchdog.start()
        try:
            self._start_components()
        except BaseException:
            for name in list(self._tasks):
                await self._cancel(name)
            await self._stop_threads()
            await self._close_pool()
            raise
        self.started = True
        self.bus.emit("node.started", node=self.id, data={"queues": dict(self.queues)})
        logger.info(
            "node %s started: %s",
            self.id,
            ", ".join(f"{name}={limit}" for name, limit in self.queues.items()) or "no queues",
        )

    def _start_components(self) -> None:
        q = self.queries
        self._stager = Stager(
            db=self._db,
            queries=q,
            interval=self.config.stage_interval,
            on_staged=self._wake,
            on_batch_closed=self._batch_closed,
        )
        self._acker = Acker(self._db, q, self.id, on_follow_up=self._stager.poke, bus=self.bus)
        self._spawn("acker", self._acker.run)
        for name, limit in self.queues.items():
            self._add_producer(name, limit)
        self._spawn("stager", self._stager.run)
        assert self._heart is not None
        self._lifeline = Lifeline(
            db=self._db,
            queries=q,
            node_id=self.id,
            heart=self._heart,
            interval=self.config.heartbeat_interval,
            node_timeout=self.config.node_timeout,
            on_rescued=self._rescued,
            on_fence=self._fence,
            audit=self.audit,
        )
        self._spawn("lifeline", self._lifeline.run)
        self.leader = Leader(self._db, q, self.id, role="leader", lease=self.config.leader_lease)
        self._spawn("leader", self.leader.run)
        scheduler = Scheduler(
            self._db, q, self.leader, tick=self.config.schedule_tick, on_fired=self._fired
        )
        self._spawn("scheduler", scheduler.run)
        if self.config.prune_after is not None:
            pruner = Pruner(
                self._db,
                q,
                self.leader,
                prune_after=self.config.prune_after,
                retention=self.config.archive_retention,
                interval=self.config.prune_interval,
            )
            self._spawn("pruner", pruner.run)
        if self.config.vacuum_after is not None:
            self.vacuumer = Vacuumer(
                self._db,
                q,
                self.leader,
                after=self.config.vacuum_after,
                interval=self.config.vacuum_interval,
            )
            self._spawn("vacuumer", self.vacuumer.run)
        if self.config.notifier and not self.config.listens:
            logger.warning(
                "not listening for new jobs: prepared statements are off (a transaction "
                "pooler such as PgBouncer) and listen_dsn is unset, so queues poll every "
                "poll_interval; set listen_dsn to a direct connection, or notifier=False"
            )
        if self.config.listens:
            self.notifier = Notifier(
                connect=self._listen_connection,
                db=self._db,
                queries=q,
                node_id=self.id,
                probe_interval=self.config.probe_interval,
                on_insert=self._wake,
                on_control=self._control,
                on_connect=self._reconnected,
            )
            self._spawn("notifier", self.notifier.run)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully: no new claims, running jobs get `timeout` seconds (default
        `shutdown_timeout`), the rest return to the queue at once without using an attempt.

        Whatever the database does, the stop ends within `timeout` + STOP_WRITES_TIMEOUT
        seconds: what could not be written by then is left for a rescue, and logged."""
        if not self.started or self._stopping:
            return
        self._stopping = True
        timeout = self.config.shutdown_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        # Every step that needs the database (a claim on its way, the last outcomes, giving
        # back what was claimed and not run, the lease, the node's row) ends by this.
        deadline = loop.time() + timeout + STOP_WRITES_TIMEOUT
        # A sync job still in its thread when the jobs' time is up is given back all the
        # same (a thread cannot be stopped; the process is about to end).
        self.executor.abandon_threads()
        producers = list(self.producers.values())
        await asyncio.gather(*(p.stop(timeout, self._hurry, deadline) for p in producers))
        for name in list(self._tasks):
            if name.startswith("producer:"):
                await self._cancel(name, deadline)
        assert self._acker is not None
        written = await self._acker.flush(max(deadline - loop.time(), 0.0))
        if written:
            await self._give_back_unrun(producers, deadline)
        else:
            logger.error(
                "node %s: the database did not answer before the stop's deadline; %d "
                "outcome(s) were not written, and their jobs stay claimed by this node "
                "until another node rescues them",
                self.id,
                self._acker.pending,
            )
        for name in list(self._tasks):
            await self._cancel(name, deadline)
        if self.leader is not None:
            await self._before(deadline, "give up the leader lease", self.leader.resign())
        # No heartbeat may land after the row is gone (one under way gets a second at most).
        await self._stop_threads(min(max(deadline - loop.time(), 0.0), 1.0))
        await self._before(
            deadline,
            "deregister",
            self._db(execution.remove_node(self.queries, self.id)),
        )
        await self._close_pool(min(max(deadline - loop.time(), 0.0), 1.0))
        self.executor.close()
        self.started = False
        self._stopping = False
        self._hurry.clear()
        self.bus.emit("node.stopped", node=self.id)
        logger.info("node %s stopped", self.id)

    async def _give_back_unrun(self, producers: list[Producer], deadline: float) -> None:
        """The last safety net of a stop: jobs still claimed by this node that it does not
        run go back to the queue, their attempts refunded (none should be left by now)."""
        running = [job_id for p in producers for job_id, _ in p.running]
        operation = execution.give_back(self.queries, node=self.id, running=running)
        given = await self._before(deadline, "give back unstarted jobs", self._db(operation))
        if given:
            logger.warning(
                "node %s: gave back %d claimed job(s) that never started", self.id, len(given)
            )
        if running:
            logger.error(
                "node %s: %d job(s) did not end when interrupted; they stay claimed by this "
                "node until another node rescues them",
                self.id,
                len(running),
            )

    async def _before(self, deadline: float, what: str, step: Awaitable[T]) -> T | None:
        """Await a step of the stop that needs the database, until `deadline` at most;
        None (logged) if the database did not answer in time."""
        try:
            async with asyncio.timeout_at(deadline):
                return await step
        except (*TRANSIENT, psycopg.Error, OSError, TimeoutError) as error:
            # The error itself, not its text: the logger's filter cuts a database error to
            # its primary message (its detail may quote a statement's parameters).
            reason: object = error if str(error) else "the stop's deadline passed"
            logger.warning("node %s: could not %s: %s", self.id, what, reason)
            return None

    def pause(self, mode: str = "graceful") -> None:
        """Stop claiming on this node. "graceful" lets running jobs finish; "aggressive"
        interrupts them and returns them to the queue without using an attempt."""
        if mode not in ("graceful", "aggressive"):
            raise ValueError(f"mode: expected 'graceful' or 'aggressive', got {mode!r}")
        self.paused = True
        for producer in self.producers.values():
            producer.release_held("paused")  # claimed but not started: back to the queue
        if mode == "aggressive":
            for producer in self.producers.values():
                producer.interrupt_all("paused")
        logger.info("node %s paused (%s)", self.id, mode)

    def resume(self) -> None:
        """Claim again after `pause`."""
        self.paused = False
        self._wake_all()
        logger.info("node %s resumed", self.id)

    def hurry(self) -> None:
        """Cut a graceful stop short (a second signal): interrupt the running jobs now; they
        return to the queue at once without using an attempt."""
        self._hurry.set()

    # -- queues ------------------------------------------------------------------------------

    def add_queue(self, name: str, limit: int) -> None:
        check.queue(name)
        check.integer(limit, "limit", (1, 10_000))
        if name in self.producers:
            self.producers[name].scale(limit)
        else:
            self.queues[name] = limit
            if self.started:
                self._add_producer(name, limit)

    def scale_queue(self, name: str, limit: int) -> None:
        check.integer(limit, "limit", (1, 10_000))
        if name in self.producers:
            self.queues[name] = limit
            self.producers[name].scale(limit)

    async def change_queue(self, name: str, limit: int | None) -> None:
        """Work `name` with `limit` concurrent jobs, or (None) stop working it."""
        if limit is None:
            await self.remove_queue(name)
        elif name in self.producers:
            self.scale_queue(name, limit)
        else:
            self.add_queue(name, limit)

    async def remove_queue(self, name: str) -> None:
        producer = self.producers.pop(name, None)
        self.queues.pop(name, None)
        if producer is None:
            return
        timeout = self.config.shutdown_timeout
        deadline = asyncio.get_running_loop().time() + timeout + STOP_WRITES_TIMEOUT
        await producer.stop(timeout, deadline=deadline)
        await self._cancel(f"producer:{name}")

    def _add_producer(self, name: str, limit: int) -> None:
        assert self._acker is not None and self._stager is not None
        producer = Producer(
            name,
            limit,
            db=self._db,
            queries=self.queries,
            node_id=self.id,
            executor=self.executor,
            acker=self._acker,
            poll_interval=self._poll_interval(name),
            may_claim=self._may_claim,
            fair=name in self.config.fair_queues,
            on_follow_up=self._stager.poke,
            finisher=self._finisher,
            fresh_for=self.config.claim_window,
            prefetch=self.config.prefetch,
            bus=self.bus,
        )
        self.producers[name] = producer
        self._spawn(f"producer:{name}", producer.run)

    # -- signals -----------------------------------------------------------------------------

    def _wake(self, queue: str) -> None:
        producer = self.producers.get(queue)
        if producer is not None:
            producer.wake()

    def _wake_all(self) -> None:
        for producer in self.producers.values():
            producer.wake()

    def _control(self, message: dict[str, Any]) -> None:
        action = message.get("action")
        if action in ("cancel", "pause"):
            reason = "cancelled" if action == "cancel" else "job-paused"
            for job_id in message.get("ids", []):
                for producer in self.producers.values():
                    if producer.cancel_job(job_id, reason):
                        logger.info(
                            "job %s %s while running; interrupted",
                            job_id,
                            reason,
                            extra={"job_id": job_id},
                        )
        elif action == "queue":
            self._queue_signal(message)
        elif action == "event" and message.get("origin") != self.bus.origin:
            # Another process's custom event (this process published its own at once).
            event = custom_event(message)
            if event is not None and self.bus.wants(event.name):
                self.bus.publish(event)

    def _queue_signal(self, message: dict[str, Any]) -> None:
        name, limit = message.get("queue"), message.get("limit")
        if not isinstance(name, str):
            return
        if limit is None:
            self._spawn(
                f"remove:{name}:{time.monotonic()}", lambda: self.remove_queue(name), restart=False
            )
        elif isinstance(limit, int) and not isinstance(limit, bool):
            self.add_queue(name, limit)

    def _reconnected(self) -> None:
        self._wake_all()  # NOTIFY has no replay: look for jobs and signals we missed
        if any(p.running for p in self.producers.values()):
            self._spawn(f"audit:{time.monotonic()}", self.audit, restart=False)

    async def audit(self) -> None:
        """Stop the running jobs this node no longer owns (cancelled, rescued, deleted)."""
        running = [key for p in self.producers.values() for key in p.running]
        if not running:
            return
        try:
            lost = await self._db(execution.lost_jobs(self.queries, running, node=self.id))
        except TRANSIENT:
            return
        for job_id, attempt in lost:
            for producer in self.producers.values():
                if producer.cancel_job(job_id, "cancelled", attempt):
                    logger.info(
                        "job %s is no longer this node's (cancelled?); stopped",
                        job_id,
                        extra={"job_id": job_id},
                    )

    def _fence(self, reason: str) -> None:
        running = sum(len(p.running) for p in self.producers.values())
        if running:
            logger.error("stopping %d running job(s) on node %s: %s", running, self.id, reason)
        for producer in self.producers.values():
            producer.interrupt_all("fenced")

    def component_running(self, name: str) -> bool:
        """Whether the component `name` ("producer:default", "notifier", ...) runs: its task
        is alive, and not waiting to be restarted after a crash (for health checks)."""
        task = self._tasks.get(name)
        return task is not None and not task.done() and name not in self._crashed

    @property
    def heartbeat_age(self) -> float | None:
        """Seconds since the database last answered this node's heartbeat; None when the
        node is not running."""
        return None if self._heart is None else self._heart.silence

    def _heart_news(self) -> None:
        if self._lifeline is not None:
            self._lifeline.judge()

    def _limits(self) -> dict[str, int]:
        """The queues' limits, for the heartbeat's thread: `list()` copies the producers in
        one step, where iterating the dict could see it change under the loop's hands."""
        return {name: producer.limit for name, producer in list(self.producers.items())}

    def describe_task(self, task: asyncio.Task[Any] | None) -> str:
        """Which job `task` runs, for the watchdog (called from its thread): "job 42
        (send_email)", or the task's name if it runs no job. Never the job's args."""
        if task is None:
            return "code outside any task (a callback)"
        for producer in list(self.producers.values()):
            for running, run in list(producer.running.values()):
                if running is task:
                    return f"job {run.job.id} ({run.job.worker})"
        return f"task {task.get_name()!r}"

    async def _stop_threads(self, timeout: float = 1.0) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        if self._heart is not None:
            heart, self._heart = self._heart, None
            await asyncio.to_thread(heart.stop, timeout)

    async def _rescued(self, jobs: list[Job]) -> None:
        for queue in {job.queue for job in jobs if job.state is JobState.AVAILABLE}:
            self._wake(queue)
        bus = self.bus
        for job in jobs:  # their run (here, before a crash elsewhere) failed: NodeLost
            if bus.active and bus.wants("job.rescued"):
                bus.publish(job_event("job.rescued", job, node=self.id, state=job.state.value))
            await self._finisher.rescued(job)

    def _batch_closed(self, batch: Batch) -> None:
        if self.bus.wants("batch.completed"):
            self.bus.publish(batch_event(batch, self.id))

    def _fired(self, entry: ScheduleInfo, job: Job) -> None:
        if self.bus.wants("cron.scheduled"):
            self.bus.publish(job_event("cron.scheduled", job, node=self.id, schedule=entry.name))

    # -- plumbing ----------------------------------------------------------------------------

    async def _db(self, operation: Operation[Any], *, transaction: bool = False) -> Any:
        assert self._pool is not None, "the node's statements run between start and stop"
        return await self.database.run_in(self._pool, operation, transaction=transaction)

    async def _close_pool(self, timeout: float = 1.0) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close(timeout)

    def _may_claim(self) -> bool:
        return not self.paused and (self._lifeline is None or self._lifeline.healthy)

    def _poll_interval(self, queue: str) -> float:
        """A queue of weight w polls every poll_interval * (heaviest weight / w)."""
        weights = self.config.queue_weights
        heaviest = max(weights.values(), default=1)
        return self.config.poll_interval * heaviest / weights.get(queue, 1)

    async def _listen_connection(self) -> psycopg.AsyncConnection[Any]:
        return await self.database.connect_listener()

    def _spawn(
        self,
        name: str,
        target: Callable[[], Coroutine[Any, Any, None]],
        *,
        restart: bool = True,
    ) -> None:
        coroutine = self._supervise(name, target) if restart else target()
        task = asyncio.create_task(coroutine, name=f"shigoto-{name}")
        self._tasks[name] = task
        task.add_done_callback(
            lambda t: self._tasks.pop(name, None) if self._tasks.get(name) is t else None
        )

    async def _supervise(self, name: str, target: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a component forever, restarting it with backoff when it crashes."""
        delay = 0.1
        while True:
            started = time.monotonic()
            try:
                await target()
                return
            except Exception as error:
                logger.exception("component %s crashed; restarting in %.1fs", name, delay)
                self.bus.emit(
                    "component.crashed",
                    node=self.id,
                    data={
                        "component": name,
                        "error": type(error).__qualname__,
                        "restart_in": delay,
                    },
                )
            if time.monotonic() - started > 60:
                delay = 0.1
            self._crashed.add(name)
            try:
                await asyncio.sleep(delay)
            finally:
                self._crashed.discard(name)
            delay = min(delay * 2, 30.0)

    async def _cancel(self, name: str, deadline: float | None = None) -> None:
        task = self._tasks.pop(name, None)
        if task is None:
            return
        task.cancel()
        # A component that does not end when cancelled is a bug; it must not hang the stop.
        wait = CANCEL_TIMEOUT
        if deadline is not None:
            wait = min(wait, max(deadline - asyncio.get_running_loop().time(), 0.1))
        _, pending = await asyncio.wait([task], timeout=wait)
        if pending:
            logger.error("component %s did not stop within %.1fs; left behind", name, wait)
