"""The reconcile engine: work queue, back-off and the controller runner."""

from controllers.runtime.controller import Controller, ReconcileFn
from controllers.runtime.workqueue import Backoff, WorkQueue

__all__ = ["Backoff", "Controller", "ReconcileFn", "WorkQueue"]
