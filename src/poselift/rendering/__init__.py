"""Pixels: the rendered open benchmark (stage 1 of the pipeline, before images -> 2D keypoints).

The open benchmark has real motion capture (Bandai-Namco) but no images. This stage will render that motion
on a realistic body, MakeHuman's CC0 base mesh, so that every image comes with exact 2D and 3D joints.

Here now (the first slice, no rendering and no workflow wiring yet):

- :mod:`poselift.rendering.assets`: the MakeHuman CC0 assets (a mirror folder or archive, else a download of
  the pinned upstream files), every file checked against ``makehuman_manifest.sha256`` shipped here.
- :mod:`poselift.rendering.body`: the posable body: the ``body`` mesh, its skeleton from joint-vertex
  centroids, normalised skinning weights, shape targets and linear-blend skinning (metres, poselift's z-up
  world).
"""
