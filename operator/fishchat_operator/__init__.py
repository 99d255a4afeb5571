"""fishchat-operator: runs FishChat on Kubernetes from one FishChatCluster object.

The package splits into a pure core and thin I/O around it:

- pure: `constants`, `schema`, `model` (spec), `status`, `observations`, `render` (children),
  `roleconfig` (each role's TOML), `topics` (create/grow decisions), `conditions` (status), `crd`;
- I/O: `kube` (Kubernetes API), `kafka_topics`, `hbase_table`, `reconcile` (one idempotent pass),
  `metrics`, `handlers` (kopf wiring) and `__main__` (the entry point).

Pure modules never import the I/O ones; `tests/unit/operator` checks that.
"""

__version__ = "0.1.0"
