"""The one training loop (:mod:`poselift.training.loop`) for every task (:mod:`poselift.training.tasks`), the
stage mechanics it applies (:mod:`poselift.training.stage`: seed, init, freeze, optimiser) and the
checkpoints it writes (:mod:`poselift.training.checkpoint`)."""
