"""Lifting by Image ([L], ``../shared/papers/lifting-by-image.txt``): 2D pose tokens query the image tokens of
a pose-pretrained HRNet, a pose-guided layer steers that attention, and a pruned second stage refines the pose.

The files follow the paper's Method section top-down:

- :mod:`.tokens`      image tokens T_I (an HRNet feature map + a learned 2D position embedding) and pose tokens
                      T_P (2D keypoints normalised in the crop frame + a per-joint embedding)
- :mod:`.transformer` the plain Transformer Layer: MSA -> MCA -> FFN with Eq. 1's attention
- :mod:`.pose_guided` the Pose-guided Transformer Layer, Eq. 2 (one attention matrix used both ways)
- :mod:`.pruning`     the Adaptive Feature Selection Module (Fig. 6): keep the top r x HW image tokens
- :mod:`.model`       Stage 1 (broad query, coarse pose) and Stage 2 (focused exploration, refined pose)

Losses (Eq. 3) and the data (features cached by ``poselift detect --features``, detections, 3D targets) are
the ``image_lifting`` task's (:mod:`poselift.training.tasks.image_lifting`).
"""

from poselift.lifting.lbi.model import LBIStage1, LiftingByImage

__all__ = ["LBIStage1", "LiftingByImage"]
