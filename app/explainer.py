"""Explanations on a lane of their own: admitted by what they cost, run beside plain traffic without starving it.

An explanation costs one forward-pass row per word, so one request to explain 64 long reviews is more work than
thousands of plain ones. Two rules keep that from hurting anyone:

- **Admission by cost.** Each request's work is estimated from its texts (`model.explain.explain_cost`, no
  tokenising on the event loop) and weighed against the lane's measured speed (padded tokens per second, a moving
  average over the chunks it ran; seeded at warm-up). A request that could not finish within the request deadline
  even at the lane's best speed is refused at once with `ExplainTooLarge`, which says how many of its texts would
  fit; one that could, but not behind the explanations already admitted (by this server process and, through
  `app.processes.SharedCounts`, by the others), gets `ExplainBusy` with the time to wait
  (at the current speed, which load lowers: the slower of the average and the newest chunk). A speed measured
  more than `STALE_S` ago, on an idle lane, is measured again before admitting a request that a slower lane could
  not finish in time (a small chunk on the lane's own thread, awaited by every request that arrives meanwhile):
  load that began since then would otherwise admit explanations at a speed the lane no longer has.
  So an admitted explanation is one the lane expects to finish in time, rather than one that computes until its
  504.
- **Plain traffic first.** Explanations run one request at a time (`slots`) on a thread of their own, which the
  service starts at a lower CPU priority (`app.service.EXPLAIN_NICENESS`), as chunks of at most
  `max_batch_tokens` padded tokens: no plain batch waits for a worker behind them, and on a busy machine they get
  the CPU that plain traffic leaves, which lowers their measured speed and so admits fewer of them.

Knows nothing of HTTP: it raises the domain errors of `app.failures`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from model.explain import Explanation, Occlusion, chunk_cost, explain_cost, plan

if TYPE_CHECKING:
    from app.processes import SharedCounts

log = logging.getLogger("app.explainer")

# Admission aims to finish within this share of the time left: the speed is a moving average that load can lower
# after admission, and the plain classification of the same texts runs first.
HEADROOM = 0.6
# The weight of the newest chunk in the moving average of the lane's speed.
SMOOTHING = 0.2
# A speed older than this (seconds) is measured again before a request is admitted on it, unless the request would
# fit even at SLOWDOWN times slower: measuring costs more than such a request (a short review costs a tenth of the
# probe), and no load seen here slows the lane that much.
STALE_S = 1.0
SLOWDOWN = 10.0
# The chunk that measures it again is this fraction of a full one: a full chunk takes seconds on a busy machine, and
# every request that arrives meanwhile waits for the verdict.
PROBE_FRACTION = 1 / 8


class ExplainTooLarge(Exception):
    """The request could never be explained within the deadline, or asks for more texts than allowed."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ExplainBusy(Exception):
    """At the speed the lane runs now, behind the explanations already admitted (`waiting_s` of them), this one
    (`alone_s`) would not finish before its deadline."""

    def __init__(self, retry_after_s: int, waiting_s: float, alone_s: float = 0.0, at_least: bool = False):
        super().__init__(f"explanations already admitted need about {waiting_s:.0f} s, this one "
                         f"{'more than ' if at_least else ''}{alone_s:.0f} s")
        self.retry_after_s = retry_after_s
        self.waiting_s = waiting_s
        self.alone_s = alone_s
        self.at_least = at_least  # alone_s is a lower bound: the speed measured so far shows no more


@dataclass
class Ticket:
    """An admitted request's place on the lane: its estimated cost, released when it is answered."""

    cost: int
    lane: ExplainLane
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.lane.backlog -= self.cost


