"""Stage 3 of the pipeline, 2D -> 3D: the lifting models (one file per paper), their shared layers, their
loss terms (:mod:`poselift.lifting.losses`), inference (:mod:`poselift.lifting.inference`) and the mean-pose
baseline. The models are registered in :data:`poselift.models.MODELS`.
"""
