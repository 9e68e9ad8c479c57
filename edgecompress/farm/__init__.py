"""Benchmark bundles on many boards at once.

Every selected device benchmarks every bundle. Devices are pooled by target
profile, like TVM's RPC tracker pools devices by key: when a device drops out
(unreachable, connection lost, timed out) it is retried with exponential
backoff; when it keeps failing, or fails in a way retrying cannot fix (host
key, auth, full disk), it is marked down and its remaining work moves to
another device of the same profile. A job whose bundle is at fault (parity)
fails alone; a job done by another device than planned is "moved". Each outcome
is appended to ``farm.jsonl`` (fsync'ed) and ``farm.json`` as it happens, so nothing
finished is lost when a device, or the farm itself, dies; a ``resume`` run skips the
jobs an earlier one finished.

Reports: a table in the terminal (``table``), ``farm.json`` (``records``) and
``farm.html`` (edgecompress/report/farm_page.py).

Modules by job: ``jobs`` (a job, the errors that move work or not), ``pool`` (the
``Farm``: scheduling on local threads), ``records`` (the report dict and farm.json),
``journal`` (farm.jsonl: append, replay, what a resume skips), ``table`` (the terminal table).
On a Ray lab (``farm --ray``, the optional extra ``edgecompress[farm]``): ``lab`` (lab hosts as
Ray nodes, their board resources, the lab's state actor, ``lab status``), ``ray_pool`` (the
``RayFarm``: the same jobs as Ray tasks, results into the same journal) and ``on_node`` (what a
job does on the host that reaches its board). Only ``lab`` and ``ray_pool`` import Ray, lazily.
"""
from .jobs import BUNDLE_FAULTS, TRANSIENT, Job
from .pool import Farm
from .table import format_table

__all__ = ["BUNDLE_FAULTS", "Farm", "Job", "TRANSIENT", "format_table"]