class ExplainLane:
    def __init__(self, model, run_in_thread: Callable[..., Awaitable], *, slots: int, max_words: int,
                 max_texts: int, batch_tokens: int, timeout_s: float, siblings: SharedCounts | None = None):
        self.model = model
        self._run = run_in_thread
        self.slots = asyncio.Semaphore(slots)  # held by a request while its texts are explained
        self.slot_count = slots
        self.max_words = max_words
        self.max_texts = max_texts
        self.batch_tokens = batch_tokens
        self.timeout_s = timeout_s
        self.tokens_per_s: float | None = None  # estimated tokens (explain_cost) per second; None until measured
        # The newest chunk's speed alone: admission goes by the slower of it and the average, so that a lane that
        # load has just slowed is seen at once, not after the average has caught up with it.
        self.newest_tokens_per_s: float | None = None
        # The fastest the lane has gone: whether a request could *ever* fit is judged on it, not on a speed that
        # a passing flood has lowered (that is what 429 and Retry-After are for).
        self.peak_tokens_per_s: float | None = None
        # The other server processes' lanes (app.processes): their explanations run on the same cores, so what
        # they have admitted is work ahead of this lane's next request too. Counting it as if it ran before, at
        # this lane's speed, is what it costs when the lanes share a core, and more than it costs when they do not.
        self._siblings = siblings
        self.backlog = 0  # estimated cost of the explanations admitted and not yet answered
        self.measured_at = -math.inf  # time.monotonic() of the newest speed
        # The probe chunk and what it is worth in full-chunk tokens (timed at warm-up): divided by the probe's time
        # now, it is the speed a request's full chunks would get now.
        self._probe: tuple[list, float] | None = None
        self._probing: asyncio.Future | None = None
        self._probe_started = -math.inf

    # -- admission ------------------------------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Estimated cost of the explanations this lane admitted and has not answered yet."""
        return self._backlog

    @backlog.setter
    def backlog(self, value: int) -> None:
        self._backlog = value
        if self._siblings is not None:
            self._siblings.publish(value)

    @property
    def speed(self) -> float | None:
        """The tokens per second admission goes by: the slower of the moving average and the newest chunk."""
        # Both are set together, by every chunk and probe timed.
        return min(self.tokens_per_s, self.newest_tokens_per_s) if self.tokens_per_s else None

    async def admit(self, texts: list[str], deadline: float) -> Ticket:
        """A ticket for explaining `texts` by `deadline` (time.monotonic()), or ExplainTooLarge / ExplainBusy."""
        if len(texts) > self.max_texts:
            raise ExplainTooLarge(f"explain takes at most {self.max_texts} texts per request "
                                  f"(SENTIMENT_MAX_EXPLAIN_TEXTS); this one has {len(texts)}: send the others in "
                                  f"further requests, or without explain")
        costs = [explain_cost(t, self.max_words) for t in texts]
        cost = sum(costs)
        if self.tokens_per_s:
            best = self.peak_tokens_per_s * self.slot_count
            if cost / best > HEADROOM * self.timeout_s:
                raise ExplainTooLarge(self._too_large(costs, best, cost / best))
            if (not self.backlog and time.monotonic() - self.measured_at > STALE_S
                    and SLOWDOWN * cost / (self.tokens_per_s * self.slot_count)
                    > HEADROOM * max(0.0, deadline - time.monotonic())):
                if not await self._measure_again(cost, deadline):
                    raise ExplainBusy(math.ceil(STALE_S), 0.0, HEADROOM * max(0.0, deadline - time.monotonic()),
                                      at_least=True)
            speed = self.speed * self.slot_count
            ahead = self.backlog + (self._siblings.others() if self._siblings is not None else 0)
            alone_s = cost / speed
            waiting_s = ahead / speed
            if waiting_s + alone_s > HEADROOM * max(0.0, deadline - time.monotonic()):
                # With nothing ahead it is the load that slowed the lane: its speed is measured again once stale.
                retry_s = math.ceil(waiting_s) if ahead else math.ceil(STALE_S)
                raise ExplainBusy(max(1, min(60, retry_s)), waiting_s, alone_s)
        self.backlog += cost
        return Ticket(cost, self)

    def _too_large(self, costs: list[int], speed: float, alone_s: float) -> str:
        budget, fit, total = HEADROOM * self.timeout_s * speed, 0, 0
        for c in costs:
            if total + c > budget:
                break
            total, fit = total + c, fit + 1
        instead = (f"send at most {fit} of these texts per request" if fit else "send a shorter text")
        return (f"explaining {'this text' if len(costs) == 1 else f'these {len(costs)} texts'} takes about "
                f"{alone_s:.0f} s of model time even at the fastest speed measured, more than the "
                f"SENTIMENT_REQUEST_TIMEOUT_S={self.timeout_s:g} s deadline allows: {instead}, fewer words "
                f"(SENTIMENT_MAX_EXPLAIN_WORDS={self.max_words} are weighed per text), or leave out explain")

    # -- running --------------------------------------------------------------------------------------------------

    async def explain(self, text: str) -> Explanation:
        """Plan and run one text's occlusion, chunk by chunk. The caller holds a slot (`async with lane.slots`).
        Cancelling it stops the work after the chunk under way, which finishes on its thread unread."""
        work, per_token = await self._plan(text)
        return work.result([await self._timed(chunk, per_token) for chunk in work.chunks])

    async def calibrate(self, text: str, run_in: Callable[..., Awaitable] | None = None) -> None:
        """Seed the speed with the first chunk of `text` (a full one, for a long text): admission by cost needs
        a speed before the first request comes. `run_in` runs it instead of the lane's thread: a thread keeps the
        memory its allocator arena grew to while it idles, so the service times it on a forward-pass worker, and
        the lane's thread holds nothing until explanations are asked for."""
        self.tokens_per_s = self.peak_tokens_per_s = self.newest_tokens_per_s = None
        work, per_token = await self._plan(text, run_in)
        # One slow run here would seed a peak so low that every request is refused as too large, with nothing
        # admitted that could ever raise it.
        self._measured(per_token * chunk_cost(work.chunks[0]), await self._fastest_of_two(work.chunks[0], run_in))
        full_speed = self.tokens_per_s
        if not full_speed:  # not timed (a clock too coarse for one chunk): no probe, the first request times it
            return
        probe = (await (run_in or self._run)(plan, self.model, text, self.max_words,
                                             max(1, int(self.batch_tokens * PROBE_FRACTION)))).chunks[0]
        probe_s = await self._fastest_of_two(probe, run_in)
        # What the probe is worth in full-chunk tokens: what a full chunk does, at the seeded speed, in the time
        # the probe takes. Divided by the probe's time later, it gives the speed full chunks would get then.
        self._probe = (probe, full_speed * probe_s if probe_s > 0 else per_token * chunk_cost(probe))

    async def _fastest_of_two(self, chunk: list, run_in: Callable[..., Awaitable] | None) -> float:
        """Seconds for `chunk`, run twice, the faster: the first run of a new shape also pays for allocating its
        buffers."""
        return min([(await self._run_timed(chunk, run_in))[1] for _ in range(2)])

    async def _measure_again(self, cost: int, deadline: float) -> bool:
        """Time the probe chunk on the lane's thread now (one run, shared by every request awaiting it); its speed
        replaces the stale one. True once it has; False as soon as the probe has run so long that, whatever speed
        it shows, `cost` could not be explained by `deadline`: that request is refused then, not when the probe
        ends (which it still does, for the requests after it)."""
        if self._probe is None:
            return True
        if self._probing is None:
            self._probing = asyncio.ensure_future(self._run_probe())
            self._probing.add_done_callback(lambda _: setattr(self, "_probing", None))
            self._probe_started = time.monotonic()
        _, worth = self._probe
        # Still running after `t` seconds, the probe shows a speed below `worth / t`; the request fits only at
        # `cost / (slots x HEADROOM x time left)` or faster.
        decisive_s = worth * self.slot_count * HEADROOM * max(0.0, deadline - time.monotonic()) / max(1, cost)
        try:
            # Shielded: a request that goes away (or stops waiting) must not cancel the verdict others wait for.
            await asyncio.wait_for(asyncio.shield(self._probing),
                                   max(0.0, self._probe_started + decisive_s - time.monotonic()))
        except TimeoutError:
            return False
        return True

    async def _run_probe(self) -> None:
        chunk, worth = self._probe
        try:
            _, seconds = await self._run_timed(chunk)
        except (Exception, asyncio.CancelledError):  # noqa: BLE001
            # The lane's thread is shutting down (its queued work cancelled): admit on the speed there is.
            return
        if seconds > 0:
            was, self.tokens_per_s = self.tokens_per_s, worth / seconds
            self.newest_tokens_per_s = self.tokens_per_s
            self.peak_tokens_per_s = max(self.peak_tokens_per_s or 0.0, self.tokens_per_s)
            log.debug("explain speed measured again: %.0f tokens/s (was %.0f, fastest %.0f)", self.tokens_per_s,
                      was, self.peak_tokens_per_s)
        self.measured_at = time.monotonic()

    async def _plan(self, text: str, run_in: Callable[..., Awaitable] | None = None) -> tuple[Occlusion, float]:
        """The text's occlusion, planned on the lane's thread, and the estimated tokens (`explain_cost`) per padded
        token of it: the lane's speed is counted in the units admission estimates in, so that a tokenizer that cuts
        more or fewer tokens per character than the estimate assumes does not skew admission."""
        work = await (run_in or self._run)(plan, self.model, text, self.max_words, self.batch_tokens)
        return work, explain_cost(text, self.max_words) / work.cost

    async def _timed(self, chunk: list, per_token: float, run_in: Callable[..., Awaitable] | None = None):
        """One chunk's logits; its time, which includes any wait of the lane's thread for a core (the lane's speed
        under the current load), goes into the speed."""
        logits, seconds = await self._run_timed(chunk, run_in)
        self._measured(per_token * chunk_cost(chunk), seconds)
        return logits

    async def _run_timed(self, chunk: list, run_in: Callable[..., Awaitable] | None = None):
        started = time.monotonic()
        logits = await (run_in or self._run)(self.model.logits, chunk)
        return logits, time.monotonic() - started

    def _measured(self, estimated_tokens: float, seconds: float) -> None:
        self.measured_at = time.monotonic()
        if seconds <= 0:
            return
        speed = self.newest_tokens_per_s = estimated_tokens / seconds
        self.tokens_per_s = speed if self.tokens_per_s is None else (
            (1 - SMOOTHING) * self.tokens_per_s + SMOOTHING * speed)
        self.peak_tokens_per_s = max(self.peak_tokens_per_s or 0.0, self.tokens_per_s)
