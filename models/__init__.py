"""Recommender models on jax_hypereca and the train command.

* :mod:`models.dlrm`: DLRM and DLRM-DCNv2 in Flax linen (``DLRM``, ``MLP``).
* :mod:`models.interaction`: the dot interaction, in the fastest of the forms
  ``experiments/bench_interaction.py`` times.
* :mod:`models.dcn`: DCN-v2's cross network.
* :mod:`models.config`: ``ModelConfig``, presets (small, criteo-kaggle, mlperf-dlrmv2) and
  their tables with capacities bounded to a memory budget.
* :mod:`models.data`: batches from the synthetic stream or Criteo files, per process.
* :mod:`models.train`: ``python -m models.train`` (see ``--help``).

Models use jax_hypereca's public API only; jax_hypereca never imports them.
"""
