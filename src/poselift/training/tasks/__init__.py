"""Tasks: what the one training loop (:mod:`poselift.training.loop`) trains, as data.

A task is a class in :data:`TASKS`. The loop never looks inside a batch; it asks the task. The interface:

- ``stage_keys``: {key: default} the task adds to a stage of params.yaml (lifting: ``window``,
  ``flip_augment``, ...); ``check_stage_options(options, check, where) -> dict`` checks their values with
  :class:`poselift.experiments`'s checker, so a mistake names the params file and the key.
- ``losses``: {term name: ``term(out, targets) -> scalar``}, the terms a stage's ``losses`` may weight.
- ``metric`` (a name, e.g. ``val_mpjpe``) and ``maximise``: what validation returns and which way is better;
  it selects ``checkpoint.pt``.
- ``inputs(experiment) -> {name: path}``: the data files it reads at their default paths (the workflow
  declares them as the train and evaluate rules' inputs; ``--input NAME=PATH`` overrides one).
- ``Task(inputs, device)`` with ``inputs`` those files ({"prepared", "detections"} for lifting, {"crops",
  "prepared"} for heatmaps);
  ``setup(model, stage, validation_split) -> dict`` reads the training and validation data for ``model`` and
  returns what to log about it; ``describe()`` one line of it; ``batches`` the training batches (iterable,
  with a settable ``epoch`` that fixes the epoch's data order, and settable ``rank``/``world``: with several
  processes each yields its contiguous part of every global batch, :func:`poselift.training.sampling.rank_part`,
  and ``len()`` is the same on every rank); ``step(model, batch) -> (out, targets, n)`` one forward pass
  (``n`` samples; ``model`` may be DistributedDataParallel-wrapped); ``validate(model) -> float``.
- ``evaluate(model, ckpt, path, out, split, batch_size, flip_test, pck_joints, inputs)``: what
  ``poselift evaluate`` writes for this task (lifting: the files of :mod:`poselift.evaluation`).

The tasks: ``lifting`` (:mod:`.lifting`: windows of 2D keypoints -> 3D, MPJPE), ``heatmaps``
(:mod:`.heatmaps`: labelled person crops -> 2D heatmaps, the HRNet/CPN detectors; pixel error, COCO AP) and
``image_lifting`` (:mod:`.image_lifting`: a crop's feature map + its 2D -> 3D, Lifting by Image; MPJPE).

A task is chosen by the stage's ``task`` key, else by the model class's ``task`` attribute, else "lifting".
Adding one is a module here and one line in :data:`TASKS` (docs/architecture.md).
"""

from __future__ import annotations

from poselift.training.tasks.heatmaps import HeatmapTask
from poselift.training.tasks.image_lifting import ImageLiftingTask
from poselift.training.tasks.lifting import LiftingTask

TASKS: dict[str, type] = {  # name -> task class
    "lifting": LiftingTask,
    "heatmaps": HeatmapTask,
    "image_lifting": ImageLiftingTask,
}
