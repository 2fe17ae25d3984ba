"""tests/integration/test_task_icehouse.py on Nova's own tables (nova-manage db sync).

Every test of that module, unchanged: its databases come from this suite's db_factory
(Nova's tables as Nova 34 made them, plus what `offload db sync` adds), so each task's
replica-read proof, guarded writes and stale-replica refusals hold on the schema Nova
itself creates.
"""

from tests.integration.test_task_icehouse import *  # noqa: F403
