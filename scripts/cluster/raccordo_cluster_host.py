"""The host name a Celery worker of scripts/airflow-cluster.sh reports to Airflow.

On one machine every worker would report the same host name; the cluster script gives each
worker its own (``RACCORDO_WORKER_HOSTNAME``, e.g. ``cot.cluster.localhost``) through
``[core] hostname_callable``, so a task instance's ``hostname`` says which worker ran it, as
it does when each consortium's worker is a machine of its own.
"""

import os
import socket


def hostname() -> str:
    return os.environ.get("RACCORDO_WORKER_HOSTNAME") or socket.getfqdn()
