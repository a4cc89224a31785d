"""Cluster mode of the evaluator: each evaluation runs as a hardened Kubernetes Job.

``manifests`` builds the Job (a pure function; the chart applies the pods' NetworkPolicy);
``launcher`` runs a Job per candidate through the Kubernetes API and maps its outcome to a
report. The pod side is
``services/evaluator/pod.py``.
"""
